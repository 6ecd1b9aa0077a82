"""The search path: NetAdapt-style greedy steps from the teacher down to the tightest budget.

Each step proposes, for every channel group, the widest width (in granules) that cuts the predicted cost by
``step_fraction``, and for every block still present, its removal; every proposal is materialised with inherited
weights and ranked by the proxy (metric after BN re-calibration). The step takes the proposal that loses the least
proxy per unit of cost saved (HALP's importance-per-latency knapsack ratio, measured instead of assumed), so one
path visits a candidate near every budget: the Pareto sweep costs one search, not one per budget.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from edgekd.progress import log, task
from edgekd.search.cost import UNFIT, counts, does_not_fit
from edgekd.search.space import Candidate, Group, SearchSpace


@dataclass
class Point:
    """One evaluated candidate: its predicted cost, its proxy score, and how it was reached."""

    candidate: Candidate
    cost: float
    proxy: float
    step: int
    move: str
    on_path: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"candidate": self.candidate.to_dict(), "predicted_cost": self.cost, "proxy": self.proxy,
                "step": self.step, "move": self.move, "on_path": self.on_path, **self.extra}


@dataclass
class PathSettings:
    step_fraction: float = 0.12
    max_steps: int = 40
    #: blocks may be removed (depth) as well as groups thinned (width)
    depth: bool = True

    def __post_init__(self) -> None:
        if not 0.01 <= self.step_fraction <= 0.5:
            raise ValueError(f"step_fraction must be in [0.01, 0.5], got {self.step_fraction}")


class Evaluator:
    """Materialises, costs and scores candidates once each (the path revisits widths while bisecting)."""

    def __init__(self, space: SearchSpace, teacher: nn.Module, cost: Callable[[nn.Module], float],
                 proxy: Callable[[nn.Module], float]) -> None:
        self.space, self.teacher, self._cost, self._proxy = space, teacher, cost, proxy
        self._costs: dict[Candidate, float] = {}
        self._scores: dict[Candidate, float] = {}
        #: MACs and parameters of every scored candidate, counted on the model the proxy scored
        self.counts: dict[Candidate, dict[str, int]] = {}

    def cost(self, cand: Candidate) -> float:
        if cand not in self._costs:
            self._costs[cand] = self._cost(self.space.materialize(self.teacher, cand))
        return self._costs[cand]

    def score(self, cand: Candidate) -> float:
        if cand not in self._scores:
            model = self.space.materialize(self.teacher, cand)
            c = counts(model, self.space.example)
            self.counts[cand] = {"macs": c.macs, "params": c.params}
            self._scores[cand] = self._proxy(model)
        return self._scores[cand]

    @property
    def costed(self) -> int:
        return len(self._costs)


def _thinner(ev: Evaluator, cand: Candidate, group: Group, target: float) -> Candidate | None:
    """The widest width of ``group`` below its current one whose candidate costs <= ``target`` (bisection: cost
    falls as width falls), else the narrowest width if that at least saves something."""
    widths = [w for w in ev.space.choices(group) if w < cand.width(group)]
    if not widths:
        return None
    lo, hi = 0, len(widths) - 1  # widths ascending; find the largest index with cost <= target
    best = None
    while lo <= hi:
        mid = (lo + hi) // 2
        trial = cand.with_width(group.name, widths[mid])
        if ev.cost(trial) <= target:
            best, lo = trial, mid + 1
        else:
            hi = mid - 1
    if best is None:
        narrowest = cand.with_width(group.name, widths[0])
        return narrowest if ev.cost(narrowest) < ev.cost(cand) else None
    return best


def _proposals(ev: Evaluator, cand: Candidate, target: float, depth: bool) -> list[tuple[str, Candidate]]:
    out = []
    for group in ev.space.groups:
        trial = _thinner(ev, cand, group, target)
        if trial is not None:
            out.append((f"{group.name}: {cand.width(group)} -> {trial.width(group)}", trial))
    if depth:
        for block in ev.space.blocks:
            if block.name not in cand.removed:
                trial = cand.with_removed(block.name)
                if ev.cost(trial) < ev.cost(cand):
                    out.append((f"remove {block.name}", trial))
    return out


def search_path(ev: Evaluator, stop_at: float, settings: PathSettings | None = None) -> list[Point]:
    """Every candidate evaluated along the path from the teacher to the first point costing <= ``stop_at``
    (or until nothing can shrink); path points have ``on_path = True``."""
    settings = settings or PathSettings()
    current = Candidate()
    points = [Point(current, ev.cost(current), ev.score(current), 0, "teacher", True)]
    with task("searching widths and depth", settings.max_steps) as bar:
        for step in range(1, settings.max_steps + 1):
            here = points[-1]  # the last path point: each step appends its choice last
            if here.cost <= stop_at:
                break
            # a design over the part halves its over-use per step: 12 % steps from 30x the part's DSP take 27 steps
            target = max(here.cost / 2, UNFIT) if does_not_fit(here.cost) else here.cost * (1 - settings.step_fraction)
            proposals = _proposals(ev, current, target, settings.depth)
            if not proposals:
                log(f"search: nothing left to shrink at step {step} (cost {here.cost:.4g})")
                break
            scored = []
            for move, cand in proposals:
                point = Point(cand, ev.cost(cand), ev.score(cand), step, move)
                saved = max(here.cost - point.cost, 1e-12)
                scored.append(((here.proxy - point.proxy) / saved, point))
                points.append(point)
            _, chosen = min(scored, key=lambda item: (item[0], item[1].cost))
            chosen.on_path = True
            points.remove(chosen)
            points.append(chosen)  # path points are in step order at the end of each step
            current = chosen.candidate
            bar.advance(1)
    return points
