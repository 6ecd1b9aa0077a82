"""Cheap ranking of inherited-weight candidates: the task metric after BatchNorm re-calibration on a held-out
split (NetAdapt/HALP rank the same way before fine-tuning), or the negative KD loss when there are no labels."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from edgekd.export import model_input
from edgekd.tasks import TaskSpec
from edgekd.train.task_losses import objective, outputs_by_name
from edgekd.train.trainer import evaluate


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, x: np.ndarray, *, batches: int = 8, batch: int = 64, seed: int = 0) -> None:
    """Re-estimate every BatchNorm's running statistics on ``batches`` training batches (cumulative average):
    removed channels and blocks shift the activations the inherited statistics were measured on."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    for bn in norms:
        bn.reset_running_stats()
        bn.momentum = None
    order = np.random.default_rng(seed).permutation(len(x))[: batches * batch]
    model.train()
    for start in range(0, len(order), batch):
        model(torch.from_numpy(model_input(x[order[start:start + batch]])))
    model.eval()


class Proxy:
    """Scores a candidate on the validation split; higher is better whatever the metric's direction."""

    def __init__(self, teacher: nn.Module, x_train: np.ndarray, x_val: np.ndarray, y_val: object, task: TaskSpec,
                 *, samples: int = 512, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        idx = np.sort(rng.permutation(len(x_val))[:samples])
        self.x_train, self.x_val = x_train, x_val[idx]
        self.y_val = None if y_val is None else _take(y_val, idx)
        self.task, self.seed = task, seed
        self.kind = "metric" if evaluate(teacher, self.x_val[:2], _take(self.y_val, np.arange(2)), task=task) \
            is not None else "kd_loss"
        self._teacher_out = None
        if self.kind == "kd_loss":
            with torch.no_grad():
                out = teacher.eval()(torch.from_numpy(model_input(self.x_val)))
            self._teacher_out = outputs_by_name(out, task, "teacher")

    @property
    def label(self) -> str:
        return f"{self.task.metric} after BN re-calibration" if self.kind == "metric" else "-KD loss (no labels)"

    def __call__(self, model: nn.Module) -> float:
        recalibrate_batchnorm(model, self.x_train, seed=self.seed)
        if self.kind == "metric":
            value = float(evaluate(model, self.x_val, self.y_val, task=self.task))
            return value if self.task.higher_is_better else -value
        with torch.no_grad():
            x = torch.from_numpy(model_input(self.x_val))
            student = outputs_by_name(model.eval()(x), self.task, "student")
            loss = objective(self.task, student, self._teacher_out, None, x, logits_kind="hinton", temperature=4.0,
                             alpha=1.0)
        return -float(loss)


def _take(y: object, idx: np.ndarray) -> object:
    from edgekd.data import _take as take

    return None if y is None else take(y, idx)
