"""The per-output training objective a task declares (edgekd/tasks.py): KD against the teacher's output and a loss
against the labels, each on the output's own axis.

Softmax KD (``kl``/``reverse_kl``) runs over the output's class axis at every position: per pixel for a
segmentation map, per token for a tagger, per cell for a detector's class head (the class axis is moved last and
every position is one distribution; ``batchmean`` over positions). ``cwd`` is channel-wise distillation (Shu et al.
2021): each channel's spatial map is a distribution (softmax over H x W at temperature T) and KL(teacher || student)
is averaged over channels. Continuous outputs use ``mse`` / ``l1`` / ``smooth_l1``. A box head's label loss counts
only the cells whose class label is an object (``mask_by``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

from edgekd.errors import ConfigError
from edgekd.inputs import args, call
from edgekd.tasks import INPUT_TARGET, OutputSpec, TaskSpec, label_of
from edgekd.train.losses import hinton_kd, reverse_kd


def outputs_by_name(out: Any, spec: TaskSpec, where: str) -> dict[str, torch.Tensor]:
    """A model's output (a tensor, a tuple/list, a dict, or a Hugging Face output with ``.logits``) by the task's
    output names, in the task's order."""
    names = [o.name for o in spec.outputs]
    if isinstance(out, torch.Tensor):
        values = [out]
    elif isinstance(out, Mapping):
        missing = [n for n in names if n not in out]
        if missing and len(out) == len(names):
            values = list(out.values())
        elif missing:
            raise ConfigError(f"model output has keys {list(out)}; the task needs {names}", where=where)
        else:
            values = [out[n] for n in names]
    elif isinstance(out, (tuple, list)):
        values = list(out)
    elif hasattr(out, "logits"):
        values = [out.logits]
    else:
        raise ConfigError(f"model returned {type(out).__name__}; expected a tensor, a tuple or a dict of tensors",
                          where=where)
    if len(values) != len(names):
        raise ConfigError(f"model returned {len(values)} outputs; task {spec.name} has {len(names)} ({', '.join(names)})",
                          where=where)
    return dict(zip(names, values, strict=True))


def _positions_last(t: torch.Tensor, axis: int) -> torch.Tensor:
    """N x ... x C x ... -> (N * positions) x C: one row per distribution."""
    return t.movedim(axis, -1).reshape(-1, t.shape[axis])


