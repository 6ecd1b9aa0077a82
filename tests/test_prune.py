"""Channel pruning with torch-pruning: smaller dense models that export, recovered by distillation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from edgekd.artifact import Artifact
from edgekd.config import load_recipe
from edgekd.data import DataSplits
from edgekd.errors import ConfigError, PassError
from edgekd.export import export_onnx, onnx_outputs
from edgekd.model_inspect import inspect_onnx
from edgekd.models import ResidualCNN
from edgekd.passes import PASSES, PassContext
from edgekd.passes.prune import PruneChannelsConfig, count_macs_params
from edgekd.train import FinetuneConfig, evaluate, fine_tune
from edgekd.typed import from_mapping


def _prune(module: nn.Module, config: PruneChannelsConfig, ctx: PassContext, meta: dict | None = None) -> Artifact:
    return PASSES.get("prune_channels").fn(Artifact("torch", module, meta=meta or {}), config, ctx)


@pytest.fixture(scope="module")
def dense_residual(digits, digits_teacher) -> tuple[nn.Module, float]:
    torch.manual_seed(0)
    model = ResidualCNN(1, 10, width=16)
    fine_tune(model, digits_teacher, digits, FinetuneConfig(epochs=12, lr=1e-2, schedule="onecycle", seed=0))
    return model, evaluate(model, digits.x_test, digits.y_test)


def test_resnet18_half_channels_cuts_macs_and_exports(tmp_path):
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval()
    x = np.random.default_rng(0).random((2, 3, 64, 64), dtype=np.float32)
    ctx = PassContext(data=DataSplits("random", x, None, x, None))
    params_in = sum(p.numel() for p in model.parameters())
    out = _prune(model, PruneChannelsConfig(ratio=0.5, round_to=8), ctx)
    assert sum(p.numel() for p in model.parameters()) == params_in  # input untouched
    facts = out.meta["pruning"]
    assert facts["macs_reduction"] > 3.0 and facts["params_after"] < 0.3 * facts["params_before"]
    assert out.payload.fc.out_features == 1000 and "fc" in facts["ignored"]
    for mod in out.payload.modules():
        if isinstance(mod, nn.Conv2d):
            assert mod.out_channels % 8 == 0 and mod.in_channels in (3, *range(8, 513, 8))
    assert facts["channels"]["layer4.1.conv2"] == [512, 256]
    art = export_onnx(out, tmp_path / "pruned.onnx", example=x, parity_inputs=x)
    assert art.meta["parity_vs_torch"]["max_abs_error"] < 1e-3
    assert onnx_outputs(art.path, x).shape == (2, 1000)
    info = inspect_onnx(art.path)
    # inspect's MAC count agrees with torch-pruning's (convs + fc)
    assert abs(info.totals()["macs"] - facts["macs_after"]) / facts["macs_after"] < 0.02


def test_kd_finetune_recovers_pruned_residual_model(dense_residual, digits, digits_teacher):
    dense, dense_acc = dense_residual
    no_ft = _prune(dense, PruneChannelsConfig(ratio=0.5, round_to=4), PassContext(data=digits)).payload
    no_ft_acc = evaluate(no_ft, digits.x_test, digits.y_test)
    ctx = PassContext(teacher=digits_teacher, data=digits)
    cfg = PruneChannelsConfig(ratio=0.5, round_to=4, iterative_steps=2,
                              finetune=FinetuneConfig(epochs=10, lr=5e-3, schedule="onecycle", seed=0))
    out = _prune(dense, cfg, ctx)
    acc = evaluate(out.payload, digits.x_test, digits.y_test)
    report = ctx.report["prune_channels"]
    assert len(report["finetune"]) == 2  # distillation after every pruning step
    assert out.payload.stem[0].out_channels == 8 and out.payload.head[2].in_features == 8
    assert report["macs_after"] < 0.35 * report["macs_before"]
    assert acc >= no_ft_acc and acc >= dense_acc - 4.0, (dense_acc, no_ft_acc, acc)


def test_taylor_importance_and_layer_ratios(digits):
    torch.manual_seed(0)
    model = ResidualCNN(1, 10, width=16)
    ctx = PassContext(data=digits)
    out = _prune(model, PruneChannelsConfig(importance="taylor", ratio=0.25, round_to=0), ctx)
    assert out.payload.stem[0].out_channels == 12
    assert all(p.grad is None for p in out.payload.parameters())
    # the skip Add couples stem and body.3: DepGraph prunes them together
    assert out.payload.body[3].out_channels == 12
    out = _prune(model, PruneChannelsConfig(ratio=0.0, round_to=0, layer_ratios={"body.0": 0.5}), ctx)
    assert out.payload.body[0].out_channels == 8 and out.payload.stem[0].out_channels == 16
    unlabelled = DataSplits("u", digits.x_train, None, digits.x_test, None)
    with pytest.raises(PassError, match="Taylor importance needs"):
        _prune(model, PruneChannelsConfig(importance="taylor"), PassContext(data=unlabelled))


def test_errors_and_config():
    model = ResidualCNN(1, 10)
    x = np.zeros((1, 1, 8, 8), np.float32)
    ctx = PassContext(data=DataSplits("z", x, None, x, None))
    with pytest.raises(PassError, match="before sparsify"):
        _prune(model, PruneChannelsConfig(), ctx, meta={"sparsity": {}})
    with pytest.raises(PassError, match="needs example inputs"):
        _prune(model, PruneChannelsConfig(), PassContext())
    with pytest.raises(PassError, match="matches no Conv/Linear"):
        _prune(model, PruneChannelsConfig(layer_ratios={"nope*": 0.5}), ctx)
    with pytest.raises(ConfigError, match="ratio must be in"):
        from_mapping(PruneChannelsConfig, {"ratio": 1.0}, where="p.toml")
    with pytest.raises(ConfigError, match="'layer_ratio'"):
        from_mapping(PruneChannelsConfig, {"layer_ratio": {}}, where="p.toml")
    profile = load_recipe("channels50-kd")
    cfg = profile.passes[-1].config
    assert isinstance(cfg, PruneChannelsConfig) and cfg.ratio == 0.5 and cfg.finetune is not None
    macs, params = count_macs_params(model, torch.zeros(1, 1, 8, 8))
    assert params == sum(p.numel() for p in model.parameters()) and macs > 0


class _TwoHeads(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.a, self.b = nn.Conv2d(1, 16, 3), nn.Linear(16, 10), nn.Linear(16, 2)

    def forward(self, x):
        f = self.conv(x).mean((2, 3))
        return self.a(f), self.b(f)


def test_multi_output_model_is_a_clear_error():
    x = np.random.default_rng(0).standard_normal((4, 1, 8, 8)).astype(np.float32)
    ctx = PassContext(data=DataSplits("z", x, None, x, None))
    with pytest.raises(PassError, match="tuple of 2 outputs"):
        _prune(_TwoHeads(), PruneChannelsConfig(), ctx)


def test_dependency_graph_failure_says_where_and_what_helps():
    from edgekd.passes.prune import _graph_error

    def update_reshape_index_mapping():  # where torch-pruning 1.x fails on torchvision's shufflenet_v2
        return 16 // 0

    try:
        update_reshape_index_mapping()
    except ZeroDivisionError as exc:
        err = _graph_error(exc)
    assert "ZeroDivisionError" in err.message and "update_reshape_index_mapping" in err.message
    assert "channel shuffle" in err.hint and "ignore = [...] does not help" in err.hint


def test_failure_inside_a_pruning_step_is_a_pass_error():
    from edgekd.passes.prune import _step_error

    try:
        torch.zeros(192)[792]  # what torch-pruning 1.x raises on timm efficientvit_b0's fused qkv blocks
    except IndexError as exc:
        err = _step_error(exc, 0, 2)
    assert "step 1/2: IndexError" in err.message and err.where == "prune_channels"
    assert "ignore = [" in err.hint and "context_module" in err.hint
