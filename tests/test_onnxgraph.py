"""edgekd.onnxgraph, the one ONNX graph index, on small real graphs built with onnx.helper (checked and run)."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgekd.onnxgraph import STORED_WEIGHT_OPS, WEIGHT_PATH_OPS, OnnxGraph, attribute, attributes, label, opset

W = np.array([[[[3]], [[-2]]], [[[0]], [[7]]]], np.int8)  # Conv weight [K=2, C=2, 1, 1]


def _qcdq_conv() -> onnx.ModelProto:
    """x -> Conv(x, DQ(Clip(w_int8))) -> Relu -> Mul(r, r) -> y, with a Constant node for the clip's upper bound."""
    inits = [numpy_helper.from_array(W, "w"), numpy_helper.from_array(np.array(-8, np.int8), "lo"),
             numpy_helper.from_array(np.array(0.5, np.float32), "s"), numpy_helper.from_array(np.array(0, np.int8), "z")]
    nodes = [helper.make_node("Constant", [], ["hi"], value=numpy_helper.from_array(np.array(7, np.int8))),
             helper.make_node("Clip", ["w", "lo", "hi"], ["wc"], name="clip"),
             helper.make_node("DequantizeLinear", ["wc", "s", "z"], ["wf"], name="dq", axis=0),
             helper.make_node("Conv", ["x", "wf"], ["c"], name="conv", kernel_shape=[1, 1]),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("Mul", ["r", "r"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 3, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 3, 3])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


def test_producer_consumers_and_constants():
    g = OnnxGraph(_qcdq_conv())
    assert g.producer("y").op_type == "Mul" and g.producer("wf").name == "dq"
    assert g.producer("x") is None and g.producer("w") is None  # graph input, initializer
    assert [n.name for n in g.consumers("c")] == ["relu"]
    assert len(g.consumers("r")) == 2  # one entry per use: Mul(r, r)
    assert g.consumers("y") == [] and g.outputs == {"y"}
    np.testing.assert_array_equal(g.constant("w"), W)
    assert g.constant("hi").item() == 7 and g.is_constant("hi")  # a Constant node's value
    assert g.initializer("hi") is None and g.initializer("w").name == "w"
    assert g.constant("x") is None and g.constant("c") is None and g.constant("") is None
    assert g.constant("w") is g.constant("w")  # converted once


def test_follow_weight_through_the_documented_ops():
    g = OnnxGraph(_qcdq_conv())
    path = g.follow_weight("wf")
    assert path.root == "w" and [n.op_type for n in path.nodes] == ["DequantizeLinear", "Clip"]
    assert path.first("Clip").name == "clip" and path.first("Transpose") is None
    stored = g.follow_weight("wf", STORED_WEIGHT_OPS)  # the dequantized value is not the stored weight
    assert stored.root is None and [n.op_type for n in stored.nodes] == []
    assert g.follow_weight("wc", STORED_WEIGHT_OPS).root == "w"
    activation = g.follow_weight("r")  # Relu is no pass-through: an activation has no root
    assert activation.root is None and activation.nodes == []
    assert g.follow_weight("w").root == "w" and g.follow_weight("w").nodes == []
    assert {"DequantizeLinear", "QuantizeLinear", "Clip", "Transpose", "Reshape", "Cast", "Identity"} == WEIGHT_PATH_OPS
    assert "DequantizeLinear" not in STORED_WEIGHT_OPS


def test_follow_weight_through_transpose_reshape_cast_identity():
    nodes = [helper.make_node("Cast", ["w"], ["w1"], to=TensorProto.FLOAT),
             helper.make_node("Transpose", ["w1"], ["w2"], perm=[1, 0]),
             helper.make_node("Reshape", ["w2", "shape"], ["w3"]),
             helper.make_node("Identity", ["w3"], ["w4"]),
             helper.make_node("MatMul", ["x", "w4"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])],
                              [numpy_helper.from_array(np.arange(6, dtype=np.int8).reshape(2, 3), "w"),
                               numpy_helper.from_array(np.array([3, 2], np.int64), "shape")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    path = OnnxGraph(model).follow_weight("w4")
    assert path.root == "w" and [n.op_type for n in path.nodes] == ["Identity", "Reshape", "Transpose", "Cast"]


def test_attribute_helpers():
    model = _qcdq_conv()
    g = OnnxGraph(model)
    conv, dq, mul = g.producer("c"), g.producer("wf"), g.producer("y")
    assert attribute(conv, "kernel_shape") == [1, 1] and attribute(conv, "group", 1) == 1
    assert attributes(dq) == {"axis": 0}
    assert label(conv) == "conv" and label(mul) == "Mul->y"
    assert opset(model) == 17 and opset(helper.make_model(model.graph, opset_imports=[])) == 0


def test_rewrites_keep_the_index_true_and_the_model_valid():
    """Drop the Clip (replace its uses, remove it, drop its dead bounds) and insert a no-op Identity: the
    model still checks, runs and computes the same, and the index answers for the new graph."""
    model = _qcdq_conv()
    x = np.random.default_rng(0).standard_normal((1, 2, 3, 3)).astype(np.float32)
    before = _run(model, x)
    g = OnnxGraph(model)
    clip = g.producer("wc")
    assert g.replace_uses("wc", "w") == 1 and g.consumers("wc") == [] and [n.name for n in g.consumers("w")] == ["clip", "dq"]
    relu = g.producer("r")
    g.rebuild(remove=[clip], insert_before={id(relu): [helper.make_node("Identity", ["c"], ["c_id"], name="id")]})
    g.set_input(g.producer("r"), 0, "c_id")
    g.remove_initializers(["lo"])
    assert [n.op_type for n in model.graph.node] == ["Constant", "DequantizeLinear", "Conv", "Identity", "Relu", "Mul"]
    assert g.producer("wc") is None and g.initializer("lo") is None and g.follow_weight("wf").root == "w"
    assert [n.name for n in g.consumers("c")] == ["id"] and [n.name for n in g.consumers("c_id")] == ["relu"]
    g.add_initializer(np.array(1.0, np.float32), "one")
    np.testing.assert_array_equal(g.constant("one"), np.float32(1.0))
    assert model.graph.initializer[-1].name == "one"
    onnx.checker.check_model(model)
    np.testing.assert_array_equal(_run(model, x), before)


def test_a_long_chain_is_indexed_and_rewritten_in_linear_time():
    """20 000 Identity nodes removed with one index: replace_uses is O(uses), rebuild one pass (an O(n^2)
    walk would take minutes here)."""
    n = 20_000
    nodes = [helper.make_node("Identity", [f"t{i}"], [f"t{i + 1}"]) for i in range(n)]
    nodes.append(helper.make_node("Relu", [f"t{n}"], ["y"]))
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("t0", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    start = time.perf_counter()
    g = OnnxGraph(model)
    identities = [node for node in g.nodes if node.op_type == "Identity"]
    for node in identities:
        g.replace_uses(node.output[0], node.input[0])
    g.rebuild(remove=identities)
    elapsed = time.perf_counter() - start
    assert [(n.op_type, list(n.input)) for n in model.graph.node] == [("Relu", ["t0"])]
    assert g.producer("y").op_type == "Relu" and len(g.nodes) == 1
    assert elapsed < 30, f"{elapsed:.1f} s for {n} nodes"


@pytest.mark.parametrize("module", ["edgekd.onnxgraph", "edgekd.model_inspect", "edgekd.onnx_files", "edgekd.lint",
                                    "edgekd.backends.tensorrt.lint", "edgekd.parity"])
def test_graph_modules_import_no_torch(module):
    code = f"import sys, {module}; assert 'torch' not in sys.modules, sorted(m for m in sys.modules if 'torch' in m)"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
