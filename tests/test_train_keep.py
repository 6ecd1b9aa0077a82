"""keep = "best" | "last": the trainer returns the best validation epoch's weights (distill's default), or the last."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from edgekd.passes.distill import DistillConfig
from edgekd.train import FinetuneConfig, evaluate, fine_tune


def _student() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8 * 16, 10))


class RuinLastEpoch:
    """Zeroes the classifier after every step of the last epoch: that epoch scores at chance, so it is not the best."""

    def __init__(self) -> None:
        self.last = False

    def before_epoch(self, model: nn.Module, epoch: int, epochs: int) -> None:
        self.last = epoch == epochs - 1

    def after_step(self, model: nn.Module, step: int, total: int) -> None:
        if self.last:
            with torch.no_grad():
                model[-1].weight.zero_()
                model[-1].bias.zero_()


CONFIG = FinetuneConfig(epochs=3, loss="ce", lr=5e-3, schedule="constant")


def test_keep_best_returns_the_best_validation_epoch(digits) -> None:
    result = fine_tune(_student(), None, digits, dataclasses.replace(CONFIG, keep="best"), hooks=[RuinLastEpoch()])
    kept = result.extra["kept"]
    scores = [h["accuracy"] for h in result.history]
    assert scores[-1] < 20 and kept["keep"] == "best" and kept["of"] == 3  # the ruined last epoch: chance
    assert kept["epoch"] == max(i + 1 for i, s in enumerate(scores) if s == max(scores)) < 3  # ties: the later
    assert kept["why"] == f"best validation accuracy {max(scores):.4g}, the latest epoch that reached it"
    # the returned model is that epoch's: its validation accuracy is the one recorded then, and the result says so
    assert evaluate(result.model, digits.x_val, digits.y_val) == max(scores) == result.final_accuracy


def test_keep_last_returns_the_last_epoch(digits) -> None:
    result = fine_tune(_student(), None, digits, CONFIG, hooks=[RuinLastEpoch()])  # FinetuneConfig's default: last
    assert result.extra["kept"] == {"epoch": 3, "of": 3, "keep": "last", "why": 'keep = "last"'}
    assert evaluate(result.model, digits.x_val, digits.y_val) < 20


def test_keep_best_without_a_validation_split_keeps_the_last(digits) -> None:
    no_val = dataclasses.replace(digits, x_val=None, y_val=None)
    result = fine_tune(_student(), None, no_val, dataclasses.replace(CONFIG, keep="best"), hooks=[RuinLastEpoch()])
    kept = result.extra["kept"]
    assert kept["epoch"] == 3 and kept["keep"] == "last" and "no held-out validation split" in kept["why"]


def test_distill_keeps_best_by_default_and_checks_the_value() -> None:
    from edgekd.config import load_recipe
    from edgekd.errors import ConfigError

    assert DistillConfig().keep == "best" and FinetuneConfig().keep == "last"
    assert load_recipe("kd", ["distill.keep=last"]).passes[0].config.keep == "last"
    with pytest.raises(ConfigError, match=r"'first' is not allowed; choose one of 'best' \| 'last'"):
        load_recipe("kd", ["distill.keep=first"])
