"""2:4 sparsity: N:M helpers, layer selection, the sparsify pass (oneshot + gradual), masks held
through fine-tuning and into the exported ONNX."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from torch import nn

from edgekd.artifact import Artifact
from edgekd.config import load_recipe
from edgekd.errors import ConfigError, PassError
from edgekd.export import export_onnx
from edgekd.model_inspect import inspect_onnx
from edgekd.nm import check_nm, ineligible_reason, nm_mask
from edgekd.passes import PASSES, PassContext
from edgekd.passes.sparsity import (
    GradualHook,
    NMParametrization,
    SparsifyConfig,
    apply_masks,
    check_masks,
    mask_hook,
    select_layers,
)
from edgekd.train import FinetuneConfig, evaluate, fine_tune
from edgekd.typed import from_mapping


def _sparsify(module: nn.Module, config: SparsifyConfig, ctx: PassContext) -> Artifact:
    return PASSES.get("sparsify").fn(Artifact("torch", module), config, ctx)


def _student(seed: int = 0) -> nn.Module:
    from edgekd.models import DemoStudent

    torch.manual_seed(seed)
    return DemoStudent(1, 10, image_size=8)


@pytest.fixture(scope="module")
def dense_student(digits, digits_teacher) -> tuple[nn.Module, float]:
    """A KD-trained dense digits student (the starting point of NVIDIA's ASP recipe)."""
    student = _student()
    fine_tune(student, digits_teacher, digits, FinetuneConfig(epochs=25, lr=1e-2, schedule="onecycle", seed=0))
    return student, evaluate(student, digits.x_test, digits.y_test)


# ---------------------------------------------------------------- pure numpy helpers


def test_nm_mask_keeps_the_largest_two_of_every_four_input_channels():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(8, 8, 3, 3)).astype(np.float32)
    keep = nm_mask(w, 2, 4, axis=1)
    assert keep.shape == w.shape and keep.dtype == bool
    for k, g, r, s in itertools.product(range(8), range(2), range(3), range(3)):
        group = np.abs(w[k, 4 * g : 4 * g + 4, r, s])
        kept = keep[k, 4 * g : 4 * g + 4, r, s]
        assert kept.sum() == 2
        assert set(np.flatnonzero(kept)) == set(np.argsort(-group)[:2])
    assert check_nm(w * keep, 2, 4).compliant
    assert abs(check_nm(w * keep).sparsity - 0.5) < 1e-9
    # groups run along the input-channel axis only: the same mask along the output axis is not 2:4
    assert not check_nm(np.swapaxes(w * keep, 0, 1), 2, 4).compliant


def test_check_nm_counts_groups_and_matmul_axis():
    w = np.ones((8, 4), dtype=np.float32)  # ONNX MatMul layout [in, out]
    w[[0, 1, 4, 5], :] = 0
    assert check_nm(w, 2, 4, axis=0).compliant
    assert check_nm(w.T, 2, 4, axis=1).compliant
    assert check_nm(w, 2, 4, axis=1).groups_ok == 4  # wrong axis: only the all-zero rows pass
    w[0, 0] = 1.0
    c = check_nm(w, 2, 4, axis=0)
    assert (c.groups_ok, c.groups, c.compliant) == (7, 8, False)


def test_ineligible_reasons():
    assert ineligible_reason((64, 3, 7, 7)) == "input channels 3 not a multiple of 4"
    assert ineligible_reason((32, 1, 3, 3), groups=32).startswith("depthwise")
    assert ineligible_reason((32, 8, 3, 3), groups=4).startswith("grouped conv")
    assert ineligible_reason((32, 8, 3, 3), groups=4, allow_grouped=True) is None
    assert ineligible_reason((10,)) is not None
    with pytest.raises(ValueError):
        nm_mask(np.ones((4, 6)), 2, 4)


# ---------------------------------------------------------------- layer selection


class _Mixed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.pw = nn.Conv2d(16, 32, 1)
        self.grouped = nn.Conv2d(32, 32, 3, padding=1, groups=4)
        self.head = nn.Linear(32, 10)
        self.proj = nn.Linear(32, 32)  # defined last, called before head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.grouped(self.pw(self.dw(self.stem(x)))).mean((2, 3))
        return self.head(self.proj(x))


