"""Issue 22: the training plot (plots/training.png, linked from report.md), the kept epoch in the report, and the
compressed student's state_dict (weights.pt) in the bundle."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from edgekd.bundle import read_manifest
from edgekd.cli import main


@pytest.fixture(scope="module")
def int8_bundle(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("train") / "bundle"
    assert main(["compress", "--model", "builtin:digits-student", "--teacher", "builtin:digits-teacher",
                 "--data", "builtin:digits", "--recipe", "int8-kd", "--set", "distill.epochs=3",
                 "--set", "quantize.finetune.epochs=2", "--set", "quantize.calibration_samples=128",
                 "--target", "cpu", "--out", str(out), "--no-measure", "-q"]) == 0
    return out, json.loads((out / "report.json").read_text())


def test_training_plot_is_in_the_bundle_and_linked(int8_bundle: tuple[Path, dict]) -> None:
    out, report = int8_bundle
    png = out / "plots" / "training.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
    assert report["plots"]["training"] == "plots/training.png"
    md = (out / "report.md").read_text()
    assert "![loss and validation metric per epoch, metric per stage and per target](plots/training.png)" in md
    assert "plots/training.png" in {r["file"] for r in report["bundle_contents"]}
    assert "plots/training.png" not in read_manifest(out)["files"]  # listed, not checksummed (like every plot)


def test_training_runs_are_what_the_plot_draws(int8_bundle: tuple[Path, dict]) -> None:
    from edgekd.compress_report import training_runs

    _, report = int8_bundle
    runs = dict(training_runs(report))
    assert set(runs) == {"distill", "quantize qat"}, set(runs)
    assert [h["epoch"] for h in runs["distill"]["history"]] == [1, 2, 3]
    assert len(runs["quantize qat"]["history"]) == 2 and runs["quantize qat"]["kept"]["keep"] == "last"


def test_report_says_which_epoch_was_kept(int8_bundle: tuple[Path, dict]) -> None:
    out, report = int8_bundle
    kept = report["passes"]["distill"]["kept"]
    assert kept["keep"] == "best" and kept["of"] == 3 and 1 <= kept["epoch"] <= 3
    scores = [h["accuracy"] for h in report["passes"]["distill"]["history"]]
    assert scores[kept["epoch"] - 1] == max(scores) and max(scores) not in scores[kept["epoch"]:]
    assert f"kept epoch {kept['epoch']} of 3: best validation accuracy" in (out / "report.md").read_text()


def test_weights_pt_is_a_state_dict_loadable_without_code(int8_bundle: tuple[Path, dict]) -> None:
    out, report = int8_bundle
    state = torch.load(out / "weights.pt", weights_only=True)
    assert isinstance(state, dict) and all(isinstance(v, torch.Tensor) for v in state.values())
    assert len(state) == report["weights"]["tensors"] and report["weights"]["file"] == "weights.pt"
    assert any("scale" in k or "quant" in k for k in state), sorted(state)[:10]  # the quantized student's
    rows = {r["file"]: r for r in read_manifest(out)["contents"]}
    assert rows["weights.pt"]["role"] == "weights" and rows["weights.pt"]["bytes"] == (out / "weights.pt").stat().st_size


def test_fp32_weights_reload_into_the_architecture(tmp_path: Path) -> None:
    """The state_dict is the one model.onnx was exported from: loaded into the architecture, it gives the golden
    reference outputs."""
    from edgekd.models import load_model

    out = tmp_path / "b"
    assert main(["compress", "--model", "builtin:digits-student", "--data", "builtin:digits", "--recipe", "kd",
                 "--set", "distill.loss=ce", "--set", "distill.epochs=2", "--target", "cpu", "--out", str(out),
                 "--no-measure", "-q"]) == 0
    module = load_model("builtin:digits-student").module
    module.load_state_dict(torch.load(out / "weights.pt", weights_only=True))
    golden = np.load(out / "golden.npz")
    with torch.no_grad():
        got = module.eval()(torch.from_numpy(golden["input"])).numpy()
    np.testing.assert_allclose(got, golden["reference"], atol=1e-4)


def test_no_weights_leaves_weights_pt_out(tmp_path: Path) -> None:
    out = tmp_path / "b"
    assert main(["compress", "--model", "builtin:digits-student", "--data", "builtin:digits", "--target", "cpu",
                 "--out", str(out), "--no-measure", "--no-weights", "-q"]) == 0
    assert not (out / "weights.pt").exists() and "weights" not in json.loads((out / "report.json").read_text())
