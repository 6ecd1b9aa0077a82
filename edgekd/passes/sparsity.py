"""``sparsify``: N:M (default 2:4) semi-structured sparsity, recovered by distillation.

Groups of M consecutive *input channels* (TensorRT's layout for sparse tensor cores): Conv weight
[K, C, R, S] -> groups along C at every (k, r, s); Linear [out, in] -> groups along ``in``.

Schedules:
- ``oneshot`` (NVIDIA ASP recipe): magnitude masks on the trained dense model, then fine-tune with
  the teacher while the masks are re-applied after every optimizer step.
- ``gradual`` (SR-STE / CAST style): masks are recomputed from the dense weights on every forward
  pass (sparse forward, straight-through backward plus a decay that pulls pruned weights to zero),
  and tighten from M:M to N:M over the first ``ramp`` fraction of fine-tuning. Needs ``finetune``.

Public API (stable; the quantization pass and others rely on it):

``mask_hook(module, sparsity=None) -> MaskHook``
    A fine-tune hook (``after_step`` / ``after_train``) that re-applies masks by layer name. Pass
    ``artifact.meta["sparsity"]`` (or a ``{name: bool tensor}`` dict); with ``None`` the masks are
    taken from the exact zeros of every layer of ``module`` that already follows 2:4.
``apply_masks(module, masks)``
    Multiply weights by the masks in place (no grad). Names missing from ``module`` are an error.
``check_masks(module, masks) -> list[str]``
    Layers whose weights have a nonzero where the mask says zero (empty list = masks hold).
``nm_layers(module, n=2, m=4) -> dict[str, NMCheck]``
    N:M compliance of every Conv/Linear weight (``edgekd.nm.NMCheck``).

``artifact.meta["sparsity"]`` after this pass: ``{"pattern": "2:4", "n": 2, "m": 4,
"masks": {layer name: torch.bool tensor shaped like its weight}, "skipped": {name: reason},
"schedule": ...}``. Run ``prune_channels`` *before* ``sparsify`` (pruning changes weight shapes)
and ``quantize`` *after* it, with ``hooks=[mask_hook(model, artifact.meta["sparsity"])]``.
"""

from __future__ import annotations

import copy
import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from edgekd.artifact import Artifact
from edgekd.errors import PassError
from edgekd.export import check_single_output
from edgekd.inputs import call, to_torch
from edgekd.nm import NMCheck, check_nm, ineligible_reason, nm_mask
from edgekd.passes import PassContext, register_pass
from edgekd.progress import log
from edgekd.train import FinetuneConfig

_WEIGHTED = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


@dataclass(frozen=True)
class SparsifyConfig:
    """N:M sparsity settings (TOML: a ``[[passes]]`` table with ``name = "sparsify"``).

    include / exclude: globs on module names (``features.*``); skip_first / skip_classifier:
    leave the first and last weighted layer (in execution order) dense, as ASP does.
    allow_grouped: also sparsify grouped (never depthwise) convs whose C/groups % M == 0.
    ramp: gradual schedule only, the fraction of fine-tuning steps over which masks tighten.
    decay: gradual schedule only, the SR-STE decay applied to the pruned weights' gradient.
    """

    n: int = 2
    m: int = 4
    schedule: Literal["oneshot", "gradual"] = "oneshot"
    include: tuple[str, ...] = ("*",)
    exclude: tuple[str, ...] = ()
    skip_first: bool = True
    skip_classifier: bool = True
    allow_grouped: bool = False
    ramp: float = 0.5
    decay: float = 2e-4
    finetune: FinetuneConfig | None = None

    def __post_init__(self) -> None:
        if not 0 < self.n < self.m:
            raise ValueError(f"need 0 < n < m, got n={self.n}, m={self.m}")
        if not 0.0 < self.ramp <= 1.0:
            raise ValueError(f"ramp must be in (0, 1], got {self.ramp}")
        if self.decay < 0:
            raise ValueError(f"decay must be >= 0, got {self.decay}")


# ---------------------------------------------------------------- layer selection


def _weighted_modules(module: nn.Module) -> dict[str, nn.Module]:
    return {name: mod for name, mod in module.named_modules() if isinstance(mod, _WEIGHTED) and name}


