"""``prune_channels``: remove whole channels with torch-pruning's DepGraph, recovered by distillation.

The result is a smaller *dense* model: every runtime (ONNX Runtime, OpenVINO, TensorRT, HLS) runs
it faster without special kernels, unlike 2:4 sparsity which only pays off on sparse tensor cores.

Coupled layers (residual adds, BatchNorm, depthwise convs, the Linear after a Flatten) are pruned
together, as DepGraph groups them. The classifier's outputs are never pruned (they are the classes).
With ``iterative_steps = k`` the ratio is reached in k equal steps and ``finetune`` runs after
each step (prune a little, distill, prune again). Run this pass *before* ``sparsify``.

``artifact.meta["pruning"]``: ``{"ratio", "importance", "macs_before", "macs_after",
"params_before", "params_after", "channels": {layer: [out_before, out_after]}}``.
"""

from __future__ import annotations

import copy
import fnmatch
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from edgekd.artifact import Artifact
from edgekd.errors import PassError
from edgekd.export import check_single_output
from edgekd.inputs import to_torch
from edgekd.passes import PassContext, register_pass
from edgekd.passes.sparsity import execution_order
from edgekd.progress import log
from edgekd.train import FinetuneConfig

_WEIGHTED = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


@dataclass(frozen=True)
class PruneChannelsConfig:
    """Channel pruning settings (TOML: a ``[[passes]]`` table with ``name = "prune_channels"``).

    ratio: fraction of channels removed, per layer (``global_pruning = false``) or across the
    whole network ranked together (``true``; ``max_layer_ratio`` caps any one layer).
    layer_ratios: ``{glob: ratio}`` per-layer overrides on module names (per-layer mode).
    importance: "l2" / "l1" weight magnitude, or "taylor" (|w * dL/dw|, from ``taylor_batches``
    batches of training data; the loss is CE on labels, or KL to the teacher without labels).
    ignore: globs of module names whose output channels stay as they are.
    round_to: kept channel counts are multiples of this (8 or 16 suit SIMD/tensor cores; 0 = off).
    """

    ratio: float = 0.5
    global_pruning: bool = False
    layer_ratios: dict[str, float] = field(default_factory=dict)
    max_layer_ratio: float = 0.9
    importance: Literal["l2", "l1", "taylor"] = "l2"
    ignore: tuple[str, ...] = ()
    skip_classifier: bool = True
    round_to: int = 8
    iterative_steps: int = 1
    taylor_batches: int = 4
    finetune: FinetuneConfig | None = None

    def __post_init__(self) -> None:
        for key, value in (("ratio", self.ratio), *((f"layer_ratios.{k}", v) for k, v in self.layer_ratios.items())):
            if not 0.0 <= value < 1.0:
                raise ValueError(f"{key} must be in [0, 1), got {value}")
        if not 0.0 < self.max_layer_ratio <= 1.0:
            raise ValueError(f"max_layer_ratio must be in (0, 1], got {self.max_layer_ratio}")
        if self.round_to < 0 or self.iterative_steps < 1 or self.taylor_batches < 1:
            raise ValueError("round_to must be >= 0, iterative_steps and taylor_batches >= 1")


def _importance(kind: str) -> Any:
    import torch_pruning as tp

    if kind == "taylor":
        return tp.importance.GroupTaylorImportance()
    return tp.importance.GroupMagnitudeImportance(p=1 if kind == "l1" else 2)


def count_macs_params(model: nn.Module, example: torch.Tensor) -> tuple[int, int]:
    """(MACs per sample, parameters) as torch-pruning counts them."""
    import torch_pruning as tp

    was_training = model.training
    model.eval()
    macs, params = tp.utils.count_ops_and_params(model, example)
    model.train(was_training)
    return int(macs), int(params)


def _out_channels(model: nn.Module) -> dict[str, int]:
    return {name: int(mod.weight.shape[0]) for name, mod in model.named_modules() if isinstance(mod, _WEIGHTED) and name}


