"""``edgekd search``: derive a student from the teacher for a budget, measured on the target.

1. refuse what cannot work, before anything is trained (target, recipe, budgets, the space's floor);
2. build the space (DepGraph channel groups in multiples of the granule, removable blocks);
3. walk one NetAdapt-style path from the teacher to the tightest budget, ranking inherited-weight candidates by
   the metric after BN re-calibration;
4. per budget: short KD for the ``top_k`` best candidates the cost model puts under it, each *measured* on the target
   (p90 in the deployed precision); accept the best whose measured p90's upper 95 % CI is within the budget;
5. full KD + QAT of the winner through ``edgekd.compress`` (the recipe the user names), the bundle measured again
   by the same gate; a miss falls back to the next candidate.
pareto.json / pareto.png / search.toml / search-report.json record every evaluated candidate.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edgekd.backends import BACKENDS
from edgekd.backends.base import latency_of
from edgekd.budgets import SearchBudget, judge_measured_p90
from edgekd.config import Recipe, Target, load_recipe, load_target
from edgekd.data import DataContext, DataSplits, carve_validation, load_data, validate
from edgekd.errors import ConfigError, EdgekdError
from edgekd.export import model_input
from edgekd.inputs import is_multi
from edgekd.models import LoadedModel, load_model, source_label
from edgekd.profiler.measure import rss_mb
from edgekd.progress import log
from edgekd.search.cost import Estimator, cost_function, does_not_fit
from edgekd.search.netadapt import Evaluator, PathSettings, Point, search_path
from edgekd.search.proxy import Proxy
from edgekd.search.space import Candidate, SearchSpace
from edgekd.status import PASSING


@dataclass(frozen=True)
class SearchOptions:
    """``edgekd search`` settings. ``top_k``: candidates per budget given a short KD and a measurement;
    ``short_epochs``: that KD's length; ``granule``: channel multiple (None: the latency table's measured granule for
    a latency budget, 8 otherwise); ``final``: run the full recipe on the winner (False: stop at the ranking)."""

    budgets: tuple[SearchBudget, ...]
    recipe: str | Recipe = "int8-kd"
    top_k: int = 4
    short_epochs: int = 1
    granule: int | None = None
    depth: bool = True
    step_fraction: float = 0.12
    seed: int = 0
    final: bool = True
    task: str | None = None
    #: validation samples the proxy scores each candidate on
    proxy_samples: int = 512
    #: whole students of the space measured to calibrate the latency table (latency budgets)
    calibration_models: int = 8
    #: every latency measurement of a search (candidates, floor, forms, the trained bundle) runs at least this long:
    #: the target's 200 queries of a 0.1 ms model take 20 ms, and one stall of a shared host then decides the p90
    measure_seconds: float = 1.0
    #: a latency finalist must measure within budget x (1 - gate_margin) before it is trained (its trained bundle
    #: is measured again and judged on the budget itself)
    gate_margin: float = 0.05

    def __post_init__(self) -> None:
        if not self.budgets:
            raise ConfigError("give at least one budget", where="--budget", hint="e.g. --budget p90_ms=0.5")
        kinds = {b.kind for b in self.budgets}
        if len(kinds) > 1:
            raise ConfigError(f"budgets of one kind per search, got {', '.join(sorted(kinds))}", where="--budget",
                              hint="run one search per kind (several values of one kind make a Pareto sweep)")
        if self.top_k < 1 or self.short_epochs < 0:
            raise ConfigError("top_k must be >= 1 and short_epochs >= 0", where="search options")
        if not 0 <= self.gate_margin < 0.5:
            raise ConfigError(f"gate_margin must be in [0, 0.5), got {self.gate_margin}", where="search options")


@dataclass
class _Setup:
    recipe: Recipe
    target: Target
    teacher: LoadedModel
    splits: DataSplits
    precision: str
    example: torch.Tensor
    notes: list[str] = field(default_factory=list)
    #: the latency table (latency budgets only)
    table: Any = None


def _deployed_precision(recipe: Recipe) -> str:
    return "int8" if any(p.name == "quantize" for p in recipe.passes) else "fp32"


def _prepare(teacher: Any, data: Any, target: str | Target, options: SearchOptions) -> _Setup:
    """Load and cross-check everything a search needs; every refusal happens here, before any training."""
    recipe = options.recipe if isinstance(options.recipe, Recipe) else load_recipe(options.recipe)
    tgt = target if isinstance(target, Target) else load_target(target)
    backend = BACKENDS.get(tgt.backend, where=tgt.source or tgt.name)
    status = backend.availability()
    if not status.available:
        raise EdgekdError(f"target {tgt.name}: backend {tgt.backend!r} is {status}", where="--target",
                          hint="a search measures every candidate on the target: run it where the runtime is")
    if getattr(backend, "requires_quantized", False) and _deployed_precision(recipe) == "fp32":
        raise EdgekdError(f"target {tgt.name} needs a quantized model but recipe {recipe.name!r} has no quantize pass",
                          where="--recipe", hint="use int8-kd (the default) or another INT8 recipe")
    measured = any(b.measured for b in options.budgets)
    if measured and tgt.profiling.duration_s < options.measure_seconds:  # every measurement of the search
        tgt = dataclasses.replace(tgt, profiling=dataclasses.replace(tgt.profiling, duration_s=options.measure_seconds))
    if measured and latency_of(backend) != "measured":
        raise EdgekdError(f"a p90_ms budget is measured on the target, but {tgt.name} ({tgt.backend}) reports an "
                          "estimated latency", where="--budget",
                          hint="for FPGA targets search with macs= or params= today (cycles/DSP/LUT budgets are not "
                               "implemented yet); latency budgets need an ONNX Runtime or OpenVINO target")
    estimated = [b for b in options.budgets if b.estimated]
    if estimated and not callable(getattr(backend, "estimate", None)):
        raise EdgekdError(f"a {estimated[0].kind} budget is the FPGA backend's build-time estimate, but {tgt.name} "
                          f"({tgt.backend}) has no estimate to search with", where="--budget",
                          hint="use an HLS target (fpga-zcu104, fpga-artix7) for cycles=/dsp=, or p90_ms=/macs= here")
    torch.manual_seed(options.seed)
    loaded = load_model(teacher)
    loaded.module.eval()
    if isinstance(data, DataSplits):
        splits = carve_validation(validate(data, where="data"))
    else:
        splits = load_data(data, DataContext(teacher=loaded.module, input_shape=loaded.input_shape, seed=options.seed))
    if is_multi(splits.x_train):  # the space, the latency table and the proxy trace one example tensor
        raise EdgekdError(f"edgekd search takes single-input models; the data has {len(splits.x_train.names)} inputs "
                          f"({', '.join(splits.x_train.names)})", where=str(getattr(data, 'name', data)),
                          hint="compress a multi-input student you chose (edgekd compress); nothing was searched")
    if splits.x_val is None:
        raise EdgekdError(f"the data's training split is too small to hold out a validation split "
                          f"({splits.validation.get('reason', '')})", where=str(getattr(data, 'name', data)),
                          hint="a search ranks candidates on held-out data: give more training samples")
    from edgekd.pipeline import resolve_task

    splits.task = resolve_task(options.task, recipe, loaded, loaded, splits)
    example = torch.from_numpy(model_input(splits.x_test[:1]))
    return _Setup(recipe, tgt, loaded, splits, _deployed_precision(recipe), example)


class _Measurer:
    """Measures candidates on the target (whole model, deployed precision), once each."""

    def __init__(self, setup: _Setup, workdir: Path) -> None:
        self.setup, self.workdir = setup, workdir
        self._done: dict[Candidate, dict[str, Any]] = {}

    def __call__(self, cand: Candidate, model: nn.Module) -> dict[str, Any]:
        if cand not in self._done:
            from edgekd.search.latency import measure_model

            m = measure_model(model, self.setup.example, self.setup.target, precision=self.setup.precision,
                              workdir=self.workdir / f"m{len(self._done)}")
            self._done[cand] = {"p50_ms": m.p50_ms, "p90_ms": m.p90_ms, "p90_ci_ms": list(m.p90_ci_ms),
                                "iterations": m.iterations}
        return self._done[cand]


def _weight_bytes(recipe: Recipe) -> float:
    for spec in recipe.passes:
        if spec.name == "quantize":
            return float(getattr(spec.config, "weight_bits", 8)) / 8
    return 4.0


def _latency_table(setup: _Setup) -> Any:
    from edgekd.search.latency import load_or_build

    table = load_or_build(setup.target, precision=setup.precision)
    setup.notes.append(f"channel granule {table.granule} ({'given' if 'given' in table.granule_detail else 'measured'}"
                       f" on {setup.target.name}, {setup.precision})")
    return table


def _calibrate(table: Any, space: SearchSpace, setup: _Setup, n: int, seed: int) -> dict[str, Any]:
    """Fit the table's a * sum + b on whole students of this teacher's space: the teacher, the floor and random
    candidates between them, each measured on the target."""
    rng = np.random.default_rng(seed)
    cands = [Candidate(), space.smallest(), *(space.random_candidate(rng) for _ in range(max(0, n - 2)))]
    models = [space.materialize(setup.teacher.module, c) for c in cands]
    return table.calibrate(models, setup.example)


def _check_floor(setup: _Setup, space: SearchSpace, budgets: tuple[SearchBudget, ...], cost: Any,
                 measurer: _Measurer | None) -> dict[str, Any]:
    """The smallest student the space holds; a budget below it is infeasible, said before any training."""
    floor_model = space.materialize(setup.teacher.module, space.smallest())
    floor = {"predicted": cost(floor_model)}
    value = floor["predicted"]
    if measurer is not None:
        floor["measured"] = measurer(space.smallest(), floor_model)
        value = floor["measured"]["p90_ci_ms"][0]  # infeasible only when even its optimistic p90 is over
    tight = min(b.limit for b in budgets)
    if does_not_fit(value):
        raise EdgekdError(f"even the smallest student of this teacher's space (every group at {space.granule} "
                          f"channels, every removable block removed) does not fit {setup.target.name}'s part",
                          where="--target", hint="use a larger part or a smaller teacher; nothing was trained")
    if value > tight:
        kind = budgets[0].kind
        raise EdgekdError(f"budget {kind}={tight:g} is infeasible on {setup.target.name}: the smallest student this "
                          f"teacher's space holds (every group at {space.granule} channels, every removable block "
                          f"removed) costs {value:.4g}" + (" ms measured (lower 95% CI of p90)" if measurer else ""),
                          where="--budget", hint=f"the floor is {value:.4g}: raise the budget above it, or use a "
                          "smaller teacher; nothing was trained")
    return floor


def _short_kd(model: nn.Module, setup: _Setup, epochs: int, seed: int) -> nn.Module:
    if epochs <= 0:
        return model
    from edgekd.train import FinetuneConfig, fine_tune

    config = FinetuneConfig(epochs=epochs, lr=3e-3, schedule="cosine", loss="hinton", seed=seed)
    fine_tune(model, setup.teacher.module, setup.splits, config, description="short KD of a candidate")
    return model


def _val_metric(model: nn.Module, setup: _Setup) -> float | None:
    from edgekd.train.trainer import evaluate

    return evaluate(model, setup.splits.x_val, setup.splits.y_val, task=setup.splits.task)


def _finalists(points: list[Point], budget: SearchBudget, k: int) -> list[Point]:
    """Candidates predicted under the budget, best proxy first: the first ``k`` for a computed budget; for a
    measured one, the order the measured gate walks until ``k`` pass (``_pick``)."""
    under = [p for p in points if p.cost <= budget.limit]
    ranked = sorted(under, key=lambda p: (-p.proxy, p.cost))
    return ranked if budget.measured else ranked[:k]


def _pick(setup: _Setup, space: SearchSpace, points: list[Point], budget: SearchBudget, options: SearchOptions,
          measurer: _Measurer | None) -> list[Point]:
    """Short KD and (for latency) a measurement for each finalist; returns them best first, gated ones only.
    A latency finalist must measure within the budget less ``gate_margin`` (the trained bundle is measured again,
    and a finalist just under the line fails there one time in two); when the table's best-proxy candidates
    measure over, the walk goes on down the proxy order (the next Pareto points), up to ``3 x top_k``
    measurements."""
    ranked = []
    measured = 0
    limit = budget.limit * (1 - options.gate_margin) if measurer is not None else budget.limit
    for point in _finalists(points, budget, options.top_k):
        if len(ranked) >= options.top_k or measured >= 3 * options.top_k:
            break
        model = space.materialize(setup.teacher.module, point.candidate)
        if measurer is not None:
            measured += 1
            point.extra["measured"] = measurer(point.candidate, model)
            verdict = judge_measured_p90(point.extra["measured"]["p90_ci_ms"][1], point.extra["measured"]["p90_ms"],
                                         limit)
            point.extra.setdefault("gate", {})[str(budget)] = verdict.to_dict()
            if not verdict.ok:
                continue
        _short_kd(model, setup, options.short_epochs, options.seed)
        point.extra.setdefault("short_kd", {})[str(budget)] = _val_metric(model, setup)
        ranked.append(point)
    better = setup.splits.task.higher_is_better
    return sorted(ranked, key=lambda p: -(p.extra["short_kd"][str(budget)] or 0) * (1 if better else -1))


def _final(setup: _Setup, space: SearchSpace, point: Point, budget: SearchBudget, out: Path,
           options: SearchOptions) -> dict[str, Any]:
    """Full KD + QAT of the winner through edgekd.compress; the bundle's own measurement is gated again."""
    from edgekd.pipeline import compress

    model = space.materialize(setup.teacher.module, point.candidate)
    target, recipe, result = setup.target, setup.recipe, {}
    if budget.kind == "p90_ms":  # the bundle carries the budget: `edgekd check` judges the same limit later
        target = dataclasses.replace(target, budgets=dataclasses.replace(target.budgets, p90_ms=budget.limit))
        if setup.precision == "int8" and setup.table is not None:
            recipe, result["float_layers"] = _measured_precision(setup, model)
    report = compress(model, data=setup.splits, recipe=recipe, targets=[target],
                      teacher=copy.deepcopy(setup.teacher.module), out=out)
    entry = report["targets"][target.name]
    result.update({"bundle": str(out), "status": str(entry.get("status")), "metric": entry.get("accuracy"),
                   "reasons": list(entry.get("reasons") or []),
                   "fp32_reference": report.get("accuracy", {}).get("fp32_reference")})
    latency = entry.get("latency") or {}
    if budget.estimated:
        total = ((entry.get("build") or {}).get("details", {}).get("estimates") or {}).get("total") or {}
        key = {"cycles": "latency_cycles", "dsp": "dsp"}[budget.kind]
        value = total.get(key)
        ok = value is not None and value <= budget.limit and entry.get("fits_part") is not False
        result["gate"] = {"name": budget.kind, "value": value, "limit": budget.limit, "ok": ok,
                          **({} if ok else {"reason": f"the built design's estimated {budget.kind} {value} is over "
                                            f"{budget.limit:g} or it does not fit the part"})}
    if budget.kind == "p90_ms" and latency:
        ci = latency.get("p90_ci_ms") or {}
        verdict = judge_measured_p90(float(ci.get("high", latency["p90_ms"])), float(latency["p90_ms"]), budget.limit)
        result["gate"] = verdict.to_dict()
        result["measured"] = {"p50_ms": latency.get("p50_ms"), "p90_ms": latency.get("p90_ms"), "p90_ci_ms": ci}
        if setup.precision == "int8":
            _against_fp32_twin(setup, model, result)
    return result


