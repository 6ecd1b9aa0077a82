"""One run's student/teacher wiring: layer taps, FitNets hint adapters, the attention layers, the DDP wrapper.

``wire`` attaches forward hooks to the named layers (removed by the caller's ``Tap.remove``), sizes the
hint adapters with a dry run on two samples, and decides whether the teacher's logits can be computed once.
``Wiring.teacher_terms`` gives one batch's teacher targets and the hint / attention loss terms.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from edgekd.errors import ConfigError
from edgekd.inputs import call, to_torch
from edgekd.tasks import TaskSpec
from edgekd.train import ddp
from edgekd.train.config import FinetuneConfig
from edgekd.train.losses import attention_loss, attention_modules, attention_probs, hint_loss, make_adapter
from edgekd.train.task_losses import outputs_by_name

Outputs = dict[str, torch.Tensor]


def _find(model: nn.Module, name: str, where: str) -> nn.Module:
    modules = dict(model.named_modules())
    if name not in modules:
        close = difflib.get_close_matches(name, [n for n in modules if n], n=3)
        raise ConfigError(f"no layer named {name!r}", where=where,
                          hint=f"did you mean {', '.join(close)}?" if close else "see model.named_modules()")
    return modules[name]


class Tap:
    """Forward hooks that keep the latest output (feature hints) or input (attention) of named layers."""

    def __init__(self) -> None:
        self.values: dict[str, torch.Tensor] = {}
        self._handles: list[Any] = []

    def output(self, module: nn.Module, key: str) -> None:
        def hook(_m: nn.Module, _inp: Any, out: Any) -> None:
            self.values[key] = out[0] if isinstance(out, tuple) else out
        self._handles.append(module.register_forward_hook(hook))

    def input(self, module: nn.Module, key: str) -> None:
        def hook(_m: nn.Module, inp: Any) -> None:
            self.values[key] = inp[0]
        self._handles.append(module.register_forward_pre_hook(hook))

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()


class Distilled(nn.Module):
    """Student + hint adapters in one module, so DDP synchronises the adapters' gradients too."""

    def __init__(self, student: nn.Module, adapters: nn.ModuleList, tap: Tap, hint_keys: list[str],
                 attn: nn.Module | None, task: TaskSpec) -> None:
        super().__init__()
        self.student = student
        self.task = task
        self.adapters = adapters
        self._tap = tap
        self._hint_keys = hint_keys
        self._attn = [attn]  # a list: not registered twice as a submodule

    def forward(self, *xs: torch.Tensor) -> tuple[Outputs, list[torch.Tensor], torch.Tensor | None]:
        outputs = outputs_by_name(self.student(*xs), self.task, "student")  # several inputs: edgekd.inputs
        feats = [a(self._tap.values[k]) for a, k in zip(self.adapters, self._hint_keys)]
        attn = attention_probs(self._attn[0], self._tap.values["attn"]) if self._attn[0] is not None else None
        return outputs, feats, attn


@dataclass
class Wiring:
    """What trains (``wrapper``: student + adapters; ``model``: it, or DDP around it) and what it learns from."""

    student: nn.Module
    teacher: nn.Module | None
    wrapper: Distilled
    model: nn.Module
    teacher_tap: Tap
    hint_keys: list[str]
    teacher_attn: nn.Module | None
    task: TaskSpec
    teacher_logits: Outputs | None = None  # all training samples' teacher outputs, when nothing per batch is needed

    @property
    def adapters(self) -> nn.ModuleList:
        return self.wrapper.adapters

    def teacher_terms(self, xb: torch.Tensor, idx: torch.Tensor, feats: list[torch.Tensor], s_probs: torch.Tensor | None,
                      config: FinetuneConfig, description: str) -> tuple[Outputs | None, list[torch.Tensor]]:
        """One batch's teacher outputs by name (None without a teacher) and weighted hint / attention loss terms.
        Call right after the student's forward: the student's taps hold this batch."""
        if self.teacher is None:
            return None, []
        device = xb.device
        if self.teacher_logits is not None:
            t_logits = {k: v[idx].to(device) for k, v in self.teacher_logits.items()}
        else:
            with torch.no_grad():
                out = call(self.teacher, xb.to(next(self.teacher.parameters()).device))
                t_logits = {k: v.to(device) for k, v in outputs_by_name(out, self.task, "teacher").items()}
        terms = [config.feature_weight * hint_loss(f, self.teacher_tap.values[key].to(device))
                 for f, key in zip(feats, self.hint_keys)]
        if s_probs is not None:
            with torch.no_grad():
                t_probs = attention_probs(self.teacher_attn, self.teacher_tap.values["attn"]).to(device)
            terms.append(config.attention_weight * attention_loss(s_probs, t_probs, f"{description} attention"))
        return t_logits, terms