def _taylor_gradients(model: nn.Module, ctx: PassContext, batches: int, seed: int) -> None:
    """Fill .grad for Taylor importance from a few training batches."""
    data = ctx.data
    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(data.x_train))[: batches * 64]
    model.eval()  # BN statistics stay as trained; only gradients are wanted
    model.zero_grad()
    for chunk in np.array_split(idx, batches):
        x = torch.from_numpy(data.x_train[chunk])
        logits = model(x)
        if data.y_train is not None:
            loss = nn.functional.cross_entropy(logits, torch.from_numpy(data.y_train[chunk]))
        elif ctx.teacher is not None:
            with torch.no_grad():
                target = ctx.teacher(x).softmax(-1)
            loss = nn.functional.kl_div(logits.log_softmax(-1), target, reduction="batchmean")
        else:
            raise PassError("Taylor importance needs labelled data or a teacher", where="prune_channels importance",
                            hint='use importance = "l2", or pass --teacher')
        loss.backward()


def _graph_error(exc: Exception) -> PassError:
    """A PassError for a torch-pruning dependency-graph failure, saying where inside torch-pruning it broke."""
    import traceback

    frames = traceback.extract_tb(exc.__traceback__)
    inner = frames[-1].name if frames else "?"
    text = str(exc).splitlines()[0] if str(exc) else ""
    message = f"torch-pruning could not build the dependency graph ({type(exc).__name__}: {text}, in {inner})"
    if "reshape" in inner or "view" in inner or "flatten" in inner:
        hint = ("a reshape/view that splits or mixes channels (e.g. ShuffleNet's channel shuffle, attention head "
                "reshapes) cannot be traced for channel pruning, and ignore = [...] does not help at this stage: "
                "use sparsify or quantize for this model")
    else:
        hint = ("the model uses an op torch-pruning cannot trace; ignore = [...] only helps once the graph is built: "
                "try sparsify / quantize, or prune a wrapper that leaves the unsupported part out")
    return PassError(message, where="prune_channels", hint=hint)


def _step_error(exc: Exception, step: int, steps: int) -> PassError:
    import traceback

    frames = traceback.extract_tb(exc.__traceback__)
    inner = frames[-1].name if frames else "?"
    text = str(exc).splitlines()[0] if str(exc) else ""
    return PassError(f"torch-pruning failed while removing channels (step {step + 1}/{steps}: {type(exc).__name__}: "
                     f"{text}, in {inner})", where="prune_channels",
                     hint="its dependency graph got the channel coupling of some block wrong (seen on attention "
                          "blocks with fused qkv projections): add those blocks to ignore = [...] (timm "
                          "efficientvit_b0: ignore = [\"*context_module*\"] prunes the rest), or use sparsify / "
                          "quantize for this model")


