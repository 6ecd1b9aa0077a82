"""Data-free distillation data: ``synthetic:bn`` synthesizes inputs from the teacher's BatchNorm statistics.

DeepInversion / Genie style: start from Gaussian noise and optimise the inputs so that every BatchNorm
layer's batch mean and variance match its running statistics, plus the teacher's cross-entropy on
chosen (balanced) classes and a total-variation smoothness prior. The result is cached as npz keyed by
the teacher's weights and the settings, so a second run is instant.

Parameters (``synthetic:bn?n=1024&iters=300``): n (train samples, default 1024), test (held-out
samples, default n/4), iters (Adam steps per batch, 300), batch (128), lr (0.1), bn (weight of the BN
term, 1.0), first_bn (extra factor on the first BN layer, 10; DeepInversion), ce (1.0), tv (1e-3),
l2 (1e-5), clip ("lo:hi" value range to clamp to, off by default), shape ("CxHxW" when the model
source does not say), seed, cache (1/0).

The samples are unlabelled (distill with the teacher's soft targets); accuracy is never measured on them.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgekd.data import DataContext, DataSplits, register_generator
from edgekd.errors import SourceError
from edgekd.progress import log, task
from edgekd.sources import SourceSpec

_VERSION = "bn-v1"


def _float(spec: SourceSpec, key: str, default: float) -> float:
    value = spec.param(key)
    if value is None:
        return default
    try:
        return float(value)
    except ValueError:
        raise SourceError(f"parameter {key}={value!r} must be a number", where=spec.text) from None


def _shape(spec: SourceSpec, ctx: DataContext) -> tuple[int, ...]:
    text = spec.param("shape")
    if text:
        try:
            return tuple(int(v) for v in text.split("x"))
        except ValueError:
            raise SourceError(f"shape={text!r} must look like CxHxW", where=spec.text) from None
    if ctx.input_shape:
        return tuple(ctx.input_shape)
    raise SourceError("the input shape is unknown", where=spec.text, hint="add ?shape=CxHxW, e.g. synthetic:bn?shape=3x224x224")


def _teacher_digest(teacher: nn.Module) -> str:
    h = hashlib.sha256()
    for name, t in teacher.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


class _BNStats:
    """Forward hooks: the distance between each BN layer's batch statistics and its running statistics."""

    def __init__(self, bns: list[nn.modules.batchnorm._BatchNorm]) -> None:
        self.losses: list[torch.Tensor] = []
        self._handles = [bn.register_forward_hook(self._hook) for bn in bns]

    def _hook(self, bn: nn.Module, inp: tuple[torch.Tensor, ...], _out: torch.Tensor) -> None:
        x = inp[0]
        dims = [0, *range(2, x.dim())]
        mean = x.mean(dims)
        var = x.var(dims, unbiased=False)
        self.losses.append(torch.linalg.vector_norm(mean - bn.running_mean) + torch.linalg.vector_norm(var - bn.running_var))

    def remove(self) -> None:
        for h in self._handles:
            h.remove()


def _tv(x: torch.Tensor) -> torch.Tensor:
    if x.dim() < 4:
        return x.new_zeros(())
    return ((x[..., 1:, :] - x[..., :-1, :]) ** 2).mean() + ((x[..., :, 1:] - x[..., :, :-1]) ** 2).mean()


def synthesize(teacher: nn.Module, shape: tuple[int, ...], n: int, *, num_classes: int, iters: int = 300,
               batch: int = 128, lr: float = 0.1, w_bn: float = 1.0, first_bn: float = 10.0, w_ce: float = 1.0,
               w_tv: float = 1e-3, w_l2: float = 1e-5, clip: tuple[float, float] | None = None, seed: int = 0,
               description: str = "synthesizing inputs") -> tuple[np.ndarray, dict[str, float]]:
    """``n`` inputs of ``shape`` whose BN statistics in ``teacher`` match its running statistics.

    Returns the inputs and final loss terms (averaged over batches) for the report.
    """
    bns = [m for m in teacher.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None]
    if not bns:
        raise SourceError("the teacher has no BatchNorm layers with running statistics", where="synthetic:bn",
                          hint="synthetic:bn needs a BN teacher; give real or unlabelled data with --data")
    was_training = teacher.training
    teacher.eval()
    req = [p.requires_grad for p in teacher.parameters()]
    for p in teacher.parameters():
        p.requires_grad_(False)
    device = next(teacher.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    weights = torch.tensor([first_bn] + [1.0] * (len(bns) - 1), device=device)
    stats = _BNStats(bns)
    out: list[np.ndarray] = []
    final = {"bn": 0.0, "ce": 0.0, "teacher_agreement": 0.0}
    n_batches = (n + batch - 1) // batch
    try:
        with task(description, n_batches * iters) as bar:
            for b in range(n_batches):
                size = min(batch, n - b * batch)
                x = torch.randn((size, *shape), generator=gen).to(device).requires_grad_(True)
                y = (torch.arange(size) + b * batch).remainder(num_classes).to(device)  # balanced classes
                opt = torch.optim.Adam([x], lr=lr, betas=(0.5, 0.99))
                sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=iters)
                for _ in range(iters):
                    stats.losses.clear()
                    logits = teacher(x)
                    bn_loss = (torch.stack(stats.losses) * weights).sum()
                    ce = F.cross_entropy(logits, y)
                    loss = w_bn * bn_loss + w_ce * ce + w_tv * _tv(x) + w_l2 * (x**2).mean()
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    sched.step()
                    if clip is not None:
                        with torch.no_grad():
                            x.clamp_(*clip)
                    bar.advance(1, bn=bn_loss.item(), ce=ce.item())
                with torch.no_grad():
                    stats.losses.clear()
                    logits = teacher(x)
                    final["bn"] += float(torch.stack(stats.losses).sum()) * size / n
                    final["ce"] += float(F.cross_entropy(logits, y)) * size / n
                    final["teacher_agreement"] += float((logits.argmax(1) == y).float().mean()) * 100 * size / n
                out.append(x.detach().cpu().numpy().astype(np.float32))
    finally:
        stats.remove()
        for p, r in zip(teacher.parameters(), req):
            p.requires_grad_(r)
        teacher.train(was_training)
    return np.concatenate(out), final


