"""The layers edge models are made of, through the quantize pass: transposed convs, upsampling, attention,
recurrent layers, embeddings. Each tiny seeded model is quantized (graph and layerwise modes where both apply),
exported as QDQ, run on ONNX Runtime and OpenVINO, and the runtime graph says which layers run integer kernels;
a layer kept in float is reported float with its MACs."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from torch import nn
from torch.nn import functional as F

from edgekd.artifact import Artifact
from edgekd.config import ExportSettings
from edgekd.data import DataSplits
from edgekd.errors import PassError
from edgekd.export import compare_outputs
from edgekd.passes import PassContext
from edgekd.passes.quantize import QuantizeConfig, quantize
from edgekd.quant.onnx_export import brevitas_qdq_export
from edgekd.quant.sensitivity import outputs

torch.set_num_threads(1)
RNG = np.random.default_rng(0)
SIGNALS = RNG.standard_normal((96, 3, 24)).astype(np.float32)  # N x C x L
IMAGES = RNG.standard_normal((96, 1, 8, 8)).astype(np.float32)
TOKENS = RNG.integers(0, 40, (96, 12)).astype(np.int64)  # token ids: int64, never cast to float


def _data(x: np.ndarray, classes: int | None = 4) -> DataSplits:
    y = RNG.integers(0, classes, len(x)) if classes else None
    return DataSplits("tiny", x[:64], None if y is None else y[:64], x[64:], None if y is None else y[64:],
                      num_classes=classes, x_val=x[64:], y_val=None if y is None else y[64:])


def _quantize(model: nn.Module, x: np.ndarray, tmp: Path, classes: int | None = 4,
              **cfg: Any) -> tuple[Artifact, dict[str, Any]]:
    torch.manual_seed(0)
    ctx = PassContext(teacher=None, data=_data(x, classes), workdir=tmp)
    config = QuantizeConfig(calibration_samples=64, sensitivity="off", **cfg)
    out = quantize(Artifact(kind="torch", payload=model.eval(), history=("test",), meta={}), config, ctx)
    return out, ctx.report["quantize"]


def _openvino(model: nn.Module, x: np.ndarray, tmp: Path) -> tuple[np.ndarray, list[tuple[str, str]]]:
    """OpenVINO on the openvino-flavor export: outputs and (layer type, runtime precision) of what runs."""
    ov = pytest.importorskip("openvino")
    from edgekd.backends.openvino import runtime_layers

    path = tmp / "m.openvino.onnx"
    brevitas_qdq_export(model, path, torch.from_numpy(x[:1]), ExportSettings(dynamic_batch=False), "openvino")
    compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": 1})
    out = np.concatenate([compiled(x[i : i + 1])[0] for i in range(len(x))])
    return out, [(layer["type"], layer["precision"]) for layer in runtime_layers(compiled)]


def _ov_agrees(reference: np.ndarray, got: np.ndarray) -> None:
    from edgekd.backends.openvino import host_int8_exact

    agreement = compare_outputs(reference, got).top1_agreement
    assert agreement >= (0.995 if host_int8_exact() else 0.9), agreement  # no VNNI: close, not exact


def _int8(layers: list[tuple[str, str]], kind: str) -> list[str]:
    return [precision for t, precision in layers if t == kind]


def _ort_parity(model: nn.Module, report: dict[str, Any]) -> None:
    assert report["parity_vs_brevitas"]["top1_agreement"] >= 0.995
    assert report["twin_vs_brevitas"]["max_abs_error"] < 1e-4


# ---------------------------------------------------------------- transposed convs and upsampling


class _Decoder(nn.Module):
    """Conv encoder -> ConvTranspose2d decoder (U-Net/autoencoder style), or an Upsample decoder."""

    def __init__(self, up: str) -> None:
        super().__init__()
        self.down = nn.Conv2d(1, 8, 3, stride=2, padding=1)
        self.act = nn.ReLU()
        self.up = nn.ConvTranspose2d(8, 8, 2, stride=2) if up == "transpose" else nn.Upsample(scale_factor=2, mode=up)
        self.act2 = nn.ReLU()
        self.head = nn.Conv2d(8, 2, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.act2(self.up(self.act(self.down(x)))))


@pytest.mark.parametrize("mode", ["graph", "layerwise"])
def test_conv_transpose2d_decoder(mode, tmp_path):
    """ORT has no integer ConvTranspose kernel: it runs float and is counted float. OpenVINO runs it int8 after a
    ReLU quantizer (graph mode: unsigned, zero point 0); behind layerwise mode's signed input quantizer (uint8,
    zero point 128) it ran f32 for this model (measured; the runtime graph is the proof either way)."""
    out, rep = _quantize(_Decoder("transpose"), IMAGES, tmp_path, classes=None, quantizer=mode)
    assert type(out.payload.get_submodule("up")).__name__ == "QuantConvTranspose2d"
    assert rep["ort_optimized_ops"].get("QLinearConv") == 2 and rep["ort_optimized_ops"].get("ConvTranspose") == 1
    assert rep["float_layers"] == ["/up/ConvTranspose"]
    up_macs = 16 * 8 * 8 * 4  # 4x4 input positions x 8 in-channels x (8 out-channels x 2x2 kernel)
    assert rep["macs_total"] - rep["macs_int8"] == up_macs
    assert 0 < rep["int8_mac_fraction"] == pytest.approx(1 - up_macs / rep["macs_total"])
    _ort_parity(out.payload, rep)
    got, layers = _openvino(out.payload, IMAGES[:16], tmp_path)
    assert _int8(layers, "Deconvolution") == (["u8"] if mode == "graph" else ["f32"]), layers
    assert set(_int8(layers, "Convolution")) <= {"u8", "i8"} and len(_int8(layers, "Convolution")) == 2
    _ov_agrees(outputs(out.payload, IMAGES[:16]), got)


def test_conv_transpose1d_weights_are_int8_per_output_channel(tmp_path):
    model = nn.Sequential(nn.Conv1d(3, 6, 3, stride=2, padding=1), nn.ReLU(), nn.ConvTranspose1d(6, 4, 2, stride=2),
                          nn.ReLU(), nn.Conv1d(4, 4, 1))
    out, rep = _quantize(model, SIGNALS, tmp_path, classes=None)
    path = tmp_path / "m.onnx"
    brevitas_qdq_export(out.payload, path, torch.from_numpy(SIGNALS[:1]), ExportSettings(), "ort")
    m = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    producers = {o: n for n in m.graph.node for o in n.output}
    (deconv,) = [n for n in m.graph.node if n.op_type == "ConvTranspose"]
    dq = producers[deconv.input[1]]
    assert inits[dq.input[0]].dtype == np.int8 and inits[dq.input[1]].shape == (4,)  # per output channel
    assert [a.i for a in dq.attribute if a.name == "axis"] == [1]  # (Cin, Cout, k): channels on axis 1
    _ort_parity(out.payload, rep)


@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
def test_upsample_sits_between_quantized_tensors(mode, tmp_path):
    out, rep = _quantize(_Decoder(mode), IMAGES, tmp_path, classes=None)
    path = tmp_path / "m.onnx"
    brevitas_qdq_export(out.payload, path, torch.from_numpy(IMAGES[:1]), ExportSettings(), "ort")
    m = onnx.load(str(path))
    producers = {o: n for n in m.graph.node for o in n.output}
    (resize,) = [n for n in m.graph.node if n.op_type == "Resize"]
    (relu,) = [n for n in m.graph.node if resize.output[0] in n.input]
    assert producers[resize.input[0]].op_type == "DequantizeLinear"  # a quantized tensor comes in
    assert [n.op_type for n in m.graph.node if relu.output[0] in n.input] == ["QuantizeLinear"]  # and is requantized
    assert rep["int8_mac_fraction"] == 1.0 and rep["ort_optimized_ops"].get("QLinearConv") == 2
    _ort_parity(out.payload, rep)
    got, layers = _openvino(out.payload, IMAGES[:16], tmp_path)
    assert len(_int8(layers, "Convolution")) == 2 and set(_int8(layers, "Convolution")) <= {"u8", "i8"}
    _ov_agrees(outputs(out.payload, IMAGES[:16]), got)


class _SkipUNet(nn.Module):
    """A U-Net step: the encoder's ReLU output feeds both the down conv and the skip concat with the decoder."""

    def __init__(self) -> None:
        super().__init__()
        self.enc, self.enc_act = nn.Conv2d(1, 8, 3, padding=1), nn.ReLU()
        self.down, self.down_act = nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU()
        self.up, self.up_act = nn.ConvTranspose2d(16, 8, 2, stride=2), nn.ReLU()
        self.head = nn.Conv2d(16, 2, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e = self.enc_act(self.enc(x))
        return self.head(torch.cat([e, self.up_act(self.up(self.down_act(self.down(e))))], 1))


def test_skip_concat_quantizer_is_applied_after_calibration(tmp_path):
    """brevitas aligns the concat inputs to one shared quantizer; its calibration_mode then left that quantizer
    observer-only (values passed through unquantized while declaring a scale): the export clipped the skip
    branch and the twin check stopped the pass (22 % of the output range on a tiny U-Net)."""
    from edgekd.quant import QuantRecipe, calibrate, quantize_model

    torch.manual_seed(0)
    model = quantize_model(_SkipUNet().eval(), QuantRecipe())
    calibrate(model, IMAGES, samples=64)
    seen: dict[str, Any] = {}
    handle = model.get_submodule("enc_act").register_forward_hook(lambda _m, _i, out: seen.update(out=out))
    with torch.no_grad():
        model(torch.from_numpy(IMAGES[:4]))
    handle.remove()
    assert seen["out"].is_valid  # on its int8 grid: the quantizer really quantizes
    out, rep = _quantize(_SkipUNet(), IMAGES, tmp_path, classes=None)
    assert rep["twin_vs_brevitas"]["max_abs_error"] < 1e-4 and rep["twin_vs_brevitas"]["first_differing"] is None
    ops = rep["ort_optimized_ops"]
    assert ops.get("QLinearConv") == 3 and ops.get("QLinearConcat") == 1 and rep["float_layers"] == ["/up/ConvTranspose"]
    _ort_parity(out.payload, rep)


# ---------------------------------------------------------------- attention and embeddings


class _TextClassifier(nn.Module):
    """Token ids -> Embedding -> 1-layer TransformerEncoder -> mean -> Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(40, 16)
        layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True)
        self.enc = nn.TransformerEncoder(layer, 1, enable_nested_tensor=False)
        self.fc = nn.Linear(16, 4)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.fc(self.enc(self.emb(ids)).mean(1))


@pytest.mark.parametrize("mode", ["graph", "layerwise"])
def test_transformer_encoder_over_token_ids(mode, tmp_path):
    """q/k/v/out/FFN/head Linear layers are integer Gemms, q·kᵀ an integer MatMul, softmax·v float (counted);
    LayerNorm and softmax stay float; the Embedding table is stored int8."""
    torch.manual_seed(0)
    model = _TextClassifier()
    out, rep = _quantize(model, TOKENS, tmp_path, quantizer=mode)
    ops = rep["ort_optimized_ops"]
    assert ops.get("QGemm") == 7, ops  # q, k, v, out_proj, linear1, linear2, fc
    assert ops.get("MatMulIntegerToFloat", 0) + ops.get("QLinearMatMul", 0) == 1, ops  # q·kᵀ
    assert len(rep["float_layers"]) == 1 and rep["float_layers"][0].endswith("MatMul_1")  # softmax·v only
    assert 0.85 < rep["int8_mac_fraction"] < 1.0
    _ort_parity(out.payload, rep)
    path = tmp_path / "m.onnx"
    brevitas_qdq_export(out.payload, path, torch.from_numpy(TOKENS[:1]), ExportSettings(), "ort")
    m = onnx.load(str(path))
    assert m.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.INT64
    inits = {i.name for i in m.graph.initializer if numpy_helper.to_array(i).dtype == np.int8}
    producers = {o: n for n in m.graph.node for o in n.output}
    (gather,) = [n for n in m.graph.node if n.op_type == "Gather" and n.input[1] == m.graph.input[0].name]
    assert producers[gather.input[0]].op_type == "DequantizeLinear" and producers[gather.input[0]].input[0] in inits
    got, layers = _openvino(out.payload, TOKENS[:16], tmp_path)
    fc = _int8(layers, "FullyConnected")
    assert len(fc) >= 7 and set(fc) <= {"u8", "i8"}, layers
    _ov_agrees(outputs(out.payload, TOKENS[:16]), got)


def test_multihead_attention_rewrite_computes_what_torch_computes():
    from edgekd.quant.mha import decompose_attention

    torch.manual_seed(0)
    enc = nn.TransformerEncoder(nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, norm_first=True, activation="gelu"),
                                2, enable_nested_tensor=False).eval()
    mha = nn.MultiheadAttention(16, 4, batch_first=True).eval()
    x, q, kv = torch.randn(7, 3, 16), torch.randn(2, 5, 16), torch.randn(2, 6, 16)
    pad = torch.zeros(3, 7, dtype=torch.bool)
    pad[0, 5:] = True
    root = nn.ModuleDict({"enc": copy.deepcopy(enc), "mha": copy.deepcopy(mha)})
    names = decompose_attention(root)
    assert names == ["enc.layers.0.self_attn", "enc.layers.1.self_attn", "mha"]
    assert "enc.layers.0.linear1" in dict(root.named_modules())  # names kept for exclude / sensitivity
    with torch.no_grad():
        for kwargs in ({}, {"src_key_padding_mask": pad}, {"mask": nn.Transformer.generate_square_subsequent_mask(7)}):
            torch.testing.assert_close(root["enc"](x, **kwargs), enc(x, **kwargs), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(root["mha"](q, kv, kv)[0], mha(q, kv, kv)[0], atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------- recurrent layers: float, counted float


class _SignalLSTM(nn.Module):
    def __init__(self, rnn: type[nn.RNNBase], conv_first: bool) -> None:
        super().__init__()
        self.conv_first = conv_first
        self.conv = nn.Conv1d(3, 8, 3, padding=1)
        self.rnn = rnn(8 if conv_first else 3, 16, batch_first=True)
        self.fc = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.conv(x)).transpose(1, 2) if self.conv_first else x  # N x L x C into the RNN
        y, _ = self.rnn(y)
        return self.fc(y[:, -1])


def test_lstm_is_refused_by_default_naming_it(tmp_path):
    with pytest.raises(PassError, match=r"layer 'rnn' \(LSTM\)") as info:
        _quantize(_SignalLSTM(nn.LSTM, True), SIGNALS, tmp_path)
    assert 'unsupported = "float"' in str(info.value)


@pytest.mark.parametrize(("rnn", "gates", "conv_first", "mode"),
                         [(nn.LSTM, 4, True, "graph"), (nn.GRU, 3, True, "layerwise"), (nn.LSTM, 4, False, "graph")])
def test_recurrent_layer_kept_float_is_counted_float(rnn, gates, conv_first, mode, tmp_path):
    torch.manual_seed(0)
    x = SIGNALS if conv_first else np.ascontiguousarray(SIGNALS.transpose(0, 2, 1))
    out, rep = _quantize(_SignalLSTM(rnn, conv_first), x, tmp_path, quantizer=mode, unsupported="float")
    steps, inputs = 24, 8 if conv_first else 3
    rnn_macs = steps * gates * 16 * (inputs + 16)
    (row,) = [r for r in rep["higher_precision"] if r["layer"] == "rnn"]
    assert row["precision"] == "FP32" and row["macs"] == rnn_macs and "unsupported" in row["why"]
    assert [layer.split("/")[-1] for layer in rep["float_layers"]] == [rnn.__name__]
    assert rep["macs_total"] - rep["macs_int8"] == rnn_macs  # ONNX Runtime's graph agrees with the torch count
    assert rep["int8_mac_fraction"] == pytest.approx(1 - rnn_macs / rep["macs_total"])
    assert rep["int8_mac_fraction"] < 0.5  # the recurrent layer holds most MACs: the share says so
    _ort_parity(out.payload, rep)
    got, layers = _openvino(out.payload, x, tmp_path)
    assert _int8(layers, "FullyConnected") and set(_int8(layers, "FullyConnected")) <= {"u8", "i8"}
    assert _int8(layers, "RNNSeq") == ["f32"]  # OpenVINO's recurrent kernel is float too: the target says "mixed"
    from edgekd.backends.openvino import summarize_precision

    assert summarize_precision([{"type": t, "precision": p, "kernel": ""} for t, p in layers])[0] == "mixed"
    _ov_agrees(outputs(out.payload, x), got)


# ---------------------------------------------------------------- anything else: unsupported = "float"


class _Chunked(nn.Module):
    """``chunk`` on a quantized tensor: brevitas's graph mode cannot run it (the ShuffleNet case)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.relu = nn.Conv1d(3, 8, 3, padding=1), nn.ReLU()
        self.fc = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.relu(self.conv(x)).chunk(2, dim=1)
        return self.fc(F.adaptive_avg_pool1d(a + b, 1).flatten(1))


def test_unsupported_float_keeps_what_graph_mode_cannot_run_in_float(tmp_path):
    with pytest.raises(PassError, match="does not run") as info:
        _quantize(_Chunked(), SIGNALS, tmp_path)
    assert 'unsupported = "float"' in info.value.hint
    out, rep = _quantize(_Chunked(), SIGNALS, tmp_path, unsupported="float")
    (row,) = rep["higher_precision"]
    assert row["layer"] == "relu" and "chunk" in row["why"]  # its quantized output fed the chunk
    assert rep["quantizer"] == "graph" and rep["int8_mac_fraction"] == 1.0  # conv and linear still integer kernels
    _ort_parity(out.payload, rep)


class _DataDependent(nn.Module):
    """Python control flow on a tensor value: torch.fx cannot trace it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.fc = nn.Conv1d(3, 8, 3, padding=1), nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.conv(x)).mean(2)
        return self.fc(y if float(y.sum()) > -1e9 else -y)


def test_unsupported_float_switches_an_untraceable_model_to_layerwise(tmp_path):
    with pytest.raises(PassError, match="could not trace"):
        _quantize(_DataDependent(), SIGNALS, tmp_path)
    out, rep = _quantize(_DataDependent(), SIGNALS, tmp_path, unsupported="float")
    assert rep["quantizer"] == "layerwise" and any("switched to layerwise" in n for n in rep["notes"])
    assert rep["int8_mac_fraction"] == 1.0
    _ort_parity(out.payload, rep)


# ---------------------------------------------------------------- 2:4 sparsity with a layer kept FP32


def test_sparsified_layer_kept_fp32_keeps_its_mask(digits, tmp_path):
    """sparse24-int8-kd crashed ("layer has no weight tensor for its sparsity mask") when the sensitivity pass
    kept a sparsified layer FP32: graph mode wraps it, and the mask hook looked for the weight on the wrapper."""
    from edgekd.models import load_model
    from edgekd.passes.sparsity import apply_masks, compute_masks
    from edgekd.train import FinetuneConfig

    torch.manual_seed(0)
    model = load_model("builtin:digits-student").module.eval()
    layers = ["features.3", "classifier.1", "classifier.3"]  # input channels a multiple of 4
    masks = compute_masks(model, layers)
    apply_masks(model, masks)
    ctx = PassContext(teacher=None, data=digits, workdir=tmp_path)
    # a negative budget (beat FP32) is always missed: the sensitivity pass keeps the layer that helps most FP32
    cfg = QuantizeConfig(mode="qat", check_int8=False, accuracy_budget=-50.0, max_kept_layers=1, eval_samples=200,
                         calibration_samples=64, finetune=FinetuneConfig(epochs=1, lr=1e-4))
    out = quantize(Artifact(kind="torch", payload=model, history=("t",), meta={"sparsity": {"pattern": "2:4",
                                                                                            "masks": masks}}), cfg, ctx)
    rep = ctx.report["quantize"]
    (kept,) = rep["kept_higher_precision"]
    assert kept["precision"] == "FP32" and kept["layer"] in layers
    assert rep["qat"]["masks_kept"] is True
    weight = out.payload.get_submodule(kept["layer"]).inner.weight  # the FP32 layer, still 2:4
    assert bool((weight[~masks[kept["layer"]]] == 0).all())
    assert rep["sparsity_2to4"] == {"layers": 2, "all_masks_hold_in_int8": True}
