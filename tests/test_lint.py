"""edgekd lint --target tensorrt: deliberately wrong Q/DQ graphs are flagged, a correct one passes.

Models are written with onnx.helper (one defect each) and checked with onnx.checker and run once in
ONNX Runtime, so each is a real, valid ONNX model; plus ORT-quantized models from a torch network.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgekd.backends.tensorrt.lint import lint_tensorrt
from edgekd.cli import main
from edgekd.lint import lint

C = 8  # channels of the tiny residual block


def _qdq_block(*, act_zp: int = 0, act_uint8: bool = False, residual_q: bool = True, qlinear: bool = False,
               weight_axis: int = 0, opset: int = 17, per_channel_act: bool = False, sparse24: bool = False,
               fc_float_input: bool = False) -> onnx.ModelProto:
    """input -> Q/DQ -> Conv -> Relu -> Q/DQ -> Conv -> Add(residual) -> Relu -> GAP -> Q/DQ -> Gemm."""
    rng = np.random.default_rng(0)
    inits, nodes = [], []
    zp_np = np.uint8 if act_uint8 else np.int8
    zp_value = 128 if act_uint8 else act_zp

    def const(name: str, arr: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(arr, name))
        return name

    def qdq(x: str, tag: str, scale: float = 0.05) -> str:
        s = const(f"{tag}_s", np.full((C,), scale, np.float32) if per_channel_act and tag == "in" else np.float32(scale))
        z = const(f"{tag}_zp", np.full((C,), zp_value, zp_np) if per_channel_act and tag == "in" else np.array(zp_value, zp_np))
        axis = [helper.make_attribute("axis", 1)] if per_channel_act and tag == "in" else []
        q = helper.make_node("QuantizeLinear", [x, s, z], [f"{tag}_q"], name=f"{tag}_Q")
        d = helper.make_node("DequantizeLinear", [f"{tag}_q", s, z], [f"{tag}_dq"], name=f"{tag}_DQ")
        q.attribute.extend(axis)
        d.attribute.extend(axis)
        nodes.extend([q, d])
        return f"{tag}_dq"

    def weight(tag: str, shape: tuple[int, ...], axis: int) -> str:
        w = rng.integers(-100, 100, size=shape).astype(np.int8)
        if sparse24:  # zero 2 of every 4 consecutive input channels
            w[:, 0::4] = 0
            w[:, 1::4] = 0
        const(f"{tag}_w", w)
        if opset < 13:  # per-channel DequantizeLinear (axis) only exists from opset 13
            s, z = const(f"{tag}_ws", np.float32(0.01)), const(f"{tag}_wzp", np.array(0, np.int8))
            nodes.append(helper.make_node("DequantizeLinear", [f"{tag}_w", s, z], [f"{tag}_wdq"], name=f"{tag}_wDQ"))
            return f"{tag}_wdq"
        n = shape[axis]
        s = const(f"{tag}_ws", np.full((n,), 0.01, np.float32))
        z = const(f"{tag}_wzp", np.zeros((n,), np.int8))
        nodes.append(helper.make_node("DequantizeLinear", [f"{tag}_w", s, z], [f"{tag}_wdq"], name=f"{tag}_wDQ",
                                      axis=axis))
        return f"{tag}_wdq"

    x_dq = qdq("input", "in")
    if qlinear:
        const("c1_w", rng.integers(-100, 100, size=(C, C, 3, 3)).astype(np.int8))
        const("c1_ws", np.float32(0.01))
        const("c1_wzp", np.array(0, np.int8))
        const("c1_ys", np.float32(0.05))
        const("c1_yzp", np.array(zp_value, zp_np))
        nodes.append(helper.make_node("QLinearConv", ["in_q", "in_s", "in_zp", "c1_w", "c1_ws", "c1_wzp", "c1_ys",
                                                      "c1_yzp"], ["c1_q"], name="c1_qlinear", pads=[1, 1, 1, 1]))
        nodes.append(helper.make_node("DequantizeLinear", ["c1_q", "c1_ys", "c1_yzp"], ["c1"], name="c1_DQ"))
    else:
        w1 = weight("c1", (C, C, 3, 3), weight_axis)
        const("c1_b", np.zeros(C, np.float32))
        nodes.append(helper.make_node("Conv", [x_dq, w1, "c1_b"], ["c1"], name="conv1", pads=[1, 1, 1, 1]))
    nodes.append(helper.make_node("Relu", ["c1"], ["r1"], name="relu1"))
    r1_dq = qdq("r1", "r1")
    w2 = weight("c2", (C, C, 3, 3), 0)
    nodes.append(helper.make_node("Conv", [r1_dq, w2], ["c2"], name="conv2", pads=[1, 1, 1, 1]))
    residual = x_dq if residual_q else "r1"  # "r1" is a float activation: no Q/DQ on the skip input
    nodes.append(helper.make_node("Add", ["c2", residual], ["add"], name="skip_add"))
    nodes.append(helper.make_node("Relu", ["add"], ["r2"], name="relu2"))
    nodes.append(helper.make_node("GlobalAveragePool", ["r2"], ["gap"], name="gap"))
    nodes.append(helper.make_node("Flatten", ["gap"], ["flat"], name="flatten"))
    fc_in = "flat" if fc_float_input else qdq("flat", "fc_in")
    wf = weight("fc", (4, C), 0)
    nodes.append(helper.make_node("Gemm", [fc_in, wf], ["logits"], name="fc", transB=1))
    graph = helper.make_graph(nodes, "qdq_block",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", C, 4, 4])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 4])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _runs_in_ort(model: onnx.ModelProto) -> None:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    out = sess.run(None, {"input": np.random.default_rng(1).standard_normal((2, C, 4, 4)).astype(np.float32)})[0]
    assert out.shape == (2, 4)


def test_correct_symmetric_qdq_model_passes() -> None:
    model = _qdq_block()
    _runs_in_ort(model)
    report = lint_tensorrt(model)
    assert report.clean, report.to_text()
    assert report.stats["expected_precision"] == "int8"
    assert report.stats["quantized_layers"] == report.stats["weighted_layers"] == 3
    assert report.stats["skip_adds"] == 1


def test_asymmetric_activations_flagged() -> None:
    model = _qdq_block(act_zp=5)
    _runs_in_ort(model)
    report = lint_tensorrt(model)
    assert not report.ok
    assert "qdq-symmetric" in report.checks("error")


def test_uint8_activations_flagged() -> None:
    report = lint_tensorrt(_qdq_block(act_uint8=True))
    assert "qdq-int8" in report.checks("error")


def test_qlinearconv_flagged() -> None:
    model = _qdq_block(qlinear=True)
    _runs_in_ort(model)
    report = lint_tensorrt(model)
    assert "qlinear-ops" in report.checks("error")
    assert any(f.node == "c1_qlinear" for f in report.findings)


def test_missing_residual_q_flagged() -> None:
    model = _qdq_block(residual_q=False)
    _runs_in_ort(model)
    report = lint_tensorrt(model)
    assert not report.clean
    residual = [f for f in report.findings if f.check == "qdq-residual-add"]
    assert [f.node for f in residual] == ["skip_add"]
    assert "'r1'" in residual[0].message  # names the residual tensor, not the conv branch


def test_conv_input_without_qdq_flagged() -> None:
    report = lint_tensorrt(_qdq_block(fc_float_input=True))
    found = [f for f in report.findings if f.check == "qdq-weighted-inputs"]
    assert [f.node for f in found] == ["fc"]
    assert report.stats["expected_precision"] == "mixed"


def test_weight_axis_and_per_channel_activation_flagged() -> None:
    assert "qdq-weight-axis" in lint_tensorrt(_qdq_block(weight_axis=1)).checks("error")
    assert "qdq-per-tensor-activation" in lint_tensorrt(_qdq_block(per_channel_act=True)).checks("error")


def test_old_opset_flagged() -> None:
    report = lint_tensorrt(_qdq_block(opset=12))
    assert "opset" in report.checks("error")


def test_sparsity_facts_and_requests() -> None:
    sparse = _qdq_block(sparse24=True)
    report = lint_tensorrt(sparse)
    layers = {la["node"]: la for la in report.stats["sparsity"]}
    assert layers["conv1"]["compliant"] and layers["fc"]["compliant"]
    assert "sparsity-2to4" in report.checks("info")  # suggests enabling SPARSE_WEIGHTS
    assert "sparsity-channels" in report.checks("info")  # 8 channels < 256
    assert report.clean
    dense_requested = lint_tensorrt(_qdq_block(), sparse_weights=True)
    assert "sparsity-2to4" in dense_requested.checks("warning")


def test_float_model_and_require_int8() -> None:
    import torch

    net = torch.nn.Sequential(torch.nn.Conv2d(C, C, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                              torch.nn.Linear(C * 16, 4)).eval()
    buf = __import__("io").BytesIO()
    torch.onnx.export(net, (torch.randn(1, C, 4, 4),), buf, dynamo=False, opset_version=17,
                      input_names=["input"], output_names=["logits"])
    model = onnx.load_from_string(buf.getvalue())
    assert lint_tensorrt(model).clean
    assert "qdq-missing" in lint_tensorrt(model, require_int8=True).checks("error")


@pytest.fixture(scope="module")
def ort_quantized(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A residual torch net quantized by ONNX Runtime three ways (real tool output, not hand-made)."""
    import torch
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    torch.manual_seed(0)

    class Res(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c0 = torch.nn.Conv2d(1, 8, 3, padding=1)
            self.c1 = torch.nn.Conv2d(8, 8, 3, padding=1)
            self.fc = torch.nn.Linear(8, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = torch.relu(self.c0(x))
            return self.fc(torch.relu(self.c1(y) + y).mean((2, 3)))

    d = tmp_path_factory.mktemp("ortq")
    x = torch.randn(16, 1, 8, 8)
    torch.onnx.export(Res().eval(), (x[:1],), str(d / "fp32.onnx"), dynamo=False, opset_version=17,
                      input_names=["input"], output_names=["logits"])

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter([{"input": x[i : i + 1].numpy()} for i in range(len(x))])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.it, None)

    paths = {}
    for name, fmt, act, extra in (("sym", QuantFormat.QDQ, QuantType.QInt8,
                                   {"ActivationSymmetric": True, "WeightSymmetric": True}),
                                  ("u8", QuantFormat.QDQ, QuantType.QUInt8, {}),
                                  ("qop", QuantFormat.QOperator, QuantType.QUInt8, {})):
        paths[name] = d / f"{name}.onnx"
        quantize_static(str(d / "fp32.onnx"), str(paths[name]), Reader(), quant_format=fmt, activation_type=act,
                        weight_type=QuantType.QInt8, per_channel=True, extra_options=extra)
    return paths


def test_ort_symmetric_qdq_passes_and_asymmetric_fails(ort_quantized: dict[str, Path]) -> None:
    assert lint_tensorrt(ort_quantized["sym"]).clean
    assert "qdq-int8" in lint_tensorrt(ort_quantized["u8"]).checks("error")
    assert "qlinear-ops" in lint_tensorrt(ort_quantized["qop"]).checks("error")


def test_cli_exit_codes_and_json(ort_quantized: dict[str, Path], tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["lint", str(ort_quantized["sym"]), "--target", "tensorrt"]) == 0
    out = tmp_path / "lint.json"
    assert main(["lint", str(ort_quantized["qop"]), "--out", str(out)]) == 1
    assert "QLinearConv" in capsys.readouterr().out
    assert '"ok": false' in out.read_text()
    bad = tmp_path / "residual.onnx"
    onnx.save(_qdq_block(residual_q=False), str(bad))
    assert main(["lint", str(bad)]) == 1  # warnings fail by default
    assert main(["lint", str(bad), "--fail-on", "error"]) == 0
    assert main(["lint", str(tmp_path / "missing.onnx")]) == 2


def test_lint_with_a_target_uses_its_options(tmp_path: Path) -> None:
    path = tmp_path / "dense.onnx"
    onnx.save(_qdq_block(), str(path))
    report = lint(path, "tensorrt-orin-nano")  # sparse_weights = true in that target
    assert report.target == "tensorrt (tensorrt-orin-nano)"
    assert "sparsity-2to4" in report.checks("warning")


def test_the_linter_is_found_on_the_backend(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`edgekd lint` asks the backend for its linter; a target whose backend has none gets a clear error."""
    from edgekd.backends import BACKENDS
    from edgekd.errors import ConfigError
    from edgekd.lint import linter_names

    assert BACKENDS.get("tensorrt").linter is lint_tensorrt
    assert linter_names() == ["tensorrt"]
    path = tmp_path / "block.onnx"
    onnx.save(_qdq_block(), str(path))
    with pytest.raises(ConfigError, match="no linter for backend 'onnxruntime'; linters exist for: tensorrt"):
        lint(path, "cpu")
    assert main(["lint", str(path), "--target", "cpu"]) == 2
    assert "no linter for backend 'onnxruntime'" in capsys.readouterr().err


def test_edgekd_tensorrt_flavor_export_passes(tmp_path: Path) -> None:
    """edgekd's own quantized export: the TensorRT flavor lints clean, the ORT flavor (uint8) does not."""
    import torch

    quant = pytest.importorskip("edgekd.quant", reason="quantization package not present")
    from edgekd.config import ExportSettings
    from edgekd.data import load_data
    from edgekd.models import load_model
    from edgekd.quant.onnx_export import brevitas_qdq_export

    torch.manual_seed(0)
    data = load_data("builtin:digits")
    model = quant.quantize_model(load_model("builtin:digits-residual").module,
                                 quant.QuantRecipe(symmetric_activations=True))
    quant.calibrate(model, data.x_train, samples=128)
    example = torch.from_numpy(data.x_test[:1])
    trt_path, ort_path = tmp_path / "m.tensorrt.onnx", tmp_path / "m.ort.onnx"
    brevitas_qdq_export(model, trt_path, example, ExportSettings(), "tensorrt")
    brevitas_qdq_export(model, ort_path, example, ExportSettings(), "ort")
    report = lint_tensorrt(trt_path)
    assert report.clean, report.to_text()
    assert report.stats["skip_adds"] >= 1 and report.stats["expected_precision"] == "int8"
    assert "qdq-int8" in lint_tensorrt(ort_path).checks("error")


def test_float_model_below_opset_13_is_not_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """TensorRT parses float opset-11 models; only Q/DQ (int8) needs opset 13."""
    import torch

    net = torch.nn.Sequential(torch.nn.Conv2d(C, C, 3, padding=1), torch.nn.ReLU()).eval()
    path = tmp_path / "op11.onnx"
    torch.onnx.export(net, (torch.randn(1, C, 4, 4),), str(path), dynamo=False, opset_version=11,
                      input_names=["input"], output_names=["out"])
    report = lint_tensorrt(path)
    assert report.ok and "opset" in report.checks("info")
    assert "opset" in lint_tensorrt(path, require_int8=True).checks("error")
    assert main(["lint", str(path), "--fail-on", "error"]) == 0


def test_corrupt_file_is_a_usage_error_not_a_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "model.onnx"
    path.write_bytes(bytes(range(256)) * 8)
    assert main(["lint", str(path), "--json"]) == 2  # 2: file error, not 1 (findings)
    err = capsys.readouterr().err
    assert "corrupt or truncated" in err and "Traceback" not in err


def test_blocked_weight_scales_are_not_an_axis_error(blocked_dq_matmul) -> None:
    """Opset-21 block_size DequantizeLinear on a MatMul weight (INT4 weight-only layout) is not per-channel."""
    model, _, _ = blocked_dq_matmul
    report = lint_tensorrt(model)
    assert report.ok and "qdq-block" in report.checks("info"), report.to_text()
