"""Issue 22, bundle size and contents: a target's model.onnx that is byte-identical to the bundle's is stored once
(``stored_as``), the eval data is capped and compressed, the manifest lists what is inside, and the compressed
student's state_dict travels with it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from edgekd import runtime
from edgekd.bundle import Bundle, read_manifest
from edgekd.cli import main
from edgekd.errors import EdgekdError
from edgekd.pipeline import CompressOptions, compress


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("slim") / "bundle"
    compress("builtin:digits-student", data="builtin:digits", recipe="fp32", targets=["cpu"], out=out,
             options=CompressOptions(measure=False, golden_samples=8))
    return out


def test_identical_model_onnx_is_stored_once(bundle: Path) -> None:
    manifest = read_manifest(bundle)
    assert not (bundle / "cpu" / "model.onnx").exists() and (bundle / "model.onnx").is_file()
    assert manifest["targets"]["cpu"]["stored_as"] == {
        "model.onnx": {"path": "model.onnx", "sha256": manifest["files"]["model.onnx"]}}
    assert "cpu/model.onnx" not in manifest["files"]
    runner = runtime.load(bundle, "cpu")  # the reader resolves it; checksums verified
    assert Path(runner.runner.model_path) == (bundle / "model.onnx").resolve()
    assert main(["check", str(bundle), "--target", "cpu"]) == 0


def test_stored_copy_is_verified(bundle: Path, tmp_path: Path) -> None:
    copy = tmp_path / "b"
    shutil.copytree(bundle, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["targets"]["cpu"]["stored_as"]["model.onnx"]["sha256"] = "0" * 64  # the target was built from other bytes
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(EdgekdError, match=r"cpu/model.onnx: stored as model.onnx, whose checksum is not the target's"):
        runtime.load(copy, "cpu")
    manifest["targets"]["cpu"]["stored_as"]["model.onnx"] = {"path": "../outside.onnx", "sha256": "0" * 64}
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(EdgekdError, match=r"targets.cpu.stored_as must map"):
        _ = Bundle(copy).manifest


def test_old_bundle_with_its_own_copy_still_loads(bundle: Path, tmp_path: Path) -> None:
    """A bundle written before de-duplication: cpu/model.onnx in the folder, listed, no stored_as."""
    old = tmp_path / "old"
    shutil.copytree(bundle, old)
    shutil.copyfile(old / "model.onnx", old / "cpu" / "model.onnx")
    manifest = json.loads((old / "manifest.json").read_text())
    del manifest["targets"]["cpu"]["stored_as"]
    manifest["files"]["cpu/model.onnx"] = manifest["files"]["model.onnx"]
    (old / "manifest.json").write_text(json.dumps(manifest))
    assert Bundle(old).verify() == []
    assert Path(runtime.load(old, "cpu").runner.model_path) == old / "cpu" / "model.onnx"
    assert main(["check", str(old), "--target", "cpu"]) == 0


@pytest.fixture(scope="module")
def capped(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("capped") / "bundle"
    assert main(["compress", "--model", "builtin:digits-student", "--data", "builtin:digits", "--target", "cpu",
                 "--out", str(out), "--no-measure", "--eval-samples", "120", "-q"]) == 0
    return out, json.loads((out / "report.json").read_text())


def test_eval_set_is_capped_compressed_and_said(capped: tuple[Path, dict]) -> None:
    import zipfile

    import numpy as np

    out, report = capped
    with zipfile.ZipFile(out / "eval.npz") as zf:
        assert {i.compress_type for i in zf.infolist()} == {zipfile.ZIP_DEFLATED}
    x, y = Bundle(out).eval_set()
    assert len(x) == len(y) == 120 and report["data"]["test"] == 500  # digits: 500 test samples
    assert report["data"]["eval_set"] == {
        "file": "eval.npz", "samples": 120, "test_samples": 500, "cap": 120, "capped": True,
        "note": report["data"]["eval_set"]["note"]}
    assert "eval.npz holds 120 of the 500 test samples" in report["data"]["eval_set"]["note"]
    assert "eval.npz: 120 of the 500 test samples (capped: --eval-samples 120" in (out / "report.md").read_text()
    assert len(np.unique(y)) == 10  # evenly spaced over the split: every class
    manifest = read_manifest(out)
    assert manifest["eval"]["samples"] == 120
    # the FP32 reference `edgekd check` judges against is measured on the same 120 samples
    fp32 = manifest["reference_metrics"]["fp32"]
    assert fp32["samples"] == 120 and fp32["accuracy"] == report["stages"][0]["eval_accuracy"]
    assert main(["check", str(out), "--target", "cpu"]) == 0


def test_manifest_lists_its_contents(capped: tuple[Path, dict], bundle: Path) -> None:
    out, _ = capped
    manifest = read_manifest(out)
    rows = {r["file"]: r for r in manifest["contents"]}
    assert set(rows) == set(manifest["files"])  # every checksummed file, nothing else
    assert rows["eval.npz"]["role"] == "eval" and rows["eval.npz"]["samples"] == 120
    assert rows["golden.npz"]["samples"] == manifest["golden"]["samples"]
    assert rows["model.onnx"]["shared_by"] == ["cpu"] and rows["model.onnx"]["role"] == "model"
    for rel, row in rows.items():
        assert row["bytes"] == (out / rel).stat().st_size and row["what"], rel
    # uncapped (500 <= 1000): all of the test split, said too
    report = json.loads((bundle / "report.json").read_text())
    assert report["data"]["eval_set"]["capped"] is False and read_manifest(bundle)["eval"]["samples"] == 500


def test_eval_samples_must_be_positive(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compress", "--model", "builtin:digits-student", "--data", "builtin:digits", "--out", "x",
                 "--eval-samples", "0"]) == 2
    assert "--eval-samples: eval.npz needs at least 1 sample, got 0" in capsys.readouterr().err


def test_a_bundle_shipped_with_one_target_loads_and_checks(tmp_path: Path) -> None:
    """A device gets only its target's folder: load() and `edgekd check` verify that target's files and the shared
    ones (it used to need the undocumented verify=False); a changed file is still caught, and the left-off target
    is reported missing when asked for."""
    full = tmp_path / "full"
    compress("builtin:digits-student", data="builtin:digits", recipe="ptq", targets=["cpu", "openvino-cpu"],
             out=full, options=CompressOptions(measure=False, golden_samples=8))
    manifest = read_manifest(full)
    device = tmp_path / "device"
    shutil.copytree(full, device)
    shutil.rmtree(device / manifest["targets"]["openvino-cpu"]["dir"])
    ov_only = Bundle(full).other_targets_files("cpu")
    assert ov_only and all(f.startswith(("openvino-cpu/", "variants/")) for f in ov_only)
    for rel in ov_only:
        (device / rel).unlink(missing_ok=True)
    assert runtime.load(device, "cpu").predict(load_npz(full)[:2]).shape == (2, 10)
    assert main(["check", str(device), "--target", "cpu", "--iterations", "20", "--warmup", "2"]) == 0
    with pytest.raises(EdgekdError, match="missing"):
        runtime.load(device, "openvino-cpu")
    golden = device / "golden.npz"
    golden.write_bytes(golden.read_bytes() + b"x")
    with pytest.raises(EdgekdError, match="golden.npz: checksum mismatch"):
        runtime.load(device, "cpu")


def load_npz(bundle: Path):
    import numpy as np

    with np.load(bundle / "golden.npz") as z:
        return next(z[k] for k in z.files if k.startswith("input")).astype("float32")