def wire(student: nn.Module, teacher: nn.Module | None, config: FinetuneConfig, taps: tuple[Tap, Tap],
         x_train: np.ndarray, probe: torch.Tensor, description: str, task: TaskSpec) -> Wiring:
    """Taps, adapters and the wrapper for one run (``taps``: the student's and the teacher's, removed by the caller)."""
    tap, t_tap = taps
    hint_keys = _tap_hints(student, teacher, config, taps, description)
    s_attn, t_attn = _tap_attention(student, teacher, config, taps, description)
    adapters = nn.ModuleList()
    if hint_keys:
        assert teacher is not None
        adapters = _adapters(student, teacher, config, taps, hint_keys, probe, description)
    wrapper = Distilled(student, adapters, tap, hint_keys, s_attn, task)
    wiring = Wiring(student, teacher, wrapper, wrapper, t_tap, hint_keys, t_attn, task)
    # teacher outputs once when nothing per-batch is needed from the teacher (deterministic in eval mode)
    if teacher is not None and not hint_keys and s_attn is None and config.loss != "ce":
        wiring.teacher_logits = _teacher_outputs(teacher, x_train, task)
    return wiring


def _tap_hints(student: nn.Module, teacher: nn.Module | None, config: FinetuneConfig, taps: tuple[Tap, Tap],
               description: str) -> list[str]:
    tap, t_tap = taps
    keys = []
    for i, (t_name, s_name) in enumerate(config.hint_pairs() if teacher is not None else []):
        t_tap.output(_find(teacher, t_name, f"{description} features[{i}] teacher"), f"h{i}")  # type: ignore[arg-type]
        tap.output(_find(student, s_name, f"{description} features[{i}] student"), f"h{i}")
        keys.append(f"h{i}")
    return keys


def _tap_attention(student: nn.Module, teacher: nn.Module | None, config: FinetuneConfig, taps: tuple[Tap, Tap],
                   description: str) -> tuple[nn.Module | None, nn.Module | None]:
    """The student's and teacher's last attention layers, their inputs tapped (None, None without attention transfer)."""
    if teacher is None or config.attention_weight <= 0:
        return None, None
    t_list, s_list = attention_modules(teacher), attention_modules(student)
    if not t_list or not s_list:
        raise ConfigError(f"attention_weight > 0 but the {'teacher' if not t_list else 'student'} has no "
                          "nn.MultiheadAttention / timm Attention layer", where=f"{description} attention_weight",
                          hint="set attention_weight = 0 for models without attention")
    t_attn, s_attn = t_list[-1][1], s_list[-1][1]  # MiniLM: the last layer's attention
    taps[1].input(t_attn, "attn")
    taps[0].input(s_attn, "attn")
    return s_attn, t_attn


def _adapters(student: nn.Module, teacher: nn.Module, config: FinetuneConfig, taps: tuple[Tap, Tap],
              hint_keys: list[str], probe: torch.Tensor, description: str) -> nn.ModuleList:
    """One adapter per hint, sized by a dry run of both models on ``probe`` (the student's BN untouched)."""
    tap, t_tap = taps
    was = student.training
    student.eval()
    with torch.no_grad():
        call(teacher, probe.to(next(teacher.parameters()).device))
        call(student, probe)
    student.train(was)
    adapters = nn.ModuleList(
        make_adapter(tap.values[key].shape, t_tap.values[key].shape, f"{description} features[{i}] ({config.features[i]})")
        for i, key in enumerate(hint_keys))
    return adapters.to(probe.device)


@torch.no_grad()
def _teacher_outputs(teacher: nn.Module, x: np.ndarray, task: TaskSpec, batch: int = 512) -> Outputs:
    device = next(teacher.parameters()).device
    parts = [outputs_by_name(call(teacher, to_torch(x[i : i + batch], device)), task, "teacher")
             for i in range(0, len(x), batch)]
    return {name: torch.cat([p[name].float().cpu() for p in parts]) for name in parts[0]}


def wrap_ddp(wrapper: nn.Module, info: ddp.DistInfo, probe: torch.Tensor) -> nn.Module:
    """DDP around student + adapters; a dry backward tells whether some parameters never get gradients."""
    from torch.nn.parallel import DistributedDataParallel

    was = wrapper.training
    wrapper.eval()  # no BN statistics update, no dropout RNG draw
    out = call(wrapper, probe)  # several inputs: wrapper(*inputs)
    wrapper.train(was)
    total = sum(o.float().sum() for o in out[0].values()) + sum(f.float().sum() for f in out[1]) \
        + (out[2].sum() if out[2] is not None else 0)
    total.backward()
    unused = any(p.requires_grad and p.grad is None for p in wrapper.parameters())
    wrapper.zero_grad(set_to_none=True)
    device_ids = [probe.device.index] if probe.device.type == "cuda" else None
    return DistributedDataParallel(wrapper, device_ids=device_ids, find_unused_parameters=unused)