def execution_order(module: nn.Module, example: torch.Tensor | None) -> list[str]:
    """Names of Conv/Linear layers in the order a forward pass calls them (definition order
    without an example). The first and last are the stem and the classifier."""
    layers = _weighted_modules(module)
    if example is None:
        return list(layers)
    order: list[str] = []
    handles = [mod.register_forward_hook(lambda _m, _i, _o, n=name: order.append(n)) for name, mod in layers.items()]
    try:
        was_training = module.training
        module.eval()
        with torch.no_grad():
            call(module, example)
        module.train(was_training)
    finally:
        for h in handles:
            h.remove()
    seen = list(dict.fromkeys(order))
    return seen + [n for n in layers if n not in seen]


def select_layers(module: nn.Module, config: SparsifyConfig,
                  example: torch.Tensor | None = None) -> tuple[list[str], dict[str, str]]:
    """(layers to sparsify, {skipped layer: why}) for ``config``."""
    mods = _weighted_modules(module)
    order = execution_order(module, example)
    chosen: list[str] = []
    skipped: dict[str, str] = {}
    for i, name in enumerate(order):
        mod = mods[name]
        groups = int(getattr(mod, "groups", 1))
        reason = ineligible_reason(tuple(mod.weight.shape), m=config.m, groups=groups,
                                   allow_grouped=config.allow_grouped)
        if reason is None and isinstance(mod, nn.modules.conv._ConvTransposeNd):
            reason = "transposed conv"
        if reason is None and config.skip_first and i == 0:
            reason = "first layer (skip_first = true)"
        if reason is None and config.skip_classifier and i == len(order) - 1:
            reason = "classifier (skip_classifier = true)"
        if reason is None and not any(fnmatch.fnmatchcase(name, pat) for pat in config.include):
            reason = "not matched by include"
        if reason is None and any(fnmatch.fnmatchcase(name, pat) for pat in config.exclude):
            reason = "matched by exclude"
        if reason is None:
            chosen.append(name)
        else:
            skipped[name] = reason
    return chosen, skipped


# ---------------------------------------------------------------- masks


def compute_masks(module: nn.Module, layers: list[str], n: int = 2, m: int = 4) -> dict[str, torch.Tensor]:
    """Magnitude N:M keep-masks (bool, shaped like each weight)."""
    out = {}
    for name in layers:
        w = module.get_submodule(name).weight.detach().cpu().numpy()
        out[name] = torch.from_numpy(nm_mask(w, n, m, axis=1))
    return out


def _unwrap(model: nn.Module) -> nn.Module:
    # DistributedDataParallel / DataParallel keep the real model in .module
    return model.module if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)) else model


def _weight(model: nn.Module, name: str) -> torch.Tensor:
    try:
        mod = _unwrap(model).get_submodule(name)
    except AttributeError:
        raise PassError(f"model has no layer {name!r} to apply its sparsity mask to", where=name,
                        hint="layer names changed after sparsify; keep module names when wrapping layers") from None
    # a layer the quantize pass keeps FP32 in graph mode (exclude, sensitivity) sits inside a FloatLayer
    weight = getattr(mod, "weight", getattr(getattr(mod, "inner", None), "weight", None))
    if not isinstance(weight, torch.Tensor):
        raise PassError(f"layer {type(mod).__name__} has no weight tensor for its sparsity mask", where=name,
                        hint="keep the sparsified layer's module (and its .weight) when wrapping or replacing it")
    return weight


def apply_masks(module: nn.Module, masks: Mapping[str, torch.Tensor]) -> None:
    """Zero every weight where its mask is False (in place)."""
    with torch.no_grad():
        for name, mask in masks.items():
            w = _weight(module, name)
            if tuple(w.shape) != tuple(mask.shape):
                raise PassError(f"mask shape {tuple(mask.shape)} does not match weight {tuple(w.shape)}", where=name,
                                hint="run prune_channels before sparsify, not after")
            w.mul_(mask.to(device=w.device, dtype=w.dtype))


def check_masks(module: nn.Module, masks: Mapping[str, torch.Tensor]) -> list[str]:
    """Names of layers with a nonzero weight where the mask is False."""
    bad = []
    for name, mask in masks.items():
        w = _weight(module, name).detach()
        if bool((w[~mask.to(w.device)] != 0).any()):
            bad.append(name)
    return bad


