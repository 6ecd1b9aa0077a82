"""Regression: the profiler's shared-input hot path must not pin the batch size of later checked calls."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from edgekd.artifact import Artifact
from edgekd.backends import BACKENDS
from edgekd.config import load_target
from edgekd.export import export_onnx
from edgekd.models import DemoStudent


def test_hot_path_then_other_batch(tmp_path: Path, digits) -> None:
    torch.manual_seed(0)
    onnx_path = export_onnx(Artifact("torch", DemoStudent().eval()), tmp_path / "m.onnx", example=digits.x_test).path
    target = load_target("openvino-cpu")
    backend = BACKENDS.get("openvino")
    build = backend.build(onnx_path, target, tmp_path / "ov")
    runner = backend.load(tmp_path / "ov", target, build)
    x = digits.x_test[:16]
    for _ in range(5):
        runner.infer_unchecked({"input": x[:1]})
    out16 = runner.infer({"input": x})["logits"]
    out1 = runner.infer({"input": x[:1]})["logits"]
    assert out16.shape == (16, 10) and out1.shape == (1, 10)
    np.testing.assert_allclose(out16[:1], out1, atol=1e-5)