def _measured_precision(setup: _Setup, model: nn.Module) -> tuple[Recipe, list[dict[str, Any]]]:
    """Keep FP32 the layers the target runs faster in float (the INT8 and FP32 tables, same granule)."""
    from edgekd.search.latency import load_or_build
    from edgekd.search.precision import float_faster_layers, with_float_layers

    fp32_table = load_or_build(setup.target, precision="fp32", granule=setup.table.granule)
    layers = float_faster_layers(model, setup.example, setup.table, fp32_table)
    if not layers:
        return setup.recipe, []
    names = [lp.layer for lp in layers]
    if not _mixed_is_faster(setup, model, names):
        return setup.recipe, [{**lp.to_dict(), "kept": "int8"} for lp in layers]
    log(f"search: {len(layers)} layer(s) run faster in FP32 than INT8 on {setup.target.name}, kept FP32: "
        f"{', '.join(names)}")
    return with_float_layers(setup.recipe, names), [{**lp.to_dict(), "kept": "fp32"} for lp in layers]


def _mixed_is_faster(setup: _Setup, model: nn.Module, layers: list[str]) -> bool:
    """The tables time each layer standalone; whether the whole model is faster with ``layers`` in float (the
    Q/DQ at each float island's edges costs too) is measured: both deployed forms side by side."""
    from edgekd.search.latency import measure_forms

    forms = measure_forms(model, setup.example, setup.target, {"int8": (), "mixed": tuple(layers)})
    faster = forms["mixed"].p90_ms < forms["int8"].p90_ms
    log(f"search: whole model p90 with {', '.join(layers)} in FP32 {forms['mixed'].p90_ms:.4g} ms vs all INT8 "
        f"{forms['int8'].p90_ms:.4g} ms: " + ("keeping them FP32" if faster else "keeping every layer INT8"))
    return faster


