"""Accuracy at equal measured budget: edgekd search vs the usual ways of getting a student (issue 18).

For each budget (a fraction of the teacher's INT8 p90 measured on the target), every method produces a student
that is then trained with the SAME final recipe (KD + QAT) through edgekd.compress, and the trained bundle is
measured on the target with the same gate as the search (upper 95 % CI of p90 within budget):
  edgekd        edgekd search (one path for every budget)
  hand-written  the built-in student architecture (builtin:mnist-student)
  uniform       every group scaled by one factor, bisected on measured p90 (width multiple = the granule)
  tp-l2-macs    torch-pruning global L2 pruning at the MACs of edgekd's winner (no rounding, as by default)
  tp-l2-loop    torch-pruning global L2, ratio raised by 0.05 until the measured p90 meets the budget
  random        a random feasible candidate of the same space (predicted and measured under budget)
Top-1 on the test split; the edgekd - best-baseline difference with a paired bootstrap 95 % CI over test samples.

  python tools/search_bench.py --target cpu --budgets 0.35,0.15 --out docs/bench/search
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib

from edgekd.budgets import SearchBudget, judge_measured_p90
from edgekd.config import load_recipe, load_target
from edgekd.data import DataContext, carve_validation, load_data
from edgekd.models import load_model
from edgekd.passes.prune import count_macs_params
from edgekd.search.latency import load_or_build, measure_model
from edgekd.search.run import SearchOptions, search
from edgekd.search.space import Candidate, SearchSpace


def _recipe(args: argparse.Namespace) -> Any:
    return load_recipe("int8-kd", [f"distill.epochs={args.distill_epochs}", f"quantize.finetune.epochs={args.qat_epochs}"])


def _train(model: nn.Module, teacher: nn.Module, splits: Any, target: Any, recipe: Any, out: Path) -> dict[str, Any]:
    from edgekd.pipeline import compress
    from edgekd.runtime import load

    report = compress(model, data=splits, recipe=recipe, targets=[target], teacher=copy.deepcopy(teacher), out=out)
    entry = report["targets"][target.name]
    lat = entry.get("latency") or {}
    rt = load(out, target=target.name)
    pred = np.concatenate([np.asarray(rt.predict(splits.x_test[i:i + 256])).argmax(-1)
                           for i in range(0, len(splits.x_test), 256)])
    return {"top1": entry.get("accuracy"), "p90_ms": lat.get("p90_ms"), "p90_ci_ms": lat.get("p90_ci_ms"),
            "correct": (pred == splits.y_test).astype(np.int8).tolist(), "status": str(entry.get("status"))}


def _uniform(space: SearchSpace, teacher: nn.Module, ex: torch.Tensor, target: Any, limit: float) -> nn.Module:
    g = space.granule

    def cand(scale: float) -> Candidate:
        c = Candidate()
        for group in space.groups:
            c = c.with_width(group.name, max(g, min(group.channels, round(scale * group.channels / g) * g)))
        return c

    lo, hi, best = 0.0, 1.0, cand(0.01)
    for _ in range(6):
        mid = (lo + hi) / 2
        model = space.materialize(teacher, cand(mid))
        m = measure_model(model, ex, target)
        if judge_measured_p90(m.p90_ci_ms[1], m.p90_ms, limit).ok:
            best, lo = cand(mid), mid
        else:
            hi = mid
    return space.materialize(teacher, best)


def _tp_global(teacher: nn.Module, ex: torch.Tensor, ratio: float) -> nn.Module:
    import torch_pruning as tp

    model = copy.deepcopy(teacher).eval()
    last = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))][-1]
    pruner = tp.pruner.MetaPruner(model, ex, importance=tp.importance.GroupMagnitudeImportance(p=2),
                                  global_pruning=True, pruning_ratio=ratio, ignored_layers=[last])
    pruner.step()
    return model.eval()


def _tp_at_macs(teacher: nn.Module, ex: torch.Tensor, macs: int) -> nn.Module:
    lo, hi = 0.0, 0.98
    for _ in range(12):
        mid = (lo + hi) / 2
        if count_macs_params(_tp_global(teacher, ex, mid), ex)[0] > macs:
            lo = mid
        else:
            hi = mid
    return _tp_global(teacher, ex, hi)


def _tp_loop(teacher: nn.Module, ex: torch.Tensor, target: Any, limit: float) -> nn.Module | None:
    for ratio in np.arange(0.05, 0.96, 0.05):
        model = _tp_global(teacher, ex, float(ratio))
        m = measure_model(model, ex, target)
        if judge_measured_p90(m.p90_ci_ms[1], m.p90_ms, limit).ok:
            return model
    return None


def _random(space: SearchSpace, teacher: nn.Module, ex: torch.Tensor, target: Any, limit: float, table: Any,
            seed: int) -> nn.Module | None:
    rng = np.random.default_rng(seed)
    for _ in range(40):
        model = space.materialize(teacher, space.random_candidate(rng))
        if table.predict_ms(model, ex) > limit:
            continue
        m = measure_model(model, ex, target)
        if judge_measured_p90(m.p90_ci_ms[1], m.p90_ms, limit).ok:
            return model
    return None


BASELINES = ("hand-written", "uniform", "tp-l2-macs", "tp-l2-loop", "random")


def _baseline(name: str, space: SearchSpace, teacher: nn.Module, ex: torch.Tensor, target: Any, limit: float,
              table: Any, win_macs: int | None, seed: int) -> nn.Module | None:
    if name == "hand-written":
        return load_model("builtin:mnist-student").module
    if name == "uniform":
        return _uniform(space, teacher, ex, target, limit)
    if name == "tp-l2-macs":
        return _tp_at_macs(teacher, ex, win_macs) if win_macs else None
    if name == "tp-l2-loop":
        return _tp_loop(teacher, ex, target, limit)
    return _random(space, teacher, ex, target, limit, table, seed)


def paired_diff_ci(a: list[int], b: list[int], n_boot: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """Mean of a - b (top-1 points) and its paired bootstrap 95 % CI over test samples."""
    d = (np.asarray(a, np.float64) - np.asarray(b, np.float64)) * 100
    rng = np.random.default_rng(seed)
    boots = d[rng.integers(0, len(d), (n_boot, len(d)))].mean(axis=1)
    return float(d.mean()), float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--target", default="cpu")
    p.add_argument("--budgets", default="0.35,0.15", help="fractions of the teacher's INT8 p90")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--distill-epochs", type=int, default=3)
    p.add_argument("--qat-epochs", type=int, default=1)
    p.add_argument("--out", default="docs/bench/search")
    p.add_argument("--measure-seconds", type=float, default=1.0,
                   help="every latency measurement runs at least this long (as the search's own, SearchOptions)")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    torch.manual_seed(args.seed)
    base = load_target(args.target)
    target = dataclasses.replace(base, profiling=dataclasses.replace(base.profiling, duration_s=args.measure_seconds))
    teacher = load_model("builtin:mnist-teacher").module.eval()
    splits = carve_validation(load_data("builtin:mnist5k", DataContext(seed=args.seed)))
    ex = torch.from_numpy(splits.x_test[:1].astype(np.float32))
    recipe = _recipe(args)
    teacher_p90 = measure_model(teacher, ex, target)
    limits = [round(float(f) * teacher_p90.p90_ms, 4) for f in args.budgets.split(",")]
    t0 = time.perf_counter()
    report = search(teacher, data=splits, target=target, out=out / "edgekd",
                    options=SearchOptions(budgets=tuple(SearchBudget("p90_ms", v) for v in limits), recipe=recipe,
                                          seed=args.seed, measure_seconds=args.measure_seconds))
    search_s = time.perf_counter() - t0
    table = load_or_build(args.target)
    space = SearchSpace.from_teacher(teacher, ex, granule=table.granule)
    rows: list[dict[str, Any]] = []
    for entry, limit in zip(sorted(report["budgets"], key=lambda e: -e["limit"]), sorted(limits, reverse=True),
                            strict=True):
        results: dict[str, dict[str, Any]] = {}
        if entry.get("winner"):
            win = space.materialize(teacher, Candidate.from_dict(entry["winner"], where="bench"))
            results["edgekd"] = _train(win, teacher, splits, target, recipe, out / f"edgekd-{limit}")
            win_macs = count_macs_params(win, ex)[0]
        else:
            win_macs = None
        for name in BASELINES:
            model = _baseline(name, space, teacher, ex, target, limit, table, win_macs, args.seed)
            if model is None:
                results[name] = {"top1": None, "note": "no feasible model found"}
                continue
            results[name] = _train(model, teacher, splits, target, recipe, out / f"{name}-{limit}")
            results[name]["macs"] = count_macs_params(model, ex)[0]
        if "edgekd" in results:
            results["edgekd"]["macs"] = win_macs
        for res in results.values():
            ci = res.get("p90_ci_ms") or {}
            res["under_budget"] = bool(ci) and judge_measured_p90(float(ci["high"]), float(res["p90_ms"]), limit).ok
        rows.append({"limit_ms": limit, "fraction": limit / teacher_p90.p90_ms, "results": results})
    summary = {"target": args.target, "teacher_int8_p90_ms": teacher_p90.p90_ms, "search_seconds": search_s,
               "search_cost": report["cost"], "wall_s": time.perf_counter() - started,
               "environment": benchlib.environment(), "command": benchlib.command_line(__file__, argv or sys.argv[1:]),
               "rows": rows}
    (out / "results.json").write_text(json.dumps(summary, indent=1, default=str))
    print(_markdown(summary))
    return 0


def _markdown(summary: dict[str, Any]) -> str:
    lines = [f"teacher INT8 p90 on {summary['target']}: {summary['teacher_int8_p90_ms']:.4g} ms; search "
             f"{summary['search_seconds'] / 60:.1f} min (peak RSS {summary['search_cost'].get('peak_rss_mb', 0):.0f} MB)",
             "", "| budget | method | top-1 % | measured p90 ms | under budget | MACs |", "|---|---|---|---|---|---|"]
    for row in summary["rows"]:
        for name, res in row["results"].items():
            top1 = res.get("top1")
            lines.append(f"| {row['fraction']:.2f} x ({row['limit_ms']:.4g} ms) | {name} | "
                         f"{'—' if top1 is None else f'{top1:.2f}'} | "
                         f"{_fmt(res.get('p90_ms'))} | "
                         f"{res.get('under_budget', '—')} | {res.get('macs', '—')} |")
        ours = row["results"].get("edgekd", {})
        base = [(n, r) for n, r in row["results"].items() if n != "edgekd" and r.get("correct") and r["under_budget"]]
        if ours.get("correct") and base:
            name, best = max(base, key=lambda nr: nr[1]["top1"])
            d, lo, hi = paired_diff_ci(ours["correct"], best["correct"])
            lines.append(f"| | edgekd - {name} | {d:+.2f} pt [{lo:+.2f}, {hi:+.2f}] (paired bootstrap 95 %) | | | |")
    return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.4g}"


if __name__ == "__main__":
    raise SystemExit(main())
