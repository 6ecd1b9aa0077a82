"""edgekd demo: the whole flow on the built-in digits models, in a few minutes on 2 cores."""

from __future__ import annotations

import argparse

HELP = """\
Runs edgekd end to end on data that ships with scikit-learn (8x8 digits):
  1. trains the digits teacher CNN (cached after the first run),
  2. compresses the 3.7k-parameter student with the best recipe available here
     (int8-kd, else kd, else fp32),
  3. builds every target whose backend is available (and the TensorRT build script),
  4. checks parity against the ONNX reference, measures latency, and prints one table.
The bundle is written to --out (default out/demo).
"""

PREFERRED_RECIPES = ("int8-kd", "kd", "fp32")


def register(sub: argparse._SubParsersAction) -> None:
    from edgekd.cli import add_quiet, add_recipe

    p = sub.add_parser("demo", help="run the built-in end-to-end demo", description=HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="out/demo", help="bundle folder [out/demo]")
    add_recipe(p, default=None, help="override the recipe choice")
    p.add_argument("--target", action="append", dest="targets", help="override the target choice (repeatable)")
    add_quiet(p)
    p.set_defaults(handler=run)


def default_targets() -> list[str]:
    """One target per available backend family: skip throughput duplicates to keep the demo short."""
    from edgekd.backends import BACKENDS
    from edgekd.config import available, load_target

    chosen = []
    for name in available("targets"):
        if "throughput" in name:
            continue
        try:
            target = load_target(name)
        except Exception:
            continue
        backend = BACKENDS.get(target.backend)
        if backend.availability().available or getattr(backend, "builds_without_sdk", False):
            chosen.append(name)
    return chosen


def run(args: argparse.Namespace) -> int:
    from edgekd.compress_report import print_summary
    from edgekd.config import available
    from edgekd.pipeline import compress
    from edgekd.progress import log
    from edgekd.status import is_passing

    recipes = available("recipes")
    recipe = args.recipe or next(r for r in PREFERRED_RECIPES if r in recipes)
    targets = args.targets or default_targets()
    log(f"edgekd demo: recipe {recipe}, targets {', '.join(targets)}")
    report = compress("builtin:digits-student", teacher="builtin:digits-teacher", data="builtin:digits",
                      recipe=recipe, targets=targets, out=args.out)
    print_summary(report, title=f"edgekd demo: digits student, recipe {recipe} -> {args.out}")
    params = report.get("params", {})
    if params.get("teacher"):
        print(f"teacher {params['teacher']:,} parameters, student {params['student_after']:,} "
              f"({params['teacher'] / max(params['student_after'], 1):.0f}x smaller); report: {args.out}/report.md")
    return 0 if all(is_passing(t.get("status")) for t in report["targets"].values()) else 1
