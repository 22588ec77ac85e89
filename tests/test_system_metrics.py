"""System metrics: sampled on a background thread into system/, received by every tracker."""
import math
import socket
import subprocess
import sys
import textwrap
import threading
import time

import click
import psutil
import pytest
import trackers_for_tests
from click.testing import CliRunner

import trackkit
from trackkit.options import Tracking, tracker_options
from trackkit.reading import read_events
from trackkit.system import ProcSampler, sources

CORE_KEYS = {"system/cpu_percent", "system/process_cpu_percent", "system/process_rss_mb", "system/memory_percent"}
IO_KEYS = {"system/network_receive_mb_per_s", "system/network_send_mb_per_s"} | (
    {"system/disk_read_mb_per_s", "system/disk_write_mb_per_s"} if psutil.disk_io_counters() else set())
KEYS = CORE_KEYS | IO_KEYS


def system_events(out):
    path = out / "trackkit" / "metrics.jsonl"  # created by the jsonl tracker's thread
    return [e for e in read_events(path) if e["event"] == "metrics"] if path.exists() else []


def sampler_threads():
    return [t for t in threading.enumerate() if t.name == "trackkit-system"]


def wait_for_samples(out_run, count):
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        out_run.flush()
        if len(system_events(out_run.info.dir)) >= count:
            return
        time.sleep(0.02)
    raise AssertionError(f"fewer than {count} system samples after 5 s")


def test_samples_reach_the_record_at_the_last_train_step_with_plausible_values(tmp_path):
    trackers_for_tests.CALLS.clear()
    run = trackkit.start(
        ["jsonl", "trackers_for_tests:Recording"], output_dir=tmp_path, system_metrics=0.05
    )
    run.log_train({"loss": 1.0}, step=7)
    wait_for_samples(run, 2)
    run.log_train({"loss": 0.9}, step=8)
    before = len(system_events(tmp_path))
    wait_for_samples(run, before + 2)
    run.finish()
    assert not sampler_threads()  # stopped at the beginning of finish

    samples = system_events(tmp_path)
    assert {e["namespace"] for e in samples} == {"system"}
    assert {e["step"] for e in samples} <= {0, 7, 8} and {7, 8} <= {e["step"] for e in samples}
    assert [e["step"] for e in samples] == sorted(e["step"] for e in samples)
    rss_now = psutil.Process().memory_info().rss / 2**20
    for event in samples:
        m = event["metrics"]
        assert set(m) == KEYS
        assert 0 <= m["system/cpu_percent"] <= 100 and 0 < m["system/memory_percent"] < 100
        assert 0 <= m["system/process_cpu_percent"] <= 100 * psutil.cpu_count()
        assert 0.5 * rss_now < m["system/process_rss_mb"] < 2 * rss_now  # this very process

    # every tracker receives them, with the same values
    recorded = [(c[2], c[3]) for c in trackers_for_tests.CALLS if c[0] == "metrics"]
    assert recorded == [(e["step"], e["metrics"]) for e in samples]


def test_no_sampler_without_the_option(tmp_path):
    with trackkit.start(["jsonl"], output_dir=tmp_path) as run:
        assert not sampler_threads()
        run.log_train({"loss": 1.0}, step=1)
        time.sleep(0.1)
    assert system_events(tmp_path) == []


@click.command()
@tracker_options()
@click.option("--out")
def demo(tracking: Tracking, out: str) -> None:
    with tracking.start(output_dir=out) as run:
        run.log_train({"loss": 1.0}, step=3)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not system_events(run.info.dir):
            run.flush()
            time.sleep(0.02)
    click.echo(f"options={sorted(tracking.options)}")