def _against_fp32_twin(setup: _Setup, model: nn.Module, result: dict[str, Any]) -> None:
    """The shipped INT8 artifact must not be slower than the same student in FP32 on the same target."""
    from edgekd.search.latency import measure_model
    from edgekd.search.precision import slower_than_fp32

    twin = measure_model(model, setup.example, setup.target, precision="fp32")
    ci = result["measured"]["p90_ci_ms"]
    int8 = {"p90_ci_ms": [ci.get("low", result["measured"]["p90_ms"]), ci.get("high", result["measured"]["p90_ms"])]}
    result["fp32_twin"] = twin.to_dict()
    if slower_than_fp32(int8, twin.to_dict()):
        result["reasons"].append(f"the INT8 artifact (p90 {result['measured']['p90_ms']:.4g} ms) is slower than its FP32 "
                                 f"twin ({twin.p90_ms:.4g} ms) on {setup.target.name}: ship it in FP32 "
                                 "(--recipe kd) or search with a tighter budget")
        result["status"] = "failed"


def search(teacher: Any, *, data: Any, target: str | Target, options: SearchOptions,
           out: str | Path = "out-search") -> dict[str, Any]:
    """Run a search and write its outputs under ``out``; returns the report (also ``out/search-report.json``)."""
    started = time.perf_counter()
    out = Path(out)
    setup = _prepare(teacher, data, target, options)
    kind = options.budgets[0].kind
    table = setup.table = _latency_table(setup) if kind == "p90_ms" else None
    granule = options.granule or (table.granule if table is not None else 8)
    space = SearchSpace.from_teacher(setup.teacher.module, setup.example, granule=granule, depth=options.depth)
    out.mkdir(parents=True, exist_ok=True)
    estimator = Estimator(BACKENDS.get(setup.target.backend), setup.target, setup.example, out / ".estimate") \
        if options.budgets[0].estimated else None
    cost = cost_function(options.budgets[0], setup.example, weight_bytes=_weight_bytes(setup.recipe),
                         latency=table.predict_ms if table is not None else None, estimate=estimator)
    measurer = _Measurer(setup, out / ".measure") if kind == "p90_ms" else None
    floor = _check_floor(setup, space, options.budgets, cost, measurer)  # the cheapest refusal first
    if table is not None:
        cal = _calibrate(table, space, setup, options.calibration_models, options.seed)
        log(f"latency table calibrated on {cal['models']} students: median error {cal['median_abs_pct_error']:.1f} %")
    proxy = Proxy(setup.teacher.module, setup.splits.x_train, setup.splits.x_val, setup.splits.y_val,
                  setup.splits.task, samples=options.proxy_samples, seed=options.seed)
    evaluator = Evaluator(space, setup.teacher.module, cost, proxy)
    log(f"search: {len(space.groups)} channel groups, {len(space.blocks)} removable blocks, granule {granule}; "
        f"ranking by {proxy.label}")
    points = search_path(evaluator, min(b.limit for b in options.budgets),
                         PathSettings(step_fraction=options.step_fraction, depth=options.depth))
    teacher_point = points[0]
    if measurer is not None:
        teacher_point.extra["measured"] = measurer(teacher_point.candidate, setup.teacher.module)
    results = []
    for budget in sorted(options.budgets, key=lambda b: -b.limit):
        results.append(_solve(setup, space, points, budget, options, measurer, out))
    from edgekd.search.outputs import write_outputs

    report = {"teacher": source_label(teacher), "target": setup.target.name, "precision": setup.precision,
              "recipe": setup.recipe.name, "task": setup.splits.task.to_dict(), "space": space.describe(),
              "proxy": proxy.label, "floor": floor, "budgets": results, "notes": setup.notes,
              "cost": {"seconds": round(time.perf_counter() - started, 1), "candidates_costed": evaluator.costed,
                       "candidates_ranked": len(points), "measured": len(measurer._done) if measurer else 0,
                       **rss_mb()},
              "points": [p.to_dict() | evaluator.counts[p.candidate] for p in points]}
    if table is not None:
        report["latency_table"] = {**{k: v for k, v in table.to_dict().items() if k != "entries"},
                                   "entries": len(table.entries), "path": str(table.path)}
    write_outputs(report, out, kind=kind)
    return report


