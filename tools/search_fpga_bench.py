"""Accuracy at equal FPGA budget: edgekd search vs the usual ways of getting a student (issue 18, FPGA row).

The budget is the HLS backend's build-time estimate on the target part: the design must fit the part (DSP, BRAM)
and its estimated latency in cycles must be within ``--budgets``. Every method's student is trained with the SAME
final recipe (KD + QAT, int8-kd shortened) through edgekd.compress to the FPGA target, whose build generates the
HLS C++ and proves it bit-exact against ONNX Runtime on the same QDQ file; top-1 is on the test split, and
"within budget" is the BUILT design's estimate (cycles <= limit and fits):
  edgekd        edgekd search (one path for every budget)
  hand-written  the built-in student architecture (builtin:digits-student)
  uniform       every group scaled by one factor, bisected on the estimate (width multiple = the granule)
  tp-l2-macs    torch-pruning global L2 pruning at the MACs of edgekd's winner
  tp-l2-loop    torch-pruning global L2, ratio raised by 0.05 until the estimate fits and meets the budget
  random        a random candidate of the same space that fits and meets the budget
The edgekd - best-baseline difference has a paired bootstrap 95 % CI over test samples.

  python tools/search_fpga_bench.py --target fpga-zcu104 --budgets 1500,1000 --out out/search-fpga
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib
from search_bench import _tp_at_macs, _tp_global, paired_diff_ci

from edgekd.backends import BACKENDS
from edgekd.budgets import SearchBudget
from edgekd.config import load_recipe, load_target
from edgekd.data import DataContext, carve_validation, load_data
from edgekd.models import load_model
from edgekd.passes.prune import count_macs_params
from edgekd.search.cost import Estimator
from edgekd.search.run import SearchOptions, search
from edgekd.search.space import Candidate, SearchSpace

METHODS = ("edgekd", "hand-written", "uniform", "tp-l2-macs", "tp-l2-loop", "random")


class Judge:
    """The estimate of a model's deployed INT8 design on the target: (cycles, fits)."""

    def __init__(self, target: Any, example: torch.Tensor, workdir: Path) -> None:
        self.estimator = Estimator(BACKENDS.get(target.backend), target, example, workdir)

    def __call__(self, model: nn.Module) -> tuple[float, bool]:
        est = self.estimator(model)
        return float(est["total"]["latency_cycles"]), bool(est.get("fits", True))

    def within(self, model: nn.Module, limit: float) -> bool:
        cycles, fits = self(model)
        return fits and cycles <= limit


def _uniform(space: SearchSpace, teacher: nn.Module, judge: Judge, limit: float) -> nn.Module | None:
    g = space.granule

    def cand(scale: float) -> Candidate:
        c = Candidate()
        for group in space.groups:
            c = c.with_width(group.name, max(g, min(group.channels, round(scale * group.channels / g) * g)))
        return c

    lo, hi, best = 0.0, 1.0, None
    for _ in range(7):
        mid = (lo + hi) / 2
        if judge.within(space.materialize(teacher, cand(mid)), limit):
            best, lo = cand(mid), mid
        else:
            hi = mid
    if best is None and judge.within(space.materialize(teacher, cand(0.0)), limit):
        best = cand(0.0)
    return None if best is None else space.materialize(teacher, best)


def _tp_loop(teacher: nn.Module, ex: torch.Tensor, judge: Judge, limit: float) -> nn.Module | None:
    for ratio in np.arange(0.05, 0.96, 0.05):
        model = _tp_global(teacher, ex, float(ratio))
        if judge.within(model, limit):
            return model
    return None


def _random(space: SearchSpace, teacher: nn.Module, judge: Judge, limit: float, seed: int) -> nn.Module | None:
    rng = np.random.default_rng(seed)
    for _ in range(60):
        model = space.materialize(teacher, space.random_candidate(rng))
        if judge.within(model, limit):
            return model
    return None


def _train(model: nn.Module, teacher: nn.Module, splits: Any, target: Any, recipe: Any, out: Path) -> dict[str, Any]:
    from edgekd.pipeline import compress

    report = compress(model, data=splits, recipe=recipe, targets=[target], teacher=copy.deepcopy(teacher), out=out)
    entry = report["targets"][target.name]
    total = ((entry.get("build") or {}).get("details", {}).get("estimates") or {}).get("total") or {}
    return {"top1": entry.get("accuracy"), "cycles": total.get("latency_cycles"), "dsp": total.get("dsp"),
            "fits": entry.get("fits_part"), "status": str(entry.get("status")),
            "correct": _correct(out, entry["source"], splits) if entry.get("source") else []}


