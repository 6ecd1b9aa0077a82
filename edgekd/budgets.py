"""The one judge of a target's budgets: ``edgekd compress`` (per target), ``edgekd check`` and the pytest plugin ask it.

Every budget is a limit in a target's ``[budgets]`` table, judged against one measured value:

| budget | value judged | passes when |
|---|---|---|
| ``p90_ms`` | single-stream p90: early-stopping p90 when enough queries ran, or the FPGA estimate | value <= limit |
| ``max_size_mb`` | the target folder's files | value <= limit |
| ``max_accuracy_drop`` | how much worse the task metric is than the FP32 reference's, on held-out data (*) | value <= limit |
| ``must_fit`` (default true) | the backend's resource estimate says the design fits the part | fits, or must_fit = false |
| ``--max-regression`` | ratio new/base of a latency statistic vs a baseline, with its confidence interval | CI low <= 1 + limit |

(*) in the metric's unit: percentage points for top-1, mIoU, F1, mAP; pixels for keypoint MAE; the error itself for
reconstruction MSE. Reference - value when higher is better, value - reference for an error metric.

The accuracy reference is the **uncompressed** model: the student after distillation and before the first
compressing pass (sparsity, pruning, quantization), evaluated in PyTorch on the test split. A drop measured
against the compressed model would hide exactly the loss the budget is for. Torch-free.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from edgekd.errors import ConfigError


def parse_fraction(text: str | float, *, where: str = "--max-regression") -> float:
    """The one reader of a relative limit (``--max-regression`` of ``edgekd check``, ``edgekd profile --compare``
    and the pytest plugin): ``"10%"`` -> 0.10; a bare number below 1 is a fraction (``"0.1"`` -> 0.10); a bare
    number of 1 or more is a percentage (``"10"`` -> 0.10), so "10" never means +1000 %.

    >>> parse_fraction("10%"), parse_fraction("0.25"), parse_fraction(5), parse_fraction("10")
    (0.1, 0.25, 0.05, 0.1)
    """
    if isinstance(text, (int, float)):
        value = float(text)
        return value / 100 if value >= 1 else value
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(%?)\s*", text)
    if not m:
        raise ConfigError(f"cannot read {text!r} as a fraction or a percentage", where=where,
                          hint="write e.g. 10% (or 0.1)")
    value = float(m.group(1))
    return value / 100 if m.group(2) or value >= 1 else value


@dataclass(frozen=True)
class Verdict:
    """One budget judged: ``ok`` is False only when the limit is exceeded; ``reason`` says why, in words."""

    name: str
    value: Any
    limit: Any
    ok: bool
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"value": self.value, "limit": self.limit, "ok": self.ok, **({"reason": self.reason} if self.reason else {})}


def p90_for_budget(latency: dict[str, Any]) -> tuple[float | None, str]:
    """The p90 every latency budget is judged on, and how it was obtained: LoadGen's early-stopping p90 (a 99 %
    confidence upper estimate) when enough queries ran, else the sample p90, else an FPGA estimate.

    >>> p90_for_budget({"p90_ms": 2.0, "p90_early_stop": {"ok": True, "estimate_ms": 2.4}})
    (2.4, 'early-stopping p90 (99% confidence)')
    >>> p90_for_budget({"p90_ms": 2.0, "iterations": 20, "p90_early_stop": {"ok": False}})
    (2.0, 'sample p90 (20 queries, too few for early stopping)')
    """
    if latency.get("source") == "estimate":
        return latency.get("p90_ms"), "estimated p90 (analytical, FPGA)"
    early = latency.get("p90_early_stop") or {}
    if early.get("ok") and early.get("estimate_ms") is not None:
        return float(early["estimate_ms"]), "early-stopping p90 (99% confidence)"
    value = latency.get("p90_ms")
    return (None if value is None else float(value)), \
        f"sample p90 ({latency.get('iterations')} queries, too few for early stopping)"


def judge_latency(p90_ms: float, limit: float, *, how: str = "p90 latency") -> Verdict:
    what = how
    ok = p90_ms <= limit
    return Verdict("p90_ms", p90_ms, limit, ok, "" if ok else f"{what} {p90_ms:.4g} ms exceeds the budget of {limit:g} ms")


def judge_size(size_mb: float, limit: float) -> Verdict:
    ok = size_mb <= limit
    return Verdict("size_mb", size_mb, limit, ok, "" if ok else f"the target's files hold {size_mb:.3f} MB, over {limit:g} MB")


def judge_accuracy(accuracy: float, reference: float, limit: float, *, reference_label: str, task: Any = None) -> Verdict:
    """The task metric against its FP32 reference (``task``: an edgekd.tasks.TaskSpec; None = top-1 %)."""
    if task is None or (task.unit == "%" and task.higher_is_better):
        drop = reference - accuracy if task is None else task.drop(reference, accuracy)
        name = "accuracy" if task is None or task.metric == "top1" else task.metric
        ok = drop <= limit
        reason = "" if ok else (f"{name} {accuracy:.2f}% is {drop:.2f} pp below the {reference_label} "
                                f"({reference:.2f}%), over the {limit:g} pp budget")
        return Verdict("accuracy_drop", drop, limit, ok, reason)
    drop = task.drop(reference, accuracy)
    unit = f" {task.unit}" if task.unit and task.unit != "%" else ("%" if task.unit == "%" else "")
    ok = drop <= limit
    worse = "above" if not task.higher_is_better else "below"
    reason = "" if ok else (f"{task.metric} {accuracy:.4g}{unit} is {drop:.4g}{unit} {worse} the {reference_label} "
                            f"({reference:.4g}{unit}), over the {limit:g}{unit} budget")
    return Verdict("accuracy_drop", drop, limit, ok, reason)


def judge_regression(metric: str, base_ms: float, new_ms: float, ratio_low: float, ratio_high: float,
                     max_regression: float) -> Verdict:
    """The one regression rule (``edgekd profile --compare`` and ``edgekd check --baseline``): fail only when even
    the *lower* bound of the confidence interval of ``new / base`` exceeds ``1 + max_regression`` -- a slow-down
    that noise cannot explain. A point estimate over the limit whose interval reaches below it passes, and says so.

    >>> judge_regression("p50", 1.0, 1.3, 1.2, 1.4, 0.1).ok, judge_regression("p50", 1.0, 1.15, 1.05, 1.25, 0.1).ok
    (False, True)
    """
    limit = 1 + max_regression
    ratio = new_ms / base_ms if base_ms > 0 else float("inf")
    change, allowed = (ratio - 1) * 100, f"+{max_regression * 100:g}%"
    interval = f"CI x[{ratio_low:.3f}, {ratio_high:.3f}]"
    if ratio_low > limit:
        return Verdict("regression", ratio, limit, False, f"{metric} {base_ms:.4f} -> {new_ms:.4f} ms ({change:+.1f}%, "
                       f"{interval}): over the allowed {allowed} even at the interval's lower bound")
    if ratio > limit:
        return Verdict("regression", ratio, limit, True, f"{metric} {change:+.1f}% exceeds {allowed} but the interval "
                       f"({interval}) reaches below the limit, so noise can explain it: not failing")
    return Verdict("regression", ratio, limit, True, f"{metric} {change:+.1f}% within {allowed} ({interval})")


def judge_fit(fits: bool, must_fit: bool, detail: str = "") -> Verdict:
    ok = fits or not must_fit
    if fits:
        reason = ""
    elif must_fit:
        reason = f"the design does not fit the part{': ' + detail if detail else ''} (set [budgets] must_fit = false " \
                 "if the estimate is advisory)"
    else:
        reason = f"does not fit the part{': ' + detail if detail else ''}; advisory (must_fit = false)"
    return Verdict("fits", fits, must_fit, ok, reason)


def judge_target(budgets: Any, *, p90_ms: float | None = None, p90_how: str = "p90 latency",
                 size_mb: float | None = None, accuracy: float | None = None, reference_accuracy: float | None = None,
                 reference_label: str = "FP32 reference", fits: bool | None = None, fit_detail: str = "",
                 task: Any = None) -> dict[str, Verdict]:
    """Every budget the target sets and the measurements allow, by name."""
    verdicts: dict[str, Verdict] = {}
    if budgets.p90_ms is not None and p90_ms is not None:
        verdicts["p90_ms"] = judge_latency(p90_ms, budgets.p90_ms, how=p90_how)
    if budgets.max_size_mb is not None and size_mb is not None:
        verdicts["size_mb"] = judge_size(size_mb, budgets.max_size_mb)
    if budgets.max_accuracy_drop is not None and accuracy is not None and reference_accuracy is not None:
        verdicts["accuracy_drop"] = judge_accuracy(accuracy, reference_accuracy, budgets.max_accuracy_drop,
                                                   reference_label=reference_label, task=task)
    if fits is not None:
        verdicts["fits"] = judge_fit(fits, getattr(budgets, "must_fit", True), fit_detail)
    return verdicts


# ------------------------------------------------------------------ edgekd search budgets

#: what ``edgekd search --budget KIND=VALUE`` can limit, and the unit it is written in
SEARCH_BUDGETS = {"p90_ms": "ms (p90 latency measured on the target, in the deployed precision)",
                  "macs": "multiply-accumulates per sample (k/M/G suffixes allowed)",
                  "params": "parameters (k/M/G suffixes allowed)",
                  "size_mb": "MB of weights in the deployed precision",
                  "cycles": "clock cycles per sample, the FPGA backend's estimate (k/M suffixes allowed)",
                  "dsp": "DSP slices, the FPGA backend's estimate"}
_SI = {"": 1.0, "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9}


@dataclass(frozen=True)
class SearchBudget:
    kind: str
    limit: float

    @property
    def measured(self) -> bool:
        """True when only a measurement on the device can decide it (latency); counts are exact."""
        return self.kind == "p90_ms"

    @property
    def estimated(self) -> bool:
        """True for budgets the target's backend estimates at build time (an FPGA's cycles and DSP)."""
        return self.kind in ("cycles", "dsp")

    def __str__(self) -> str:
        return f"{self.kind}={self.limit:g}"


def parse_search_budget(text: str, *, where: str = "--budget") -> SearchBudget:
    """``p90_ms=2.5``, ``macs=12M``, ``params=50k``, ``size_mb=0.2`` -> SearchBudget.

    >>> parse_search_budget("macs=12M"), parse_search_budget("p90_ms=0.5").measured
    (SearchBudget(kind='macs', limit=12000000.0), True)
    """
    kinds = ", ".join(SEARCH_BUDGETS)
    kind, sep, value = str(text).partition("=")
    kind = kind.strip()
    if not sep or kind not in SEARCH_BUDGETS:
        raise ConfigError(f"cannot read budget {text!r}", where=where,
                          hint=f"write KIND=VALUE with KIND one of {kinds}, e.g. --budget p90_ms=0.5")
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([kKMG]?)\s*", value)
    if not m or (m.group(2) and kind in ("p90_ms", "size_mb")):
        raise ConfigError(f"cannot read {value!r} as a {kind} budget", where=where,
                          hint=f"{kind} is in {SEARCH_BUDGETS[kind]}")
    limit = float(m.group(1)) * _SI[m.group(2)]
    if limit <= 0:
        raise ConfigError(f"budget {kind} must be > 0, got {value!r}", where=where)
    return SearchBudget(kind, limit)


def judge_measured_p90(ci_high_ms: float, p90_ms: float, limit: float) -> Verdict:
    """The search's gate: a student is accepted only when the upper end of the 95 % confidence interval of its
    measured p90 is within the budget (a sample p90 just under the line is not enough on a noisy machine)."""
    ok = ci_high_ms <= limit
    reason = "" if ok else (f"measured p90 {p90_ms:.4g} ms (95% CI up to {ci_high_ms:.4g} ms) is not safely within "
                            f"the {limit:g} ms budget")
    return Verdict("p90_ms", ci_high_ms, limit, ok, reason)