def _solve(setup: _Setup, space: SearchSpace, points: list[Point], budget: SearchBudget, options: SearchOptions,
           measurer: _Measurer | None, out: Path) -> dict[str, Any]:
    ranked = _pick(setup, space, points, budget, options, measurer)
    entry: dict[str, Any] = {"budget": str(budget), "kind": budget.kind, "limit": budget.limit,
                             "finalists": [p.candidate.to_dict() for p in ranked]}
    if not ranked:
        entry["status"] = "infeasible"
        entry["reason"] = ("no candidate the path reached was under the budget" + (
            f" and passed the measured gate (upper 95% CI of p90 within the budget less {options.gate_margin:.0%}; "
            f"{sum(str(budget) in p.extra.get('gate', {}) for p in points)} candidate(s) measured)"
            if budget.measured else
            f" ({budget.kind} as the cost model computes it)"))
        return entry
    if not options.final:
        entry["status"] = "ranked"
        entry["winner"] = ranked[0].candidate.to_dict()
        return entry
    for i, point in enumerate(ranked[:2]):
        folder = out / f"bundle-{budget.kind}-{budget.limit:g}" if len(options.budgets) > 1 else out / "bundle"
        if i:
            folder = folder.with_name(folder.name + f"-alt{i}")
        final = _final(setup, space, point, budget, folder, options)
        gate = final.get("gate", {"ok": True})
        if gate["ok"] and final["status"] in PASSING:
            entry.setdefault("tries", []).append({"candidate": point.candidate.to_dict(), **final})
            entry.update(status="ok", winner=point.candidate.to_dict(), final=final)
            point.extra["winner"] = str(budget)
            return entry
        # the reason goes into the try's record too (it is what the failed entry's reason is made of)
        final["why"] = gate.get("reason") or "; ".join(final["reasons"]) or f"target status {final['status']}"
        entry.setdefault("tries", []).append({"candidate": point.candidate.to_dict(), **final})
        log(f"search: the trained candidate failed on the target ({final['why']}); trying the next")
    entry["status"] = "failed"
    entry["reason"] = "every trained finalist failed on the target: " + "; ".join(t["why"] for t in entry["tries"])
    return entry