def nm_layers(module: nn.Module, n: int = 2, m: int = 4) -> dict[str, NMCheck]:
    """N:M compliance of each eligible Conv/Linear weight."""
    out = {}
    for name, mod in _weighted_modules(_unwrap(module)).items():
        shape = tuple(mod.weight.shape)
        if ineligible_reason(shape, m=m, groups=int(getattr(mod, "groups", 1)), allow_grouped=True) is None:
            out[name] = check_nm(mod.weight.detach().cpu().numpy(), n, m, axis=1)
    return out


class MaskHook:
    """Fine-tune hook: re-applies the masks after every optimizer step and after training."""

    def __init__(self, masks: Mapping[str, torch.Tensor]) -> None:
        self.masks = dict(masks)

    def after_step(self, model: nn.Module, step: int, total_steps: int) -> None:
        apply_masks(model, self.masks)

    def after_train(self, model: nn.Module) -> None:
        apply_masks(model, self.masks)


def mask_hook(module: nn.Module, sparsity: Mapping[str, Any] | None = None) -> MaskHook:
    """A MaskHook from ``artifact.meta["sparsity"]``, a ``{name: mask}`` dict, or (None) from the
    zeros of every layer of ``module`` that already follows 2:4."""
    if sparsity is None:
        masks = {name: _weight(module, name).detach().cpu() != 0
                 for name, check in nm_layers(module).items() if check.compliant}
    elif "masks" in sparsity:
        masks = dict(sparsity["masks"])
    else:
        masks = dict(sparsity)
    for name, mask in masks.items():
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
            raise PassError("sparsity masks must be bool tensors", where=name)
    return MaskHook(masks)


# ---------------------------------------------------------------- gradual (SR-STE)


class _SRSTE(torch.autograd.Function):
    """Sparse forward; backward passes the gradient straight through to the dense weights and
    adds ``decay * w`` on the pruned ones (Zhou et al., 2021, "Learning N:M fine-grained sparsity")."""

    @staticmethod
    def forward(ctx: Any, weight: torch.Tensor, mask: torch.Tensor, decay: float) -> torch.Tensor:
        ctx.save_for_backward(weight, mask)
        ctx.decay = decay
        return weight * mask

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        weight, mask = ctx.saved_tensors
        return grad + ctx.decay * (~mask) * weight, None, None


def _torch_nm_mask(weight: torch.Tensor, keep: int, m: int) -> torch.Tensor:
    """Keep the ``keep`` largest |w| of every group of ``m`` input channels (axis 1)."""
    moved = weight.detach().abs().movedim(1, -1)
    groups = moved.reshape(*moved.shape[:-1], moved.shape[-1] // m, m)
    idx = groups.topk(keep, dim=-1).indices
    mask = torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, idx, True)
    return mask.reshape(moved.shape).movedim(-1, 1)


class NMParametrization(nn.Module):
    """weight -> weight * mask(weight), the mask recomputed from magnitudes on every forward."""

    def __init__(self, n: int, m: int, decay: float) -> None:
        super().__init__()
        self.n, self.m, self.decay = n, m, decay
        self.pruned = 0  # zeros per group right now: 0 (dense) .. m - n

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        if self.pruned == 0:
            return weight
        return _SRSTE.apply(weight, _torch_nm_mask(weight, self.m - self.pruned, self.m), self.decay)


class GradualHook:
    """Tightens every layer's NMParametrization from M:M to N:M over ``ramp`` of training."""

    def __init__(self, params: list[NMParametrization], ramp: float) -> None:
        self.params = params
        self.ramp = ramp
        self.changes: list[tuple[int, int]] = []  # (step, zeros per group from then on), for the report

    def level(self, step: int, total_steps: int) -> int:
        target = self.params[0].m - self.params[0].n
        progress = min(1.0, step / max(1.0, self.ramp * total_steps))  # step counts from 1
        return min(target, int(np.floor(progress * target + 1e-9)))

    def after_step(self, model: nn.Module, step: int, total_steps: int) -> None:
        level = self.level(step, total_steps)
        if level != self.params[0].pruned:
            self.changes.append((step, level))
        for p in self.params:
            p.pruned = level


# ---------------------------------------------------------------- the pass


def _example(ctx: PassContext) -> torch.Tensor | None:
    data = ctx.data
    if data is None or getattr(data, "x_train", None) is None or not len(data.x_train):
        return None
    return to_torch(data.x_train[:1])  # token ids stay int64; several inputs: TensorInputs (edgekd.inputs)


