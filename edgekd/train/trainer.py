"""fine_tune(): one trainer for distillation and for every pass that recovers accuracy with the teacher.

Teacher frozen (eval mode, no_grad); optimizer and per-step schedule from FinetuneConfig; data order from
``DistributedSampler`` (seed + epoch) on one process as under torchrun, so a run is deterministic on CPU
and a resume can regenerate any epoch's order; evaluation each epoch; best/last checkpoints on rank 0.
"""

from __future__ import annotations

import difflib
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DistributedSampler

from edgekd.errors import ConfigError, PassError
from edgekd.progress import log, task
from edgekd.train import checkpoint as ckpt
from edgekd.train import ddp
from edgekd.train.config import FinetuneConfig
from edgekd.train.losses import attention_loss, attention_modules, attention_probs, hint_loss, logits_loss, make_adapter


class TrainingError(PassError):
    """Training diverged (NaN/inf loss) or ranks disagree."""


@dataclass
class TrainResult:
    model: nn.Module
    history: list[dict]
    best_accuracy: float | None
    final_accuracy: float | None
    steps: int
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)  # rank checksums, resume point, ...


# ---------------------------------------------------------------- helpers


def _logits(out: Any, where: str) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    if hasattr(out, "logits"):
        return out.logits
    raise ConfigError(f"model returned {type(out).__name__}; expected logits (a tensor)", where=where)


def _find(model: nn.Module, name: str, where: str) -> nn.Module:
    modules = dict(model.named_modules())
    if name not in modules:
        close = difflib.get_close_matches(name, [n for n in modules if n], n=3)
        raise ConfigError(f"no layer named {name!r}", where=where,
                          hint=f"did you mean {', '.join(close)}?" if close else "see model.named_modules()")
    return modules[name]


class _Tap:
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


class _Distilled(nn.Module):
    """Student + hint adapters in one module, so DDP synchronises the adapters' gradients too."""

    def __init__(self, student: nn.Module, adapters: nn.ModuleList, tap: _Tap, hint_keys: list[str],
                 attn: nn.Module | None) -> None:
        super().__init__()
        self.student = student
        self.adapters = adapters
        self._tap = tap
        self._hint_keys = hint_keys
        self._attn = [attn]  # a list: not registered twice as a submodule

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor | None]:
        logits = _logits(self.student(x), "student")
        feats = [a(self._tap.values[k]) for a, k in zip(self.adapters, self._hint_keys)]
        attn = attention_probs(self._attn[0], self._tap.values["attn"]) if self._attn[0] is not None else None
        return logits, feats, attn


def _scheduler(opt: torch.optim.Optimizer, config: FinetuneConfig, total: int) -> Any:
    if config.schedule == "onecycle":
        pct = config.warmup_steps / total if config.warmup_steps else 0.3
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.lr, total_steps=total,
                                                   pct_start=min(max(pct, 1e-3), 0.999))
    warm = config.warmup_steps

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        progress = (step - warm) / max(1, total - warm)
        if config.schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
        if config.schedule == "step":  # x0.1 at 1/2 and 3/4 of training
            return 0.1 ** ((progress >= 0.5) + (progress >= 0.75))
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def _optimizer(params: list[nn.Parameter], config: FinetuneConfig) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)


@torch.no_grad()
def evaluate(model: nn.Module, x: np.ndarray, y: np.ndarray | None, batch: int = 512) -> float | None:
    """Top-1 accuracy in percent (None without labels). Leaves the model in eval mode."""
    if y is None:
        return None
    model.eval()
    device = next(model.parameters()).device
    correct = 0
    for i in range(0, len(x), batch):
        out = _logits(model(torch.from_numpy(x[i : i + batch]).to(device)), "student")
        correct += int((out.argmax(1).cpu().numpy() == y[i : i + batch]).sum())
    return 100.0 * correct / len(x)


@torch.no_grad()
def _teacher_logits(teacher: nn.Module, x: np.ndarray, batch: int = 512) -> torch.Tensor:
    device = next(teacher.parameters()).device
    return torch.cat([_logits(teacher(torch.from_numpy(x[i : i + batch]).to(device)), "teacher").float().cpu()
                      for i in range(0, len(x), batch)])


def _call(hooks: Sequence[object], method: str, *args: Any) -> None:
    for h in hooks:
        fn = getattr(h, method, None)
        if fn is not None:
            fn(*args)


# ---------------------------------------------------------------- the trainer


