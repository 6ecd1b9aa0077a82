"""One baseline format for both regression gates, provenance refusals, and the noise-robust regression rule.

The rule is checked on synthetic samples (no timing): a run that is only noisier or drifts must pass, a real
slowdown must fail, in `edgekd profile --compare` and `edgekd check --baseline` alike (one judge)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest

from edgekd.budgets import judge_regression
from edgekd.cli import main
from edgekd.errors import EdgekdError
from edgekd.profiler import compare, report
from edgekd.profiler.measure import LatencySample

RNG = np.random.default_rng(17)


def profile_doc(times: np.ndarray, *, label: str = "a", cpu: str = "AMD EPYC", sha: str = "a" * 64,
                host: str = "runner-1") -> dict:
    """A profile result as `edgekd profile` (and now `edgekd check --save-baseline`) writes it."""
    times = np.asarray(times, dtype=np.float64)
    return {
        "schema": report.SCHEMA, "created_at": "2026-01-01T00:00:00+00:00", "command": "test", "label": label,
        "artifact": {"path": "b", "kind": "bundle", "file": "b/cpu/model.onnx", "size_mb": 0.1, "sha256": sha},
        "target": {"name": "cpu", "backend": "onnxruntime"}, "build": None, "runtime": None,
        "environment": {"cpu": {"model": cpu, "features": {}}, "hostname": host, "versions": {"onnxruntime": "1.2"}},
        "settings": {"batch_size": 1}, "load_s": None,
        "single_stream": {**LatencySample(times / 1e3, 0.01, 1).summary(bootstrap=0), "times_ms": times.tolist()},
        "offline": None, "layers": None, "fpga": None, "accuracy": None,
    }


def write(tmp_path: Path, name: str, doc: dict) -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(doc))
    return path


def test_one_reader_reads_profiles_and_older_check_baselines(tmp_path: Path) -> None:
    from edgekd.hil import read_baseline

    prof = write(tmp_path, "profile.json", profile_doc(RNG.lognormal(0, 0.1, 200)))
    value, doc = read_baseline(prof, "cpu", "p50_ms")  # `check --baseline` reads a profile.json (refused on main)
    assert value == pytest.approx(np.median(doc["single_stream"]["times_ms"]))
    legacy = write(tmp_path, "old.json", {"schema": "edgekd.hil-baseline/1", "target": "cpu", "host": "runner-1",
                                          "model_sha256": "b" * 64, "latency": {"p50_ms": 1.0, "p90_ms": 1.2}})
    old = compare.load_baseline(legacy, target="cpu")
    assert old["single_stream"]["p50_ms"] == 1.0 and old["artifact"]["source_sha256"] == "b" * 64
    # `profile --compare` reads a check baseline (older format too); it used to say "re-run edgekd profile"
    assert main(["profile", "--compare", str(legacy), str(prof), "--max-regression", "10%"]) == 0
    with pytest.raises(EdgekdError, match="measured for target 'cpu', not 'gpu'"):
        compare.load_baseline(prof, target="gpu")
    with pytest.raises(EdgekdError, match="no latency found") as exc:
        compare.load_baseline(write(tmp_path, "x.json", {"hello": 1}), target="cpu")
    assert "--save-baseline" in exc.value.hint and "edgekd profile" in exc.value.hint


def test_profile_compare_against_a_point_baseline_uses_the_new_runs_interval(tmp_path: Path) -> None:
    legacy = {"schema": "edgekd.hil-baseline/1", "target": "cpu", "latency": {"p50_ms": 1.0, "p90_ms": 1.2}}
    base = compare.load_baseline(write(tmp_path, "old.json", legacy), target="cpu")
    slow = profile_doc(RNG.lognormal(np.log(2.0), 0.05, 300))
    row = compare.compare(base, slow, metrics=("p50",)).metrics[0]
    assert row.base_ms == 1.0 and row.ratio.low > 1.8 and not compare.gate(compare.compare(base, slow), 0.10).ok


def test_provenance_refusals(tmp_path: Path) -> None:
    base = profile_doc(RNG.lognormal(0, 0.1, 100))
    other_cpu = profile_doc(RNG.lognormal(0, 0.1, 100), cpu="Intel Xeon")
    with pytest.raises(EdgekdError, match="another CPU") as exc:
        compare.check_origin(base, other_cpu, where="base.json")
    assert "--allow-other-host" in exc.value.hint and exc.value.where == "base.json"
    assert any("another CPU" in n for n in compare.check_origin(base, other_cpu, where="b", allow_other_host=True))
    # a new hostname alone is allowed (CI runners get one per job), and said
    assert any("host 'runner-1'" in n for n in compare.check_origin(base, profile_doc([1.0], host="runner-2"), where="b"))
    other_model = profile_doc(RNG.lognormal(0, 0.1, 100), sha="f" * 64)
    with pytest.raises(EdgekdError, match="another model") as exc:
        compare.check_origin(base, other_model, where="b", allow_other_model=False)
    assert "--allow-other-model" in exc.value.hint
    assert compare.check_origin(base, other_model, where="b")  # profile --compare: variants of a model, noted only
    # the CLI refuses another CPU with exit 2 and a reason, unless allowed
    a, b = write(tmp_path, "a.json", base), write(tmp_path, "b.json", other_cpu)
    assert main(["profile", "--compare", str(a), str(b), "--max-regression", "10%"]) == 2
    assert main(["profile", "--compare", str(a), str(b), "--max-regression", "10%", "--allow-other-host"]) == 0


def test_judge_fails_only_when_the_lower_bound_exceeds_the_limit() -> None:
    assert not judge_regression("p50", 1.0, 1.3, 1.15, 1.45, 0.10).ok
    over = judge_regression("p50", 1.0, 1.15, 1.05, 1.25, 0.10)  # over the limit, but noise can explain it
    assert over.ok and "not failing" in over.reason
    assert judge_regression("p50", 1.0, 1.05, 0.98, 1.12, 0.10).ok


def test_drift_within_runs_does_not_fail_but_a_real_slowdown_does() -> None:
    """Identical models, but the second run drifts: a neighbour's burst makes a block of queries slower.
    The old gate (estimate over the limit and CI excluding 1) failed this; the block-bootstrap lower bound does not."""
    base_t = RNG.lognormal(0.0, 0.05, 400)
    drift = RNG.lognormal(0.0, 0.05, 400)
    drift[100:300] *= 1.25  # half the run 25 % slower: the median moves ~+12 %
    base, drifting = profile_doc(base_t), profile_doc(drift)
    comp = compare.compare(base, drifting, metrics=("p50",))
    assert comp.metrics[0].ratio.estimate > 1.10  # the point estimate alone would fail a 10 % gate
    assert compare.gate(comp, 0.10).ok
    slow = profile_doc(RNG.lognormal(np.log(1.25), 0.05, 400))
    assert not compare.gate(compare.compare(base, slow, metrics=("p50",)), 0.10).ok  # a real +25 % fails
    twin = copy.deepcopy(base)
    assert compare.gate(compare.compare(base, twin), 0.0).ok  # identical samples: ratio 1, never a regression


def test_check_reads_its_own_baseline_as_a_profile_and_refuses_another_model(
        tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.test_hil import FAST, demo_bundle

    bundle = demo_bundle(tmp_path_factory)
    saved = tmp_path / "saved.json"
    assert main(["check", str(bundle), "--save-baseline", str(saved), *FAST]) == 0
    doc = report.load(saved)  # a `check --save-baseline` file is a valid profile result
    assert doc["artifact"]["sha256"] and doc["environment"]["cpu"]["model"] == compare._cpu(doc)
    assert len(doc["single_stream"]["times_ms"]) == 30
    assert main(["profile", "--compare", str(saved), str(saved), "--max-regression", "10%"]) == 0
    assert main(["check", str(bundle), "--baseline", str(saved), "--max-regression", "1000%", *FAST]) == 0
    other = json.loads(saved.read_text())
    other["artifact"]["sha256"] = "0" * 64
    write(tmp_path, "other.json", other)
    capsys.readouterr()
    assert main(["check", str(bundle), "--baseline", str(tmp_path / "other.json"), *FAST]) == 1
    out = capsys.readouterr().out
    assert "regression: error:" in out and "the baseline was measured on another model" in out
    assert main(["check", str(bundle), "--baseline", str(tmp_path / "other.json"), "--allow-other-model",
                 "--max-regression", "1000%", *FAST]) == 0

