"""What a candidate costs, per budget kind: exact counts (MACs, parameters, weight size), the latency table's
prediction of its p90 on the target in the deployed precision (``edgekd.search.latency``), or an FPGA backend's
build-time estimate (cycles, DSP; ``estimator``)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

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
                  latency: Callable[[nn.Module, torch.Tensor], float] | None = None,
                  estimate: Callable[[nn.Module], dict[str, Any]] | None = None) -> CostFn:
    """The function the search minimises against ``budget``. ``latency`` predicts p90 ms (the latency table's
    ``predict_ms``), required for a ``p90_ms`` budget; ``estimate`` gives the FPGA backend's totals, required for
    ``cycles`` / ``dsp``. A candidate the estimate says does not fit the part costs infinity."""
    if budget.kind == "macs":
        return lambda model: float(counts(model, example).macs)
    if budget.kind == "params":
        return lambda model: float(counts(model, example).params)
    if budget.kind == "size_mb":
        return lambda model: counts(model, example).size_mb(weight_bytes)
    if budget.estimated:
        if estimate is None:
            raise ValueError(f"a {budget.kind} budget needs the backend's estimate")
        key = {"cycles": "latency_cycles", "dsp": "dsp"}[budget.kind]

        def estimated(model: nn.Module) -> float:
            est = estimate(model)
            return float(est["total"][key]) if est.get("fits", True) else math.inf

        return estimated
    if latency is None:
        raise ValueError("a p90_ms budget needs a latency predictor")
    return lambda model: float(latency(model, example))


class Estimator:
    """The FPGA backend's estimate of a candidate: its deployed INT8 QDQ file (the backend's numerics and flavor)
    through ``backend.estimate`` (no C++ compiled). One file per call in ``workdir``."""

    def __init__(self, backend: Any, target: Any, example: torch.Tensor, workdir: Any) -> None:
        self.backend, self.target, self.example, self.workdir, self.calls = backend, target, example, workdir, 0

    def __call__(self, model: nn.Module) -> dict[str, Any]:
        from edgekd.search.latency import deployed_onnx

        self.calls += 1
        path = deployed_onnx(model, self.example, self.target, "int8", self.workdir / f"e{self.calls}")
        return self.backend.estimate(path, self.target).to_dict()