def channel_wise_kd(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """CWD (Shu et al. 2021): softmax over each channel's spatial positions, KL(teacher || student) * T^2, mean
    over N x C channels."""
    if student.dim() < 3:
        raise ConfigError("channel-wise distillation needs a spatial output (N x C x H x W or N x C x L)",
                          where="task kd = 'cwd'")
    s = F.log_softmax(student.flatten(2) / temperature, dim=-1)
    t = F.log_softmax(teacher.flatten(2) / temperature, dim=-1)
    kl = F.kl_div(s, t, reduction="none", log_target=True).sum(-1)
    return kl.mean() * temperature**2


def kd_loss(out: OutputSpec, student: torch.Tensor, teacher: torch.Tensor, temperature: float,
            logits_kind: str, mask: torch.Tensor | None = None) -> torch.Tensor | None:
    """The output's KD term; ``logits_kind`` (the recipe's ``loss``) picks hinton or reverse KL for logits outputs.
    ``mask``: a box head imitates the teacher's boxes on object cells only (a background cell's box is noise the
    teacher was never trained on; matching it swamped the class head: measured mAP 33 % KD vs 55 % without)."""
    kind = out.kd
    if kind == "none":
        return None
    if kind in ("kl", "reverse_kl"):
        axis = out.class_axis or 1
        fn = reverse_kd if (kind == "reverse_kl" or logits_kind == "reverse_kl") else hinton_kd
        return fn(_positions_last(student, axis), _positions_last(teacher, axis), temperature)
    if kind == "cwd":
        return channel_wise_kd(student, teacher, temperature)
    return _regression(kind, student, teacher.to(student.dtype), mask)


def _regression(kind: str, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    fn = {"mse": F.mse_loss, "l1": F.l1_loss, "smooth_l1": F.smooth_l1_loss}[kind]
    if mask is None:
        return fn(pred, target)
    per = fn(pred, target, reduction="none") * mask
    return per.sum() / mask.sum().clamp_min(1.0)


def _object_mask(out: OutputSpec, pred: torch.Tensor, labels: Any) -> torch.Tensor | None:
    """For a box head (``mask_by``): 1 on cells whose class label is an object, broadcast to the output."""
    if out.mask_by is None or not isinstance(labels, Mapping) or out.mask_by not in labels:
        return None
    fg = (labels[out.mask_by] > 0).to(pred.dtype)  # N x G x G object cells
    return fg.unsqueeze(1).expand_as(pred) if fg.dim() == pred.dim() - 1 else fg.expand_as(pred)


def label_loss(out: OutputSpec, pred: torch.Tensor, labels: Any, x: torch.Tensor) -> torch.Tensor | None:
    if out.loss == "none":
        return None
    target = x if out.target == INPUT_TARGET else label_of(labels, out)
    if target is None:
        return None
    if out.loss == "ce":
        logits = pred.movedim(out.class_axis or 1, 1)
        return F.cross_entropy(logits, target.long(), ignore_index=out.ignore_index)
    return _regression(out.loss, pred, target.to(pred.dtype), _object_mask(out, pred, labels))


def objective(spec: TaskSpec, student: Mapping[str, torch.Tensor], teacher: Mapping[str, torch.Tensor] | None,
              labels: Any, x: torch.Tensor, *, logits_kind: str, temperature: float, alpha: float) -> torch.Tensor:
    """Sum over outputs of weight * (alpha * KD + (1 - alpha) * label loss), degrading cleanly: loss = "ce" or no
    teacher -> label loss only; no labels -> KD only (reconstruction always has its input as target)."""
    total: torch.Tensor | None = None
    for out in spec.outputs:
        pred = student[out.name]
        soft = kd_loss(out, pred, teacher[out.name], temperature, logits_kind, _object_mask(out, pred, labels)) \
            if teacher is not None and logits_kind != "ce" else None
        hard = label_loss(out, pred, labels, x)
        if soft is None and hard is None:
            continue
        if soft is None:
            term = hard
        elif hard is None or alpha >= 1.0:
            term = soft
        else:
            term = alpha * soft + (1.0 - alpha) * hard
        total = out.weight * term if total is None else total + out.weight * term
    if total is None:
        raise ConfigError(f"task {spec.name}: no output has a loss to train (no teacher and no labels)",
                          where="finetune.loss", hint="give a teacher with a KD loss, or labelled data")
    return total


@torch.no_grad()
def probe_outputs(model: torch.nn.Module, probe: torch.Tensor, task_hint: str | None = None) -> list[tuple[str, tuple[int, ...]]]:
    """(name, batched shape) of each output of ``model`` on ``probe``, without touching BatchNorm statistics."""
    from edgekd.tasks import output_names

    was = model.training
    model.eval()
    try:
        out = call(model, probe)
    finally:
        model.train(was)
    if hasattr(out, "logits") and not isinstance(out, (torch.Tensor, Mapping, tuple, list)):
        out = out.logits
    values = list(out.values()) if isinstance(out, Mapping) else list(out) if isinstance(out, (tuple, list)) else [out]
    if not all(isinstance(v, torch.Tensor) for v in values):
        raise ConfigError(f"the model returns {type(out).__name__} holding non-tensors; edgekd trains models that "
                          "return tensors (one, a tuple or a dict)", where="model output")
    return list(zip(output_names(out, task_hint), [tuple(v.shape) for v in values], strict=True))


def task_for(model: torch.nn.Module, data: Any, probe: torch.Tensor) -> TaskSpec:
    """The data's resolved task (the pipeline attaches it before any pass), else the default for this model and data."""
    from edgekd.tasks import resolve

    spec = getattr(data, "task", None)
    if isinstance(spec, TaskSpec):
        return spec
    # a preset name or a [task] table set on the data by an API caller, or nothing: resolved against this model
    return resolve(spec, output_shapes=probe_outputs(model, probe, spec if isinstance(spec, str) else None),
                   labels=getattr(data, "y_train", None), input_dtype=str(args(probe)[0].dtype).removeprefix("torch."),
                   where="data.task")
