"""The profiler's bound call path (issue 17 item 8): ONNX Runtime IOBinding and an OpenVINO InferRequest with its
tensors set once give the plain call's outputs, are what the loop times, and the binding's per-call cost is
measured and reported (profile.json, console, profile.md) instead of a "harness overhead" that hid it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgekd.backends.base import bound_call_of
from edgekd.profiler import report
from edgekd.profiler.measure import MeasureSettings, binding_overhead, measure_latency, timed_call

RNG = np.random.default_rng(0)
X = RNG.standard_normal((3, 1, 8, 8)).astype(np.float32)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The digits-sized demo student (seeded, untrained) in float and as an ORT QDQ int8 file."""
    from edgekd.testing.models import export_float, make_module, ort_quantize

    work = tmp_path_factory.mktemp("binding")
    fp32 = export_float(make_module("student", seed=0), work / "student.onnx", X)
    int8 = ort_quantize(fp32, work / "student.qdq.onnx", RNG.standard_normal((16, 1, 8, 8)).astype(np.float32),
                        activations="uint8")
    return {"fp32": fp32, "int8": int8}


def _ort(path: Path):
    from edgekd.backends.onnxruntime import OnnxRuntimeOptions, OnnxRuntimeRunner

    return OnnxRuntimeRunner(path, OnnxRuntimeOptions(intra_op_threads=1))


def _ov(path: Path, tmp_path: Path):
    pytest.importorskip("openvino")
    from edgekd.backends.openvino import OpenVINOBackend, OpenVINOOptions
    from edgekd.config import Target

    target = Target(name="ov", backend="openvino", options=OpenVINOOptions(threads=1))
    backend = OpenVINOBackend()
    build = backend.build(path, target, tmp_path / path.stem)
    return backend.load(tmp_path / path.stem, target, build)


def _check_bound_equals_plain(runner) -> None:
    for batch in (1, 3):  # a dynamic batch: the bound outputs are sized from the feeds
        feeds = {"input": np.ascontiguousarray(X[:batch])}
        plain = runner.infer_unchecked(feeds)
        bound = bound_call_of(runner, feeds)
        assert bound is not None and bound.path
        bound.run()
        got = bound.outputs()
        assert len(got) == len(plain)
        for a, b in zip(got, plain, strict=True):
            assert a.shape == np.asarray(b).shape and a.dtype == np.asarray(b).dtype
            np.testing.assert_array_equal(a, np.asarray(b))
        # a second run on the same binding gives the same result (nothing is consumed or moved)
        bound.run()
        np.testing.assert_array_equal(bound.outputs()[0], np.asarray(plain[0]))


@pytest.mark.parametrize("flavor", ["fp32", "int8"])
def test_ort_bound_outputs_equal_plain(models: dict[str, Path], flavor: str) -> None:
    _check_bound_equals_plain(_ort(models[flavor]))


@pytest.mark.parametrize("flavor", ["fp32", "int8"])
def test_openvino_bound_outputs_equal_plain(models: dict[str, Path], flavor: str, tmp_path: Path) -> None:
    runner = _ov(models[flavor], tmp_path)
    _check_bound_equals_plain(runner)
    bound = bound_call_of(runner, {"input": X[:1]})
    bound.run()
    # OpenVINO's own timing of the call, in seconds: positive and far below a second on an 8x8 model
    assert 0 < bound.runtime_latency_s() < 0.1


def test_the_loop_times_the_bound_call(models: dict[str, Path]) -> None:
    """Bound: the plain call runs once (the cold first call), never in the warm-up or the timed queries."""
    from edgekd.backends.onnxruntime import OnnxRuntimeOptions, OnnxRuntimeRunner

    class Counting(OnnxRuntimeRunner):  # the real runner, counting its plain calls
        plain_calls = 0

        def infer_unchecked(self, feeds):
            self.plain_calls += 1
            return super().infer_unchecked(feeds)

    cfg = MeasureSettings(warmup=4, iterations=30)
    runner = Counting(models["fp32"], OnnxRuntimeOptions(intra_op_threads=1))
    sample = measure_latency(runner, {"input": X[:1]}, settings=cfg)
    assert sample.call_path == "bound" and "IOBinding" in sample.call_path_detail
    assert runner.plain_calls == 1 and sample.times_s.size == 30
    plain = measure_latency(runner, {"input": X[:1]}, settings=cfg, call_path="plain")
    assert plain.call_path == "plain" and runner.plain_calls == 1 + 1 + 4 + 30
    assert plain.summary(bootstrap=0)["call_path"] == "plain"
    with pytest.raises(ValueError, match="call_path"):
        timed_call(runner, {"input": X[:1]}, "fast")


def test_a_runner_without_a_bound_call_is_timed_plain_and_says_so() -> None:
    class Workload:  # a plugin runner with only the plain call (a real, if trivial, computation)
        inputs = outputs = ()

        def infer(self, feeds):
            return {"y": feeds["x"] * 2}

    runner, feeds = Workload(), {"x": np.ones((1, 4), np.float32)}
    sample = measure_latency(runner, feeds, settings=MeasureSettings(warmup=1, iterations=5))
    assert sample.call_path == "plain" and "has no bound call" in sample.call_path_detail
    assert binding_overhead(runner, feeds) is None


