"""quantize pass: INT8 that really runs, PTQ vs KD-QAT, sensitivity/keep, 2:4 masks through QAT, errors."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from edgekd.artifact import Artifact
from edgekd.config import recipe_from_mapping
from edgekd.errors import ConfigError, PassError
from edgekd.models import load_model
from edgekd.passes import PassContext
from edgekd.passes.quantize import QuantizeConfig, quantize
from edgekd.train import FinetuneConfig, evaluate, fine_tune

torch.set_num_threads(1)


def _art(module: nn.Module, **meta: object) -> Artifact:
    return Artifact(kind="torch", payload=module, history=("test",), meta=dict(meta))


def _ctx(data, teacher=None, tmp: Path | None = None) -> PassContext:
    return PassContext(teacher=teacher, data=data, workdir=tmp)


@pytest.fixture(scope="module")
def student(digits, digits_teacher):
    """The demo student distilled for a few epochs (seeded)."""
    torch.manual_seed(0)
    model = load_model("builtin:digits-student").module
    fine_tune(model, digits_teacher, digits, FinetuneConfig(epochs=30, lr=5e-3, schedule="onecycle", seed=0))
    return model.eval()


def test_demo_student_runs_100_percent_int8_on_ort(digits, tmp_path):
    """builtin:digits-student, PTQ W8A8: every Conv/Gemm MAC becomes an ORT integer kernel, exact parity."""
    ctx = _ctx(digits, tmp=tmp_path)
    out = quantize(_art(load_model("builtin:digits-student").module), QuantizeConfig(calibration_samples=256), ctx)
    rep = ctx.report["quantize"]
    assert rep["int8_mac_fraction"] == 1.0
    assert rep["macs_total"] == rep["macs_int8"] > 0
    ops = rep["ort_optimized_ops"]
    assert ops.get("QLinearConv") == 2 and ops.get("QGemm") == 2
    assert not {"Conv", "Gemm", "FusedConv", "MatMul"} & set(ops)
    assert rep["parity_vs_brevitas"]["top1_agreement"] >= 0.995
    assert out.meta["exporter"] == "brevitas-qdq" and out.meta["flavored_export"] is True
    assert out.meta["quantized"]["int8_mac_fraction"] == 1.0


def test_ptq_and_kd_qat_accuracy(digits, digits_teacher, student, tmp_path):
    fp32 = evaluate(student, digits.x_test, digits.y_test)
    results = {}
    for name, cfg in {
        "ptq8": QuantizeConfig(check_int8=False, sensitivity="off"),
        "ptq3": QuantizeConfig(weight_bits=3, check_int8=False, sensitivity="off"),
        "qat3": QuantizeConfig(weight_bits=3, mode="qat", check_int8=False, sensitivity="off",
                               finetune=FinetuneConfig(epochs=4, lr=1e-3, seed=0)),
    }.items():
        art = quantize(_art(student), cfg, _ctx(digits, digits_teacher, tmp_path))
        results[name] = evaluate(art.payload, digits.x_test, digits.y_test)
    assert fp32 > 90
    assert results["ptq8"] >= fp32 - 1.0  # INT8 PTQ is nearly free
    assert results["qat3"] > results["ptq3"]  # distillation-aware QAT recovers what 3-bit PTQ lost
    assert results["qat3"] >= fp32 - 2.0
    # the input model is untouched (passes never mutate their input)
    assert evaluate(student, digits.x_test, digits.y_test) == fp32


def test_sensitivity_keeps_layers_until_budget(digits, student, tmp_path):
    ctx = _ctx(digits, tmp=tmp_path)
    cfg = QuantizeConfig(weight_bits=2, sensitivity="report", accuracy_budget=0.5, max_kept_layers=4)
    out = quantize(_art(student), cfg, ctx)
    rep = ctx.report["quantize"]
    ranking = rep["sensitivity"]
    assert {r["layer"] for r in ranking} == {"features.0", "features.3", "classifier.1", "classifier.3"}
    assert [r["drop"] for r in ranking] == sorted((r["drop"] for r in ranking), reverse=True)
    kept = rep["kept_higher_precision"]
    assert kept, "2-bit weights must miss a 0.5 point budget"
    # layers are tried most sensitive first; one that does not lower the drop is put back (which ones help
    # depends on the trained weights): the first kept layer is the first of the ranking that was not put back
    put_back = [t["layer"] for t in rep["eval"]["after_keep"].get("tried_without_gain", [])]
    first_helping = next(r["layer"] for r in ranking if r["layer"] not in put_back)
    assert kept[0]["layer"] == first_helping and kept[0]["precision"] == "W8"
    assert kept[-1]["drop_after"] <= kept[0]["drop_before"]
    layer = out.payload.get_submodule(kept[0]["layer"])
    assert int(layer.quant_weight().bit_width) == 8
    assert rep["int8_mac_fraction"] == 1.0  # W8 on a kept layer still runs on an integer kernel


def test_keep_fp32_layer_for_w8(digits, student, tmp_path):
    ctx = _ctx(digits, tmp=tmp_path)
    out = quantize(_art(student), QuantizeConfig(accuracy_budget=-100.0, max_kept_layers=1), ctx)
    rep = ctx.report["quantize"]
    kept = rep["kept_higher_precision"]
    assert len(kept) == 1 and kept[0]["precision"] == "FP32"
    assert rep["int8_mac_fraction"] < 1.0 and len(rep["float_layers"]) == 1
    assert out.meta["quantized"]["kept_higher_precision"] == [kept[0]["layer"]]


def test_2to4_masks_survive_kd_qat(digits, digits_teacher, student, tmp_path):
    from edgekd.passes.sparsity import apply_masks, compute_masks

    model = copy.deepcopy(student)
    masks = compute_masks(model, ["features.3", "classifier.1"])
    apply_masks(model, masks)
    ctx = _ctx(digits, digits_teacher, tmp_path)
    cfg = QuantizeConfig(mode="qat", check_int8=False, finetune=FinetuneConfig(epochs=2, lr=1e-3))
    out = quantize(_art(model, sparsity={"pattern": "2:4", "masks": masks}), cfg, ctx)
    rep = ctx.report["quantize"]
    assert rep["qat"]["masks_kept"] is True
    assert rep["sparsity_2to4"] == {"layers": 2, "all_masks_hold_in_int8": True}
    for name, mask in masks.items():
        ints = out.payload.get_submodule(name).quant_weight().int()
        assert bool((ints[~mask] == 0).all())
        assert float((ints == 0).float().mean()) >= 0.5


def test_targets_steer_numerics(digits, tmp_path):
    from edgekd.config import load_target

    ctx = PassContext(data=digits, workdir=tmp_path,
                      targets=(load_target("tensorrt-orin-nano"), load_target("fpga-zcu104")))
    out = quantize(_art(load_model("builtin:digits-residual").module), QuantizeConfig(check_int8=False), ctx)
    rep = ctx.report["quantize"]
    assert rep["power_of_two_scales"] is True and "symmetric" in rep["activations"]
    assert set(rep["decisions"]) == {"symmetric_activations", "power_of_two"}
    for name, module in out.payload.named_modules():
        proxy = getattr(module, "act_quant", None)
        if proxy is not None and proxy.is_quant_enabled:
            assert proxy.is_signed, name
            scale = float(proxy.scale())
            assert scale == 2.0 ** round(np.log2(scale)), name


def test_unsupported_layer_is_an_error_naming_it(digits):
    # (ConvTranspose2d, the layer used here before, is quantized now: tests/test_quant_layers.py)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Unflatten(1, (4, 1)),
                          nn.Conv3d(4, 4, (1, 3, 3), padding=(0, 1, 1)), nn.Flatten(1, 2),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10))
    with pytest.raises(PassError, match=r"layer '3' \(Conv3d\)") as info:
        quantize(_art(model), QuantizeConfig(check_int8=False), _ctx(digits))
    assert "exclude" in str(info.value)
    out = quantize(_art(model), QuantizeConfig(check_int8=False, unsupported="float"), _ctx(digits))
    assert type(out.payload.get_submodule("3")) is nn.Conv3d  # left in FP32


def test_config_validation():
    with pytest.raises(ConfigError, match="calibraton"):
        recipe_from_mapping({"passes": [{"name": "quantize", "calibraton": "minmax"}]}, where="p.toml")
    with pytest.raises(ConfigError, match="finetune"):
        recipe_from_mapping({"passes": [{"name": "quantize", "mode": "qat"}]}, where="p.toml")
    with pytest.raises(ConfigError, match="act_bits"):
        recipe_from_mapping({"passes": [{"name": "quantize", "act_bits": 4}]}, where="p.toml")
    prof = recipe_from_mapping({"passes": [{"name": "quantize", "mode": "qat", "weight_bits": 4,
                                             "finetune": {"epochs": 3, "loss": "hinton"}}]}, where="p.toml")
    assert prof.passes[0].config.finetune.epochs == 3


def test_shipped_profiles_load():
    from edgekd.config import load_recipe

    for name in ("int8-ptq", "int8-kd", "sparse24-int8-kd", "channels50-int8-kd", "w4a8-kd"):
        prof = load_recipe(name)
        q = prof.passes[-1]
        assert q.name == "quantize"
        assert (q.config.mode == "ptq") == (name == "int8-ptq")
    assert load_recipe("w4a8-kd").passes[-1].config.weight_bits == 4


def test_multi_output_model_is_a_pass_error(digits):
    class TwoHeads(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.a, self.b = nn.Conv2d(1, 4, 3), nn.Linear(144, 10), nn.Linear(144, 2)

        def forward(self, x):
            f = torch.flatten(torch.relu(self.conv(x)), 1)
            return {"cls": self.a(f), "box": self.b(f)}

    with pytest.raises(PassError, match="dict with keys cls, box") as err:
        quantize(_art(TwoHeads()), QuantizeConfig(check_int8=False), _ctx(digits))
    assert err.value.where == "quantize" and "forward() returns one tensor" in err.value.hint


def test_op_brevitas_cannot_run_names_the_node_and_suggests_layerwise(digits):
    class Chunky(nn.Module):  # ShuffleNet's channel split: chunk on a QuantTensor
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.relu, self.fc = nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Linear(144, 10)

        def forward(self, x):
            a, b = self.relu(self.conv(x)).chunk(2, dim=1)
            return self.fc(torch.flatten(a + b, 1))

    cfg = dict(check_int8=False, calibration_samples=32, eval_samples=16, sensitivity="off")
    with pytest.raises(PassError, match="does not run.*chunk") as err:
        quantize(_art(Chunky()), QuantizeConfig(**cfg), _ctx(digits))
    assert "chunk" in err.value.where and 'quantizer = "layerwise"' in err.value.hint
    out = quantize(_art(Chunky()), QuantizeConfig(quantizer="layerwise", **cfg), _ctx(digits))  # the hint works
    assert out.meta["quantized"]["scheme"] == "W8A8"


def test_untraceable_model_hint_names_the_real_key(digits):
    class Branchy(nn.Module):  # data-dependent control flow: torch.fx cannot trace it
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.fc = nn.Conv2d(1, 4, 3), nn.Linear(144, 10)

        def forward(self, x):
            y = self.conv(x)
            if y.sum() > 0:
                y = torch.relu(y)
            return self.fc(torch.flatten(y, 1))

    with pytest.raises(PassError, match="could not trace") as err:
        quantize(_art(Branchy()), QuantizeConfig(check_int8=False, sensitivity="off"), _ctx(digits))
    assert err.value.where == "quantize quantizer" and 'quantizer = "layerwise"' in err.value.hint


def test_bias_correction_on_channels_last_linear_is_a_pass_error(digits):
    class ChannelsLast(nn.Module):  # ConvNeXt block style: a Linear over the channels of an NHWC tensor
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.pw, self.fc = nn.Conv2d(1, 8, 3), nn.Linear(8, 16), nn.Linear(16, 10)

        def forward(self, x):
            y = self.pw(self.conv(x).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
            return self.fc(y.mean((2, 3)))

    cfg = dict(check_int8=False, calibration_samples=32, eval_samples=16, sensitivity="off")
    with pytest.raises(PassError, match="bias correction failed") as err:
        quantize(_art(ChannelsLast()), QuantizeConfig(**cfg), _ctx(digits))
    assert err.value.where == "quantize bias_correction" and "bias_correction = false" in err.value.hint
    out = quantize(_art(ChannelsLast()), QuantizeConfig(bias_correction=False, **cfg), _ctx(digits))
    assert out.meta["quantized"]["scheme"] == "W8A8"


class _CatWithInput(nn.Module):
    """The (signed) model input concatenated with a ReLU branch: brevitas's concat alignment marks the input
    quantizer unsigned while still running it signed, so a faithful export of the quantizer would clip."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.relu = nn.Conv2d(1, 8, 3, padding=1), nn.ReLU()
        self.conv2, self.fc = nn.Conv2d(9, 8, 3, padding=1), nn.Linear(8, 10)

    def forward(self, x):
        y = torch.cat([self.relu(self.conv(x)), x], 1)
        return self.fc(torch.relu(self.conv2(y)).mean((2, 3)))


