"""Golden snapshots of the generated C++ for a tiny hand-built QDQ model with power-of-two scales
(the "hls" flavor the quantization pass emits): requantization is an exact shift, so the C
simulation must equal ONNX Runtime on every element. Regenerate snapshots after an intended
writer change with ``EDGEKD_UPDATE_GOLDEN=1 pytest tests/test_hls_golden.py``."""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from edgekd.backends.hls import HLSBackend
from edgekd.backends.hls.frontend import load_graph
from edgekd.config import load_target

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="g++ is needed for C simulation")
GOLDEN = Path(__file__).parent / "golden" / "hls"
SNAPSHOT_FILES = ("firmware/edgekd_top.cpp", "firmware/edgekd_top.h", "firmware/parameters.h", "firmware/defines.h",
                  "firmware/io.h", "firmware/weights/conv.h", "firmware/weights/fc.h", "build_prj.tcl")


def tiny_pow2_qdq(path: Path) -> Path:
    """input 1x4x4 -> Conv(2, 3x3, pad 1) -> Relu -> MaxPool 2 -> Flatten -> Gemm(3), all scales 2^-k, zero point 0."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = []

    def const(name: str, value: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    nodes = []

    def q(x: str, scale: float, out: str) -> str:
        nodes.append(helper.make_node("QuantizeLinear", [x, const(f"{out}_s", np.float32(scale)),
                                                         const(f"{out}_z", np.int8(0))], [f"{out}_q"], name=f"Q_{out}"))
        nodes.append(helper.make_node("DequantizeLinear", [f"{out}_q", f"{out}_s", f"{out}_z"], [out], name=f"DQ_{out}"))
        return out

    def dq_const(name: str, q_values: np.ndarray, scale: np.ndarray, axis: int = 0) -> str:
        zp = np.zeros(scale.shape, np.int32 if q_values.dtype == np.int32 else np.int8)
        nodes.append(helper.make_node("DequantizeLinear", [const(f"{name}_q", q_values), const(f"{name}_s", scale),
                                                           const(f"{name}_z", zp)], [name], name=f"DQ_{name}", axis=axis))
        return name

    x = q("input", 2.0**-4, "x")
    w_scale = np.array([2.0**-6, 2.0**-5], np.float32)
    w = dq_const("conv_w", rng.integers(-127, 128, (2, 1, 3, 3)).astype(np.int8), w_scale)
    b = dq_const("conv_b", rng.integers(-300, 300, 2).astype(np.int32), (w_scale * 2.0**-4).astype(np.float32))
    nodes.append(helper.make_node("Conv", [x, w, b], ["conv"], name="conv", pads=[1, 1, 1, 1], kernel_shape=[3, 3]))
    nodes.append(helper.make_node("Relu", ["conv"], ["relu"], name="relu"))
    h = q("relu", 2.0**-3, "h")
    nodes.append(helper.make_node("MaxPool", [h], ["pool"], name="pool", kernel_shape=[2, 2], strides=[2, 2]))
    p = q("pool", 2.0**-3, "p")
    nodes.append(helper.make_node("Flatten", [p], ["flat"], name="flatten", axis=1))
    fw = dq_const("fc_w", rng.integers(-127, 128, (3, 8)).astype(np.int8), np.array(2.0**-5, np.float32))
    fb = dq_const("fc_b", rng.integers(-500, 500, 3).astype(np.int32), np.array(2.0**-8, np.float32))
    nodes.append(helper.make_node("Gemm", ["flat", fw, fb], ["fc"], name="fc", transB=1))
    nodes.append(helper.make_node("QuantizeLinear", ["fc", const("y_s", np.float32(0.25)), const("y_z", np.int8(0))],
                                  ["y_q"], name="Q_y"))
    nodes.append(helper.make_node("DequantizeLinear", ["y_q", "y_s", "y_z"], ["logits"], name="DQ_y"))
    graph = helper.make_graph(nodes, "tiny_pow2", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 1, 4, 4])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    tmp = tmp_path_factory.mktemp("hls_golden")
    model = tiny_pow2_qdq(tmp / "tiny_pow2.onnx")
    x = np.random.default_rng(1).uniform(-4, 4, (256, 1, 4, 4)).astype(np.float32)
    target = load_target("fpga-zcu104")
    target = dataclasses.replace(target, options=dataclasses.replace(target.options, tolerance_lsb=0, reuse_factor=2))
    result = HLSBackend().build(model, target, tmp / "fpga", golden=x)
    return tmp / "fpga", result


@pytest.mark.parametrize("rel", SNAPSHOT_FILES)
def test_generated_cpp_matches_snapshot(project: tuple[Path, object], rel: str) -> None:
    out, _ = project
    text = (out / rel).read_text()
    golden = GOLDEN / rel.replace("/", "__")
    if os.environ.get("EDGEKD_UPDATE_GOLDEN"):
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(text)
    assert golden.is_file(), f"missing snapshot {golden}; run with EDGEKD_UPDATE_GOLDEN=1"
    assert text == golden.read_text(), f"{rel} differs from {golden} (EDGEKD_UPDATE_GOLDEN=1 to accept)"


def test_power_of_two_scales_are_exact_shifts(project: tuple[Path, object], tmp_path: Path) -> None:
    _, result = project
    agreement = result.agreement.to_dict()
    assert agreement["requant"] == "fixed_point" and agreement["tolerance_lsb"] == 0
    assert agreement["exact"] == agreement["elements"] == 256 * 3 and agreement["ok"]
    graph = load_graph(tiny_pow2_qdq(tmp_path / "m.onnx"))
    requants = [la.requant for la in graph.layers if getattr(la, "requant", None) is not None]
    assert len(requants) == 2 and all(rq.power_of_two for rq in requants)
    assert all(int(m) == 2**30 for rq in requants for m in rq.multiplier)  # 0.5 * 2^31: a pure shift
    est = result.estimate.to_dict()
    assert [la["dsp"] for la in est["layers"] if la["kind"] == "conv"] == [5]  # ceil(18 mults / R 2 * 0.5 DSP); shifts: no DSP
    assert est["total"]["macs"] == 2 * 16 * 9 + 3 * 8