def test_select_layers_reasons_and_execution_order():
    model = _Mixed()
    example = torch.zeros(1, 3, 8, 8)
    chosen, skipped = select_layers(model, SparsifyConfig(), example)
    assert chosen == ["pw", "proj"]
    assert skipped["stem"] == "input channels 3 not a multiple of 4"
    assert skipped["dw"].startswith("depthwise")
    assert skipped["grouped"].startswith("grouped conv")
    assert skipped["head"].startswith("classifier")  # last *called*, although proj is defined after it
    chosen, _ = select_layers(model, SparsifyConfig(allow_grouped=True, skip_classifier=False, exclude=("pw",)), example)
    assert chosen == ["grouped", "proj", "head"]
    chosen, skipped = select_layers(model, SparsifyConfig(include=("p*",)), example)
    assert chosen == ["pw", "proj"] and skipped["grouped"] == "grouped conv (groups=4); TensorRT sparse kernels need groups=1"


def test_config_validation_names_the_key():
    with pytest.raises(ConfigError, match="need 0 < n < m"):
        from_mapping(SparsifyConfig, {"n": 4, "m": 4}, where="p.toml")
    with pytest.raises(ConfigError, match="unknown key 'ramp_up'"):
        from_mapping(SparsifyConfig, {"ramp_up": 0.3}, where="p.toml")
    with pytest.raises(ConfigError, match="lr"):
        from_mapping(SparsifyConfig, {"finetune": {"lr": -1.0}}, where="p.toml")
    profile = load_recipe("sparse24-kd")
    spec = profile.passes[-1]
    assert spec.name == "sparsify" and spec.config.finetune is not None and spec.config.finetune.epochs > 0


# ---------------------------------------------------------------- the pass


def test_oneshot_without_finetune_is_exact_2to4_and_leaves_input_alone(digits):
    student = _student()
    before = {k: v.clone() for k, v in student.state_dict().items()}
    ctx = PassContext(data=digits)
    out = _sparsify(student, SparsifyConfig(), ctx)
    for k, v in student.state_dict().items():
        assert torch.equal(v, before[k]), f"input mutated: {k}"
    meta = out.meta["sparsity"]
    assert meta["pattern"] == "2:4" and set(meta["masks"]) == {"features.3", "classifier.1"}
    for name, mask in meta["masks"].items():
        w = out.payload.get_submodule(name).weight.detach().numpy()
        assert check_nm(w, 2, 4).compliant
        assert mask.dtype == torch.bool and mask.float().mean().item() == 0.5
    report = ctx.report["sparsify"]
    assert report["sparsity_in_layers"] == 0.5 and 0.3 < report["sparsity_overall"] < 0.5
    assert out.history[-1] == "sparsify:2:4:oneshot"


def test_pass_errors():
    ctx = PassContext()
    with pytest.raises(PassError, match="needs a torch model"):
        PASSES.get("sparsify").fn(Artifact("onnx", None), SparsifyConfig(), ctx)
    with pytest.raises(PassError, match="before quantize"):
        PASSES.get("sparsify").fn(Artifact("torch", _student(), meta={"quantized": True}), SparsifyConfig(), ctx)
    with pytest.raises(PassError, match="no layer can be sparsified"):
        _sparsify(_student(), SparsifyConfig(include=("nothing*",)), ctx)
    with pytest.raises(PassError, match="gradual schedule"):
        _sparsify(_student(), SparsifyConfig(schedule="gradual"), ctx)


def test_mask_hook_reapplies_masks_and_derives_them_from_zeros():
    student = _student()
    out = _sparsify(student, SparsifyConfig(), PassContext())
    model = out.payload
    hook = mask_hook(model, out.meta["sparsity"])
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01)  # what an optimizer step does to pruned weights
    assert check_masks(model, hook.masks) == ["features.3", "classifier.1"]
    hook.after_step(model, 1, 10)
    assert check_masks(model, hook.masks) == []
    derived = mask_hook(model)  # no meta: masks from zeros of layers that already follow 2:4
    assert set(derived.masks) == {"features.3", "classifier.1"}
    assert all(torch.equal(derived.masks[k], hook.masks[k]) for k in derived.masks)
    with pytest.raises(PassError, match="no layer 'features.9'"):
        apply_masks(model, {"features.9": torch.ones(1, dtype=torch.bool)})
    with pytest.raises(PassError, match="does not match"):
        apply_masks(model, {"features.3": torch.ones(3, dtype=torch.bool)})