def test_export_that_would_not_reproduce_brevitas_is_a_pass_error():
    from edgekd.data import DataSplits

    torch.manual_seed(0)
    x = np.random.default_rng(0).standard_normal((64, 1, 8, 8), dtype=np.float32)
    ctx = _ctx(DataSplits("noise", x, None, x, None))
    cfg = dict(sensitivity="off", calibration_samples=48, eval_samples=16, check_int8=False)
    with pytest.raises(PassError, match="does not reproduce the brevitas model.*x_quant") as err:
        quantize(_art(_CatWithInput().eval()), QuantizeConfig(**cfg), ctx)
    assert 'quantizer = "layerwise"' in err.value.hint and "exclude" not in err.value.hint
    out = quantize(_art(_CatWithInput().eval()), QuantizeConfig(quantizer="layerwise", **cfg), ctx)
    assert ctx.report["quantize"]["twin_vs_brevitas"]["max_abs_error"] < 1e-5 and out.meta["quantized"]


def test_keeping_a_layer_that_does_not_help_is_put_back(digits, student):
    # random unlabelled data with near-tied logits: a keep can make agreement *worse*; it used to stay kept
    from edgekd.quant import QuantRecipe, calibrate, quantize_model
    from edgekd.quant.sensitivity import EvalSet, keep_sensitive, outputs

    model = quantize_model(student, QuantRecipe(weight_bits=2))
    calibrate(model, digits.x_train, samples=128)
    x = digits.x_test[:32]
    ev = EvalSet(x, None, outputs(model, x))  # reference = the quantized model itself: drop 0, error 0
    ranking = [{"layer": name, "drop": 1.0, "mean_abs_error": 0.1} for name in ("features.0", "classifier.3")]
    _, kept, after = keep_sensitive(model, ev, ranking, budget=-1.0, max_layers=2, weight_bits=2,
                                    requantize=lambda _: model)
    assert kept == [] and [t["layer"] for t in after["tried_without_gain"]] == ["features.0", "classifier.3"]
    assert int(model.get_submodule("features.0").quant_weight().bit_width) == 2  # put back to 2 bits


