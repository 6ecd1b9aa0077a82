"""ONNX files from other tools often keep their weights in a sidecar file: every backend must cope."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import onnx
import torch

from edgekd.artifact import Artifact
from edgekd.backends import BACKENDS
from edgekd.config import load_target
from edgekd.export import export_onnx, onnx_outputs
from edgekd.models import DemoStudent


def _external(tmp_path: Path, digits) -> Path:
    torch.manual_seed(0)
    path = export_onnx(Artifact("torch", DemoStudent().eval()), tmp_path / "src" / "m.onnx", example=digits.x_test).path
    model = onnx.load(str(path))
    onnx.save(model, str(path), save_as_external_data=True, location="m.onnx.data", size_threshold=0)
    assert (path.parent / "m.onnx.data").is_file()
    return path


def test_backends_copy_external_data(tmp_path: Path, digits) -> None:
    src = _external(tmp_path, digits)
    expected = onnx_outputs(src, digits.x_test[:4])
    for name in ("cpu", "tensorrt-orin-nano"):
        target = load_target(name)
        backend = BACKENDS.get(target.backend)
        out = tmp_path / name
        if name.startswith("tensorrt"):  # a float model: no int8/2:4 requirements for this check
            target = dataclasses.replace(target, options=dataclasses.replace(
                target.options, lint="warn", sparse_weights=False, precision="fp16"))
        build = backend.build(src, target, out)
        assert not (out / "m.onnx.data").exists()
        copied = onnx.load(str(out / "model.onnx"), load_external_data=False)
        assert all(not t.external_data for t in copied.graph.initializer)  # self-contained copy
        assert "model.onnx" in build.files
        if build.runnable:
            got = backend.load(out, target, build).infer({"input": digits.x_test[:4]})["logits"]
            np.testing.assert_allclose(got, expected, atol=1e-5)