def fine_tune(student: nn.Module, teacher: nn.Module | None, data: Any, config: FinetuneConfig, *,
              hooks: Sequence[object] = (), checkpoint_dir: Path | None = None, resume: bool = False,
              description: str = "distilling", checkpoint_every: int = 0) -> TrainResult:
    """Trains ``student`` IN PLACE and returns it in TrainResult.model (in eval mode).

    With teacher=None or loss="ce" the logits loss is plain CE. ``hooks``: objects with optional
    ``before_epoch(model, epoch, epochs)``, ``after_step(model, step, total_steps)`` (right after every
    optimizer.step(); ``step`` counts from 1) and ``after_train(model)``. ``checkpoint_dir``: rank 0 writes
    ``last.pt`` after every epoch (and every ``checkpoint_every`` steps when > 0) and ``best.pt`` when the
    test accuracy improves; ``resume=True`` continues from ``last.pt`` with bitwise the same result as an
    uninterrupted run. Under torchrun (process group initialised) it trains with DDP.
    """
    info = ddp.current()
    started = time.perf_counter()
    if data is None or getattr(data, "x_train", None) is None:
        raise ConfigError("fine-tuning needs training data", where=description, hint="pass --data")
    if teacher is None and (config.features or config.attention_weight > 0):
        raise ConfigError("feature hints / attention transfer need a teacher", where=description, hint="pass --teacher")
    use_teacher = teacher is not None and config.uses_teacher
    if use_teacher and config.loss != "ce" and data.y_train is None:
        pass  # soft targets only: fine for unlabelled / synthetic data
    elif data.y_train is None and not (use_teacher and config.loss != "ce"):
        raise ConfigError("training with loss 'ce' (or without a teacher) needs labelled data", where=description,
                          hint="give a teacher and use loss = 'hinton', or labelled --data")
    world = info.world_size
    if config.batch_size % world:
        raise ConfigError(f"batch_size {config.batch_size} is not divisible by {world} processes",
                          where=f"{description} batch_size", hint=f"use a multiple of {world}")
    local_batch = config.batch_size // world

    teacher_was_training = teacher.training if teacher is not None else False
    if teacher is not None:
        teacher.eval()
    tap, t_tap = _Tap(), _Tap()
    fastpath = torch.backends.mha.get_fastpath_enabled()
    if config.attention_weight > 0:  # the fused encoder fast path bypasses the attention layer's hooks
        torch.backends.mha.set_fastpath_enabled(False)
    try:
        with torch.random.fork_rng(devices=[]):  # seeds here never leak into the caller's RNG
            torch.manual_seed(config.seed)
            return _train(student, teacher if use_teacher else None, data, config, info, local_batch, hooks,
                          checkpoint_dir, resume, description, checkpoint_every, tap, t_tap, started)
    finally:
        tap.remove()
        t_tap.remove()
        torch.backends.mha.set_fastpath_enabled(fastpath)
        if teacher is not None:
            teacher.train(teacher_was_training)


