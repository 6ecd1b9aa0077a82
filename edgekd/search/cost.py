"""What a candidate costs, per budget kind: exact counts (MACs, parameters, weight size) or the latency table's
prediction of its p90 on the target in the deployed precision (``edgekd.search.latency``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from edgekd.budgets import SearchBudget
from edgekd.passes.prune import count_macs_params


@dataclass(frozen=True)
class Counts:
    macs: int
    params: int

    def size_mb(self, weight_bytes: float) -> float:
        return self.params * weight_bytes / 1e6


def counts(model: nn.Module, example: torch.Tensor) -> Counts:
    macs, params = count_macs_params(model, example)
    return Counts(macs, params)


CostFn = Callable[[nn.Module], float]


def cost_function(budget: SearchBudget, example: torch.Tensor, *, weight_bytes: float,
                  latency: Callable[[nn.Module, torch.Tensor], float] | None = None) -> CostFn:
    """The function the search minimises against ``budget``. ``latency`` predicts p90 ms (the latency table's
    ``predict_ms``); it is required for a ``p90_ms`` budget and unused otherwise."""
    if budget.kind == "macs":
        return lambda model: float(counts(model, example).macs)
    if budget.kind == "params":
        return lambda model: float(counts(model, example).params)
    if budget.kind == "size_mb":
        return lambda model: counts(model, example).size_mb(weight_bytes)
    if latency is None:
        raise ValueError("a p90_ms budget needs a latency predictor")
    return lambda model: float(latency(model, example))
