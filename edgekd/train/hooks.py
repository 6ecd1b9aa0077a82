"""Typed fine-tune hooks: what a pass may run inside the training loop (masks, QAT phases, schedules).

A hook subclasses ``Hook`` and overrides any of its methods, or is any object with some of them (the older,
duck-typed form: ``HookSet.of`` looks each method up once, before training, instead of at every step).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from torch import nn


class Hook:
    """Base class for ``fine_tune(..., hooks=[...])``; every method is a no-op here."""

    def before_epoch(self, model: nn.Module, epoch: int, epochs: int) -> None:
        """Before each epoch (``epoch`` counts from 0), with the student in its pre-epoch mode."""

    def after_step(self, model: nn.Module, step: int, total_steps: int) -> None:
        """Right after every ``optimizer.step()`` (``step`` counts from 1), before the scheduler steps."""

    def after_train(self, model: nn.Module) -> None:
        """Once, after the last step, before the rank-agreement check."""


EpochCall = Callable[[nn.Module, int, int], None]
StepCall = Callable[[nn.Module, int, int], None]
EndCall = Callable[[nn.Module], None]


@dataclass(frozen=True)
class HookSet:
    """The hooks' bound methods per event, in the order the hooks were given."""

    before_epoch: tuple[EpochCall, ...] = ()
    after_step: tuple[StepCall, ...] = ()
    after_train: tuple[EndCall, ...] = ()

    @classmethod
    def of(cls, hooks: Sequence[object]) -> HookSet:
        def bound(event: str) -> tuple:
            return tuple(fn for h in hooks if callable(fn := getattr(h, event, None)))

        return cls(bound("before_epoch"), bound("after_step"), bound("after_train"))

    def epoch_starts(self, model: nn.Module, epoch: int, epochs: int) -> None:
        for fn in self.before_epoch:
            fn(model, epoch, epochs)

    def step_done(self, model: nn.Module, step: int, total_steps: int) -> None:
        for fn in self.after_step:
            fn(model, step, total_steps)

    def training_done(self, model: nn.Module) -> None:
        for fn in self.after_train:
            fn(model)
