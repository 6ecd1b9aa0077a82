"""Compare two profile results and gate regressions (for CI); read baselines.

Ratios are ``new / base`` of a latency statistic (above 1 = the new one is slower), with a
*moving-block* bootstrap confidence interval from the kept per-query timings: consecutive
queries are resampled in blocks, so drift within a run (a neighbour's burst, clock changes)
widens the interval instead of passing for a difference. A difference is *significant* when
the interval excludes 1. The gate fails only when the interval's **lower bound** exceeds
``1 + max_regression`` (edgekd.budgets.judge_regression, the one rule ``edgekd check --baseline``
applies too) -- noise alone does not fail a build, a large real slowdown does.

One baseline format: a profile result (``edgekd.profile/1``). ``edgekd check --save-baseline``
writes one, so ``profile --compare`` and ``check --baseline`` read each other's files;
``load_baseline`` also reads the older ``edgekd.hil-baseline/1`` files and a bundle's report.json.
Provenance (host, CPU model, runtime versions, sha256 of the measured model file) travels in
``environment`` and ``artifact.sha256``; ``check_origin`` refuses a baseline from another CPU
(timings do not transfer) or, for ``check``, from another model file, unless allowed.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.budgets import (
    judge_regression,
    p90_for_budget,
    parse_fraction,  # noqa: F401  (the one parser; re-exported)
)
from edgekd.errors import ConfigError, EdgekdError
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


def _point(doc: dict[str, Any], name: str, which: str) -> float:
    value = (doc.get("single_stream") or {}).get(f"{name}_ms")
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 < value < float("inf"):
        raise ConfigError(f"the {which} has no usable {name}_ms (got {value!r}); a latency must be > 0",
                          where=doc.get("label"), hint="profile with the single-stream scenario")
    return float(value)


def _has_times(doc: dict[str, Any]) -> bool:
    return bool((doc.get("single_stream") or {}).get("times_ms"))


def _one_sided(times: np.ndarray, point: float, q: float, *, times_are_new: bool, n_boot: int, confidence: float,
               seed: int) -> stats.Interval:
    """Ratio CI when one side kept only a summary (an older baseline): the other side's block bootstrap against it."""
    ci = block_ratio_ci(np.full(1, point), times, q, n_boot=n_boot, confidence=confidence, seed=seed)
    if times_are_new:
        return ci
    return stats.Interval(1 / ci.estimate, 1 / ci.high, 1 / ci.low, confidence)