def _num_classes(teacher: nn.Module, shape: tuple[int, ...], ctx: DataContext) -> int:
    if ctx.num_classes:
        return int(ctx.num_classes)
    was = teacher.training
    teacher.eval()
    with torch.no_grad():
        out = teacher(torch.zeros((2, *shape), device=next(teacher.parameters()).device))
    teacher.train(was)
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        raise SourceError("cannot tell the number of classes from the teacher's output", where="synthetic:bn")
    return int(out.shape[1])


@register_generator("synthetic")
def synthetic_source(spec: SourceSpec, ctx: DataContext) -> DataSplits:
    """``synthetic:bn``: data-free inputs from the teacher's BatchNorm statistics (cached as npz)."""
    if spec.arg != "bn":
        raise SourceError(f"unknown synthetic data method {spec.arg!r}; known: bn", where=spec.text, hint="use synthetic:bn")
    teacher = ctx.teacher
    if teacher is None:
        raise SourceError("synthetic:bn synthesizes data from a teacher, and none was given", where=spec.text,
                          hint="pass --teacher SRC (a trained model with BatchNorm layers)")
    shape = _shape(spec, ctx)
    n = spec.int_param("n", 1024)
    n_test = spec.int_param("test", max(1, n // 4))
    clip_text = spec.param("clip")
    clip = None
    if clip_text:
        lo, sep, hi = clip_text.partition(":")
        try:
            clip = (float(lo), float(hi))
        except ValueError:
            raise SourceError(f"clip={clip_text!r} must look like lo:hi (e.g. 0:1)", where=spec.text) from None
        if not sep or clip[0] >= clip[1]:
            raise SourceError(f"clip={clip_text!r} must look like lo:hi with lo < hi", where=spec.text)
    settings: dict[str, Any] = {
        "iters": spec.int_param("iters", 300), "batch": spec.int_param("batch", 128), "lr": _float(spec, "lr", 0.1),
        "w_bn": _float(spec, "bn", 1.0), "first_bn": _float(spec, "first_bn", 10.0), "w_ce": _float(spec, "ce", 1.0),
        "w_tv": _float(spec, "tv", 1e-3), "w_l2": _float(spec, "l2", 1e-5), "clip": clip,
        "seed": spec.int_param("seed", ctx.seed),
    }
    num_classes = _num_classes(teacher, shape, ctx)
    key_text = f"{_VERSION}|{_teacher_digest(teacher)}|{shape}|{n}|{n_test}|{num_classes}|{sorted(settings.items())}"
    key = hashlib.sha256(key_text.encode()).hexdigest()[:16]
    from edgekd.models import cache_dir

    path = cache_dir() / "synthetic" / f"bn-{key}.npz"
    use_cache = spec.int_param("cache", 1) != 0
    if use_cache and path.is_file():
        log(f"synthetic:bn: using cached samples {path}")
        arrays = np.load(path)
        x, quality = arrays["x"], {k: float(arrays[f"q_{k}"]) for k in ("bn", "ce", "teacher_agreement")}
    else:
        x, quality = synthesize(teacher, shape, n + n_test, num_classes=num_classes, **settings)
        if use_cache:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}.npz")
            np.savez(tmp, x=x, **{f"q_{k}": v for k, v in quality.items()})
            os.replace(tmp, path)
    log(f"synthetic:bn: {len(x)} samples, BN distance {quality['bn']:.3g}, teacher agrees with the target class "
        f"on {quality['teacher_agreement']:.1f}%")
    return DataSplits(
        "synthetic-bn", x[:n], None, x[n:], None, num_classes, tuple(str(i) for i in range(num_classes)),
        {"source": spec.text, "note": "data-free: synthesized from the teacher's BatchNorm statistics; unlabelled",
         "cache": str(path) if use_cache else None, "quality": quality},
    )
