"""edgekd search: derive the student from the teacher for a budget measured on the target."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HELP = """\
Derive a student from the teacher for a budget, then train it with the recipe (KD + QAT by default):
no student architecture to write. The space is the teacher's own: a width per channel group (torch-pruning's
dependency graph, in multiples of the runtime's channel granule, measured) and removal of whole residual /
shape-preserving blocks; weights are inherited. One greedy path from the teacher to the tightest budget ranks
candidates by the task metric after BatchNorm re-calibration; for each budget the best --top-k under it get a
short KD and are MEASURED on the target in the deployed precision; a student is accepted only when the upper end
of the 95% CI of its measured p90 is within the budget. The winner is trained with --recipe through the same
pipeline as `edgekd compress` and measured again.

Budgets (one kind per run; repeat --budget for a Pareto sweep):
  p90_ms=0.5   p90 latency on the target (ONNX Runtime / OpenVINO targets), deployed precision
  macs=12M     multiply-accumulates per sample      params=50k   parameters
  size_mb=0.2  weight bytes in the deployed precision (int8: 1 byte per weight)
A budget below the smallest student the space holds is refused with that floor, before any training.

Outputs in --out: bundle/ (the trained student, as edgekd compress writes it), search.toml (replays the winner:
--replay), pareto.json (every evaluated candidate: widths, predicted cost, metric, MACs, params, measured p90),
pareto.png, search.md, search-report.json (search cost: seconds, candidates, peak RSS).

Examples:
  edgekd search --teacher builtin:mnist-teacher --data builtin:mnist5k --target cpu --budget p90_ms=0.3 --out out/s
  edgekd search --teacher builtin:digits-teacher --data builtin:digits --target cpu --budget macs=200k \\
      --budget macs=100k --no-final --out out/sweep
  edgekd search --replay out/s/search.toml --teacher builtin:mnist-teacher --data builtin:mnist5k --out out/again
"""


def register(sub: argparse._SubParsersAction) -> None:
    from edgekd.cli import add_quiet, add_recipe

    p = sub.add_parser("search", help="derive and train a student for a measured budget on a target",
                       description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", required=True, help="trained teacher source (as for edgekd compress)")
    p.add_argument("--teacher-arch", help="architecture source for a teacher given as a plain state_dict .pt file")
    p.add_argument("--data", required=True, help="data source (as for edgekd compress)")
    p.add_argument("--target", default=None, help="target name or .toml path [cpu; the replayed file's target]")
    p.add_argument("--budget", action="append", default=[], metavar="KIND=VALUE", help="see Budgets above")
    add_recipe(p, default=None, help="recipe that trains the winner [int8-kd; the replayed file's recipe]")
    p.add_argument("--set", action="append", dest="overrides", default=[], metavar="PASS.KEY=VALUE",
                   help="override a setting of the final recipe, as for edgekd compress (distill.epochs=5)")
    p.add_argument("--task", metavar="NAME", help="task preset, as for edgekd compress")
    p.add_argument("--top-k", type=int, default=4, help="candidates per budget given a short KD and a measurement [4]")
    p.add_argument("--short-epochs", type=int, default=1, help="epochs of the finalists' short KD [1]")
    p.add_argument("--granule", type=int, help="channel multiple [measured for a latency budget, else 8]")
    p.add_argument("--width-only", action="store_true", help="do not remove blocks (no depth search)")
    p.add_argument("--no-final", action="store_true", help="stop after ranking: no full training, no bundle")
    p.add_argument("--replay", metavar="search.toml", help="train the student a previous search chose (no search)")
    p.add_argument("--out", required=True, help="folder for the bundle and the search's files")
    p.add_argument("--seed", type=int, default=0, help="random seed [0]")
    p.add_argument("--json", action="store_true", help="print the search report as JSON")
    add_quiet(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from edgekd.budgets import parse_search_budget
    from edgekd.config import load_recipe
    from edgekd.errors import ConfigError
    if args.replay:
        from edgekd.search.replay import replay

        report = replay(args.replay, teacher=_teacher(args), data=args.data, target=args.target, out=args.out,
                        recipe=load_recipe(args.recipe, args.overrides) if args.recipe else None,
                        overrides=args.overrides, seed=args.seed, task=args.task)
        print(json.dumps(report, indent=2, default=str) if args.json else
              f"replayed {args.replay}: bundle {report['bundle']} ({report['status']})")
        return 0 if report["status"] == "passed" else 1
    if not args.budget:
        raise ConfigError("give a budget", where="--budget", hint="e.g. --budget p90_ms=0.5 (see edgekd search --help)")
    from edgekd.search.run import SearchOptions, search

    budgets = tuple(parse_search_budget(b) for b in args.budget)
    recipe = load_recipe(args.recipe or "int8-kd", args.overrides)
    options = SearchOptions(budgets=budgets, recipe=recipe, top_k=args.top_k, short_epochs=args.short_epochs,
                            granule=args.granule, depth=not args.width_only, seed=args.seed,
                            final=not args.no_final, task=args.task)
    report = search(_teacher(args), data=args.data, target=args.target or "cpu", options=options, out=args.out)
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        print((Path(args.out) / "search.md").read_text())
    return 0 if all(b["status"] in ("ok", "ranked") for b in report["budgets"]) else 1


def _teacher(args: argparse.Namespace) -> object:
    """A teacher given as a state_dict .pt with --teacher-arch is loaded here; otherwise the source string."""
    if not args.teacher_arch:
        return args.teacher
    from edgekd.models import load_model

    return load_model(args.teacher, arch=args.teacher_arch).module