def test_fewer_calibration_samples_than_asked_is_said(digits, tmp_path, capsys):
    import dataclasses

    small = dataclasses.replace(digits, x_train=digits.x_train[:40], y_train=digits.y_train[:40])
    ctx = _ctx(small, tmp=tmp_path)
    quantize(_art(load_model("builtin:digits-student").module), QuantizeConfig(calibration_samples=256), ctx)
    rep = ctx.report["quantize"]
    assert rep["calibration_samples"] == 40  # all of the training split: decisions use the validation split
    assert any("calibrated on 40 samples, fewer than calibration_samples = 256" in n for n in rep["notes"])
    assert "warning: quantize: calibrated on 40 samples" in capsys.readouterr().err
    # without a validation split the eval set is the training tail, and the report says so
    tiny = dataclasses.replace(small, x_val=None, y_val=None, validation={"samples": 0, "reason": "too few"})
    ctx = _ctx(tiny, tmp=tmp_path)
    quantize(_art(load_model("builtin:digits-student").module), QuantizeConfig(calibration_samples=256), ctx)
    rep = ctx.report["quantize"]
    assert rep["calibration_samples"] == 30  # 40 minus the 10-sample eval tail
    assert any("calibrated on 30 samples, fewer than calibration_samples = 256" in n for n in rep["notes"])
    assert any(n.startswith("no held-out validation split (too few)") for n in rep["notes"])
    assert rep["eval"]["split"].startswith("tail of the training split")
    assert "warning: quantize: no held-out validation split" in capsys.readouterr().err