def test_gradual_hook_ramps_from_dense_to_2to4():
    params = [NMParametrization(2, 4, 0.0)]
    hook = GradualHook(params, ramp=0.5)
    levels = [hook.level(step, 100) for step in (1, 24, 25, 49, 50, 100)]
    assert levels == [0, 0, 1, 1, 2, 2]
    w = torch.randn(4, 8, requires_grad=True)
    params[0].pruned = 1
    assert check_nm(params[0](w).detach().numpy(), 3, 4).compliant
    params[0].pruned = 2
    out = params[0](w)
    assert check_nm(out.detach().numpy(), 2, 4).compliant
    out.sum().backward()  # straight-through: every dense weight gets the gradient
    assert torch.all(w.grad == 1)


def test_oneshot_kd_finetune_recovers_and_masks_hold_into_onnx(dense_student, digits, digits_teacher, tmp_path):
    dense, dense_acc = dense_student
    one_shot = _sparsify(dense, SparsifyConfig(), PassContext(data=digits)).payload
    no_ft_acc = evaluate(one_shot, digits.x_test, digits.y_test)
    ctx = PassContext(teacher=digits_teacher, data=digits)
    cfg = SparsifyConfig(finetune=FinetuneConfig(epochs=8, lr=2e-3, seed=0))
    out = _sparsify(dense, cfg, ctx)
    acc = evaluate(out.payload, digits.x_test, digits.y_test)
    assert check_masks(out.payload, out.meta["sparsity"]["masks"]) == []
    assert ctx.report["sparsify"]["finetune"]["steps"] > 0
    # fine-tuning with the teacher brings back what magnitude pruning lost (tiny 3.7k-param student)
    assert acc >= no_ft_acc
    assert acc >= dense_acc - 3.0, (dense_acc, no_ft_acc, acc)

    onnx_art = export_onnx(out, tmp_path / "sparse.onnx", example=digits.x_test, parity_inputs=digits.x_test)
    assert onnx_art.meta["parity_vs_torch"]["top1_agreement"] == 1.0
    info = inspect_onnx(onnx_art.path)
    by_weight = {la.weight: la for la in info.layers}
    for name in out.meta["sparsity"]["masks"]:
        layer = by_weight[f"{name}.weight"]
        assert layer.nm is not None and layer.nm.compliant, name
    assert by_weight["features.0.weight"].reason == "input channels 1 not a multiple of 4"
    assert not by_weight["classifier.3.weight"].nm.compliant  # eligible, left dense on purpose
    assert info.totals()["nm_compliant"] == 2


def test_gradual_schedule_ends_exactly_2to4(dense_student, digits, digits_teacher):
    dense, dense_acc = dense_student
    ctx = PassContext(teacher=digits_teacher, data=digits)
    cfg = SparsifyConfig(schedule="gradual", ramp=0.5, finetune=FinetuneConfig(epochs=6, lr=2e-3, seed=0))
    out = _sparsify(dense, cfg, ctx)
    model = out.payload
    assert not any("parametrizations" in k for k in model.state_dict())  # plain weights again
    for name in ("features.3", "classifier.1"):
        assert check_nm(model.get_submodule(name).weight.detach().numpy(), 2, 4).compliant
    assert evaluate(model, digits.x_test, digits.y_test) >= dense_acc - 5.0
    assert out.meta["sparsity"]["schedule"] == "gradual"
    # the trainer drove the ramp: 3:4 then 2:4, reached halfway through (ramp = 0.5)
    steps = ctx.report["sparsify"]["finetune"]["steps"]
    ramp = ctx.report["sparsify"]["ramp"]
    assert [level for _, level in ramp] == [1, 2] and ramp[-1][0] <= steps // 2 + 1


def test_batchnorm_folding_at_export_keeps_2to4(digits, tmp_path):
    """Conv+BN: the exporter folds BN into the conv weights (a per-output-channel scale), so zeros stay
    zeros even though the ONNX initializers get new names."""
    from edgekd.models import ResidualCNN

    torch.manual_seed(0)
    model = ResidualCNN(1, 10, width=16)
    with torch.no_grad():
        for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.uniform_(0.5, 1.5)
    out = _sparsify(model, SparsifyConfig(), PassContext(data=digits))
    assert set(out.meta["sparsity"]["masks"]) == {"body.0", "body.3"}
    path = export_onnx(out, tmp_path / "res.onnx", example=digits.x_test, parity_inputs=digits.x_test).path
    info = inspect_onnx(path)
    assert "BatchNormalization" not in info.op_histogram
    assert info.totals()["nm_compliant"] == 2 and info.totals()["eligible"] == 3
