"""One compress run, targets with different quantization numerics: each group gets its own quantized model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from edgekd.bundle import read_manifest, verify_bundle
from edgekd.config import load_target
from edgekd.pipeline import CompressOptions, compress, target_groups


def test_target_groups_order() -> None:
    groups = target_groups([load_target(n) for n in ("tensorrt-orin-nano", "cpu", "fpga-zcu104", "openvino-cpu")])
    assert [[t.name for t in g] for g in groups] == [["cpu", "openvino-cpu"], ["tensorrt-orin-nano"], ["fpga-zcu104"]]


def _activation_zero_points(path: Path) -> set[int]:
    model = onnx.load(str(path))
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    weights = {n.input[0] for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits}
    return {int(v) for n in model.graph.node if n.op_type == "QuantizeLinear" and len(n.input) > 2
            for v in np.ravel(inits[n.input[2]]) if n.output[0] not in weights}


def test_cpu_keeps_int8_kernels_next_to_a_tensorrt_target(tmp_path: Path) -> None:
    out = tmp_path / "b"
    report = compress("builtin:digits-student", data="builtin:digits", recipe="ptq",
                      targets=["cpu", "tensorrt-orin-nano"], out=out,
                      options=CompressOptions(golden_samples=8, measure=False))
    assert report["targets"]["cpu"]["build"]["precision"] == "int8"  # not "mixed": uint8 activations kept
    assert "quantize" in report["passes"] and "quantize@tensorrt-orin-nano" in report["passes"]
    manifest = read_manifest(out)
    trt = manifest["targets"]["tensorrt-orin-nano"]
    assert trt["source"] == "variants/model.tensorrt.onnx"
    assert _activation_zero_points(out / "variants" / "model.tensorrt.onnx") == {0}  # symmetric for TensorRT
    assert max(_activation_zero_points(out / "model.onnx")) > 0  # asymmetric uint8 for ONNX Runtime
    assert manifest["targets"]["cpu"]["golden_reference"] == "reference"
    assert verify_bundle(out) == []
