"""The HLS lowering step on its own: a pending float op (with its QuantizeLinear parameters) -> one integer IR layer.

Scales are powers of two so every expected number is exact; the end-to-end agreement with ONNX Runtime is
tests/test_hls_backend.py's job."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from edgekd.backends.hls import ir
from edgekd.backends.hls.lowering import GraphBuilder, c_name, clamp_range, int_bias
from edgekd.backends.hls.values import Act, Pending, QConst
from edgekd.errors import BuildError


def test_relu_and_clip_fold_into_the_integer_clamp() -> None:
    relu6 = Pending("identity", "n", [], lo=0.0, hi=6.0)
    assert clamp_range(relu6, 0.125, -3, "int8") == (-3, 45)  # 6 / 0.125 - 3
    assert clamp_range(relu6, 0.0078125, 0, "uint8") == (0, 255)  # 6 / 2^-7 = 768: the type's range wins
    assert clamp_range(Pending("conv", "n", []), 0.125, 0, "int8") == (-128, 127)
    assert clamp_range(relu6, 1.0, 0, None) == ir.INT_RANGES["int32"]  # raw accumulators: no clamp


def test_bias_in_accumulator_units() -> None:
    acc = np.array([0.25, 0.5], np.float32)
    exact = QConst(np.array([5, -7], np.int32), acc.copy(), np.zeros(2, np.int32), 0)
    ints, floats = int_bias(exact, acc, 2)
    assert ints.tolist() == [5, -7] and floats.tolist() == [1.25, -3.5]  # bias scale = x_scale * w_scale: taken as is
    rescaled = QConst(np.array([5, -7], np.int32), np.array(0.125, np.float32), np.array(0, np.int32), 0)
    ints, floats = int_bias(rescaled, acc, 2)
    assert ints.tolist() == [2, -2] and floats.tolist() == [0.625, -0.875]  # 2.5 and -1.75 rounded half to even
    ints, floats = int_bias(np.array([1.0, -1.0], np.float32), acc, 2)
    assert ints.tolist() == [4, -2] and floats.tolist() == [1.0, -1.0]
    ints, floats = int_bias(None, acc, 2)
    assert ints.tolist() == [0, 0] and floats is None


def test_tensor_and_layer_names_are_unique_per_namespace() -> None:
    builder = GraphBuilder("m.onnx")
    assert builder.new_tensor("conv/out:0", (4,), "int8", 0.5, 0) == "conv_out_0"
    assert builder.new_tensor("conv/out:0", (4,), "int8", 0.5, 0) == "conv_out_0_1"
    assert builder.layer_name("conv/out:0") == "conv_out_0"  # layers have their own namespace
    assert c_name("1x") == "n1x" and c_name("///") == "t"


def test_add_rescales_both_inputs_with_one_shift() -> None:
    builder = GraphBuilder("m.onnx")
    x = builder.new_tensor("x", (2, 3, 3), "int8", 0.5, 0)
    y = builder.new_tensor("y", (2, 3, 3), "int8", 0.25, 1)
    add = Pending("add", "add0", [Act(x, 0.5, 0), Act(y, 0.25, 1)], lo=0.0)
    out = builder.finalize(add, "sum", 0.5, -2, "int8")
    layer = builder.layers[-1]
    assert isinstance(layer, ir.Add) and layer.name == "add0" and layer.inputs == [x, y] and layer.output == out == "sum"
    assert (layer.lo, layer.hi, layer.zero_point) == (-2, 127, -2)  # the Relu became the lower clamp
    assert layer.shift == 29 and [r.multiplier for r in layer.rescale] == [2**29, 2**28]  # ratios 1 and 1/2
    assert builder.tensors[out] == ir.Tensor("sum", (2, 3, 3), "int8", 0.5, -2)
    with pytest.raises(BuildError, match="without a QuantizeLinear"):
        builder.finalize(Pending("add", "add1", [Act(x, 0.5, 0), Act(y, 0.25, 1)]), "out", 1.0, 0, None)


def test_pool_then_reshape_writes_the_output_name_last() -> None:
    builder = GraphBuilder("m.onnx")
    x = builder.new_tensor("x", (4, 2, 2), "int8", 0.5, 0)
    mean = helper.make_node("ReduceMean", ["x"], ["m"], name="mean", keepdims=0)
    attrs = {"kernel": (2, 2), "stride": (1, 1), "pads": (0, 0, 0, 0), "count_include_pad": False,
             "reshapes": [(mean, lambda shape: (shape[0],))]}
    out = builder.finalize(Pending("avgpool", "mean", [Act(x, 0.5, 0)], attrs), "q", 0.5, 0, "int8")
    pool, reshape = builder.layers
    assert out == "q" and builder.tensors["q"].shape == (4,)
    assert isinstance(pool, ir.Pool) and pool.mode == "avg" and pool.output == "q_pool"
    assert builder.tensors["q_pool"].shape == (4, 1, 1) and pool.float_average  # not a GlobalAveragePool
    assert pool.requant is not None and pool.requant.scale[[0, 1, 3]].tolist() == [1.0, 0.5, 0.25]  # 1 / count
    assert isinstance(reshape, ir.Reshape) and reshape.inputs == ["q_pool"] and reshape.output == "q"


def test_float_graph_output_keeps_the_bias_out_of_the_accumulator() -> None:
    builder = GraphBuilder("m.onnx")
    x = Act(builder.new_tensor("x", (3,), "int8", 0.5, 0), 0.5, 0)
    w = QConst(np.array([[1, 2, 3], [-1, -2, -3]], np.int8), np.array(0.25, np.float32), np.array(0, np.int8), 1)
    fc = Pending("dense", "fc", [x], {"w": w, "trans_b": True, "bias": np.array([1.0, -1.0], np.float32)})
    out = builder.finalize(fc, "logits", 1.0, 0, None)
    dense = builder.layers[-1]
    assert isinstance(dense, ir.Dense) and dense.requant is None and builder.tensors[out].dtype == "int32"
    assert dense.bias.tolist() == [0, 0] and dense.out_bias.tolist() == [1.0, -1.0]  # added once, after dequantization
    assert dense.out_scale.tolist() == [0.125, 0.125] and dense.weights.dtype == np.int8
    relu_fc = Pending("dense", "fc2", [x], {"w": w, "trans_b": True, "bias": None}, lo=0.0)
    with pytest.raises(BuildError, match="Relu/Clip before a float graph output"):
        builder.finalize(relu_fc, "y", 1.0, 0, None)


def test_conv_weights_that_do_not_fit_the_input_are_named() -> None:
    builder = GraphBuilder("m.onnx")
    x = Act(builder.new_tensor("x", (2, 5, 5), "int8", 0.5, 0), 0.5, 0)
    w = QConst(np.ones((4, 3, 3, 3), np.int8), np.array(0.25, np.float32), np.array(0, np.int8), 0)
    attrs = {"w": w, "bias": None, "kdims": 2, "groups": 1, "pads": (1, 1, 1, 1), "stride": (1, 1), "dilation": (1, 1)}
    with pytest.raises(BuildError, match=r"Conv weights \[4, 3, 3, 3\] do not fit input \[2, 5, 5\]"):
        builder.finalize(Pending("conv", "conv0", [x], attrs), "y", 0.5, 0, "int8")
    x3 = Act(builder.new_tensor("x3", (3, 5, 5), "int8", 0.5, 0), 0.5, 0)
    out = builder.finalize(Pending("conv", "conv1", [x3], attrs), "y", 0.5, 0, "int8")
    conv = builder.layers[-1]
    assert isinstance(conv, ir.Conv) and builder.tensors[out].shape == (4, 5, 5) and conv.requant is not None
    assert conv.requant.scale.tolist() == [0.25] * 4  # x_scale * w_scale / y_scale
