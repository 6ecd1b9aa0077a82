"""edgekd inspect on float, QDQ (ORT, brevitas, hand-built int4/uint8) and QOperator ONNX files."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from edgekd.artifact import Artifact
from edgekd.cli import main
from edgekd.errors import EdgekdError
from edgekd.export import export_onnx
from edgekd.model_inspect import format_table, inspect_onnx
from edgekd.models import DemoStudent
from edgekd.nm import nm_mask
from edgekd.passes import PASSES, PassContext
from edgekd.passes.sparsity import SparsifyConfig

SPARSE = ("features.3.weight", "classifier.1.weight")


@pytest.fixture(scope="module")
def sparse_onnx(tmp_path_factory, digits) -> tuple:
    torch.manual_seed(0)
    art = PASSES.get("sparsify").fn(Artifact("torch", DemoStudent(1, 10, 8)), SparsifyConfig(), PassContext(data=digits))
    path = tmp_path_factory.mktemp("inspect") / "sparse.onnx"
    export_onnx(art, path, example=digits.x_test)
    return path, digits


def _ort_quantized(src, digits, dst, fmt: str):
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter([{"input": digits.x_train[i : i + 1]} for i in range(16)])

        def get_next(self):
            return next(self.items, None)

    quantize_static(str(src), str(dst), Reader(), quant_format=getattr(QuantFormat, fmt), per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return dst


def test_float_model_table_and_json(sparse_onnx, capsys):
    path, _ = sparse_onnx
    info = inspect_onnx(path)
    assert [la.op_type for la in info.layers] == ["Conv", "Conv", "Gemm", "Gemm"]
    conv1, conv2, fc1, fc2 = info.layers
    assert conv1.reason == "input channels 1 not a multiple of 4" and conv1.nm is None
    assert conv2.nm.compliant and fc1.nm.compliant and not fc2.nm.compliant
    # MACs per sample: conv 8x8 output, 16 x 8 x 3 x 3 weights; fc 64 -> 32
    assert conv2.macs == 4 * 4 * 16 * 8 * 9 and fc1.macs == 64 * 32 and conv1.macs == 8 * 8 * 8 * 9
    assert fc1.sparsity == 0.5 and conv1.weight_quant is None
    t = info.totals()
    assert (t["eligible"], t["nm_compliant"], t["weight_quantized"]) == (3, 2, 0)
    text = format_table(info)
    assert "2:4: 2 of 3 eligible layers compliant" in text and "input channels 1 not a multiple of 4" in text
    assert main(["inspect", str(path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["schema"] == "edgekd.inspect/1" and data["totals"]["nm_compliant"] == 2
    assert [la["nm_status"] for la in data["layers"]] == ["n/a", "yes", "yes", "no"]


def test_require_nm_exit_codes(sparse_onnx, capsys):
    path, _ = sparse_onnx
    assert main(["inspect", str(path), "--require-nm", "features.3", "--require-nm", "classifier.1"]) == 0
    assert main(["inspect", str(path), "--require-nm", "*"]) == 1  # classifier.3 is eligible but dense
    assert "classifier.3" in capsys.readouterr().err
    assert main(["inspect", str(path), "--require-nm", "features.0"]) == 1  # not eligible
    assert main(["inspect", str(path), "--pattern", "1:4", "--require-nm", "features.3"]) == 1
    assert main(["inspect", str(path), "--pattern", "4:2"]) == 2
    with pytest.raises(EdgekdError, match="not found"):
        inspect_onnx(path.with_name("missing.onnx"))


@pytest.mark.parametrize("fmt", ["QDQ", "QOperator"])
def test_ort_quantized_int8_weights_keep_2to4(sparse_onnx, tmp_path, fmt):
    path, digits = sparse_onnx
    q = _ort_quantized(path, digits, tmp_path / f"q_{fmt}.onnx", fmt)
    info = inspect_onnx(q)
    by_weight = {la.weight.removesuffix("_quantized"): la for la in info.layers}  # ORT renames the initializers
    for name in SPARSE:
        layer = by_weight[name]
        assert layer.nm is not None and layer.nm.compliant, (fmt, name)
        wq = layer.weight_quant
        assert (wq.bits, wq.dtype, wq.symmetric) == (8, "int8", True)
        assert layer.input_quant is not None and layer.input_quant.dtype == "uint8"
    assert sum(la.weight_quant is not None for la in info.layers) == 4
    if fmt == "QDQ":
        assert all(la.op_type in ("Conv", "Gemm") for la in info.layers)
        assert by_weight["features.3.weight"].weight_quant.per_channel
        assert info.totals()["dequantize_linear"] > 0
    else:
        assert [la.op_type for la in info.layers] == ["QLinearConv", "QLinearConv", "QGemm", "QGemm"]
        assert by_weight["classifier.1.weight"].macs == 64 * 32  # shape inference cannot see through QGemm
        assert by_weight["classifier.1.weight"].output_quantized


@pytest.mark.parametrize("weight_bits", [8, 4])
def test_sparse_then_qat_export_keeps_2to4_in_integer_weights(sparse_onnx, digits, digits_teacher, tmp_path, weight_bits):
    """The whole chain: sparsify -> brevitas KD-QAT (masks re-applied by mask_hook) -> edgekd's QDQ
    export -> inspect follows DequantizeLinear back to the integer initializers."""
    from edgekd.passes.quantize import QuantizeConfig
    from edgekd.train import FinetuneConfig

    torch.manual_seed(0)
    ctx = PassContext(teacher=digits_teacher, data=digits)
    sparse = PASSES.get("sparsify").fn(Artifact("torch", DemoStudent(1, 10, 8)), SparsifyConfig(), ctx)
    qcfg = QuantizeConfig(mode="qat", weight_bits=weight_bits, sensitivity="off", check_int8=False,
                          calibration_samples=64, finetune=FinetuneConfig(epochs=1, lr=1e-3, seed=0))
    quant = PASSES.get("quantize").fn(sparse, qcfg, ctx)
    art = export_onnx(quant, tmp_path / "q.onnx", example=digits.x_test)
    info = inspect_onnx(art.path)
    for name in ("features.3", "classifier.1"):
        (layer,) = [la for la in info.layers if f"/{name}/" in la.name]
        assert layer.nm is not None and layer.nm.compliant, name
        wq = layer.weight_quant
        assert wq is not None and wq.storage == "integer initializer" and wq.per_channel
        assert min(wq.bits, wq.value_bits) == weight_bits  # w4 may sit in an int8 container
        assert layer.input_quant is not None and layer.input_quant.bits == 8
    assert info.totals()["nm_compliant"] == 2 and info.totals()["weight_quantized"] == 4


def _graph_model(nodes, inits, x_shape, y_shape, name="m"):
    graph = helper.make_graph(nodes, name, [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)], initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_hand_built_qdq_variants(tmp_path):
    rng = np.random.default_rng(0)
    # (1) int8 weights clipped to [-8, 7] (4-bit) behind a per-channel DequantizeLinear, 2:4
    w = rng.integers(-8, 8, size=(8, 8, 1, 1)).astype(np.int8)
    w = (w * nm_mask(w.astype(np.float32) + 0.5, 2, 4)).astype(np.int8)
    # (2) float weights quantized at run time (Q -> DQ), dense
    wf = rng.normal(size=(8, 8, 1, 1)).astype(np.float32)
    # (3) uint8 MatMul weights with zero point 128: q == 128 is a zero; groups along rows ([in, out])
    wm = rng.integers(0, 256, size=(8, 4)).astype(np.uint8)
    keep = nm_mask(wm.astype(np.float32) - 128 + 0.5, 2, 4, axis=0)
    wm = np.where(keep, wm, 128).astype(np.uint8)
    inits = [numpy_helper.from_array(w, "w_q"), numpy_helper.from_array(np.full(8, 0.1, np.float32), "w_s"),
             numpy_helper.from_array(np.zeros(8, np.int8), "w_zp"),
             numpy_helper.from_array(np.array(-8, np.int8), "lo"), numpy_helper.from_array(np.array(7, np.int8), "hi"),
             numpy_helper.from_array(wf, "wf"), numpy_helper.from_array(np.array(0.05, np.float32), "s"),
             numpy_helper.from_array(np.array(0, np.int8), "zp"),
             numpy_helper.from_array(wm, "wm"), numpy_helper.from_array(np.array(0.02, np.float32), "sm"),
             numpy_helper.from_array(np.array(128, np.uint8), "zpm"),
             numpy_helper.from_array(np.array([1, 8], np.int64), "flat")]
    nodes = [helper.make_node("Clip", ["w_q", "lo", "hi"], ["w_c"]),
             helper.make_node("DequantizeLinear", ["w_c", "w_s", "w_zp"], ["w_dq"], axis=0),
             helper.make_node("Conv", ["x", "w_dq"], ["c1"], name="conv_int4"),
             helper.make_node("QuantizeLinear", ["wf", "s", "zp"], ["wf_q"]),
             helper.make_node("DequantizeLinear", ["wf_q", "s", "zp"], ["wf_dq"]),
             helper.make_node("Conv", ["c1", "wf_dq"], ["c2"], name="conv_runtime_q"),
             helper.make_node("Reshape", ["c2", "flat"], ["f"]),
             helper.make_node("DequantizeLinear", ["wm", "sm", "zpm"], ["wm_dq"]),
             helper.make_node("MatMul", ["f", "wm_dq"], ["y"], name="matmul_u8")]
    model = _graph_model(nodes, inits, [1, 8, 1, 1], [1, 4])
    onnx.checker.check_model(model)
    path = tmp_path / "hand.onnx"
    onnx.save(model, path)
    info = inspect_onnx(path)
    c1, c2, mm = info.layers
    assert c1.nm.compliant and (c1.weight_quant.bits, c1.weight_quant.per_channel, c1.weight_quant.clip) == (4, True, (-8.0, 7.0))
    assert c2.weight_quant.storage == "float, quantized at run time" and not c2.nm.compliant
    assert mm.nm.compliant and mm.weight_quant.dtype == "uint8" and not mm.weight_quant.symmetric
    assert mm.macs == 8 * 4 and c1.macs == 64
    assert mm.zeros == int((wm == 128).sum())
    # a weight that is not a constant is reported, not skipped
    nodes2 = [helper.make_node("Conv", ["x", "x"], ["y"], name="dynamic")]
    onnx.save(_graph_model(nodes2, [], [8, 8, 1, 1], [8, 8, 1, 1]), tmp_path / "dyn.onnx")
    (layer,) = inspect_onnx(tmp_path / "dyn.onnx").layers
    assert layer.reason == "weight is computed at run time (not a constant)"


def _tiny_float_onnx(path, opset: int = 17):
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten(), torch.nn.Linear(8, 4)).eval()
    torch.onnx.export(net, (torch.randn(1, 3, 8, 8),), str(path), dynamo=False, opset_version=opset,
                      input_names=["input"], output_names=["logits"])
    return path


@pytest.mark.parametrize("case", ["empty", "text", "lfs", "truncated", "folder", "bundle", "ir", "external"])
def test_files_that_are_not_onnx_say_what_they_are(case, tmp_path, capsys):
    """inspect and lint: a short error naming what the file is and what to do, exit 2, no traceback."""
    good = _tiny_float_onnx(tmp_path / "good.onnx")
    path = tmp_path / "model.onnx"
    expect = {"empty": "empty (0 bytes)", "text": "text file", "lfs": "Git LFS pointer", "truncated": "truncated",
              "folder": "is a folder", "bundle": "bundle folder", "ir": "OpenVINO IR", "external": "external data"}[case]
    if case == "empty":
        path.write_bytes(b"")
    elif case == "text":
        path.write_text("<html>404 not found</html>\n")
    elif case == "lfs":
        path.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:00\nsize 9\n")
    elif case == "truncated":
        path.write_bytes(good.read_bytes()[:700])
    elif case in ("folder", "bundle"):
        path = tmp_path / "out"
        path.mkdir()
        if case == "bundle":
            (path / "manifest.json").write_text("{}")
    elif case == "ir":
        path = tmp_path / "model.xml"
        path.write_text("<?xml version='1.0'?><net name='m' version='11'></net>")
    else:
        onnx.save_model(onnx.load(str(good)), str(path), save_as_external_data=True, location="model.onnx.data",
                        size_threshold=0)
        (tmp_path / "model.onnx.data").unlink()
    for command in ("inspect", "lint"):
        assert main([command, str(path)]) == 2
        err = capsys.readouterr().err
        assert expect in err and "hint:" in err and "Traceback" not in err, (command, err)


def test_qoperator_int8_activations_through_contrib_ops(tmp_path):
    """ORT QOperator S8S8: QGemm reads the output of QLinearGlobalAveragePool (a com.microsoft op that shape
    inference leaves untyped); its input is int8, not the uint8 fallback."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    src = _tiny_float_onnx(tmp_path / "f.onnx")
    rng = np.random.default_rng(0)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter([{"input": rng.standard_normal((1, 3, 8, 8)).astype(np.float32)} for _ in range(4)])

        def get_next(self):
            return next(self.items, None)

    dst = tmp_path / "qop.onnx"
    quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QOperator, activation_type=QuantType.QInt8,
                    weight_type=QuantType.QInt8)
    layers = {la.op_type: la for la in inspect_onnx(dst).layers}
    assert set(layers) == {"QLinearConv", "QGemm"}
    assert layers["QLinearConv"].input_quant.dtype == "int8"
    assert layers["QGemm"].input_quant.dtype == "int8"


