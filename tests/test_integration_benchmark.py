"""benchmarks/integrations.py still runs and prints what its doc promises (a smoke test, not a timing)."""
import pytest
from test_benchmarks import run_benchmark


@pytest.mark.slow
def test_integrations_benchmark_reports_both_contestants_of_each_framework():
    for module in ("transformers", "lightning", "accelerate"):
        pytest.importorskip(module)
    result = run_benchmark("integrations.py", "--steps", "4", "--repeats", "1", "--warmup", "1")
    assert set(result) == {"hf", "lightning", "accelerate"}
    for figures in result.values():
        assert figures["own"]["step_ms"] > 0 and figures["trackkit"]["step_ms"] > 0
        assert figures["own"]["log_call_us_p50"] > 0 and figures["trackkit"]["log_call_us_p50"] > 0
        assert figures["step_ratio_own_over_trackkit"] > 0 and figures["log_call_ratio_own_over_trackkit"] > 0
    assert result["accelerate"]["dispatch"]["log_call_us_p50"] > 0
