"""edgekd build: an app's build step -- edgekd.toml in, a deterministic bundle out, cached."""

from __future__ import annotations

import argparse
import dataclasses
import json

HELP = """\
Read an edgekd.toml build file and produce its bundle (the same as `edgekd compress` with the
file's settings). Every input is hashed -- model weights or source, data files, recipe and
target files, edgekd's code and the runtime versions -- and a bundle built from the same
inputs is taken from the build cache instead ("cached"). model.onnx and manifest.json are
byte-identical between builds of the same inputs; timings live in report.json only.

edgekd.toml (paths relative to the file):
  model = "builtin:digits-student"     teacher = "builtin:digits-teacher"   (optional)
  data = "builtin:digits"              recipe = "int8-kd"
  targets = ["cpu", "openvino-cpu"]    out = "build/digits"
  set = ["distill.epochs=5"]           (recipe overrides, as `edgekd compress --set`; also --set here)
  seed = 0    golden_samples = 32    eval_samples = 1000    measure = true    skip_unavailable = false
  [cache]
  enabled = true    dir = ".edgekd-cache"   (default $EDGEKD_CACHE_DIR/builds or ~/.cache/edgekd/builds)

Examples:
  edgekd build                       # ./edgekd.toml
  edgekd build examples/digits_app/edgekd.toml --no-cache
"""


def register(sub: argparse._SubParsersAction) -> None:
    from edgekd.cli import add_quiet

    p = sub.add_parser("build", help="build an app's bundle from edgekd.toml (deterministic, cached)",
                       description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("buildfile", nargs="?", default="edgekd.toml", help="build file or its folder [edgekd.toml]")
    p.add_argument("--no-cache", action="store_true", help="always run the pipeline without reading the cache; the fresh bundle "
                                                            "replaces the cache entry")
    p.add_argument("--key", action="store_true", help="print the cache key and what it was computed from, then exit")
    p.add_argument("--target", action="append", dest="targets", metavar="TARGET",
                   help="build these targets instead of the file's `targets` (repeatable), e.g. --target fpga-zcu104")
    p.add_argument("--set", action="append", dest="overrides", default=[], metavar="PASS.KEY=VALUE",
                   help="override a recipe setting (repeatable; after the file's `set`), as `edgekd compress --set`")
    p.add_argument("--json", action="store_true", help="print the outcome as JSON")
    add_quiet(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from edgekd.buildfile import build, cache_key, load_buildfile

    bf = load_buildfile(args.buildfile)
    if args.targets:  # part of the cache key like any other input
        bf = dataclasses.replace(bf, targets=tuple(args.targets))
    if args.overrides:  # part of the cache key too
        bf = dataclasses.replace(bf, set=(*bf.set, *args.overrides))
    if args.key:
        key, material = cache_key(bf)
        print(json.dumps({"key": key, "material": material}, indent=2, sort_keys=True))
        return 0
    outcome = build(bf, use_cache=False if args.no_cache else None)
    if args.json:
        print(json.dumps({"out": str(outcome.out), "key": outcome.key, "cached": outcome.cached,
                          "up_to_date": outcome.up_to_date, "seconds": round(outcome.seconds, 3)}, indent=2))
    else:
        if outcome.report is not None:
            from edgekd.compress_report import print_summary

            print_summary(outcome.report, title=f"edgekd bundle: {outcome.out}")
        print(outcome.message)
    from edgekd.status import is_passing

    failed = [n for n, t in (outcome.report or {}).get("targets", {}).items()
              if not is_passing(t.get("status"))]
    if failed:
        print(f"budgets failed at build time for: {', '.join(failed)} (see report.md)")
    return 1 if failed else 0
