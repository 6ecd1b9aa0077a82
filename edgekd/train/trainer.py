"""fine_tune(): one trainer for distillation and for every pass that recovers accuracy with the teacher.

Teacher frozen (eval mode, no_grad); optimizer and per-step schedule from FinetuneConfig; data order from
``DistributedSampler`` (seed + epoch) on one process as under torchrun, so a run is deterministic on CPU
and a resume can regenerate any epoch's order; evaluation each epoch; best/last checkpoints on rank 0.

The loop is small steps over one typed ``Run``: ``_setup`` (wiring, plan, ``TrainState``, resume),
``_run_epoch`` -> ``_train_step`` (loss, optimizer, hooks), ``_end_epoch`` (eval, best, checkpoint), ``_finish``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DistributedSampler

from edgekd.errors import ConfigError, PassError
from edgekd.inputs import call, to_torch
from edgekd.progress import log, task
from edgekd.tasks import TaskSpec, subset, task_metric
from edgekd.train import checkpoint as ckpt
from edgekd.train import ddp
from edgekd.train.config import FinetuneConfig
from edgekd.train.hooks import Hook, HookSet
from edgekd.train.sync_bn import global_batch_norm
from edgekd.train.task_losses import objective, outputs_by_name, task_for
from edgekd.train.wiring import Tap, Wiring, wire, wrap_ddp

__all__ = ["Hook", "RunOptions", "TrainResult", "TrainState", "TrainingError", "evaluate", "fine_tune", "train"]


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


@dataclass(frozen=True)
class RunOptions:
    """How a run goes (not what it learns): hooks, checkpoints, the progress label; see ``fine_tune``."""

    hooks: HookSet = field(default_factory=HookSet)
    checkpoint_dir: Path | None = None
    resume: bool = False
    description: str = "distilling"
    checkpoint_every: int = 0


@dataclass(frozen=True)
class Plan:
    """The step budget: ``local_batch`` samples per rank per step, in ``sampler``'s order for each epoch."""

    sampler: DistributedSampler
    local_batch: int
    steps_per_epoch: int
    total: int
    epochs: int