def test_the_system_metrics_option_starts_the_sampler_and_is_not_a_tracker_option(tmp_path):
    result = CliRunner().invoke(demo, ["--tracker", "jsonl", "--system-metrics", "0.05", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "system_metrics" not in result.output
    assert {e["step"] for e in system_events(tmp_path)} == {3}
    assert "--system-metrics, --system_metrics SECONDS" in CliRunner().invoke(demo, ["--help"]).output

    zero = CliRunner().invoke(demo, ["--tracker", "jsonl", "--system-metrics", "0", "--out", str(tmp_path / "b")])
    assert zero.exit_code == 2 and "--system-metrics" in zero.output


def test_proc_fallback_agrees_with_psutil(monkeypatch):
    monkeypatch.setitem(sys.modules, "psutil", None)  # as if it were not installed
    (proc, *_) = sources()
    assert isinstance(proc, ProcSampler)
    busy_until = time.monotonic() + 0.3
    while time.monotonic() < busy_until:  # burn CPU in this process
        pass
    sample = proc()
    monkeypatch.undo()
    assert set(sample) == {k.split("/")[1] for k in CORE_KEYS}  # network and disks need psutil
    assert sample["process_cpu_percent"] > 10  # it just spun for 0.3 s (on shared cores)
    assert 0 <= sample["cpu_percent"] <= 100
    assert abs(sample["memory_percent"] - psutil.virtual_memory().percent) < 10
    rss = psutil.Process().memory_info().rss / 2**20
    assert abs(sample["process_rss_mb"] - rss) < 0.2 * rss


def test_sampling_never_imports_torch(tmp_path):
    code = textwrap.dedent("""
        import sys, time, trackkit
        with trackkit.start(["jsonl"], output_dir=sys.argv[1], system_metrics=0.02) as run:
            run.log_train({"loss": 1.0}, step=1)
            time.sleep(0.3)
        assert "torch" not in sys.modules, "system metrics imported torch"
    """)
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True, timeout=60)
    assert system_events(tmp_path)


def test_cuda_memory_of_this_process_when_torch_uses_a_gpu(tmp_path):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    block = torch.empty(64 * 2**20, dtype=torch.uint8, device="cuda")  # 64 MiB
    with trackkit.start(["jsonl"], output_dir=tmp_path, system_metrics=0.05) as run:
        wait_for_samples(run, 1)
    m = system_events(tmp_path)[0]["metrics"]
    assert m["system/cuda_memory_allocated_mb"] >= 64 and m["system/cuda_memory_reserved_mb"] >= 64
    del block


def test_a_run_shorter_than_one_interval_still_gets_a_sample(tmp_path):
    with trackkit.start(["jsonl"], output_dir=tmp_path, system_metrics=60) as run:
        run.log_train({"loss": 1.0}, step=3)
    (sample,) = system_events(tmp_path)
    assert sample["step"] == 3 and KEYS <= set(sample["metrics"])


def loopback_traffic(mib: int) -> None:
    """Send ``mib`` MiB to ourselves through the loopback interface, a reader thread taking it."""
    with socket.create_server(("127.0.0.1", 0)) as server, socket.create_connection(server.getsockname()) as client:
        peer, _ = server.accept()

        def drain():
            with peer:
                while peer.recv(2**20):
                    pass

        reader = threading.Thread(target=drain)
        reader.start()
        for _ in range(mib):
            client.sendall(b"x" * 2**20)
            time.sleep(0.02)
        client.shutdown(socket.SHUT_WR)
        reader.join(timeout=10)


def test_network_and_disk_rates_reach_the_record(tmp_path):
    with trackkit.start(["jsonl"], output_dir=tmp_path, system_metrics=0.2) as run:
        run.log_train({"loss": 1.0}, step=1)
        loopback_traffic(20)  # 20 MiB over about half a second: a few samples' worth
        wait_for_samples(run, 3)
    samples = [e["metrics"] for e in system_events(tmp_path)]
    assert all(IO_KEYS <= set(m) for m in samples)
    assert all(m[k] >= 0 and math.isfinite(m[k]) for m in samples for k in IO_KEYS)
    # loopback traffic counts as received and as sent
    assert max(m["system/network_receive_mb_per_s"] for m in samples) > 2
    assert max(m["system/network_send_mb_per_s"] for m in samples) > 2