def _correct(bundle: Path, source: str, splits: Any) -> list[int]:
    """Per test sample: is the target's INT8 QDQ file (which its HLS C++ reproduces bit-exactly) right?"""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(bundle / source), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    x = splits.x_test.astype(np.float32)
    pred = np.concatenate([sess.run(None, {name: x[i:i + 256]})[0].argmax(-1) for i in range(0, len(x), 256)])
    return (pred == splits.y_test).astype(np.int8).tolist()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--target", default="fpga-zcu104")
    p.add_argument("--budgets", default="1500,1000", help="estimated latency limits in cycles")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--distill-epochs", type=int, default=10)
    p.add_argument("--qat-epochs", type=int, default=2)
    p.add_argument("--out", default="out/search-fpga")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    torch.manual_seed(args.seed)
    target = load_target(args.target)
    teacher = load_model("builtin:digits-teacher").module.eval()
    splits = carve_validation(load_data("builtin:digits", DataContext(seed=args.seed)))
    ex = torch.from_numpy(splits.x_test[:1].astype(np.float32))
    recipe = load_recipe("int8-kd", [f"distill.epochs={args.distill_epochs}",
                                     f"quantize.finetune.epochs={args.qat_epochs}"])
    limits = sorted((float(v) for v in args.budgets.split(",")), reverse=True)
    judge = Judge(target, ex, Path(tempfile.mkdtemp(prefix="edgekd-fpga-bench-")))
    teacher_cycles, teacher_fits = judge(teacher)
    t0 = time.perf_counter()
    report = search(teacher, data=splits, target=target, out=out / "edgekd",
                    options=SearchOptions(budgets=tuple(SearchBudget("cycles", v) for v in limits), recipe=recipe,
                                          seed=args.seed, final=False))
    search_s = time.perf_counter() - t0
    space = SearchSpace.from_teacher(teacher, ex, granule=8)
    rows = []
    for entry, limit in zip(sorted(report["budgets"], key=lambda e: -e["limit"]), limits, strict=True):
        models: dict[str, nn.Module | None] = {}
        win = space.materialize(teacher, Candidate.from_dict(entry["winner"], where="bench")) \
            if entry.get("winner") else None
        models["edgekd"] = win
        models["hand-written"] = load_model("builtin:digits-student").module
        models["uniform"] = _uniform(space, teacher, judge, limit)
        models["tp-l2-macs"] = _tp_at_macs(teacher, ex, count_macs_params(win, ex)[0]) if win is not None else None
        models["tp-l2-loop"] = _tp_loop(teacher, ex, judge, limit)
        models["random"] = _random(space, teacher, judge, limit, args.seed)
        results: dict[str, dict[str, Any]] = {}
        for name in METHODS:
            model = models[name]
            if model is None:
                results[name] = {"top1": None, "note": "no model within the budget found"}
                continue
            res = _train(model, teacher, splits, target, recipe, out / f"{name}-{limit:g}")
            res["macs"] = count_macs_params(model, ex)[0]
            res["within"] = bool(res["fits"] is not False and res["cycles"] is not None and res["cycles"] <= limit)
            results[name] = res
        rows.append({"limit_cycles": limit, "results": results})
    summary = {"target": args.target, "teacher_cycles": teacher_cycles, "teacher_fits": teacher_fits,
               "search_seconds": search_s, "search_cost": report["cost"], "wall_s": time.perf_counter() - started,
               "recipe": f"int8-kd, distill.epochs={args.distill_epochs}, quantize.finetune.epochs={args.qat_epochs}",
               "environment": benchlib.environment(), "command": benchlib.command_line(__file__, argv or sys.argv[1:]),
               "rows": rows}
    (out / "results.json").write_text(json.dumps(summary, indent=1, default=str))
    print(_markdown(summary))
    return 0


def _markdown(summary: dict[str, Any]) -> str:
    lines = [f"teacher on {summary['target']}: {summary['teacher_cycles']:.0f} cycles estimated, "
             f"{'fits' if summary['teacher_fits'] else 'does NOT fit'} the part; search "
             f"{summary['search_seconds'] / 60:.1f} min (peak RSS {summary['search_cost'].get('peak_rss_mb', 0):.0f} MB); "
             f"final recipe {summary['recipe']}", "",
             "| budget (cycles) | method | top-1 % | built design: cycles | DSP | fits | within budget | MACs |",
             "|---|---|---|---|---|---|---|---|"]
    for row in summary["rows"]:
        for name, res in row["results"].items():
            top1 = res.get("top1")
            lines.append(f"| {row['limit_cycles']:g} | {name} | {'—' if top1 is None else f'{top1:.2f}'} | "
                         f"{res.get('cycles', '—')} | {res.get('dsp', '—')} | {res.get('fits', '—')} | "
                         f"{res.get('within', '—')} | {res.get('macs', res.get('note', '—'))} |")
        ours = row["results"].get("edgekd", {})
        base = [(n, r) for n, r in row["results"].items() if n != "edgekd" and r.get("correct") and r.get("within")]
        if ours.get("correct") and base:
            name, best = max(base, key=lambda nr: nr[1]["top1"])
            d, lo, hi = paired_diff_ci(ours["correct"], best["correct"])
            lines.append(f"| | edgekd - {name} | {d:+.2f} pt [{lo:+.2f}, {hi:+.2f}] (paired bootstrap 95 %) | | | | | |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
