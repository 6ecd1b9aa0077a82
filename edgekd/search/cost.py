"""What a candidate costs, per budget kind: exact counts (MACs, parameters, weight size), the latency table's
prediction of its p90 on the target in the deployed precision (``edgekd.search.latency``), or an FPGA backend's
build-time estimate (cycles, DSP; ``estimator``)."""

from __future__ import annotations

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

#: what a design that does not fit the part costs, times its worst resource over-use (1.5 = 150 % of the part's
#: DSP): finite and falling as the design shrinks, so a search from a teacher that does not fit walks toward the
#: part first, and above every budget, so no such design is ever accepted
UNFIT = 1e12


def does_not_fit(cost: float) -> bool:
    return cost >= UNFIT


def _unfit_cost(est: dict[str, Any]) -> float:
    worst = max((float(u) for u in (est.get("utilization") or {}).values() if u is not None), default=1.0)
    return UNFIT * max(worst, 1.0)


def cost_function(budget: SearchBudget, example: torch.Tensor, *, weight_bytes: float,
                  latency: Callable[[nn.Module, torch.Tensor], float] | None = None,
                  estimate: Callable[[nn.Module], dict[str, Any]] | None = None) -> CostFn:
    """The function the search minimises against ``budget``. ``latency`` predicts p90 ms (the latency table's
    ``predict_ms``), required for a ``p90_ms`` budget; ``estimate`` gives the FPGA backend's totals, required for
    ``cycles`` / ``dsp``. A candidate the estimate says does not fit the part costs ``UNFIT`` x its worst
    resource over-use."""
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
            return float(est["total"][key]) if est.get("fits", True) else _unfit_cost(est)

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