def test_openvino_binding_overhead_is_measured(models: dict[str, Path], tmp_path: Path) -> None:
    """On an 8x8 model most of a plain OpenVINO call is the binding's (tens of microseconds): the measured overhead
    is positive and the bound median is below the plain one."""
    runner = _ov(models["fp32"], tmp_path)
    b = binding_overhead(runner, {"input": X[:1]}, rounds=5, budget_s=0.2)
    assert b is not None and b["rounds"] == 5 and b["calls_per_round"] >= 5
    assert b["bound_p50_us"] < b["plain_p50_us"] and b["binding_overhead_us"] > 0
    assert b["range_us"][0] <= b["binding_overhead_us"] <= b["range_us"][1]


@pytest.mark.parametrize("target", ["cpu", "openvino-cpu"])
def test_profile_json_reports_call_path_and_binding_overhead(models: dict[str, Path], tmp_path: Path, target: str,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    if target.startswith("openvino"):
        pytest.importorskip("openvino")
    from edgekd.cli import main

    runs = {}
    for path in ("bound", "plain"):
        out = tmp_path / path
        args = ["profile", str(models["fp32"]), "--target", target, "--out", str(out), "--iterations", "64",
                "--warmup", "5", "--no-layers", "--no-plots", "-q"]
        if path == "plain":
            args += ["--call-path", "plain"]
        assert main(args) == 0
        runs[path] = report.load(out / "profile.json")
        assert f"timed call: {path}; binding overhead" in capsys.readouterr().out
        md = (out / "profile.md").read_text()
        assert f"- timed call: {path} (" in md and "binding overhead" in md and "harness overhead" not in md
        assert "call_path" in (out / "summary.csv").read_text().splitlines()[0]
    for path, doc in runs.items():
        ss = doc["single_stream"]
        assert doc["settings"]["call_path"] == path and ss["call_path"] == path
        assert isinstance(ss["binding_overhead_us"], float) and ss["binding"]["plain_p50_us"] > 0
        assert ss["iterations"] == 64
        assert ("runtime_p50_ms" in ss) == (target.startswith("openvino") and path == "bound")
    assert "IOBinding" in runs["bound"]["single_stream"]["call_path_detail"] or target.startswith("openvino")
    assert "infer_unchecked" in runs["plain"]["single_stream"]["call_path_detail"]


def test_unknown_call_path_is_a_usage_error(models: dict[str, Path], tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    from edgekd.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["profile", str(models["fp32"]), "--call-path", "fast", "--out", str(tmp_path)])
    assert exc.value.code == 2 and "--call-path" in capsys.readouterr().err


def test_old_profile_json_without_call_path_still_reads(tmp_path: Path) -> None:
    """The new keys are optional: a profile.json written before them is still a valid edgekd.profile/1 baseline."""
    from edgekd.profiler.measure import LatencySample

    times = RNG.lognormal(0.0, 0.1, 50)
    doc = {"schema": report.SCHEMA, "created_at": "2026-01-01T00:00:00+00:00", "command": "test", "label": "old",
           "artifact": {"path": "m.onnx", "kind": "onnx", "file": "m.onnx", "size_mb": 0.1},
           "target": {"name": "cpu", "backend": "onnxruntime"}, "build": None, "runtime": None,
           "environment": {"cpu": {"model": "x", "features": {}}, "versions": {"python": "3.11"},
                           "os": {"system": "Linux", "release": "6"}},
           "settings": {"batch_size": 1, "call_path": "plain"}, "load_s": 0.1,
           "single_stream": {**LatencySample(times / 1e3, 0.01, 1).summary(bootstrap=0), "times_ms": list(times)},
           "offline": None, "layers": None, "fpga": None, "accuracy": None}
    for key in ("call_path", "call_path_detail", "binding_overhead_us", "binding", "runtime_p50_ms"):
        doc["single_stream"].pop(key, None)
    doc["settings"].pop("call_path", None)
    path = tmp_path / "profile.json"
    path.write_text(json.dumps(doc))
    assert report.load(path)["label"] == "old"
    assert "binding overhead: not measured" in report.markdown(doc)


def test_compare_names_a_call_path_difference(models: dict[str, Path], tmp_path: Path) -> None:
    """A baseline timed on the plain call (every profile before the bound default) against a bound run: the
    comparison says so, since the binding's cost is in one ratio side only."""
    from edgekd.profiler.compare import call_path, compare
    from edgekd.profiler.run import ProfileOptions, profile

    cfg = MeasureSettings(warmup=2, iterations=20)
    docs = {path: profile(models["fp32"], "cpu", tmp_path / path, ProfileOptions(measure=cfg, layers=False,
                                                                                 call_path=path))
            for path in ("plain", "bound")}
    assert [call_path(d) for d in docs.values()] == ["plain", "bound"]
    diffs = compare(docs["plain"], docs["bound"]).env_differences
    assert any(d.startswith("timed call: plain vs bound") for d in diffs)
    assert not any("timed call" in d for d in compare(docs["bound"], docs["bound"]).env_differences)
    old = {**docs["bound"], "settings": {}, "single_stream": {k: v for k, v in docs["bound"]["single_stream"].items()
                                                              if k != "call_path"}}
    assert call_path(old) == "plain"
