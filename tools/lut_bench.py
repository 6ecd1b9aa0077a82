"""Benchmark: how well the latency table (edgekd/search/latency.py) predicts measured INT8 latency (issue 18).

For torchvision resnet18 and mobilenet_v2 (random weights, batch 1, a small input so the run fits a 2-core box),
``--variants`` models each: the dense one and random channel prunings (torch-pruning MetaPruner, DepGraph, one
random ratio per group, kept widths rounded off / to 8 / to 16 in turn). On each target (ORT ``cpu``, OpenVINO
``openvino-cpu``), INT8 as edgekd deploys it:

- **measured**: every variant deployed (ORT static PTQ + the backend's flavor, built by the backend) and timed
  in ``--rounds`` interleaved rounds of ``--calls`` queries (shuffled order per round); p90 over the pooled queries;
- **predicted** by MACs, by params (each fitted ``p90 = a x + b`` on the calibration third) and by the table (sum
  of block entries, calibrated ``a * sum + b`` on the same third);
- **fidelity** on the held-out two thirds: Spearman rank correlation with measured p90 (also over all variants),
  median |% error|, and at budgets = the 25/50/75th percentile of the held-out measured p90s: of the variants
  predicted under budget, how many really are;
- **roofline**: a large QDQ MatMul (1 x 256 x 1024 @ 1024 x 1024, 268 MMACs) timed in the same rounds as the
  resnet18 variants: the runtime's int8 GMAC/s, and each resnet18 variant's MACs / p50 as a fraction of it.

    .venv/bin/python tools/lut_bench.py                  # ~15 min on 2 shared cores (first run: builds the tables)
    .venv/bin/python tools/lut_bench.py --quick          # smoke run: 4 variants, one model, short rounds

Writes docs/bench/lut.json and docs/bench/lut.md (paste the latter into docs/BENCHMARKS.md "Latency table fidelity").
The tables are cached in --cache-dir: a rerun measures only blocks it has not seen.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

import benchlib as bl  # noqa: E402

ROUNDINGS = (None, 8, 16)
#: per-group pruning ratios the variants draw from: few levels make variants share layer shapes, so the tables
#: measure fewer distinct blocks (the widths still differ with the rounding)
LEVELS = (0.0, 0.4, 0.7)
MATMUL = {"cin": 1024, "cout": 1024, "tokens": 256}


def spearman(x: Any, y: Any) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(x, y).statistic) if len(x) >= 3 else float("nan")


def variants(name: str, size: int, n: int, seed: int) -> tuple[list[Any], list[dict[str, Any]], Any]:
    import torch
    import torchvision

    from edgekd.passes.prune import count_macs_params
    from edgekd.search.lut_variants import pruned_variant

    torch.manual_seed(seed)
    base = getattr(torchvision.models, name)(weights=None).eval()
    example = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(seed))
    rng = random.Random(seed)
    models, info = [base], [{"name": "dense", "round_to": 0}]
    for i in range(1, n):
        round_to = ROUNDINGS[i % len(ROUNDINGS)]
        model, meta = pruned_variant(base, example, seed=seed * 1000 + i, max_ratio=rng.uniform(0.3, 0.8),
                                     round_to=round_to, levels=LEVELS)
        models.append(model)
        info.append({"name": f"v{i}", **meta})
    for m, row in zip(models, info, strict=True):
        row["macs"], row["params"] = count_macs_params(m, example)
    return models, info, example


def measure_interleaved(deployed: dict[str, Any], rounds: int, calls: int, seed: int) -> dict[str, dict[str, Any]]:
    from edgekd.profiler.measure import MeasureSettings

    pooled: dict[str, list[float]] = {k: [] for k in deployed}
    per_round: dict[str, list[float]] = {k: [] for k in deployed}
    order = list(deployed)
    rng = random.Random(seed)
    cfg = MeasureSettings(warmup=3, iterations=calls)
    for _ in range(rounds):
        rng.shuffle(order)
        for key in order:
            ms = deployed[key].times_ms(cfg, key)
            pooled[key].extend(ms.tolist())
            per_round[key].append(float(np.median(ms)))
    out = {}
    for key, d in deployed.items():
        m = d.measured(np.array(pooled[key]))
        out[key] = {**m.to_dict(), "round_p50_ms": per_round[key]}
    return out


def fidelity(rows: list[dict[str, Any]], calib_idx: list[int], measured: str = "p90_ms") -> dict[str, Any]:
    """Each predictor against ``measured`` (fitted on ``calib_idx``, judged on the rest)."""
    from edgekd.search.latency import fit_affine

    held = [i for i in range(len(rows)) if i not in calib_idx]
    p90 = np.array([r[measured] for r in rows])
    out: dict[str, Any] = {"calibration_variants": len(calib_idx), "held_out": len(held)}
    budgets = np.percentile(p90[held], [25, 50, 75]) if held else []
    for proxy, col in (("macs", "macs"), ("params", "params"), ("table", "table_sum_ms")):
        x = np.array([float(r[col]) for r in rows])
        a, b = fit_affine(x[calib_idx], p90[calib_idx])
        pred = a * x + b
        err = np.abs(pred[held] - p90[held]) / p90[held] * 100
        hits = under = 0
        for budget in budgets:
            predicted = pred[held] <= budget
            under += int(predicted.sum())
            hits += int((predicted & (p90[held] <= budget)).sum())
        out[proxy] = {"spearman_all": spearman(x, p90), "spearman_held_out": spearman(x[held], p90[held]),
                      "median_abs_pct_error": float(np.median(err)) if held else None,
                      "max_abs_pct_error": float(np.max(err)) if held else None,
                      "predicted_under": under, "truly_under": hits,
                      "truly_under_fraction": hits / under if under else None, "a": a, "b": b}
        if measured == "p90_ms":
            for r, p in zip(rows, pred, strict=True):
                r[f"pred_{proxy}_ms"] = float(p)
    out["budgets_ms"] = [float(b) for b in budgets]
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    from edgekd.search.latency import BlockKey, BlockSettings, deploy, load_or_build, model_blocks

    started = time.perf_counter()
    result: dict[str, Any] = {"command": bl.command_line("tools/lut_bench.py", sys.argv[1:]),
                              "environment": bl.environment(), "size": args.size, "rounds": args.rounds,
                              "calls": args.calls, "models": {}, "targets": {}}
    families = {}
    for name in args.models:
        t0 = time.perf_counter()
        families[name] = variants(name, args.size, args.variants, args.seed)
        print(f"{name}: {len(families[name][0])} variants in {time.perf_counter() - t0:.0f} s", flush=True)
    settings = BlockSettings(rounds=args.block_rounds, warmup=3, iterations=args.block_calls)
    for target in args.targets:
        t0 = time.perf_counter()
        table = load_or_build(target, cache_dir=args.cache_dir, settings=settings)
        tres: dict[str, Any] = {"granule": table.granule, "granule_detail": {
            k: v for k, v in table.granule_detail.items() if k != "entries"}, "granule_s": time.perf_counter() - t0,
            "runtime_version": table.runtime_version, "models": {}}
        print(f"{target}: granule {table.granule} ({table.granule_detail.get('why', 'cached')}) "
              f"in {tres['granule_s']:.0f} s", flush=True)
        for name, (models, info, example) in families.items():
            t1 = time.perf_counter()
            keys = [k for m in models for k in model_blocks(m, example)]
            measured_before = table.measured_now
            table.ensure(keys)
            table_s = time.perf_counter() - t1
            rows = [dict(r) for r in info]
            for r, m in zip(rows, models, strict=True):
                r["table_sum_ms"] = table.raw_ms(m, example)
                r["blocks"] = len(model_blocks(m, example))
            with tempfile.TemporaryDirectory(prefix="lut-bench-") as scratch:
                t2 = time.perf_counter()
                deployed = {r["name"]: deploy(m, example, table.target_object(), "int8", Path(scratch) / r["name"])
                            for r, m in zip(rows, models, strict=True)}
                if name == "resnet18":
                    import torch

                    key = BlockKey("linear", MATMUL["cin"], MATMUL["cout"], h=MATMUL["tokens"])
                    block, x = key.module()
                    deployed["matmul"] = deploy(block, x.to(torch.float32), table.target_object(), "int8",
                                                Path(scratch) / "matmul")
                deploy_s = time.perf_counter() - t2
                t3 = time.perf_counter()
                timed = measure_interleaved(deployed, args.rounds, args.calls, args.seed)
                measure_s = time.perf_counter() - t3
                build_precisions = {k: d.build.precision for k, d in deployed.items()}
                deployed.clear()
            for r in rows:
                r.update({k: timed[r["name"]][k] for k in ("p50_ms", "p90_ms", "p90_ci_ms", "round_p50_ms")})
                r["build_precision"] = build_precisions[r["name"]]
            calib_idx = list(range(0, len(rows), 3))
            mres: dict[str, Any] = {"fidelity": fidelity(rows, calib_idx),
                                    "fidelity_p50": fidelity(rows, calib_idx, "p50_ms"), "variants": rows,
                                    "blocks_measured": table.measured_now - measured_before,
                                    "unique_blocks": len({k.id for k in keys}),
                                    "seconds": {"table": table_s, "deploy": deploy_s, "measure": measure_s}}
            if "matmul" in timed:
                mm = timed["matmul"]
                macs = key.macs
                roof = [macs / (p / 1e3) / 1e9 for p in mm["round_p50_ms"]]
                mres["roofline"] = {"matmul_macs": macs, "build_precision": build_precisions["matmul"],
                                    "gmacs_per_s": bl.median(roof), "gmacs_range": [min(roof), max(roof)]}
                for r in rows:
                    eff = [r["macs"] / (p / 1e3) / 1e9 for p in r["round_p50_ms"]]
                    r["gmacs_per_s"] = bl.median(eff)
                    r["roof_fraction"] = bl.median([e / g for e, g in zip(eff, roof, strict=True)])
            tres["models"][name] = mres
            fid = mres["fidelity"]
            print(f"{target}/{name}: spearman table {fid['table']['spearman_all']:.2f} macs "
                  f"{fid['macs']['spearman_all']:.2f}; median err table {fid['table']['median_abs_pct_error']:.1f} % "
                  f"macs {fid['macs']['median_abs_pct_error']:.1f} %; {mres['blocks_measured']} new blocks in "
                  f"{table_s:.0f} s, deploy {deploy_s:.0f} s, measure {measure_s:.0f} s", flush=True)
        tres["table_entries"] = len(table.entries)
        tres["seconds"] = time.perf_counter() - t0
        result["targets"][target] = tres
    result["models"] = {n: {"variants": len(f[0]), "input": [1, 3, args.size, args.size]} for n, f in families.items()}
    result["seconds"] = time.perf_counter() - started
    return result


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.1f} %"


def markdown(res: dict[str, Any]) -> str:
    env = res["environment"]
    lines = ["## Latency table fidelity (issue 18)", "",
             f"`{res['command']}` ({res['seconds'] / 60:.1f} min). torchvision models with random weights, batch 1, "
             f"input 1x3x{res['size']}x{res['size']}, INT8 as edgekd deploys it (ORT static PTQ + the backend's "
             "Q/DQ flavor, built by the backend). Variants: the dense model and random channel prunings "
             f"(torch-pruning MetaPruner, each group's ratio drawn from {LEVELS}; kept widths rounded off / 8 / 16 in turn). "
             f"Measured: {res['rounds']} interleaved rounds x {res['calls']} queries, p90 of the pooled queries. "
             "Predictions fitted (`p90 = a x + b`) on every third variant, judged on the other two thirds "
             "(held out); \"Spearman all\" uses every variant (a rank needs no fit).", "",
             *bl.environment_lines(env), ""]
    for target, t in res["targets"].items():
        g = t["granule_detail"]
        lines += [f"### {target} ({t['runtime_version']})", "",
                  f"- granule **{t['granule']}**: {g.get('why', g)} (sweep of a 3x3 conv 64->W at 28x28, "
                  f"{t['granule_s']:.0f} s; rise per candidate: "
                  + ", ".join(f"{k}: {v:+.1%}" for k, v in (g.get("rise") or {}).items()) + ")", ""]
        rows = []
        for name, m in t["models"].items():
            fid = m["fidelity"]
            for proxy in ("macs", "params", "table"):
                f = fid[proxy]
                under = (f"{f['truly_under']}/{f['predicted_under']}" if f["predicted_under"] else "0/0")
                rows.append([name, proxy, f"{f['spearman_all']:.2f}", f"{f['spearman_held_out']:.2f}",
                             _pct(f["median_abs_pct_error"]), _pct(f["max_abs_pct_error"]), under])
        lines += [*bl.md_table(["model", "predictor", "Spearman all", "Spearman held out", "median abs err",
                                "max abs err", "predicted under budget: truly under"], rows, "llrrrrr"), ""]
        p50 = [f"{name} {proxy} {m['fidelity_p50'][proxy]['spearman_all']:.2f} / "
               f"{_pct(m['fidelity_p50'][proxy]['median_abs_pct_error'])}"
               for name, m in t["models"].items() for proxy in ("macs", "params", "table")]
        lines += ["- against measured **p50** instead (Spearman all / median abs err): " + "; ".join(p50), ""]
        for name, m in t["models"].items():
            s = m["seconds"]
            lines.append(f"- {name}: {len(m['variants'])} variants, {m['unique_blocks']} distinct blocks "
                         f"({m['blocks_measured']} measured in this run, {s['table']:.0f} s); whole models deployed "
                         f"in {s['deploy']:.0f} s and timed in {s['measure']:.0f} s; budgets "
                         + ", ".join(f"{b:.2f}" for b in m["fidelity"]["budgets_ms"]) + " ms")
            if "roofline" in m:
                roof = m["roofline"]
                fr = [r["roof_fraction"] for r in m["variants"]]
                dense = m["variants"][0]
                lines.append(f"- roofline: QDQ MatMul 1x{MATMUL['tokens']}x{MATMUL['cin']} @ {MATMUL['cin']}x"
                             f"{MATMUL['cout']} ({roof['build_precision']}) {roof['gmacs_per_s']:.0f} GMAC/s "
                             f"[{roof['gmacs_range'][0]:.0f}-{roof['gmacs_range'][1]:.0f}]; resnet18 dense "
                             f"{dense['macs'] / 1e6:.0f} MMACs at p50 {dense['p50_ms']:.2f} ms = "
                             f"{dense['gmacs_per_s']:.0f} GMAC/s = {dense['roof_fraction']:.0%} of it; variants "
                             f"{min(fr):.0%}-{max(fr):.0%} (median {bl.median(fr):.0%})")
        lines.append("")
        vrows = []
        for name, m in t["models"].items():
            for r in m["variants"]:
                vrows.append([name, r["name"], r["round_to"], f"{r['macs'] / 1e6:.0f}", f"{r['params'] / 1e6:.2f}",
                              f"{r['table_sum_ms']:.3f}", f"{r['pred_table_ms']:.3f}", f"{r['p50_ms']:.3f}",
                              f"{r['p90_ms']:.3f}", r["build_precision"]])
        lines += ["<details><summary>every variant</summary>", "",
                  *bl.md_table(["model", "variant", "round_to", "MMACs", "Mparams", "table sum ms",
                                "table pred ms", "p50 ms", "p90 ms", "runs"], vrows, "lllrrrrrrl"),
                  "", "</details>", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", type=lambda s: s.split(","), default=["resnet18", "mobilenet_v2"])
    ap.add_argument("--targets", type=lambda s: s.split(","), default=["cpu", "openvino-cpu"])
    ap.add_argument("--variants", type=int, default=10, help="models per family, the dense one included [10]")
    ap.add_argument("--size", type=int, default=96, help="input height = width [96]")
    ap.add_argument("--rounds", type=int, default=4, help="interleaved rounds of the whole models [4]")
    ap.add_argument("--calls", type=int, default=25, help="queries per model per round [25]")
    ap.add_argument("--block-rounds", type=int, default=3, help="interleaved rounds per table block [3]")
    ap.add_argument("--block-calls", type=int, default=15, help="queries per block per round [15]")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache-dir", type=Path, default=ROOT / ".edgekd-cache" / "latency-bench")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "bench" / "lut.json")
    ap.add_argument("--quick", action="store_true", help="smoke run: resnet18 only, 4 variants, 2 rounds")
    args = ap.parse_args(argv)
    if args.quick:
        args.models, args.variants, args.rounds, args.calls = ["resnet18"], 4, 2, 10
    res = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=1, default=str))
    md = markdown(res)
    args.out.with_suffix(".md").write_text(md + "\n")
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