def test_report_md_shows_pass_notes_and_target_budgets(tmp_path):
    from edgekd.compress_report import write_report_md

    report = {"sources": {"model": "m", "recipe": "p", "data": "d", "teacher": None},
              "passes": {"quantize": {"scheme": "W8A8", "notes": ["calibrated on 30 samples"]}},
              "targets": {"cpu": {"backend": "onnxruntime", "build": {"notes": ["ran mixed"]},
                                  "budgets": {"p90_ms": {"value": 2.0, "limit": 1.0, "ok": False}}}}}
    write_report_md(report, tmp_path / "report.md")
    text = (tmp_path / "report.md").read_text()
    assert "  - note: calibrated on 30 samples" in text
    assert "- note: ran mixed" in text and "- budget p90_ms: 2.000 vs limit 1.0 -> FAILED" in text  # not only with auto


def _tiny_vit() -> nn.Module:
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    return timm.models.vision_transformer.VisionTransformer(img_size=8, patch_size=4, in_chans=1, embed_dim=32,
                                                            depth=2, num_heads=2, num_classes=10).eval()


def test_int8_scores_attention_computes_what_timm_computes():
    from edgekd.quant.attention import Int8ScoresAttention, quantize_attention_scores

    vit = _tiny_vit()
    x = torch.randn(3, 1, 8, 8)
    ref = vit(x)
    names = quantize_attention_scores(vit, nn.Identity, skip=lambda n: n == "blocks.1.attn")
    assert names == ["blocks.0.attn"] and isinstance(vit.blocks[0].attn, Int8ScoresAttention)
    assert "blocks.0.attn.qkv" in dict(vit.named_modules())  # layer names unchanged for exclude / sensitivity
    torch.testing.assert_close(vit(x), ref, atol=1e-5, rtol=1e-5)


