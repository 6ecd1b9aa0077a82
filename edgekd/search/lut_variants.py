"""Whole models to calibrate and check the latency table on: seeded random channel prunings of one model
(torch-pruning's MetaPruner, DepGraph), optionally with kept widths rounded to a multiple."""

from __future__ import annotations

import copy
import random
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from edgekd.errors import PassError


def pruned_variant(model: nn.Module, example: torch.Tensor, *, seed: int, max_ratio: float = 0.7,
                   round_to: int | None = None, levels: Sequence[float] = ()) -> tuple[nn.Module, dict[str, Any]]:
    """A copy of ``model`` with every Conv/Linear group pruned by its own random ratio (the last Linear, the
    classifier, is kept): uniform in [0, max_ratio], or one of ``levels`` (ratios, those above max_ratio dropped;
    few levels make variants share layer shapes, so a latency table measures fewer blocks). Returns the model and
    what was done."""
    import torch_pruning as tp

    rng = random.Random(seed)
    pruned = copy.deepcopy(model).eval()
    weighted = [m for m in pruned.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    ignored = [weighted[-1]] if weighted and isinstance(weighted[-1], nn.Linear) else []
    allowed = [r for r in levels if r <= max_ratio] or [0.0]
    ratios = {m: rng.choice(allowed) if levels else rng.uniform(0.0, max_ratio) for m in weighted if m not in ignored}
    try:
        pruner = tp.pruner.MetaPruner(pruned, example, importance=tp.importance.GroupMagnitudeImportance(p=2),
                                      pruning_ratio=0.0, pruning_ratio_dict=ratios, ignored_layers=ignored,
                                      round_to=round_to or None)
        pruner.step()
    except Exception as exc:  # torch-pruning's graph tracing raises many types
        raise PassError(f"torch-pruning could not prune this model: {type(exc).__name__}: {exc}",
                        where="latency table variants", hint="calibrate on models you prune yourself "
                        "(LatencyTable.calibrate)") from None
    return pruned, {"seed": seed, "max_ratio": max_ratio, "round_to": round_to or 0, "levels": list(levels)}


def calibration_models(model: nn.Module, example: torch.Tensor, n: int = 10, *, seed: int = 0,
                       round_to: int | None = None) -> list[nn.Module]:
    """``model`` itself and ``n - 1`` random prunings of it (spread from light to heavy)."""
    models = [copy.deepcopy(model).eval()]
    for i in range(1, n):
        # the ratio cap grows with i: the set spans near-dense to heavily pruned
        cap = 0.15 + 0.7 * i / max(1, n - 1)
        models.append(pruned_variant(model, example, seed=seed + i, max_ratio=min(cap, 0.85), round_to=round_to)[0])
    return models