@dataclass
class TrainState:
    """Everything an exact resume restores besides the weights: where the run is, what it has seen, the best so far."""

    optimizer: torch.optim.Optimizer
    scheduler: Any
    step: int = 0  # optimizer steps done
    epoch: int = 0  # the epoch in progress (counts from 0)
    batch: int = 0  # the next batch of that epoch
    history: list[dict] = field(default_factory=list)
    best_accuracy: float | None = None
    best_loss: float = math.inf
    loss_sum: float = 0.0  # running loss of the epoch in progress
    loss_count: int = 0
    resumed_from: dict[str, int] | None = None
    higher_is_better: bool = True  # the task metric's direction (False for MAE, reconstruction error)

    def to_checkpoint(self, config: FinetuneConfig, wiring: Wiring) -> dict[str, Any]:
        return {"format": ckpt.FORMAT, "config": ckpt.config_fingerprint(config), "step": self.step, "epoch": self.epoch,
                "batch": self.batch, "model": wiring.student.state_dict(), "adapters": wiring.adapters.state_dict(),
                "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "rng": torch.get_rng_state(), "history": self.history, "best_accuracy": self.best_accuracy,
                "best_loss": self.best_loss, "partial": [self.loss_sum, self.loss_count]}

    def improves(self, accuracy: float | None, loss: float) -> bool:
        """Whether an epoch is at least as good as the best so far (the monitored metric; the training loss without
        labels), which it then becomes. A tie goes to the later epoch: a 200-sample validation split ties often, and
        the later epoch of a decaying schedule is the better trained one."""
        if accuracy is not None:
            better = self.best_accuracy is None or (accuracy >= self.best_accuracy if self.higher_is_better
                                                    else accuracy <= self.best_accuracy)
        else:
            better = loss < self.best_loss
        if better:
            self.best_accuracy = accuracy if accuracy is not None else self.best_accuracy
            self.best_loss = min(self.best_loss, loss)
        return better

    def restore(self, saved: dict[str, Any], wiring: Wiring) -> None:
        """Weights, optimizer, scheduler, RNG and position from a ``to_checkpoint`` dict."""
        wiring.student.load_state_dict(saved["model"])
        wiring.adapters.load_state_dict(saved["adapters"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        torch.set_rng_state(saved["rng"])
        self.step, self.epoch, self.batch = saved["step"], saved["epoch"], saved["batch"]
        self.history, self.best_accuracy, self.best_loss = saved["history"], saved["best_accuracy"], saved["best_loss"]
        self.loss_sum, self.loss_count = saved["partial"]
        self.resumed_from = {"step": self.step, "epoch": self.epoch, "batch": self.batch}


@dataclass
class Run:
    """One training run: its inputs, its wiring and plan, and the state that changes step by step."""

    config: FinetuneConfig
    options: RunOptions
    info: ddp.DistInfo
    started: float  # time.perf_counter() when the run began
    data: Any
    device: torch.device  # the student's
    x: torch.Tensor
    y: Any  # a tensor, a dict of tensors (one per output), or None
    wiring: Wiring
    plan: Plan
    state: TrainState
    #: keep = "best": a CPU copy of the student's weights at the best validation epoch, and that epoch (from 1)
    best_weights: dict[str, torch.Tensor] | None = None
    best_epoch: int | None = None


# ---------------------------------------------------------------- optimizer, schedule, evaluation


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
def evaluate(model: nn.Module, x: np.ndarray, y: Any, batch: int = 512, *, task: TaskSpec | None = None) -> float | None:
    """The task metric (top-1 % for classifiers; None when the metric needs labels and there are none). Leaves
    the model in eval mode."""
    model.eval()
    device = next(model.parameters()).device
    if task is None:
        task = task_for(model, SimpleNamespace(y_train=y), to_torch(x[:2], device))
    if y is None and task.metric != "reconstruction_error":
        return None
    parts = [outputs_by_name(call(model, to_torch(x[i : i + batch], device)), task, "student")
             for i in range(0, len(x), batch)]
    outputs = {name: torch.cat([p[name] for p in parts]).float().cpu().numpy() for name in parts[0]}
    return task_metric(task, outputs, y, x)


# ---------------------------------------------------------------- the trainer


def fine_tune(student: nn.Module, teacher: nn.Module | None, data: Any, config: FinetuneConfig, *,
              hooks: Sequence[object] = (), checkpoint_dir: Path | None = None, resume: bool = False,
              description: str = "distilling", checkpoint_every: int = 0) -> TrainResult:
    """Trains ``student`` IN PLACE and returns it in TrainResult.model (in eval mode).

    With teacher=None or loss="ce" the logits loss is plain CE. ``hooks``: ``Hook`` subclasses, or objects with
    any of its methods: ``before_epoch(model, epoch, epochs)``, ``after_step(model, step, total_steps)`` (right
    after every optimizer.step(); ``step`` counts from 1) and ``after_train(model)``. ``checkpoint_dir``: rank 0
    writes ``last.pt`` after every epoch (and every ``checkpoint_every`` steps when > 0) and ``best.pt`` when the
    test accuracy improves; ``resume=True`` continues from ``last.pt`` with bitwise the same result as an
    uninterrupted run. Under torchrun (process group initialised) it trains with DDP.
    """
    options = RunOptions(HookSet.of(hooks), Path(checkpoint_dir) if checkpoint_dir is not None else None, resume,
                         description, checkpoint_every)
    return train(student, teacher, data, config, options, ddp.current())


def train(student: nn.Module, teacher: nn.Module | None, data: Any, config: FinetuneConfig, options: RunOptions,
          info: ddp.DistInfo) -> TrainResult:
    """``fine_tune`` with its options grouped, on the process group ``info`` describes (``DistInfo()``: this
    process alone, even under torchrun)."""
    started = time.perf_counter()
    _check_inputs(teacher, data, config, info, options.description)
    use_teacher = teacher is not None and config.uses_teacher
    with _isolated(teacher, config) as taps:
        torch.manual_seed(config.seed)
        run = _setup(student, teacher if use_teacher else None, data, config, options, info, taps, started)
        # under DDP, BatchNorm normalises over the global batch: the ranks keep equal buffers (see sync_bn.py)
        progress = task(options.description, run.plan.total) if info.is_main else nullcontext(_SilentBar())
        with global_batch_norm(run.wiring.wrapper, info) as synced_bn, progress as bar:
            if run.state.step:
                bar.advance(run.state.step)
            for epoch in range(run.state.epoch, run.plan.epochs):
                if run.state.step >= run.plan.total:
                    break
                _run_epoch(run, epoch, bar)
        result = _finish(run)
        result.extra["synced_batchnorm"] = synced_bn
        return result


def _check_inputs(teacher: nn.Module | None, data: Any, config: FinetuneConfig, info: ddp.DistInfo,
                  description: str) -> None:
    """Refuse what cannot train, before any work."""
    if data is None or getattr(data, "x_train", None) is None:
        raise ConfigError("fine-tuning needs training data", where=description, hint="pass --data")
    if teacher is None and (config.features or config.attention_weight > 0):
        raise ConfigError("feature hints / attention transfer need a teacher", where=description, hint="pass --teacher")
    soft_targets_only = teacher is not None and config.uses_teacher and config.loss != "ce"
    spec = getattr(data, "task", None)
    own_targets = (spec == "reconstruction" if isinstance(spec, str)  # autoencoders train on their own input
                   else spec is not None and all(o.target == "input" for o in spec.outputs))
    if data.y_train is None and not soft_targets_only and not own_targets:  # soft targets need no labels: unlabelled / synthetic data
        raise ConfigError("training with loss 'ce' (or without a teacher) needs labelled data", where=description,
                          hint="give a teacher and use loss = 'hinton', or labelled --data")
    if config.batch_size % info.world_size:
        raise ConfigError(f"batch_size {config.batch_size} is not divisible by {info.world_size} processes",
                          where=f"{description} batch_size", hint=f"use a multiple of {info.world_size}")


@contextmanager
def _isolated(teacher: nn.Module | None, config: FinetuneConfig) -> Iterator[tuple[Tap, Tap]]:
    """The student's and teacher's taps for the run; teacher in eval mode, the MHA fast path off for attention
    transfer, the caller's RNG untouched. Everything is restored afterwards, also on errors."""
    teacher_was_training = teacher.training if teacher is not None else False
    if teacher is not None:
        teacher.eval()
    taps = (Tap(), Tap())
    fastpath = torch.backends.mha.get_fastpath_enabled()
    if config.attention_weight > 0:  # the fused encoder fast path bypasses the attention layer's hooks
        torch.backends.mha.set_fastpath_enabled(False)
    try:
        with torch.random.fork_rng(devices=[]):  # seeds here never leak into the caller's RNG
            yield taps
    finally:
        for tap in taps:
            tap.remove()
        torch.backends.mha.set_fastpath_enabled(fastpath)
        if teacher is not None:
            teacher.train(teacher_was_training)


def _setup(student: nn.Module, teacher: nn.Module | None, data: Any, config: FinetuneConfig, options: RunOptions,
           info: ddp.DistInfo, taps: tuple[Tap, Tap], started: float) -> Run:
    """Wiring, step plan, optimizer state (resumed when asked) and DDP, in the order that fixes the RNG draws."""
    device = next(student.parameters()).device
    x = to_torch(data.x_train)  # a tensor, or TensorInputs for several inputs (edgekd.inputs)
    y = _label_tensors(data.y_train)
    probe = x[:2].to(device)
    spec = task_for(student, data, probe)
    wiring = wire(student, teacher, config, taps, data.x_train, probe, options.description, spec)
    plan = _plan(len(x), config, info, options.description)
    opt = _optimizer([p for p in wiring.wrapper.parameters() if p.requires_grad], config)
    state = TrainState(opt, _scheduler(opt, config, plan.total), higher_is_better=spec.higher_is_better)
    if options.resume and options.checkpoint_dir is not None:
        _resume(state, wiring, config, options)
    if info.distributed:
        wiring.model = wrap_ddp(wiring.wrapper, info, probe)
    run = Run(config, options, info, started, data, device, x, y, wiring, plan, state)
    best = options.checkpoint_dir / ckpt.BEST if options.checkpoint_dir is not None else None
    if state.resumed_from and config.keep == "best" and best is not None and best.is_file() and _has_validation(data):
        saved = torch.load(best, map_location="cpu", weights_only=True)  # the best epoch before the interruption
        run.best_weights, run.best_epoch = saved["state_dict"], int(saved["epoch"])
    return run


def _label_tensors(y: Any) -> Any:
    """Labels as tensors: class ids int64, continuous targets float32; a dict (one array per output) stays a dict."""
    if y is None:
        return None
    if isinstance(y, dict):
        return {k: _label_tensors(v) for k, v in y.items()}
    y = np.asarray(y)
    return torch.from_numpy(np.ascontiguousarray(y, dtype=np.int64 if np.issubdtype(y.dtype, np.integer) else np.float32))


def _plan(n_samples: int, config: FinetuneConfig, info: ddp.DistInfo, description: str) -> Plan:
    local_batch = config.batch_size // info.world_size  # divisible: checked before
    sampler = DistributedSampler(range(n_samples), num_replicas=info.world_size, rank=info.rank,
                                 shuffle=True, seed=config.seed)
    per_rank = len(sampler)
    steps_per_epoch = per_rank // local_batch + (1 if per_rank % local_batch > 1 else 0)  # a 1-sample tail is dropped (BN)
    if steps_per_epoch == 0:
        raise ConfigError(f"{n_samples} training samples are too few for batch_size {config.batch_size}",
                          where=description, hint="lower batch_size")
    total = config.steps if config.steps is not None else config.epochs * steps_per_epoch
    return Plan(sampler, local_batch, steps_per_epoch, total, math.ceil(total / steps_per_epoch))


def _resume(state: TrainState, wiring: Wiring, config: FinetuneConfig, options: RunOptions) -> None:
    assert options.checkpoint_dir is not None
    saved = ckpt.load_last(options.checkpoint_dir, config)
    if saved is None:
        log(f"{options.description}: no checkpoint in {options.checkpoint_dir}; starting from scratch")
        return
    state.restore(saved, wiring)
    log(f"{options.description}: resuming at step {state.step} (epoch {state.epoch + 1}, batch {state.batch})")


# ---------------------------------------------------------------- one epoch, one step


def _run_epoch(run: Run, epoch: int, bar: Any) -> None:
    """Batches ``state.batch ..`` of ``epoch`` (all of them unless resumed mid-epoch), then the epoch's end."""
    state, plan = run.state, run.plan
    run.options.hooks.epoch_starts(run.wiring.student, epoch, plan.epochs)
    plan.sampler.set_epoch(epoch)
    order = torch.tensor(list(plan.sampler), dtype=torch.long)
    state.epoch = epoch
    run.wiring.wrapper.train()
    for b in range(state.batch, plan.steps_per_epoch):
        value = _train_step(run, order[b * plan.local_batch : (b + 1) * plan.local_batch], b)
        state.batch = b + 1
        bar.advance(1, loss=value)
        if state.step >= plan.total:
            break
        every = run.options.checkpoint_every
        if every and state.step % every == 0 and b + 1 < plan.steps_per_epoch:
            _save_last(run)
    _end_epoch(run, epoch, bar)


def _train_step(run: Run, idx: torch.Tensor, batch: int) -> float:
    """Forward, loss, one optimizer step, the hooks, the schedule; returns the (all-ranks mean) loss."""
    state, wiring, config = run.state, run.wiring, run.config
    xb = run.x[idx].to(run.device)
    yb = subset(run.y, idx)
    if yb is not None:
        yb = {k: v.to(run.device) for k, v in yb.items()} if isinstance(yb, dict) else yb.to(run.device)
    outputs, feats, s_probs = call(wiring.model, xb)
    t_outputs, terms = wiring.teacher_terms(xb, idx, feats, s_probs, config, run.options.description)
    loss = objective(wiring.task, outputs, t_outputs, yb, xb, logits_kind=config.loss, temperature=config.temperature,
                     alpha=config.alpha)
    for term in terms:
        loss = loss + term
    value = float(ddp.all_reduce_mean(loss, run.info))  # all ranks see a NaN together and stop together
    if not math.isfinite(value):
        raise TrainingError(
            f"loss is {value} at step {state.step + 1} (epoch {state.epoch + 1}, batch {batch + 1})",
            where=run.options.description,
            hint="lower lr, add warmup_steps, lower the temperature, or check the data for NaN/inf")
    state.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    state.optimizer.step()
    state.step += 1
    run.options.hooks.step_done(wiring.student, state.step, run.plan.total)
    state.scheduler.step()
    state.loss_sum, state.loss_count = state.loss_sum + value, state.loss_count + 1
    return value


def _monitoring_split(data: Any) -> tuple[Any, Any]:
    """The per-epoch accuracy (and best.pt) is judged on the validation split when the data has one: choosing
    epochs on the test split would make the test accuracy the report shows optimistic."""
    x_val = getattr(data, "x_val", None)
    if x_val is not None and len(x_val) and (getattr(data, "y_val", None) is not None or data.y_test is None):
        return x_val, getattr(data, "y_val", None)
    return data.x_test, data.y_test


def _has_validation(data: Any) -> bool:
    """Whether the per-epoch metric is measured on a held-out validation split (not the test split)."""
    x_val = getattr(data, "x_val", None)
    return x_val is not None and len(x_val) > 0 and _monitoring_split(data)[0] is x_val


def _end_epoch(run: Run, epoch: int, bar: Any) -> None:
    """Evaluate, record the epoch, keep the best weights, and checkpoint the start of the next epoch."""
    state, data = run.state, run.data
    x_eval, y_eval = _monitoring_split(data)
    acc = evaluate(run.wiring.student, x_eval, y_eval, task=run.wiring.task) if x_eval is not None else None
    mean_loss = state.loss_sum / max(state.loss_count, 1)
    state.history.append({"epoch": epoch + 1, "step": state.step, "loss": mean_loss, "accuracy": acc,
                          "lr": float(state.optimizer.param_groups[0]["lr"]),
                          "seconds": round(time.perf_counter() - run.started, 3)})
    bar.set_info(loss=mean_loss, **({"acc": acc} if acc is not None else {}))
    if state.improves(acc, mean_loss):
        _save_best(run, epoch, acc, mean_loss)
        if run.config.keep == "best" and acc is not None and _has_validation(data):
            run.best_weights = {k: v.detach().to("cpu", copy=True) for k, v in run.wiring.student.state_dict().items()}
            run.best_epoch = epoch + 1
    state.epoch, state.batch, state.loss_sum, state.loss_count = epoch + 1, 0, 0.0, 0
    _save_last(run)


# ---------------------------------------------------------------- checkpoints (rank 0)


def _save_last(run: Run) -> None:
    """``last.pt``: the state at ``(state.epoch, state.batch)``, enough for an exact resume."""
    if run.options.checkpoint_dir is None or not run.info.is_main:
        return
    ckpt.save_atomic(run.state.to_checkpoint(run.config, run.wiring), run.options.checkpoint_dir / ckpt.LAST)


def _save_best(run: Run, epoch: int, accuracy: float | None, loss: float) -> None:
    if run.options.checkpoint_dir is None or not run.info.is_main:
        return
    ckpt.save_atomic({"format": ckpt.FORMAT + "#best", "state_dict": run.wiring.student.state_dict(), "epoch": epoch + 1,
                      "step": run.state.step, "accuracy": accuracy, "loss": loss}, run.options.checkpoint_dir / ckpt.BEST)


# ---------------------------------------------------------------- the end


def _finish(run: Run) -> TrainResult:
    """No stale gradients, the ``after_train`` hooks, eval mode, and the check that every rank agrees."""
    state, student, info = run.state, run.wiring.student, run.info
    state.optimizer.zero_grad(set_to_none=True)  # no stale gradients (memory) on the returned model
    kept = _keep_weights(run)
    run.options.hooks.training_done(student)
    student.eval()
    checksums = ddp.gather_checksums(student, info)
    if len(set(checksums)) > 1:
        raise TrainingError(f"ranks ended with different weights: {checksums}", where=run.options.description,
                            hint="a hook or pass changed weights on one rank only")
    final = state.history[-1]["accuracy"] if state.history else None
    if kept["epoch"] is not None and kept["epoch"] != len(state.history):
        final = state.history[kept["epoch"] - 1]["accuracy"]  # the returned model's
    adapters = len([a for a in run.wiring.adapters if not isinstance(a, nn.Identity)])
    return TrainResult(model=student, history=state.history, best_accuracy=state.best_accuracy, final_accuracy=final,
                       steps=state.step, seconds=time.perf_counter() - run.started,
                       extra={"rank_checksums": checksums, "world_size": info.world_size,
                              "resumed_from": state.resumed_from, "adapters": adapters, "kept": kept})


def _keep_weights(run: Run) -> dict[str, Any]:
    """keep = "best": put the best validation epoch's weights back (before the after_train hooks, which then see the
    returned weights). Says which epoch the returned model is and why."""
    epochs = len(run.state.history)
    if run.config.keep == "last":
        return {"epoch": epochs or None, "of": epochs, "keep": "last", "why": "keep = \"last\""}
    if run.best_weights is None or run.best_epoch is None:
        why = ("no held-out validation split (choosing on the test split would flatter it): the last epoch"
               if not _has_validation(run.data) else "no validation metric: the last epoch")
        return {"epoch": epochs or None, "of": epochs, "keep": "last", "why": why}
    run.wiring.student.load_state_dict(run.best_weights)
    return {"epoch": run.best_epoch, "of": epochs, "keep": "best",
            "why": f"best validation {'accuracy' if run.state.higher_is_better else 'metric'} "
                   f"{run.state.best_accuracy:.4g}, the latest epoch that reached it"}


class _SilentBar:
    """The progress bar of ranks other than 0."""

    def advance(self, *_a: Any, **_k: Any) -> None: ...

    def set_info(self, **_k: Any) -> None: ...
