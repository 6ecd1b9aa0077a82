"""FP32 vs INT8 on resnet18 through edgekd's own CLI: compress both, profile both, compare with intervals.

Issue 8's "must show": `edgekd profile --compare` on a real pair, the ratio with its bootstrap interval and
significance. Random weights (no ImageNet here): latency depends on the graph, not the weights. The INT8 bundle
uses the `ptq` profile calibrated on random inputs. Writes docs/bench/compare.md.

    .venv/bin/python tools/bench_compare.py [--iterations 300] [--model torchvision:resnet18]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EDGEKD = [sys.executable, "-m", "edgekd"]


def run(args: list[str], allow: tuple[int, ...] = (0,)) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(args, capture_output=True, text=True, cwd=ROOT, env={**os.environ, "EDGEKD_QUIET": "1"})
    if proc.returncode not in allow:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(args)}\n{proc.stderr[-3000:]}")
    return proc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="torchvision:resnet18")
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--out", default=str(ROOT / "docs" / "bench" / "compare.md"))
    args = parser.parse_args()
    shape = "3x224x224"
    lines = ["# FP32 vs INT8 with `edgekd profile --compare`", "",
             f"Command: `.venv/bin/python tools/bench_compare.py --model {args.model} --iterations {args.iterations}` "
             f"({datetime.now(UTC).date()})", "",
             f"{args.model} with random weights, batch 1. FP32: profile `fp32`; INT8: profile `ptq` (brevitas W8A8, "
             "calibrated on random inputs: latency depends on the graph, not on the weights). Each variant is "
             "profiled by `edgekd profile` in its own process, one after the other; the ratio's 95 % interval is a "
             "bootstrap over the kept per-query times.", ""]
    with tempfile.TemporaryDirectory() as tmp:
        bundles = {}
        for name, profile in (("fp32", "fp32"), ("int8", "ptq")):
            out = Path(tmp) / name
            run([*EDGEKD, "compress", "--model", args.model, "--data", f"random:{shape}", "--recipe", profile,
                 "--target", "cpu", "--target", "openvino-cpu", "--out", str(out), "--no-measure", "--quiet"])
            bundles[name] = out
        for target in ("cpu", "openvino-cpu"):
            docs = {}
            for name, bundle in bundles.items():
                prof_dir = Path(tmp) / f"prof-{name}-{target}"
                run([*EDGEKD, "profile", str(bundle), "--target", target, "--out", str(prof_dir), "--iterations",
                     str(args.iterations), "--no-plots", "--label", f"{name}", "--quiet"])
                docs[name] = prof_dir / "profile.json"
            cmp = run([*EDGEKD, "profile", "--compare", str(docs["fp32"]), str(docs["int8"]), "--metric", "p50",
                       "--json"], allow=(0, 1))
            result = json.loads(cmp.stdout)
            table = run([*EDGEKD, "profile", "--compare", str(docs["fp32"]), str(docs["int8"])], allow=(0, 1)).stdout
            precision = {n: json.loads(p.read_text()).get("build", {}).get("precision") for n, p in docs.items()}
            lines += [f"## {target}", "", f"executed precision: fp32 bundle -> {precision['fp32']}, "
                      f"int8 bundle -> {precision['int8']}", "", "```text", table.strip(), "```", ""]
            (Path(tmp) / f"compare-{target}.json").write_text(json.dumps(result))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