def test_layerwise_vit_runs_q_k_scores_in_int8(digits, tmp_path):
    """q·kᵀ gets int8 inputs (ORT: an integer MatMul kernel); softmax·v stays float; export == brevitas."""
    vit = _tiny_vit()
    ctx = _ctx(digits, tmp=tmp_path)
    cfg = QuantizeConfig(quantizer="layerwise", calibration_samples=64, bias_correction=False, sensitivity="off")
    quantize(_art(vit), cfg, ctx)
    rep = ctx.report["quantize"]
    assert rep["ort_optimized_ops"].get("MatMulIntegerToFloat", 0) + rep["ort_optimized_ops"].get(
        "QLinearMatMul", 0) >= 2, rep["ort_optimized_ops"]
    float_layers = rep.get("float_layers") or []
    assert all(name.endswith("attn/MatMul_1") for name in float_layers), float_layers  # only softmax·v
    assert rep["twin_vs_brevitas"]["max_abs_error"] < 1e-4
    (tmp_path / "f").mkdir()
    ctx_float = _ctx(digits, tmp=tmp_path / "f")
    quantize(_art(_tiny_vit()), QuantizeConfig(quantizer="layerwise", calibration_samples=64, bias_correction=False,
                                               sensitivity="off", attention_scores="float"), ctx_float)
    assert ctx_float.report["quantize"]["int8_mac_fraction"] < rep["int8_mac_fraction"]
