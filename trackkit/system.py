"""System metrics: a background thread that samples the machine every N seconds into ``system/``.

    trackkit.start([...], output_dir=..., system_metrics=10)   # or --system-metrics 10

Each sample goes through ``run.log_metrics("system", ..., step=<last train step logged>)``, so
every tracker receives it. Keys (MiB are 2**20 bytes):

- ``cpu_percent`` (whole machine), ``process_cpu_percent`` (this process; above 100 with threads),
  ``process_rss_mb``, ``memory_percent`` (whole machine): psutil, or /proc on Linux without it.
- ``network_receive_mb_per_s``, ``network_send_mb_per_s`` (every interface, loopback included),
  ``disk_read_mb_per_s``, ``disk_write_mb_per_s`` (every disk the machine lists): whole-machine
  rates in MiB/s over the interval since the last sample, from psutil's counters (not sampled
  without psutil, nor the disk rates where the machine lists no disks).
- ``cuda_memory_allocated_mb``, ``cuda_memory_reserved_mb``: this process's PyTorch allocator on
  its current device, when torch is already imported and has initialised CUDA (never imported here).
- ``gpu<i>_utilization_percent``, ``gpu<i>_memory_used_mb``, ``gpu<i>_memory_percent`` for every
  device NVML sees (``i`` is NVML's index), when nvidia-ml-py (``pynvml``) imports.
"""
from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from .report import report

MIB = 2**20


class SystemSampler:
    """Samples every ``interval`` seconds on a daemon thread until ``stop()``."""

    def __init__(self, run: Any, interval: float):
        if interval <= 0:
            raise ValueError(f"system metrics interval must be positive, got {interval}")
        self._run = run
        self._interval = interval
        self._sources = sources()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="trackkit-system", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Take a last sample (a run shorter than one interval gets one too) and stop."""
        self._stopped.set()
        self._thread.join()

    def _loop(self) -> None:
        stopping = False
        while not stopping:
            stopping = self._stopped.wait(self._interval)
            sample: dict[str, float] = {}
            for source in list(self._sources):
                try:
                    sample.update(source())
                except Exception as exc:  # a driver gone away: drop that source, keep the others
                    self._sources.remove(source)
                    report("source_dropped", error=f"{type(exc).__name__}: {exc}")
            if sample:
                self._run.log_metrics("system", sample, step=self._run.last_train_step)


def sources() -> list[Callable[[], dict[str, float]]]:
    """The samplers available here, each primed so that its first reading covers one interval."""
    found: list[Callable[[], dict[str, float]]] = []
    try:
        import psutil
    except ImportError:
        if os.path.exists("/proc/self/stat"):
            found.append(ProcSampler())
        else:
            report("no_psutil")
    else:
        found.append(PsutilSampler(psutil))
    found.append(cuda_memory)
    nvml = nvml_sampler()
    if nvml is not None:
        found.append(nvml)
    return found


class PsutilSampler:
    def __init__(self, psutil: Any):
        self._psutil = psutil
        self._process = psutil.Process()
        psutil.cpu_percent()  # the first call only starts the measurement
        self._process.cpu_percent()
        self._io = IoRates(psutil)

    def __call__(self) -> dict[str, float]:
        return {
            "cpu_percent": self._psutil.cpu_percent(),
            "process_cpu_percent": self._process.cpu_percent(),
            "process_rss_mb": self._process.memory_info().rss / MIB,
            "memory_percent": self._psutil.virtual_memory().percent,
            **self._io(),
        }


class IoRates:
    """Network and disk throughput of the whole machine, in MiB/s, between two calls."""

    def __init__(self, psutil: Any):
        self._psutil = psutil
        self._last = self._counters()

    def _counters(self) -> tuple[float, dict[str, int]]:
        # Counters that wrap around or restart (a network interface replaced) are psutil's to mend.
        net = self._psutil.net_io_counters()
        disk = self._psutil.disk_io_counters()  # None where the machine lists no disks (some containers)
        counters = {"network_receive": net.bytes_recv, "network_send": net.bytes_sent} if net else {}
        if disk:
            counters.update(disk_read=disk.read_bytes, disk_write=disk.write_bytes)
        return time.monotonic(), counters

    def __call__(self) -> dict[str, float]:
        (before, old), (now, new) = self._last, self._counters()
        self._last = (now, new)
        seconds = max(now - before, 1e-9)
        return {f"{name}_mb_per_s": max(0, new[name] - old[name]) / MIB / seconds for name in new if name in old}


class ProcSampler:
    """The same readings from Linux's /proc, for an environment without psutil."""

    def __init__(self) -> None:
        self._ticks = os.sysconf("SC_CLK_TCK")
        self._page = os.sysconf("SC_PAGE_SIZE")
        self._last = self._times()

    @staticmethod
    def _cpu_jiffies() -> tuple[int, int]:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        return sum(fields), idle

    def _times(self) -> tuple[float, tuple[int, int], float]:
        with open("/proc/self/stat") as f:
            fields = f.read().rpartition(")")[2].split()
        process_seconds = (int(fields[11]) + int(fields[12])) / self._ticks  # utime + stime
        return time.monotonic(), self._cpu_jiffies(), process_seconds

    def __call__(self) -> dict[str, float]:
        now = self._times()
        (t0, (total0, idle0), p0), (t1, (total1, idle1), p1) = self._last, now
        self._last = now
        with open("/proc/self/statm") as f:
            rss_pages = int(f.read().split()[1])
        meminfo = {}
        with open("/proc/meminfo") as f:
            for line in f:
                key, value = line.split(":", 1)
                meminfo[key] = int(value.split()[0])
        busy = (total1 - total0) - (idle1 - idle0)
        return {
            "cpu_percent": 100.0 * busy / max(1, total1 - total0),
            "process_cpu_percent": 100.0 * (p1 - p0) / max(1e-9, t1 - t0),
            "process_rss_mb": rss_pages * self._page / MIB,
            "memory_percent": 100.0 * (1 - meminfo["MemAvailable"] / meminfo["MemTotal"]),
        }


def cuda_memory() -> dict[str, float]:
    """This process's CUDA allocator on its current device; nothing until torch has initialised CUDA."""
    torch = sys.modules.get("torch")  # never import torch just to ask
    if torch is None or not torch.cuda.is_initialized():
        return {}
    device = torch.cuda.current_device()
    return {
        "cuda_memory_allocated_mb": torch.cuda.memory_allocated(device) / MIB,
        "cuda_memory_reserved_mb": torch.cuda.memory_reserved(device) / MIB,
    }


def nvml_sampler() -> Callable[[], dict[str, float]] | None:
    """A sampler of every NVML device, or None without nvidia-ml-py or a driver."""
    try:
        import pynvml

        pynvml.nvmlInit()
        handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
    except Exception:  # not installed, no driver, no device: nothing to sample
        return None

    def sample() -> dict[str, float]:
        out = {}
        for i, handle in enumerate(handles):
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
            out[f"gpu{i}_utilization_percent"] = float(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)
            out[f"gpu{i}_memory_used_mb"] = memory.used / MIB
            out[f"gpu{i}_memory_percent"] = 100.0 * memory.used / memory.total
        return out

    return sample if handles else None
