"""Multi-query scenarios (edgekd/profiler/scenarios.py) on real ONNX Runtime and OpenVINO runners: Offline with
several requests in flight and LoadGen's Server scenario (Poisson arrivals, latency from the scheduled arrival,
p99 judged by early stopping). Structural assertions only: no absolute times."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgekd.cli import main
from edgekd.errors import ConfigError, EdgekdError
from edgekd.profiler.scenarios import ServerSettings, offline_concurrent, server
from edgekd.runtime import load

TARGETS = ["cpu", "openvino-cpu"]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from edgekd.pipeline import CompressOptions, compress

    out = tmp_path_factory.mktemp("scen") / "bundle"
    compress("builtin:digits-student", data="builtin:digits", recipe="fp32", targets=TARGETS, out=out,
             options=CompressOptions(measure=False, golden_samples=8))
    return out


def _feeds(rt) -> dict[str, np.ndarray]:
    spec = rt.runner.inputs[0]
    return {spec.name: np.random.default_rng(0).standard_normal((1, 1, 8, 8)).astype(np.float32)}


@pytest.mark.parametrize("target", TARGETS)
def test_offline_with_requests_in_flight(bundle: Path, target: str) -> None:
    rt = load(bundle, target)
    got = offline_concurrent(rt.runner, _feeds(rt), requests=3, queries=60)
    assert got["queries"] == 60 and got["requests"] == 3 and got["throughput_per_s"] > 0
    assert 0 < got["p50_ms"] <= got["p90_ms"] <= got["p99_ms"]
    assert ("AsyncInferQueue" if target == "openvino-cpu" else "session.run") in got["call_path"]


@pytest.mark.parametrize("target", TARGETS)
def test_server_scenario_counts_every_scheduled_query(bundle: Path, target: str) -> None:
    rt = load(bundle, target)
    got = server(rt.runner, _feeds(rt), ServerSettings(target_qps=400, duration_s=2.0, latency_bound_ms=2000.0,
                                                       requests=2, seed=1))
    assert 600 <= got["queries"] <= 1000  # Poisson(800)
    assert got["p50_ms"] <= got["p99_ms"] <= got["p99_9_ms"]
    assert got["achieved_qps"] == pytest.approx(got["queries"] / got["duration_s"], rel=0.25)
    assert got["p99_early_stop"]["ok"] and got["valid"] is True, got["reason"]  # a bound a shared host meets
    # the same schedule with a bound no run can meet is INVALID, saying why; too few queries are never VALID
    tight = server(rt.runner, _feeds(rt), ServerSettings(target_qps=400, duration_s=2.0, latency_bound_ms=1e-6,
                                                         requests=2, seed=1))
    assert tight["valid"] is False and "exceeds the 1e-06 ms latency bound" in tight["reason"]
    short = server(rt.runner, _feeds(rt), ServerSettings(target_qps=50, duration_s=1.0, latency_bound_ms=50.0))
    assert short["valid"] is False and "too few" in short["reason"]


def test_server_settings_and_a_runner_without_concurrency_are_refused() -> None:
    with pytest.raises(ConfigError, match="--target-qps"):
        ServerSettings(target_qps=0)
    with pytest.raises(ConfigError, match="--requests"):
        ServerSettings(target_qps=10, requests=0)

    class Plain:
        inputs = ()

        def infer_unchecked(self, feeds):
            return []

    with pytest.raises(EdgekdError, match="cannot run several queries at once"):
        server(Plain(), {}, ServerSettings(target_qps=10, duration_s=0.1))


def test_profile_cli_writes_both_scenarios(bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "prof"
    rc = main(["profile", str(bundle), "--target", "openvino-cpu", "--out", str(out), "--iterations", "50",
               "--no-layers", "--no-plots", "--requests", "1,2", "--server-qps", "300", "--duration", "1.5",
               "--latency-bound-ms", "100"])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "offline, 2 in flight" in text and "server at 300 QPS" in text
    doc = json.loads((out / "profile.json").read_text())
    assert [c["requests"] for c in doc["concurrent"]] == [1, 2]
    assert doc["server"]["target_qps"] == 300 and doc["server"]["valid"] in (True, False)
    md = (out / "profile.md").read_text()
    assert "## Server scenario (Poisson arrivals)" in md and "## Offline, several requests in flight" in md
    assert main(["profile", str(bundle), "--target", "cpu", "--latency-bound-ms", "5"]) == 2
