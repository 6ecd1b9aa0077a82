"""Compare two profile results and gate regressions (for CI).

Ratios are ``new / base`` of a latency statistic (above 1 = the new one is slower), with a
bootstrap confidence interval from the kept per-query timings. A difference is *significant*
when that interval excludes 1. The gate fails when a ratio exceeds ``1 + max_regression``
*and* the difference is significant -- noise alone never fails a build, and a large,
real slowdown always does. Environment differences between the two runs are listed,
because a different CPU, thread count or runtime version explains most surprises.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgekd.budgets import (
    p90_for_budget,
    parse_fraction,  # noqa: F401  (the one parser; re-exported)
)
from edgekd.errors import ConfigError
from edgekd.profiler import stats

METRICS = {"p50": 50.0, "p90": 90.0, "p99": 99.0}


@dataclass
class MetricComparison:
    metric: str
    base_ms: float
    new_ms: float
    ratio: stats.Interval
    significant: bool

    @property
    def change_pct(self) -> float:
        return (self.ratio.estimate - 1) * 100

    def verdict(self) -> str:
        if not self.significant:
            return "no significant difference"
        return "slower" if self.ratio.estimate > 1 else "faster"

    def to_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "base_ms": self.base_ms, "new_ms": self.new_ms, "ratio": self.ratio.to_dict(),
                "change_pct": self.change_pct, "significant": self.significant, "verdict": self.verdict()}


@dataclass
class Comparison:
    base_label: str
    new_label: str
    metrics: list[MetricComparison]
    mann_whitney_p: float | None
    env_differences: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"base": self.base_label, "new": self.new_label, "metrics": [m.to_dict() for m in self.metrics],
                "mann_whitney_p": self.mann_whitney_p, "env_differences": self.env_differences}


def _times(doc: dict[str, Any], which: str) -> np.ndarray:
    ss = doc.get("single_stream") or {}
    times = ss.get("times_ms")
    if not times:
        raise ConfigError(f"the {which} profile has no per-query timings (single_stream.times_ms)",
                          where=doc.get("label"), hint="profile with the single-stream scenario")
    return np.asarray(times, dtype=np.float64)


def env_differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    out = []
    ea, eb = a.get("environment", {}), b.get("environment", {})
    for label, get in (("CPU", lambda e: e.get("cpu", {}).get("model")), ("host", lambda e: e.get("hostname")),
                       ("threads", lambda e: e.get("threads")), ("OS", lambda e: e.get("os", {}).get("release"))):
        if get(ea) != get(eb):
            out.append(f"{label}: {get(ea)!r} vs {get(eb)!r}")
    va, vb = ea.get("versions", {}), eb.get("versions", {})
    for key in sorted(set(va) | set(vb)):
        if va.get(key) != vb.get(key):
            out.append(f"{key}: {va.get(key)} vs {vb.get(key)}")
    sa, sb = a.get("settings", {}), b.get("settings", {})
    for key in ("batch_size", "idle_gap_ms"):
        if sa.get(key) != sb.get(key):
            out.append(f"setting {key}: {sa.get(key)} vs {sb.get(key)}")
    return out


def compare(base: dict[str, Any], new: dict[str, Any], *, metrics: tuple[str, ...] = ("p50", "p90"),
            n_boot: int = 2000, confidence: float = 0.95, seed: int = 0) -> Comparison:
    ta, tb = _times(base, "base"), _times(new, "new")
    rows = []
    for name in metrics:
        if name not in METRICS:
            raise ConfigError(f"unknown metric {name!r}; known: {', '.join(METRICS)}", where="--metric")
        q = METRICS[name]
        ci = stats.ratio_ci(ta, tb, q, n_boot=n_boot, confidence=confidence, seed=seed)
        rows.append(MetricComparison(name, float(np.percentile(ta, q)), float(np.percentile(tb, q)), ci,
                                     significant=not ci.contains(1.0)))
    p = stats.mann_whitney_p(ta, tb) if ta.size > 1 and tb.size > 1 else None
    return Comparison(base.get("label", "A"), new.get("label", "B"), rows, p, env_differences(base, new))


@dataclass
class GateResult:
    ok: bool
    messages: list[str]


def gate(comparison: Comparison, max_regression: float) -> GateResult:
    """Fail when any compared metric is slower by more than ``max_regression`` and significantly so."""
    msgs, ok = [], True
    for m in comparison.metrics:
        limit = 1 + max_regression
        if m.ratio.estimate > limit and m.significant:
            ok = False
            msgs.append(f"REGRESSION {m.metric}: {m.base_ms:.4f} -> {m.new_ms:.4f} ms ({m.change_pct:+.1f}%, "
                        f"CI x[{m.ratio.low:.3f}, {m.ratio.high:.3f}]) exceeds +{max_regression * 100:.1f}%")
        elif m.ratio.estimate > limit:
            msgs.append(f"{m.metric}: {m.change_pct:+.1f}% exceeds +{max_regression * 100:.1f}% but is not significant "
                        f"(CI x[{m.ratio.low:.3f}, {m.ratio.high:.3f}] contains 1): not failing")
        else:
            msgs.append(f"{m.metric}: {m.change_pct:+.1f}% within +{max_regression * 100:.1f}%")
    return GateResult(ok, msgs)


def budget_gate(doc: dict[str, Any], p90_budget_ms: float) -> GateResult:
    """Check a single profile's p90 against a target budget; uses the early-stopping (conservative)
    p90 when enough queries were run, the sample p90 otherwise, and says which."""
    value, how = p90_for_budget(doc.get("single_stream") or {})
    if value is None:
        return GateResult(False, ["no p90 in this profile"])
    ok = value <= p90_budget_ms
    return GateResult(ok, [f"{'ok' if ok else 'OVER BUDGET'}: {how} {value:.4f} ms vs budget {p90_budget_ms} ms"])


def markdown(comp: Comparison) -> str:
    lines = [f"## {comp.new_label} vs {comp.base_label}", "",
             "| metric | base ms | new ms | ratio new/base | 95% CI | change | verdict |",
             "|---|---:|---:|---:|---|---:|---|"]
    for m in comp.metrics:
        lines.append(f"| {m.metric} | {m.base_ms:.4f} | {m.new_ms:.4f} | {m.ratio.estimate:.3f} | "
                     f"[{m.ratio.low:.3f}, {m.ratio.high:.3f}] | {m.change_pct:+.1f}% | {m.verdict()} |")
    if comp.mann_whitney_p is not None:
        lines += ["", f"Mann-Whitney U (distributions differ): p = {comp.mann_whitney_p:.3g}"]
    if comp.env_differences:
        lines += ["", "Environment differences (explain before trusting the ratio):"]
        lines += [f"- {d}" for d in comp.env_differences]
    return "\n".join(lines) + "\n"
