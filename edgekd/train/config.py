"""FinetuneConfig: the flat, frozen training recipe every fine-tuning pass shares.

Flat on purpose: a profile writes it as one TOML table (``[passes.finetune]`` or the ``distill``
pass's own ``[[passes]]`` entry), validated by ``edgekd.typed.from_mapping``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Loss = Literal["hinton", "reverse_kl", "ce"]


@dataclass(frozen=True)
class FinetuneConfig:
    """How to train a student (against a teacher).

    epochs / steps: train for ``steps`` optimizer steps when set, else ``epochs`` passes over the data.
    batch_size: the global batch; under torchrun each of N ranks takes ``batch_size // N``.
    schedule: per-step learning-rate schedule; ``warmup_steps`` of linear warm-up go in front
    (for "onecycle" the warm-up sets the one-cycle ramp instead, default 30 %).
    loss: "hinton" (KL(teacher || student) at temperature T, times T^2), "reverse_kl"
    (KL(student || teacher), mode-seeking) or "ce" (labels only). ``alpha`` weighs the soft term,
    ``1 - alpha`` the hard-label CE; without labels only the soft term is used.
    features: FitNets hints "teacher.layer:student.layer" (MSE, learnable adapter where shapes differ),
    weighted by ``feature_weight``. attention_weight > 0 adds MiniLM-style attention transfer
    between the last attention layers of teacher and student.
    keep: which weights the run returns: "best" -- the epoch with the best task metric on the held-out validation
    split (the last epoch when the data has none: choosing on the test split would flatter the report) -- or "last".
    """

    epochs: int = 10
    steps: int | None = None
    batch_size: int = 64
    optimizer: Literal["adamw", "sgd"] = "adamw"
    lr: float = 3e-3
    weight_decay: float = 0.0
    momentum: float = 0.9
    schedule: Literal["cosine", "step", "onecycle", "constant"] = "cosine"
    warmup_steps: int = 0
    loss: Loss = "hinton"
    temperature: float = 4.0
    alpha: float = 0.9
    features: tuple[str, ...] = ()
    feature_weight: float = 1.0
    attention_weight: float = 0.0
    seed: int = 0
    keep: Literal["best", "last"] = "last"

    def __post_init__(self) -> None:
        if self.epochs < 1 and self.steps is None:
            raise ValueError(f"epochs must be >= 1 (got {self.epochs}), or set steps")
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"steps must be >= 1 (got {self.steps})")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1 (got {self.batch_size})")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0 (got {self.lr})")
        if self.weight_decay < 0 or self.warmup_steps < 0:
            raise ValueError("weight_decay and warmup_steps must be >= 0")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1] (got {self.alpha})")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0 (got {self.temperature})")
        if self.feature_weight < 0 or self.attention_weight < 0:
            raise ValueError("feature_weight and attention_weight must be >= 0")
        for hint in self.features:
            t, sep, s = hint.partition(":")
            if not sep or not t or not s or ":" in s:
                raise ValueError(f"feature hint {hint!r} must look like 'teacher.layer:student.layer'")

    @property
    def uses_teacher(self) -> bool:
        return self.loss != "ce" or bool(self.features) or self.attention_weight > 0

    def hint_pairs(self) -> list[tuple[str, str]]:
        return [tuple(h.split(":")) for h in self.features]  # type: ignore[misc]