def block_ratio_ci(base_ms: np.ndarray, new_ms: np.ndarray, q: float, *, n_boot: int = 2000, confidence: float = 0.95,
                   seed: int = 0, blocks: int = 20) -> stats.Interval:
    """CI of ``percentile(new, q) / percentile(base, q)`` by a circular moving-block bootstrap of each run
    (``blocks`` blocks of consecutive queries per run), so within-run drift widens the interval."""
    rng = np.random.default_rng(seed)

    def resample(x: np.ndarray) -> np.ndarray:
        n = x.size
        length = max(1, n // blocks)
        k = -(-n // length)
        starts = rng.integers(0, n, size=(n_boot, k))
        idx = (starts[:, :, None] + np.arange(length)[None, None, :]) % n
        return np.percentile(x[idx.reshape(n_boot, -1)[:, :n]], q, axis=1)

    ratios = resample(new_ms) / np.maximum(resample(base_ms), 1e-300)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(ratios, [alpha, 1 - alpha])
    return stats.Interval(float(np.percentile(new_ms, q) / np.percentile(base_ms, q)), float(low), float(high), confidence)


def same_version(a: Any, b: Any) -> bool:
    """One release however it is spelled: OpenVINO's ``get_version()`` gives ``2026.4.1-22982-e213a147257-releases/
    2026/4``, its package metadata ``2026.4.1``; the release numbers decide.

    >>> same_version("2026.4.1-22982-e213a147257-releases/2026/4", "2026.4.1"), same_version("1.32.0", "1.31.0")
    (True, False)
    """
    if a == b:
        return True
    if a is None or b is None:
        return False
    ma, mb = re.match(r"\d+(?:\.\d+)*", str(a)), re.match(r"\d+(?:\.\d+)*", str(b))
    return bool(ma and mb and ma.group(0) == mb.group(0))


def env_differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    out = []
    ea, eb = a.get("environment", {}), b.get("environment", {})
    for label, get in (("CPU", lambda e: e.get("cpu", {}).get("model")), ("host", lambda e: e.get("hostname")),
                       ("threads", lambda e: e.get("threads")), ("OS", lambda e: e.get("os", {}).get("release"))):
        if get(ea) != get(eb):
            out.append(f"{label}: {get(ea)!r} vs {get(eb)!r}")
    va, vb = ea.get("versions", {}), eb.get("versions", {})
    for key in sorted(set(va) | set(vb)):
        if not same_version(va.get(key), vb.get(key)):
            out.append(f"{key}: {va.get(key)} vs {vb.get(key)}")
    ha, hb = (a.get("artifact") or {}).get("sha256"), (b.get("artifact") or {}).get("sha256")
    if ha and hb and ha != hb:
        out.append(f"model file sha256: {ha[:12]} vs {hb[:12]}")
    sa, sb = a.get("settings", {}), b.get("settings", {})
    for key in ("batch_size", "idle_gap_ms"):
        if sa.get(key) != sb.get(key):
            out.append(f"setting {key}: {sa.get(key)} vs {sb.get(key)}")
    pa, pb = call_path(a), call_path(b)
    if pa != pb:
        out.append(f"timed call: {pa} vs {pb} -- the plain call includes the runtime binding's per-call cost "
                   "(binding_overhead_us), so the ratio is not the model's alone; profile both with the same "
                   "--call-path")
    return out


def call_path(doc: dict[str, Any]) -> str:
    """The call a profile timed; a profile from before edgekd timed the bound call has none recorded: plain."""
    return str((doc.get("single_stream") or {}).get("call_path") or (doc.get("settings") or {}).get("call_path")
               or "plain")


def compare(base: dict[str, Any], new: dict[str, Any], *, metrics: tuple[str, ...] = ("p50", "p90"),
            n_boot: int = 2000, confidence: float = 0.95, seed: int = 0) -> Comparison:
    if not _has_times(base) and not _has_times(new):
        _times(new, "new")  # at least one side must keep its per-query timings
    ta = _times(base, "base") if _has_times(base) else None
    tb = _times(new, "new") if _has_times(new) else None
    rows = []
    for name in metrics:
        if name not in METRICS:
            raise ConfigError(f"unknown metric {name!r}; known: {', '.join(METRICS)}", where="--metric")
        q = METRICS[name]
        kw = {"n_boot": n_boot, "confidence": confidence, "seed": seed}
        if ta is not None and tb is not None:
            ci = block_ratio_ci(ta, tb, q, **kw)
        elif ta is None:
            ci = _one_sided(tb, _point(base, name, "baseline"), q, times_are_new=True, **kw)
        else:
            ci = _one_sided(ta, _point(new, name, "new profile"), q, times_are_new=False, **kw)
        base_ms = float(np.percentile(ta, q)) if ta is not None else _point(base, name, "baseline")
        new_ms = float(np.percentile(tb, q)) if tb is not None else _point(new, name, "new profile")
        rows.append(MetricComparison(name, base_ms, new_ms, ci, significant=not ci.contains(1.0)))
    p = stats.mann_whitney_p(ta, tb) if ta is not None and tb is not None and ta.size > 1 and tb.size > 1 else None
    return Comparison(base.get("label", "A"), new.get("label", "B"), rows, p, env_differences(base, new))


@dataclass
class GateResult:
    ok: bool
    messages: list[str]


def gate(comparison: Comparison, max_regression: float) -> GateResult:
    """Fail when any compared metric is slower than ``max_regression`` allows even at its CI's lower bound."""
    msgs, ok = [], True
    for m in comparison.metrics:
        verdict = judge_regression(m.metric, m.base_ms, m.new_ms, m.ratio.low, m.ratio.high, max_regression)
        ok = ok and verdict.ok
        msgs.append(("" if verdict.ok else "REGRESSION ") + verdict.reason)
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


# ------------------------------------------------------------------ baselines: one format, one reader

LEGACY_BASELINE = "edgekd.hil-baseline/1"
_WRITERS = "`edgekd profile ARTIFACT` (profile.json) or `edgekd check BUNDLE --save-baseline PATH`"


def _legacy(data: dict[str, Any], target: str | None, where: str) -> dict[str, Any] | None:
    """An older baseline (``edgekd.hil-baseline/1``, a bundle's report.json, any ``{"latency": {...}}``) as a
    profile-shaped document without per-query timings; None when it holds no latency."""
    schema = str(data.get("schema") or "")
    if schema.startswith("edgekd.hil-baseline/") and schema != LEGACY_BASELINE:
        raise EdgekdError(f"unsupported baseline schema {schema!r} (this edgekd reads {LEGACY_BASELINE} and "
                          "edgekd.profile/1)", where=where, hint=f"save a new one with this edgekd: {_WRITERS}")
    if schema == LEGACY_BASELINE and target is not None and data.get("target") not in (None, target):
        raise EdgekdError(f"the baseline was measured for target {data['target']!r}, not {target!r}", where=where,
                          hint="compare a target with its own baseline (one file per target)")
    candidates: list[Any] = []
    if target is not None and isinstance(data.get("targets"), dict) and target in data["targets"]:
        candidates.append((data["targets"][target] or {}).get("latency"))
    candidates += [data.get("latency"), data.get("summary"), data]
    latency = next((c for c in candidates if isinstance(c, dict) and any(k in c for k in ("p50_ms", "p90_ms"))), None)
    if latency is None:
        return None
    env = {"hostname": data.get("host"), "cpu": {"model": (data.get("environment") or {}).get("cpu", {}).get("model")},
           "versions": {}}
    return {"schema": schema or "legacy", "label": str(data.get("label") or Path(where).stem),
            "target": {"name": data.get("target") or target}, "environment": env, "runtime": data.get("runtime"),
            "artifact": {"source_sha256": data.get("model_sha256")}, "settings": {}, "single_stream": dict(latency)}


def load_baseline(path: str | Path, *, target: str | None = None) -> dict[str, Any]:
    """The one baseline reader (``profile --compare`` and ``check --baseline``): a profile result (profile.json
    or its folder, or a ``check --save-baseline`` file -- the same format) or an older baseline (see ``_legacy``)."""
    from edgekd.profiler import report

    p = Path(path)
    p = p / "profile.json" if p.is_dir() and (p / "profile.json").is_file() else p
    hint = f"pass a file written by {_WRITERS}"
    try:
        data = json.loads(p.read_text())
    except FileNotFoundError:
        raise EdgekdError("baseline file not found", where=str(path), hint=hint) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise EdgekdError(f"baseline is not valid JSON: {exc}", where=str(p), hint=hint) from None
    except OSError as exc:
        raise EdgekdError(f"cannot read the baseline: {exc.strerror or exc}", where=str(p), hint=hint) from None
    if not isinstance(data, dict):
        raise EdgekdError("a baseline must be a JSON object", where=str(p), hint=hint)
    if str(data.get("schema") or "").startswith("edgekd.profile/"):
        doc = report.validate(data, where=str(p))
        name = (doc.get("target") or {}).get("name")
        if target is not None and name not in (None, target):
            raise EdgekdError(f"the baseline was measured for target {name!r}, not {target!r}", where=str(p),
                              hint="compare a target with its own baseline (one file per target)")
        return doc
    doc = _legacy(data, target, str(p))
    if doc is None:
        raise EdgekdError(f"no latency found for target {target!r} (looked at targets.{target}.latency, latency, "
                          "summary, top level)", where=str(p), hint=hint)
    return doc


def _cpu(doc: dict[str, Any]) -> str | None:
    return ((doc.get("environment") or {}).get("cpu") or {}).get("model")


def check_origin(base: dict[str, Any], new: dict[str, Any], *, where: str, allow_other_host: bool = False,
                 allow_other_model: bool = True) -> list[str]:
    """Refuse a baseline that cannot judge ``new``: measured on another CPU model (timings do not transfer), or
    -- when ``allow_other_model`` is False (``edgekd check``) -- on another model file (sha256 differs).
    Returns notes for what differs but is allowed (a hostname alone: CI runners get a new one per job)."""
    notes: list[str] = []
    ca, cb = _cpu(base), _cpu(new)
    if ca and cb and ca != cb:
        if not allow_other_host:
            raise EdgekdError(f"the baseline was measured on another CPU ({ca!r}; this run: {cb!r}), so its timings "
                              "say nothing about this machine", where=where,
                              hint="measure a baseline on this machine, or pass --allow-other-host to compare anyway")
        notes.append(f"baseline from another CPU ({ca!r} vs {cb!r}), allowed by --allow-other-host")
    ha, hb = ((base.get("environment") or {}).get("hostname"), (new.get("environment") or {}).get("hostname"))
    if ha and hb and ha != hb:
        notes.append(f"baseline measured on host {ha!r} (this run: {hb!r}; same CPU model)")
    aa, ab = base.get("artifact") or {}, new.get("artifact") or {}
    key = "sha256" if aa.get("sha256") and ab.get("sha256") else "source_sha256"
    if aa.get(key) and ab.get(key) and aa[key] != ab[key]:
        what = "model file" if key == "sha256" else "bundle's model.onnx"
        if not allow_other_model:
            raise EdgekdError(f"the baseline was measured on another model: the {what}'s sha256 is {aa[key][:12]}..., "
                              f"this one's is {ab[key][:12]}...", where=where,
                              hint="save a baseline of this build (`edgekd check BUNDLE --save-baseline PATH`), or pass "
                                   "--allow-other-model to judge it against the other model's latency")
        notes.append(f"baseline from another model ({what} sha256 {aa[key][:12]} vs {ab[key][:12]})")
    return notes
