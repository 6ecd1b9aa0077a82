"""Every ONNX Runtime session edgekd opens computes int8 exactly, also on CPUs whose U8S8 kernels saturate."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgekd.backends.onnxruntime import OnnxRuntimeOptions, OnnxRuntimeRunner
from edgekd.backends.ort_exact import exact_copy, host_int8_saturates, session_source

ort = pytest.importorskip("onnxruntime")
CIN, COUT = 64, 16
OUT_SCALE = 10.0


def _conv_model(activations: str, weights: np.ndarray) -> onnx.ModelProto:
    """Q/DQ conv with large same-sign int8 weights: the worst case for int16 pair sums."""
    act = np.uint8 if activations == "u8" else np.int8
    inits = [numpy_helper.from_array(np.array(0.02, np.float32), "sx"), numpy_helper.from_array(np.array(0, act), "zx"),
             numpy_helper.from_array(weights, "wq"), numpy_helper.from_array(np.full(COUT, 0.01, np.float32), "sw"),
             numpy_helper.from_array(np.zeros(COUT, np.int8), "zw"),
             numpy_helper.from_array(np.array(OUT_SCALE, np.float32), "sy"), numpy_helper.from_array(np.array(0, act), "zy")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "sx", "zx"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "sx", "zx"], ["xd"]),
             helper.make_node("DequantizeLinear", ["wq", "sw", "zw"], ["wd"], axis=0),
             helper.make_node("Conv", ["xd", "wd"], ["y"], pads=[1, 1, 1, 1]),
             helper.make_node("QuantizeLinear", ["y", "sy", "zy"], ["yq"]),
             helper.make_node("DequantizeLinear", ["yq", "sy", "zy"], ["out"])]
    graph = helper.make_graph(nodes, "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, CIN, 6, 6])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, COUT, 6, 6])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _reference(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    """Q/DQ semantics in float (no fusion into integer kernels)."""
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


@pytest.mark.parametrize("activations", ["u8", "s8"])
def test_runner_is_exact_where_plain_onnxruntime_saturates(tmp_path: Path, activations: str) -> None:
    rng = np.random.default_rng(0)
    weights = rng.integers(100, 128, size=(COUT, CIN, 3, 3)).astype(np.int8)
    x = np.abs(rng.standard_normal((1, CIN, 6, 6))).astype(np.float32) * 2
    model = _conv_model(activations, weights)
    path = tmp_path / "conv.onnx"
    onnx.save(model, path)
    ref = _reference(model, x)
    plain = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    runner = OnnxRuntimeRunner(path, OnnxRuntimeOptions())
    got = runner.infer({"x": x})["out"]
    assert np.abs(got - ref).max() <= OUT_SCALE * 1.001  # at most one output step (float vs integer requant)
    plain_error = float(np.abs(plain - ref).max())
    if host_int8_saturates():
        assert plain_error > 2 * OUT_SCALE, "the probe says this CPU saturates, but plain ORT was exact"
        assert runner.exact_rewrites == 1 and "int8_weights" in runner.describe()
    else:
        assert plain_error <= OUT_SCALE * 1.001
        assert runner.exact_rewrites == 0 and "int8_weights" not in runner.describe()


def test_exact_copy_is_an_exact_rewrite_and_leaves_shared_tensors_alone() -> None:
    rng = np.random.default_rng(1)
    weights = rng.integers(-128, 128, size=(COUT, CIN, 3, 3)).astype(np.int8)
    model = _conv_model("u8", weights)
    x = rng.random((1, CIN, 6, 6), dtype=np.float32)
    before = _reference(model, x)
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    assert exact_copy(copy) == 1
    inits = {t.name: numpy_helper.to_array(t) for t in copy.graph.initializer}
    assert inits["wq"].dtype == np.uint8 and inits["zw"].dtype == np.uint8
    assert np.array_equal(inits["wq"].astype(np.int16) - inits["zw"].astype(np.int16)[:, None, None, None],
                          weights.astype(np.int16))
    assert np.array_equal(_reference(copy, x), before)
    # an int8 weight that another node also reads (here a Cast) keeps its type: that reader would see +128
    shared = onnx.ModelProto()
    shared.CopyFrom(model)
    shared.graph.node.append(helper.make_node("Cast", ["wq"], ["w_as_float"], to=TensorProto.FLOAT))
    assert exact_copy(shared) == 0


def test_float_models_are_passed_through(tmp_path: Path) -> None:
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    path = tmp_path / "relu.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    assert session_source(path) == (str(path), 0)


def test_openvino_probe_tells_exact_from_saturating_hosts() -> None:
    """OpenVINO's probe and ONNX Runtime's agree: both runtimes' int8 kernels are exact on a VNNI/AMX CPU and
    miss worst-case 255 x 127 products without it (the same vpmaddubsw int16 limit)."""
    pytest.importorskip("openvino")
    from edgekd.backends.openvino import host_int8_exact

    assert host_int8_exact() == (not host_int8_saturates())  # same ISA limit (vpmaddubsw) in both runtimes