# torch-pruning traces one example tensor here (and the Taylor gradients feed one): a multi-input model would
# prune nothing or fail mid-way, so it is refused before training (multi_input=False)
@register_pass("prune_channels", PruneChannelsConfig, not_after=("sparsify", "quantize"), multi_input=False)
def prune_channels(artifact: Artifact, config: PruneChannelsConfig, ctx: PassContext) -> Artifact:
    """Channel pruning with torch-pruning (DepGraph): a smaller dense model, recovered by distillation."""
    import torch_pruning as tp

    if artifact.kind != "torch":
        raise PassError(f"prune_channels needs a torch model, got a {artifact.kind!r} artifact", where="prune_channels")
    if "sparsity" in artifact.meta or artifact.meta.get("quantized"):
        raise PassError("prune_channels must run before sparsify and quantize (it changes weight shapes)",
                        where="prune_channels", hint="order the passes: prune_channels, sparsify, quantize")
    if ctx.data is None:
        raise PassError("prune_channels traces the model and needs example inputs", where="prune_channels",
                        hint="pass --data")
    model = copy.deepcopy(artifact.payload)
    example = to_torch(ctx.data.x_train[:1])  # token ids stay int64 (an Embedding takes no float indices)
    check_single_output(model, example, error=PassError, where="prune_channels")
    order = execution_order(model, example)
    modules = dict(model.named_modules())
    ignored_names = [n for n in order if any(fnmatch.fnmatchcase(n, pat) for pat in config.ignore)]
    if config.skip_classifier and order:
        ignored_names.append(order[-1])
    ratio_dict = {}
    for pattern, ratio in config.layer_ratios.items():
        matched = [n for n in order if fnmatch.fnmatchcase(n, pattern)]
        if not matched:
            raise PassError(f"layer_ratios pattern {pattern!r} matches no Conv/Linear layer",
                            where="prune_channels layer_ratios", hint=f"layers: {', '.join(order)}")
        ratio_dict.update({modules[n]: ratio for n in matched})
    if ratio_dict and config.global_pruning:
        raise PassError("layer_ratios apply to per-layer pruning only", where="prune_channels layer_ratios",
                        hint="set global_pruning = false, or drop layer_ratios")

    macs_before, params_before = count_macs_params(model, example)
    channels_before = _out_channels(model)
    try:
        pruner = tp.pruner.MetaPruner(
            model, example, importance=_importance(config.importance), global_pruning=config.global_pruning,
            pruning_ratio=config.ratio, pruning_ratio_dict=ratio_dict or None,
            max_pruning_ratio=config.max_layer_ratio, iterative_steps=config.iterative_steps,
            ignored_layers=[modules[n] for n in ignored_names], round_to=config.round_to or None,
        )
    except Exception as exc:
        raise _graph_error(exc) from exc
    finetunes = []
    for step in range(config.iterative_steps):
        if config.importance == "taylor":
            _taylor_gradients(model, ctx, config.taylor_batches, ctx.seed + step)
        try:
            pruner.step()
        except Exception as exc:  # torch-pruning's index bookkeeping breaks on some coupled layouts
            raise _step_error(exc, step, config.iterative_steps) from exc
        model.zero_grad(set_to_none=True)
        try:  # the dependency graph cannot see shapes hard-coded in forward() (e.g. attention head reshapes)
            with torch.no_grad():
                model.eval()(example)
        except RuntimeError as exc:
            raise PassError(f"the pruned model no longer runs: {str(exc).splitlines()[0]}", where="prune_channels",
                            hint="layers whose forward() reshapes with fixed sizes (attention heads, e.g. timm ViT "
                                 "blocks) cannot be channel-pruned here: add them to ignore = [...], or use "
                                 "sparsify / quantize for such models") from exc
        if config.finetune is not None:
            from edgekd.train import fine_tune

            result = fine_tune(model, ctx.teacher, ctx.data, config.finetune,
                               description=f"prune step {step + 1}/{config.iterative_steps} fine-tune")
            finetunes.append({"steps": result.steps, "seconds": round(result.seconds, 2),
                              "best_accuracy": result.best_accuracy, "final_accuracy": result.final_accuracy,
                              "history": result.history, "kept": result.extra.get("kept")})
    model.eval()
    macs_after, params_after = count_macs_params(model, example)
    channels_after = _out_channels(model)
    facts: dict[str, Any] = {
        "ratio": config.ratio, "importance": config.importance, "global": config.global_pruning,
        "macs_before": macs_before, "macs_after": macs_after, "params_before": params_before,
        "params_after": params_after, "macs_reduction": round(macs_before / max(macs_after, 1), 3),
        "channels": {n: [channels_before[n], channels_after[n]] for n in channels_before
                     if channels_before[n] != channels_after.get(n)},
        "ignored": ignored_names,
    }
    ctx.report["prune_channels"] = {**facts, **({"finetune": finetunes} if finetunes else {})}
    log(f"prune_channels: MACs {macs_before / 1e6:.1f}M -> {macs_after / 1e6:.1f}M, params {params_before} -> "
        f"{params_after}")
    return artifact.evolve(f"prune_channels:{config.ratio}:{config.importance}", payload=model,
                           meta={"pruning": facts})
