"""Profiler statistics, schema, comparison and gate exit codes (no runtime needed)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest

from edgekd.errors import EdgekdError
from edgekd.profiler import compare, env, report, stats
from edgekd.profiler.measure import LatencySample, MeasureSettings, measure_latency

RNG = np.random.default_rng(1234)
LOGNORMAL = RNG.lognormal(mean=0.0, sigma=0.5, size=997)


# ------------------------------------------------------------------ statistics vs numpy


@pytest.mark.parametrize("sample", [np.arange(1.0, 11.0), LOGNORMAL, np.array([3.0]), np.array([2.0, 2.0, 5.0])])
def test_summary_matches_numpy(sample: np.ndarray) -> None:
    s = stats.summarize(sample)
    for q in (50, 90, 95, 99):
        assert s[f"p{q}_ms"] == pytest.approx(np.percentile(sample, q), rel=1e-12)
    assert s["min_ms"] == sample.min() and s["max_ms"] == sample.max()
    assert s["mean_ms"] == pytest.approx(sample.mean())
    assert s["std_ms"] == pytest.approx(sample.std(ddof=1) if sample.size > 1 else 0.0)
    assert s["iqr_ms"] == pytest.approx(np.percentile(sample, 75) - np.percentile(sample, 25))


def test_known_values() -> None:
    s = stats.summarize(np.arange(1.0, 11.0))  # 1..10
    assert (s["p50_ms"], s["p90_ms"], s["iqr_ms"]) == (5.5, 9.1, 4.5)


def test_rejects_empty_and_nan() -> None:
    with pytest.raises(ValueError):
        stats.summarize([])
    with pytest.raises(ValueError):
        stats.summarize([1.0, float("nan")])


def test_bootstrap_ci_covers_and_shrinks() -> None:
    small = stats.bootstrap_ci(LOGNORMAL[:100], 50, n_boot=1000)
    large = stats.bootstrap_ci(LOGNORMAL, 50, n_boot=1000)
    assert small.low <= np.median(LOGNORMAL[:100]) <= small.high
    assert large.low <= np.median(LOGNORMAL) <= large.high
    assert (large.high - large.low) < (small.high - small.low)
    # the true median of lognormal(0, 0.5) is exp(0) = 1
    assert large.contains(1.0)
    assert stats.bootstrap_ci(LOGNORMAL, 90, seed=3) == stats.bootstrap_ci(LOGNORMAL, 90, seed=3)  # deterministic


def test_ratio_ci_detects_a_real_shift_only() -> None:
    base = RNG.lognormal(0.0, 0.2, 400)
    same = RNG.lognormal(0.0, 0.2, 400)
    slower = RNG.lognormal(np.log(1.3), 0.2, 400)
    assert stats.ratio_ci(base, same, 50).contains(1.0)
    ci = stats.ratio_ci(base, slower, 50)
    assert ci.low > 1.15 and ci.contains(1.3)


def test_early_stopping_matches_loadgen_logs() -> None:
    # MLPerf LoadGen summaries: "Processed at least 64 queries (N). Would discard K highest latency queries."
    assert stats.min_queries(0.90) == 64
    assert stats.min_queries(0.99) == 662
    for n, discarded in ((2048, 172), (2116, 178), (2145, 181)):
        est = stats.early_stopping(RNG.random(n), 0.90)
        assert est.ok and est.discarded == discarded
    x = RNG.random(2048)
    est = stats.early_stopping(x, 0.90)
    assert est.estimate_ms == np.sort(x)[2048 - 173]
    assert est.estimate_ms >= np.percentile(x, 90)  # conservative by construction


def test_early_stopping_needs_enough_queries() -> None:
    assert not stats.early_stopping(np.ones(63), 0.90).ok
    assert stats.early_stopping(np.ones(64), 0.90).ok
    e = stats.early_stopping(np.ones(661), 0.99)
    assert not e.ok and e.estimate_ms is None and e.min_queries == 662


# ------------------------------------------------------------------ measure loop (fake-free: a python callable is the runner)


class SleepRunner:
    """A deterministic stand-in *workload* (not a mocked runtime): busy-waits a fixed time."""

    def __init__(self, us: float) -> None:
        self.us = us
        self.calls = 0

    def infer(self, feeds: dict) -> dict:
        import time

        self.calls += 1
        end = time.perf_counter() + self.us / 1e6
        while time.perf_counter() < end:
            pass
        return {}


def test_measure_counts_and_time_budget() -> None:
    runner = SleepRunner(50)
    feeds = {"x": np.zeros((2, 3), np.float32)}
    sample = measure_latency(runner, feeds, settings=MeasureSettings(warmup=5, iterations=40))
    assert runner.calls == 1 + 5 + 40 and sample.times_s.size == 40 and sample.batch_size == 2
    assert sample.times_ms.min() >= 0.05
    s = sample.summary(bootstrap=200)
    assert s["iterations"] == 40 and s["p90_early_stop"]["ok"] is False and "peak_rss_mb" in s
    assert 0 < s["harness_overhead_us"] < 20
    timed = measure_latency(SleepRunner(50), feeds, settings=MeasureSettings(warmup=0, iterations=1, duration_s=0.05))
    assert timed.times_s.size > 100 and timed.wall_s >= 0.05


def test_idle_gap_is_outside_the_timed_region() -> None:
    sample = measure_latency(SleepRunner(20), {}, settings=MeasureSettings(warmup=0, iterations=10, idle_gap_ms=5))
    assert sample.wall_s >= 0.05 and np.median(sample.times_ms) < 2


def test_settings_validation() -> None:
    with pytest.raises(ValueError):
        MeasureSettings(iterations=0)
    with pytest.raises(ValueError):
        MeasureSettings(idle_gap_ms=-1)


# ------------------------------------------------------------------ environment


def test_env_capture_has_cpu_flags_and_versions() -> None:
    e = env.capture({"intra_op_threads": 2})
    assert e["cpu"]["logical_cpus"] >= 1 and "versions" in e and e["versions"]["python"]
    assert e["threads"] == {"intra_op_threads": 2}
    if Path("/proc/cpuinfo").is_file():
        text = Path("/proc/cpuinfo").read_text()
        assert e["cpu"]["features"]["avx512"] == (" avx512f" in text)
        assert e["cpu"]["features"]["amx"] == ("amx_tile" in text)


# ------------------------------------------------------------------ schema, compare, gate


def make_doc(times: np.ndarray, label: str = "a") -> dict:
    sample = LatencySample(np.asarray(times) / 1e3, 0.01, 1)
    return {
        "schema": report.SCHEMA, "created_at": "2026-01-01T00:00:00+00:00", "command": "test", "label": label,
        "artifact": {"path": "m.onnx", "kind": "onnx", "file": "m.onnx", "size_mb": 0.1},
        "target": {"name": "cpu", "backend": "onnxruntime", "budgets": {"p90_ms": 2.0}},
        "build": None, "runtime": None,
        "environment": {"cpu": {"model": "x", "features": {"avx512": True}}, "versions": {"python": "3.11"},
                        "os": {"system": "Linux", "release": "6"}},
        "settings": {"batch_size": 1}, "load_s": 0.1,
        "single_stream": {**sample.summary(bootstrap=200), "times_ms": list(map(float, times))},
        "offline": None, "layers": None, "fpga": None, "accuracy": None,
    }


def test_schema_validation(tmp_path: Path) -> None:
    doc = make_doc(RNG.lognormal(0, 0.2, 100))
    report.validate(doc)
    for key in ("label", "environment", "single_stream"):
        broken = copy.deepcopy(doc)
        del broken[key]
        with pytest.raises(EdgekdError, match=key):
            report.validate(broken)
    broken = copy.deepcopy(doc)
    broken["artifact"]["size_mb"] = "big"
    with pytest.raises(EdgekdError, match="artifact.size_mb"):
        report.validate(broken)
    with pytest.raises(EdgekdError, match="schema"):
        report.validate({**doc, "schema": "edgekd.profile/0"})
    files = report.write_all(doc, tmp_path / "out")
    assert files["png"] == ["latency_hist.png", "latency_cdf.png"]
    loaded = report.load(tmp_path / "out")
    assert loaded["single_stream"]["times_ms"] == doc["single_stream"]["times_ms"]
    lines = (tmp_path / "out" / "latency.csv").read_text().splitlines()
    assert lines[0] == "query,latency_ms" and len(lines) == 101


def test_schema_is_documented() -> None:
    text = (Path(__file__).resolve().parents[1] / "docs" / "profiler.md").read_text()
    missing = [key for key, *_ in report.FIELDS if f"`{key}`" not in text]
    assert not missing, f"docs/profiler.md does not document {missing}"


def test_compare_and_gate() -> None:
    base = make_doc(RNG.lognormal(0.0, 0.1, 300), "base")
    same = make_doc(RNG.lognormal(0.0, 0.1, 300), "same")
    slow = make_doc(RNG.lognormal(np.log(1.5), 0.1, 300), "slow")
    c_same = compare.compare(base, same)
    assert all(not m.significant for m in c_same.metrics[:1])
    assert compare.gate(c_same, 0.10).ok
    c_slow = compare.compare(base, slow)
    assert all(m.significant and m.verdict() == "slower" for m in c_slow.metrics)
    assert c_slow.metrics[0].ratio.contains(1.5)
    assert not compare.gate(c_slow, 0.10).ok
    assert compare.gate(c_slow, 0.60).ok  # +50 % is inside a 60 % allowance
    assert compare.gate(compare.compare(slow, base), 0.10).ok  # getting faster never fails
    assert "| p50 |" in compare.markdown(c_slow)


def test_budget_gate() -> None:
    doc = make_doc(RNG.uniform(1.0, 1.5, 100))
    assert compare.budget_gate(doc, 2.0).ok
    assert not compare.budget_gate(doc, 1.2).ok


def test_parse_fraction() -> None:
    assert compare.parse_fraction("10%") == pytest.approx(0.10)
    assert compare.parse_fraction("0.1") == pytest.approx(0.10)
    with pytest.raises(EdgekdError):
        compare.parse_fraction("ten")


def test_cli_gate_exit_codes(tmp_path: Path) -> None:
    from edgekd.cli import main

    base, slow = tmp_path / "base.json", tmp_path / "slow.json"
    base.write_text(json.dumps(make_doc(RNG.lognormal(0.0, 0.1, 300), "base")))
    slow.write_text(json.dumps(make_doc(RNG.lognormal(np.log(1.5), 0.1, 300), "slow")))
    assert main(["profile", "--compare", str(base), str(base), "--max-regression", "10%"]) == 0
    assert main(["profile", "--compare", str(base), str(slow), "--max-regression", "10%"]) == 1
    assert main(["profile", "--compare", str(base), str(slow), "--max-regression", "80%"]) == 0
    assert main(["profile", "--compare", str(slow), str(base), "--max-regression", "10%"]) == 0
    assert main(["profile", "--compare", str(base), str(slow)]) == 0  # no gate asked: report only
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    assert main(["profile", "--compare", str(base), str(bad)]) == 2
    assert main(["profile", "--compare", str(base), str(slow), "--max-regression", "lots"]) == 2


def test_pareto_scatter(tmp_path: Path) -> None:
    from edgekd.profiler import plots

    docs = []
    for label, shift, acc in (("fp32", 1.0, 97.2), ("bf16", 0.5, 97.2), ("int8", 0.3, 96.9), ("bad", 0.9, 95.0)):
        d = make_doc(RNG.lognormal(np.log(shift), 0.05, 100), label)
        d["accuracy"] = {"value": acc, "metric": "top-1 accuracy (%)"}
        docs.append(d)
    pts = [(d["single_stream"]["p90_ms"], d["accuracy"]["value"]) for d in docs]
    front = {docs[i]["label"] for i in plots.pareto_front(pts)}
    assert front == {"int8", "bf16"}
    path = plots.accuracy_scatter(docs, tmp_path / "s.png")
    assert path.stat().st_size > 10_000


def test_two_spellings_of_one_openvino_release_are_no_environment_difference() -> None:
    from edgekd.profiler.compare import env_differences

    def doc(ov: str) -> dict:
        return {"environment": {"versions": {"openvino": ov, "onnxruntime": "1.32.0"}}}

    assert env_differences(doc("2026.4.1-22982-e213a147257-releases/2026/4"), doc("2026.4.1")) == []
    assert env_differences(doc("2026.4.1"), doc("2026.3.0")) == ["openvino: 2026.4.1 vs 2026.3.0"]


def test_histogram_leaves_far_outliers_out_and_says_so() -> None:
    """Two host stalls at 30-55x the median used to stretch the histogram until the body was one bar."""
    import numpy as np

    from edgekd.profiler.plots import _view

    body = np.random.default_rng(0).normal(1.0, 0.05, 500)
    shown, note = _view(np.concatenate([body, [55.0, 30.0]]))
    assert shown.size == 500 and note == "2 slower queries not drawn (up to 55 ms)"
    assert _view(body)[1] == "" and _view(body)[0].size == 500
