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