def test_dynamic_height_width_makes_macs_unknown_not_tiny(tmp_path):
    """Dynamic H/W used to count as 1 each: a 3x3 conv on 8x8 reported 216 MACs instead of 8*6*6*27."""
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten(), torch.nn.Linear(8, 4)).eval()
    path = tmp_path / "dyn.onnx"
    torch.onnx.export(net, (torch.randn(1, 3, 8, 8),), str(path), dynamo=False, opset_version=17,
                      input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "N", 2: "H", 3: "W"}})
    info = inspect_onnx(path)
    conv, fc = info.layers
    assert conv.macs is None and fc.macs == 8 * 4
    assert info.totals()["macs_unknown_layers"] == 1
    assert any("dynamic dimensions besides the batch" in note for note in info.notes)
    assert "(+ 1 layer(s) unknown)" in format_table(info)


def test_blocked_dequantize_linear(tmp_path, blocked_dq_matmul):
    """Opset 21 DequantizeLinear with block_size (one scale per 4 rows of a MatMul weight) crashed with a
    broadcast ValueError; the weight is now dequantized block-wise."""
    from edgekd.model_inspect import _Graph, _Resolver

    model, w, scale = blocked_dq_matmul
    path = tmp_path / "block.onnx"
    onnx.save(model, str(path))
    (layer,) = inspect_onnx(path).layers
    assert layer.weight_quant.block_size == 4 and "blk4" in layer.weight_quant.short()
    assert layer.macs == 16 * 8 and layer.zeros == int((w == 0).sum())
    value, _ = _Resolver(_Graph(model)).resolve("w")
    np.testing.assert_allclose(value, w * np.repeat(scale, 4, axis=0), rtol=1e-6)


def test_weighted_ops_in_subgraphs_are_noted(tmp_path):
    w = numpy_helper.from_array(np.ones((4, 4), np.float32), "w")
    then_g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["t"])], "then", [],
                               [helper.make_tensor_value_info("t", TensorProto.FLOAT, [1, 4])])
    else_g = helper.make_graph([helper.make_node("Identity", ["x"], ["e"])], "else", [],
                               [helper.make_tensor_value_info("e", TensorProto.FLOAT, [1, 4])])
    graph = helper.make_graph([helper.make_node("If", ["c"], ["y"], then_branch=then_g, else_branch=else_g)], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4]),
                               helper.make_tensor_value_info("c", TensorProto.BOOL, [])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], [w])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "if.onnx"))
    info = inspect_onnx(tmp_path / "if.onnx")
    assert not info.layers and any("1 weighted op(s) inside If/Loop/Scan" in n for n in info.notes)
