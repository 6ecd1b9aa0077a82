"""Benchmark of the HIL / app-build side: what a CI job and an app's build step pay.

Measures, side by side and as medians over repeats (absolute times on a shared machine drift):
  - `edgekd build` of a small app: a miss (empty cache, the pipeline runs) vs a hit (same inputs)
  - importing edgekd.runtime (torch-free) vs edgekd.pipeline (the build side, imports torch)
  - `edgekd check` end to end (process start, checks, JUnit) and each check's own time

Writes a Markdown section to docs/bench/hil.md with the command that produced it.

    OMP_NUM_THREADS=1 .venv/bin/python tools/bench_hil.py [--repeats 3] [--out docs/bench/hil.md]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EDGEKD = [sys.executable, "-m", "edgekd"]
APP = """\
model = "builtin:digits-student"
data = "builtin:digits"
profile = "fp32"
targets = ["cpu"]
out = "build/digits"
measure = false
[cache]
dir = "cache"
"""


def timed(cmd: list[str], cwd: Path | None = None) -> tuple[float, str]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env={**os.environ, "EDGEKD_QUIET": "1"})
    seconds = time.perf_counter() - t0
    if proc.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return seconds, proc.stdout


def median_range(values: list[float]) -> str:
    return f"{statistics.median(values):.3f} [{min(values):.3f}–{max(values):.3f}]"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "bench" / "hil.md")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="edgekd-bench-hil-"))
    (work / "edgekd.toml").write_text(APP)
    miss, hit, ratios = [], [], []
    try:
        for _ in range(args.repeats):
            shutil.rmtree(work / "cache", ignore_errors=True)
            shutil.rmtree(work / "build", ignore_errors=True)
            m, _ = timed([*EDGEKD, "build", str(work), "-q"])
            h, out_h = timed([*EDGEKD, "build", str(work), "-q"])
            if "cached" not in out_h:  # edgekd's code changed in between (part of the key): count this pair out
                print("skipping a pair: the second build was not a cache hit (code changed meanwhile?)", file=sys.stderr)
                continue
            miss.append(m)
            hit.append(h)
            ratios.append(m / h)
        bundle = work / "build" / "digits"

        imports: dict[str, list[float]] = {"edgekd.runtime": [], "edgekd.pipeline": []}
        for _ in range(args.repeats):
            for mod in imports:
                imports[mod].append(timed([sys.executable, "-c", f"import {mod}"])[0])
        import_ratio = [p / r for r, p in zip(imports["edgekd.runtime"], imports["edgekd.pipeline"])]

        check_wall: list[float] = []
        per_check: dict[str, list[float]] = {}
        for _ in range(args.repeats):
            wall, out = timed([*EDGEKD, "check", str(bundle), "--json", "--junit", str(work / "hil.xml")])
            check_wall.append(wall)
            report = json.loads(out[: out.rindex("}") + 1])
            for c in report["checks"]:
                per_check.setdefault(c["name"], []).append(c["seconds"])
    finally:
        shutil.rmtree(work, ignore_errors=True)

    if not miss:
        raise SystemExit("no miss/hit pair was measured (edgekd's code kept changing); run again")
    lines = [
        "## HIL checks and app builds", "",
        f"Command: `OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '(unset)')} .venv/bin/python tools/bench_hil.py "
        f"--repeats {args.repeats}`  ",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; "
        f"{len(miss)} miss/hit pairs. Seconds, median [min–max]; each run is a fresh process (start-up included).", "",
        "| what | seconds | ratio (median) |", "|---|---:|---:|",
        f"| `edgekd build`, empty cache (fp32 digits student, cpu target) | {median_range(miss)} | |",
        f"| `edgekd build`, same inputs (cache hit) | {median_range(hit)} | {statistics.median(ratios):.1f}x faster |",
        f"| `python -c 'import edgekd.runtime'` (torch-free) | {median_range(imports['edgekd.runtime'])} | |",
        f"| `python -c 'import edgekd.pipeline'` (build side, torch) | {median_range(imports['edgekd.pipeline'])} | "
        f"{statistics.median(import_ratio):.1f}x the runtime import |",
        f"| `edgekd check` end to end (6 checks, JUnit) | {median_range(check_wall)} | |", "",
        "Per check inside `edgekd check` (the target's [profiling]: 20 warm-up + 200 queries):", "",
        "| check | seconds |", "|---|---:|",
        *[f"| {name} | {median_range(vals)} |" for name, vals in per_check.items()], "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))
    print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