def _fine_tune(module: nn.Module, config: SparsifyConfig, ctx: PassContext, hooks: list[object]) -> dict[str, Any]:
    from edgekd.train import fine_tune

    if ctx.data is None:
        raise PassError("fine-tuning needs data", where="sparsify finetune", hint="pass --data")
    result = fine_tune(module, ctx.teacher, ctx.data, config.finetune, hooks=hooks,
                       description=f"sparsify {config.n}:{config.m} fine-tune")
    return {"steps": result.steps, "seconds": round(result.seconds, 2), "best_accuracy": result.best_accuracy,
            "final_accuracy": result.final_accuracy, "history": result.history, "kept": result.extra.get("kept")}


@register_pass("sparsify", SparsifyConfig, not_after=("quantize",))
def sparsify(artifact: Artifact, config: SparsifyConfig, ctx: PassContext) -> Artifact:
    """N:M (default 2:4) semi-structured sparsity for sparse tensor cores, recovered by distillation."""
    if artifact.kind != "torch":
        raise PassError(f"sparsify needs a torch model, got a {artifact.kind!r} artifact", where="sparsify",
                        hint="put sparsify before export in the profile")
    if artifact.meta.get("quantized"):
        raise PassError("sparsify must run before quantize", where="sparsify",
                        hint="order the passes: prune_channels, sparsify, quantize (masks carry into QAT)")
    module = copy.deepcopy(artifact.payload)
    example = _example(ctx)
    if example is not None:
        check_single_output(module, example, error=PassError, where="sparsify")
    layers, skipped = select_layers(module, config, example)
    if not layers:
        raise PassError(f"no layer can be sparsified {config.n}:{config.m}; skipped: "
                        + "; ".join(f"{k}: {v}" for k, v in skipped.items()), where="sparsify",
                        hint="check include/exclude, or set skip_first/skip_classifier = false")
    report: dict[str, Any] = {"pattern": f"{config.n}:{config.m}", "schedule": config.schedule,
                              "layers": layers, "skipped": skipped}
    if config.schedule == "oneshot":
        masks = compute_masks(module, layers, config.n, config.m)
        apply_masks(module, masks)
        if config.finetune is not None:
            report["finetune"] = _fine_tune(module, config, ctx, [MaskHook(masks)])
    else:
        if config.finetune is None:
            raise PassError("the gradual schedule tightens masks during fine-tuning and needs a finetune table",
                            where="sparsify schedule", hint='add [passes.finetune], or use schedule = "oneshot"')
        from torch.nn.utils import parametrize

        params = []
        for name in layers:
            p = NMParametrization(config.n, config.m, config.decay)
            parametrize.register_parametrization(module.get_submodule(name), "weight", p)
            params.append(p)
        hook = GradualHook(params, config.ramp)
        try:
            report["finetune"] = _fine_tune(module, config, ctx, [hook])
            report["ramp"] = [list(change) for change in hook.changes]
        finally:
            for p in params:
                p.pruned = config.m - config.n  # freeze at the final pattern whatever happened
            for name in layers:
                parametrize.remove_parametrizations(module.get_submodule(name), "weight", leave_parametrized=True)
        masks = compute_masks(module, layers, config.n, config.m)
        apply_masks(module, masks)
    bad = check_masks(module, masks)
    if bad:
        raise PassError(f"masks did not hold after fine-tuning in {', '.join(bad)}", where="sparsify",
                        hint="a fine-tune hook must call after_step after every optimizer step")
    checks = {name: check_nm(module.get_submodule(name).weight.detach().cpu().numpy(), config.n, config.m)
              for name in layers}
    zeros = sum(c.zeros for c in checks.values())
    total = sum(c.size for c in checks.values())
    all_weights = sum(mod.weight.numel() for mod in _weighted_modules(module).values())
    report["sparsity_in_layers"] = round(zeros / total, 4)
    report["sparsity_overall"] = round(zeros / all_weights, 4)
    ctx.report["sparsify"] = report
    log(f"sparsify: {len(layers)} layers {config.n}:{config.m}, {100 * report['sparsity_overall']:.1f}% of "
        f"weights zero; skipped {len(skipped)}")
    meta = {"sparsity": {"pattern": f"{config.n}:{config.m}", "n": config.n, "m": config.m, "masks": masks,
                         "skipped": skipped, "schedule": config.schedule}}
    return artifact.evolve(f"sparsify:{config.n}:{config.m}:{config.schedule}", payload=module, meta=meta)