def _train(student: nn.Module, teacher: nn.Module | None, data: Any, config: FinetuneConfig, info: ddp.DistInfo,
           local_batch: int, hooks: Sequence[object], checkpoint_dir: Path | None, resume: bool, description: str,
           checkpoint_every: int, tap: _Tap, t_tap: _Tap, started: float) -> TrainResult:
    device = next(student.parameters()).device
    x_all = torch.from_numpy(np.ascontiguousarray(data.x_train, dtype=np.float32))
    y_all = torch.from_numpy(np.asarray(data.y_train, dtype=np.int64)) if data.y_train is not None else None

    # --- taps for hints and attention; a dry run on two samples gives the adapter shapes
    pairs = config.hint_pairs() if teacher is not None else []
    hint_keys = []
    for i, (t_name, s_name) in enumerate(pairs):
        t_tap.output(_find(teacher, t_name, f"{description} features[{i}] teacher"), f"h{i}")  # type: ignore[arg-type]
        tap.output(_find(student, s_name, f"{description} features[{i}] student"), f"h{i}")
        hint_keys.append(f"h{i}")
    s_attn = None
    if teacher is not None and config.attention_weight > 0:
        t_list, s_list = attention_modules(teacher), attention_modules(student)
        if not t_list or not s_list:
            raise ConfigError(f"attention_weight > 0 but the {'teacher' if not t_list else 'student'} has no "
                              "nn.MultiheadAttention / timm Attention layer", where=f"{description} attention_weight",
                              hint="set attention_weight = 0 for models without attention")
        t_attn, s_attn = t_list[-1][1], s_list[-1][1]  # MiniLM: the last layer's attention
        t_tap.input(t_attn, "attn")
        tap.input(s_attn, "attn")
    adapters = nn.ModuleList()
    if hint_keys:
        was = student.training
        student.eval()
        with torch.no_grad():
            probe = x_all[:2].to(device)
            teacher(probe.to(next(teacher.parameters()).device))  # type: ignore[misc]
            student(probe)
        student.train(was)
        for i, key in enumerate(hint_keys):
            adapters.append(make_adapter(tap.values[key].shape, t_tap.values[key].shape,
                                         f"{description} features[{i}] ({config.features[i]})"))
        adapters.to(device)
    wrapper = _Distilled(student, adapters, tap, hint_keys, s_attn)

    # teacher logits once when nothing per-batch is needed from the teacher (deterministic in eval mode)
    t_logits_all = None
    if teacher is not None and not hint_keys and s_attn is None and config.loss != "ce":
        t_logits_all = _teacher_logits(teacher, data.x_train)

    sampler = DistributedSampler(range(len(x_all)), num_replicas=info.world_size, rank=info.rank,
                                 shuffle=True, seed=config.seed)
    per_rank = len(sampler)
    steps_per_epoch = per_rank // local_batch + (1 if per_rank % local_batch > 1 else 0)  # a 1-sample tail is dropped (BN)
    if steps_per_epoch == 0:
        raise ConfigError(f"{len(x_all)} training samples are too few for batch_size {config.batch_size}",
                          where=description, hint="lower batch_size")
    total = config.steps if config.steps is not None else config.epochs * steps_per_epoch
    epochs = math.ceil(total / steps_per_epoch)

    params = [p for p in wrapper.parameters() if p.requires_grad]
    opt = _optimizer(params, config)
    sched = _scheduler(opt, config, total)
    history: list[dict] = []
    best_acc: float | None = None
    best_loss = math.inf
    step, start_epoch, skip = 0, 0, 0
    partial = (0.0, 0)  # running loss sum / count inside an epoch (for mid-epoch resume)
    ckdir = Path(checkpoint_dir) if checkpoint_dir is not None else None
    resumed_from = None
    if resume and ckdir is not None:
        state = ckpt.load_last(ckdir, config)
        if state is None:
            log(f"{description}: no checkpoint in {ckdir}; starting from scratch")
        else:
            student.load_state_dict(state["model"])
            adapters.load_state_dict(state["adapters"])
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            torch.set_rng_state(state["rng"])
            step, start_epoch, skip = state["step"], state["epoch"], state["batch"]
            history, best_acc, best_loss = state["history"], state["best_accuracy"], state["best_loss"]
            partial = tuple(state["partial"])  # type: ignore[assignment]
            resumed_from = {"step": step, "epoch": start_epoch, "batch": skip}
            log(f"{description}: resuming at step {step} (epoch {start_epoch + 1}, batch {skip})")

    model: nn.Module = wrapper
    if info.distributed:
        model = _wrap_ddp(wrapper, info, x_all[:2].to(device))

    def save_last(epoch: int, batch: int, run_sum: float, run_n: int) -> None:
        if ckdir is None or not info.is_main:
            return
        ckpt.save_atomic({
            "format": ckpt.FORMAT, "config": ckpt.config_fingerprint(config), "step": step, "epoch": epoch,
            "batch": batch, "model": student.state_dict(), "adapters": adapters.state_dict(),
            "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "rng": torch.get_rng_state(),
            "history": history, "best_accuracy": best_acc, "best_loss": best_loss, "partial": [run_sum, run_n],
        }, ckdir / ckpt.LAST)

    bar_ctx = task(description, total) if info.is_main else _null_task()
    with bar_ctx as bar:
        if step:
            bar.advance(step)
        for epoch in range(start_epoch, epochs):
            if step >= total:
                break
            _call(hooks, "before_epoch", student, epoch, epochs)
            sampler.set_epoch(epoch)
            order = torch.tensor(list(sampler), dtype=torch.long)
            run_sum, run_n = partial if epoch == start_epoch else (0.0, 0)
            first = skip if epoch == start_epoch else 0
            wrapper.train()
            for b in range(first, steps_per_epoch):
                idx = order[b * local_batch : (b + 1) * local_batch]
                xb = x_all[idx].to(device)
                yb = y_all[idx].to(device) if y_all is not None else None
                logits, feats, s_probs = model(xb)
                t_logits = None
                loss_terms: list[torch.Tensor] = []
                if teacher is not None:
                    if t_logits_all is not None:
                        t_logits = t_logits_all[idx].to(device)
                    else:
                        with torch.no_grad():
                            t_logits = _logits(teacher(xb.to(next(teacher.parameters()).device)), "teacher").to(device)
                    for i, f in enumerate(feats):
                        loss_terms.append(config.feature_weight * hint_loss(f, t_tap.values[hint_keys[i]].to(device)))
                    if s_probs is not None:
                        with torch.no_grad():
                            t_probs = attention_probs(t_attn, t_tap.values["attn"]).to(device)
                        loss_terms.append(config.attention_weight * attention_loss(s_probs, t_probs, f"{description} attention"))
                loss = logits_loss(config.loss, logits, t_logits, yb, config.temperature, config.alpha)
                for term in loss_terms:
                    loss = loss + term
                value = float(ddp.all_reduce_mean(loss, info))  # all ranks see a NaN together and stop together
                if not math.isfinite(value):
                    raise TrainingError(
                        f"loss is {value} at step {step + 1} (epoch {epoch + 1}, batch {b + 1})", where=description,
                        hint="lower lr, add warmup_steps, lower the temperature, or check the data for NaN/inf")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                step += 1
                _call(hooks, "after_step", student, step, total)
                sched.step()
                run_sum, run_n = run_sum + value, run_n + 1
                bar.advance(1, loss=value)
                if step >= total:
                    break
                if checkpoint_every and step % checkpoint_every == 0 and b + 1 < steps_per_epoch:
                    save_last(epoch, b + 1, run_sum, run_n)
            acc = evaluate(student, data.x_test, data.y_test) if data.x_test is not None else None
            mean_loss = run_sum / max(run_n, 1)
            history.append({"epoch": epoch + 1, "step": step, "loss": mean_loss, "accuracy": acc,
                            "lr": float(opt.param_groups[0]["lr"]), "seconds": round(time.perf_counter() - started, 3)})
            bar.set_info(loss=mean_loss, **({"acc": acc} if acc is not None else {}))
            improved = (acc is not None and (best_acc is None or acc > best_acc)) or (acc is None and mean_loss < best_loss)
            if improved:
                best_acc, best_loss = (acc if acc is not None else best_acc), min(best_loss, mean_loss)
                if ckdir is not None and info.is_main:
                    ckpt.save_atomic({"format": ckpt.FORMAT + "#best", "state_dict": student.state_dict(),
                                      "epoch": epoch + 1, "step": step, "accuracy": acc, "loss": mean_loss}, ckdir / ckpt.BEST)
            save_last(epoch + 1, 0, 0.0, 0)
            partial = (0.0, 0)
    opt.zero_grad(set_to_none=True)  # no stale gradients (memory) on the returned model
    _call(hooks, "after_train", student)
    student.eval()
    checksums = ddp.gather_checksums(student, info)
    if len(set(checksums)) > 1:
        raise TrainingError(f"ranks ended with different weights: {checksums}", where=description,
                            hint="a hook or pass changed weights on one rank only")
    final = history[-1]["accuracy"] if history else None
    return TrainResult(model=student, history=history, best_accuracy=best_acc, final_accuracy=final, steps=step,
                       seconds=time.perf_counter() - started,
                       extra={"rank_checksums": checksums, "world_size": info.world_size, "resumed_from": resumed_from,
                              "adapters": len([a for a in adapters if not isinstance(a, nn.Identity)])})


def _wrap_ddp(wrapper: nn.Module, info: ddp.DistInfo, probe: torch.Tensor) -> nn.Module:
    """DDP around student + adapters; a dry backward tells whether some parameters never get gradients."""
    from torch.nn.parallel import DistributedDataParallel

    was = wrapper.training
    wrapper.eval()  # no BN statistics update, no dropout RNG draw
    out = wrapper(probe)
    wrapper.train(was)
    total = out[0].float().sum() + sum(f.float().sum() for f in out[1]) + (out[2].sum() if out[2] is not None else 0)
    total.backward()
    unused = any(p.requires_grad and p.grad is None for p in wrapper.parameters())
    wrapper.zero_grad(set_to_none=True)
    device_ids = [probe.device.index] if probe.device.type == "cuda" else None
    return DistributedDataParallel(wrapper, device_ids=device_ids, find_unused_parameters=unused)


class _null_task:
    def __enter__(self) -> Any:
        class _T:
            def advance(self, *_a: Any, **_k: Any) -> None: ...
            def set_info(self, **_k: Any) -> None: ...
        return _T()

    def __exit__(self, *exc: Any) -> None:
        return None
