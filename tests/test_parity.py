from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from edgekd.config import ParitySettings
from edgekd.parity import compare_outputs, quantized_output_step

TIGHT = ParitySettings(atol=0.01, rtol=0.0, min_top1_agreement=1.0, output_steps=1.0)


def test_one_output_step_is_allowed_two_are_not() -> None:
    ref = np.array([[0.5, 0.1, 0.0]])
    assert not compare_outputs(ref, ref + np.array([[0.0, 0.09, 0.0]]), TIGHT).ok
    assert compare_outputs(ref, ref + np.array([[0.0, 0.09, 0.0]]), TIGHT, output_step=0.1).ok
    res = compare_outputs(ref, ref + np.array([[0.0, 0.3, 0.0]]), TIGHT, output_step=0.1)
    assert not res.ok and "+ 1 x 0.1 (output step) = 0.11 + 0 x |ref|" in res.failures[0]
    assert res.rule.startswith("|err| <= atol 0.01 + rtol 0 x |ref| + 1 x 0.1 (output step)")
    assert compare_outputs(ref, ref + np.array([[0.0, 0.19, 0.0]]),
                           ParitySettings(atol=0.01, rtol=0.0, output_steps=2.0), output_step=0.1).ok


def test_top1_and_shape_failures() -> None:
    ref = np.array([[1.0, 0.0], [0.0, 1.0]])
    res = compare_outputs(ref, ref[:, ::-1].copy(), ParitySettings(atol=10, rtol=0, min_top1_agreement=0.99))
    assert res.top1_agreement == 0.0 and "top-1 agreement 0.0% < 99%" in res.failures[0]
    assert not compare_outputs(ref, ref[:1]).ok


def test_rounding_ties_are_not_disagreements() -> None:
    """Two int8 runtimes may round each logit a step apart: a flip between logits one step apart is rounding."""
    ref = np.array([[0.5, 0.4, 0.0], [0.9, 0.0, 0.1]])
    cand = np.array([[0.4, 0.5, 0.0], [0.9, 0.0, 0.1]])  # sample 0 flips across a lead of one 0.1 step
    loose = ParitySettings(atol=0.15, rtol=0.0, output_steps=1.0, min_top1_agreement=0.99)
    res = compare_outputs(ref, cand, loose, output_step=0.1)
    assert res.ok and res.top1_agreement == 0.5 and res.near_tie_flips == 1, res
    assert "flips across a lead <= 0.2 are rounding ties" in res.rule
    # a float output has no rounding allowance: the same flip within atol fails top-1
    res = compare_outputs(ref, cand, loose)
    assert not res.ok and res.failures == ("top-1 agreement 50.0% < 99%",), res.failures
    # a flip across a wider lead fails even with every element within atol
    wide = compare_outputs(np.array([[0.9, 0.6]]), np.array([[0.7, 0.75]]), loose, output_step=0.1)
    assert not wide.ok and wide.near_tie_flips == 0 and "top-1 agreement 0.0%" in wide.failures[0]


def test_quantized_output_step(tmp_path: Path) -> None:
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor("s", TensorProto.FLOAT, [], [0.25]),
                               helper.make_tensor("z", TensorProto.INT8, [], [0])])
    path = tmp_path / "q.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    assert quantized_output_step(path) == 0.25
    float_graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                                    [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                                    [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    onnx.save(helper.make_model(float_graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    assert quantized_output_step(path) == 0.0


def test_the_rule_shown_is_the_rule_applied() -> None:
    """A result that passes only thanks to the output-step allowance says so in its rule (it used to print
    "atol + rtol" alone while adding 2 output steps)."""
    loose = ParitySettings(atol=1e-4, rtol=1e-3, output_steps=2.0)
    ref = np.array([[0.5, 0.1, 0.0]])
    res = compare_outputs(ref, ref + np.array([[0.0, 0.13, 0.0]]), loose, output_step=0.066)
    assert res.ok and "2 x 0.066 (output step)" in res.rule and res.to_dict()["rule"] == res.rule
    strict = ParitySettings(atol=1e-4, rtol=1e-3, output_steps=0.0)
    res = compare_outputs(ref, ref + np.array([[0.0, 0.13, 0.0]]), strict, output_step=0.066)
    assert not res.ok and "output step" not in res.rule
