"""Goals and Markdown for tools/bench_peers.py: a pure function of its results (docs/bench/peers.json),
so tools/bench.py and the tests read the same verdicts without measuring anything.
"""

from __future__ import annotations

from typing import Any

import benchlib as bl
import numpy as np

from edgekd.status import is_passing  # reads older results' "ok" too

#: (label, profile) of the accuracy part; "ce" is kd.toml with loss = "ce" (same recipe, no teacher)
PROFILES = [("student CE", "ce"), ("student KD (fp32/kd)", "kd"), ("int8-ptq", "int8-ptq"), ("int8-kd", "int8-kd"),
            ("w4a8-kd", "w4a8-kd"), ("sparse24-int8-kd", "sparse24-int8-kd"),
            ("channels50-int8-kd", "channels50-int8-kd")]
INT8_PROFILES = ("int8-ptq", "int8-kd", "w4a8-kd", "sparse24-int8-kd", "channels50-int8-kd")
PEER_CALIB = 128  # calibration images for the peers' PTQ of the KD student (the baseline recipe)


# ---------------------------------------------------------------- goals (also read by tools/bench.py)


def _p50(row: dict[str, Any]) -> float:
    """A variant's p50: the median of its per-round p50s.

    >>> _p50({"p50_rounds": [2.0, 9.0, 2.2]})
    2.2
    """
    return bl.median(row["p50_rounds"])


def latency_goals(lat: dict[str, Any]) -> list[bl.Goal]:
    goals = []
    for res in lat.get("models", {}).values():
        rows = {r["key"]: r for r in res["rows"]}
        ed = [r for r in res["rows"] if r["group"] == "edgekd"]
        if res["model"] == "resnet18":
            if ed and "eager" in rows:
                best = min(ed, key=_p50)
                r = bl.ratio_stats(rows["eager"]["p50_rounds"], best["p50_rounds"])
                need = "" if r.median >= 25 else (f"; 25x needs <= {_p50(rows['eager']) / 25:.2f} ms at this run's "
                                                  f"eager p50, it ran {_p50(best):.2f} ms")
                goals.append(bl.Goal("resnet18: fastest edgekd variant vs PyTorch eager FP32", r.median, 25.0,
                                     unit="x", detail=f"{best['label']} (range {r.low:.1f}-{r.high:.1f}x){need}"))
            else:
                goals.append(bl.Goal("resnet18: fastest edgekd variant vs PyTorch eager FP32", None, 25.0, unit="x",
                                     detail="; ".join(res["notes"]) or "no edgekd rows"))
        key = "edgekd_int8_openvino-cpu"
        if key in rows and "nncf_ov" in rows:
            r = bl.ratio_stats(rows["nncf_ov"]["p50_rounds"], rows[key]["p50_rounds"])
            graphs = [next((p for p in rows[k]["note"].split("; ") if p.startswith("OV runs")), "?")
                      for k in (key, "nncf_ov")]
            why = "" if r.median >= 1.0 else f" -- slower; executed graphs: edgekd {graphs[0]}, NNCF {graphs[1]}"
            same = rows.get("edgekd_int8_ov_default")
            if same is not None:
                r2 = bl.ratio_stats(rows["nncf_ov"]["p50_rounds"], same["p50_rounds"])
                why += (f"; with its float parts at OpenVINO's default precision like the NNCF row: {r2.median:.2f}x "
                        f"({r2.low:.2f}-{r2.high:.2f})")
            goals.append(bl.Goal(f"{res['model']}: edgekd INT8 on OpenVINO vs NNCF -> OpenVINO INT8", r.median, 1.0,
                                 unit="x", detail=f"NNCF p50 / edgekd p50, per round (range {r.low:.2f}-{r.high:.2f})"
                                 + why))
    return goals


def accuracy_goals(acc: dict[str, Any]) -> list[bl.Goal]:
    goals = []
    res = acc.get("datasets", {}).get("mnist5k")
    if res is None:
        return goals
    fp32 = {r["seed"]: r["targets"]["cpu"]["accuracy"] for r in res["runs"].get("kd", []) if "error" not in r}
    for prof in INT8_PROFILES:
        drops = [fp32[r["seed"]] - r["targets"]["cpu"]["accuracy"] for r in res["runs"].get(prof, [])
                 if "error" not in r and r["seed"] in fp32]
        worst_ov = [fp32[r["seed"]] - r["targets"]["openvino-cpu"]["accuracy"] for r in res["runs"].get(prof, [])
                    if "error" not in r and r["seed"] in fp32 and r["targets"].get("openvino-cpu", {}).get("accuracy")
                    is not None]
        goals.append(bl.Goal(f"MNIST-5k: {prof} drop vs the FP32 KD student (points, ORT)",
                             float(np.mean(drops)) if drops else None, 1.0, kind="max",
                             detail=f"kd profile = FP32 student; mean over {len(drops)} seed(s); on OpenVINO "
                                    f"{np.mean(worst_ov):+.2f}" if worst_ov else
                             "not run" if prof not in res["runs"] else "compress failed (see part B)"))
    kd_q = [r["targets"]["cpu"]["accuracy"] for r in res["runs"].get("int8-kd", []) if "error" not in r]
    nncf = res["peers"].get("NNCF -> OpenVINO (f32 hint)", [])
    if kd_q and nncf:
        goals.append(bl.Goal("MNIST-5k: edgekd int8-kd minus NNCF PTQ of the KD student (points)",
                             float(np.mean(kd_q) - np.mean(nncf)), 0.0,
                             detail="equal or better accuracy thanks to KD-QAT; NNCF quantizes the kd profile's "
                                    "student, int8-kd QAT-trains the same FP32 stage (same distill recipe and seed); "
                                    f"1 test image = {100 / res['n_test']:.2f} points" if res.get("n_test") else
                             "equal or better accuracy thanks to KD-QAT; NNCF quantizes the kd profile's student, "
                             "int8-kd QAT-trains the same FP32 stage (same distill recipe and seed)"))
    return goals


def cost_goals(results: dict[str, Any]) -> list[bl.Goal]:
    rows = [r for r in all_cost_rows(results) if "error" not in r]
    if not rows:
        return []
    slow = max(rows, key=lambda r: r["wall_s"])
    big = max(rows, key=lambda r: r["peak_rss_mb"])
    return [bl.Goal("pipeline cost: slowest edgekd compress (minutes)", slow["wall_s"] / 60, 10.0, kind="max",
                    detail=f"{slow['label']} (aim: every profile < 10 min, < 4 GiB)"),
            bl.Goal("pipeline cost: largest peak RSS (GiB)", big["peak_rss_mb"] / 1024, 4.0, kind="max",
                    detail=big["label"])]


def all_cost_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    rows = [r for m in results.get("latency", {}).get("models", {}).values() for r in m["compress"]]
    for res in results.get("accuracy", {}).get("datasets", {}).values():
        rows += [{**r, "label": f"{res['dataset']} {r['profile']}"} for p in res["runs"].values() for r in p
                 if r["seed"] == 0]
    return rows


def goals(results: dict[str, Any]) -> list[bl.Goal]:
    return [*latency_goals(results.get("latency", {})), *accuracy_goals(results.get("accuracy", {})),
            *cost_goals(results)]


# ---------------------------------------------------------------- Markdown


def _part_head(part: dict[str, Any]) -> list[str]:
    lines = [f"Command: `{part['command']}` ({part['when']}, {part['seconds'] / 60:.1f} min)"]
    if part.get("quick"):
        lines += ["", "**Smoke run (`--quick`): tiny settings; these numbers only show that the script runs.**"]
    return [*lines, ""]


def render_latency(lat: dict[str, Any]) -> list[str]:
    lines = ["## A. Latency, batch 1, 2 threads (random weights)", "", *_part_head(lat),
             "Every variant of a model is timed in one process, in interleaved rounds (all variants once per round, "
             "the starting one rotating); p50 = median over rounds of each round's p50, p90 over all calls. "
             "\"x eager\" and \"x best peer\" are medians of per-round ratios [min-max] (higher = faster). "
             "Peers = every row not made by edgekd; the best peer is the one with the lowest p50. "
             "Threads: torch.set_num_threads(2); ORT intra_op 2, ORT_ENABLE_ALL; OpenVINO INFERENCE_NUM_THREADS 2, "
             "NUM_STREAMS 1, LATENCY. The edgekd rows are the bundles `edgekd compress` wrote (targets `cpu` and "
             "`openvino-cpu`), loaded with `edgekd.runtime.load`; the row \"float parts at OV default precision\" is "
             "the int8 bundle's OpenVINO IR compiled exactly like the NNCF row (a like-for-like check; it is not a "
             "shipped target and never counts as the fastest edgekd variant). Each variant's block starts after a "
             "0.5 s idle gap (ONNX Runtime's spinning pool otherwise slows whatever runs next). "
             "Without ImageNet there is no teacher or data for "
             "these models: edgekd's quantize pass calibrates on 32 random inputs (sensitivity off, every layer int8: "
             "the int8-kd graph without its training) and channels50 prunes 50 % of the channels (torch-pruning, L2, "
             "round_to 8) with no recovery; latency depends on the graph, not on QAT or KD. The peers' PTQ uses the "
             "same 32 inputs and the same FP32 ONNX (edgekd's export).", ""]
    for res in lat["models"].values():
        rows = {r["key"]: r for r in res["rows"]}
        peers = [r for r in res["rows"] if r["group"] in ("peer", "reference")]
        best = min(peers, key=_p50)
        table = []
        for r in res["rows"]:
            vs_e = bl.ratio_stats(rows["eager"]["p50_rounds"], r["p50_rounds"])
            vs_p = bl.ratio_stats(best["p50_rounds"], r["p50_rounds"])
            label = f"**{r['label']}**" if r["group"].startswith("edgekd") else r["label"]
            table.append([label, bl.fmt_ms(_p50(r)), bl.fmt_ms(r["p90_ms"]), str(vs_e), str(vs_p),
                          f"{r['size_mb']:.1f}", r["note"]])
        lines += [f"### {res['model']} (`{res['source']}`, 1x{'x'.join(map(str, res['shape']))}), "
                  f"{res['rounds']} rounds x {res['calls']} calls", "",
                  *bl.md_table(["variant", "p50 ms", "p90 ms", "x eager", "x best peer", "size MB", "notes"], table,
                               "lrrrrrl"), "",
                  f"Best peer: {best['label']}.", *(f"- {n}" for n in res["notes"]), ""]
    lines += ["### Offline throughput (images/s; one stream, 2 threads, one call per batch)", "",
              f"{lat['tp_rounds']} interleaved round(s) x {lat['tp_calls']} calls per batch size; batch 1 = 1000 / p50 "
              "above.", ""]
    for res in lat["models"].values():
        batches = [str(b) for b in lat["batches"]]
        table = [[r["label"], f"{1000 / _p50(r):.0f}", *(f"{res['throughput'][r['key']][b]:.0f}" for b in batches)]
                 for r in res["rows"]]
        lines += [f"{res['model']}:", "", *bl.md_table(["variant", "batch 1", *(f"batch {b}" for b in batches)], table),
                  ""]
    return lines


def render_accuracy(acc: dict[str, Any]) -> list[str]:
    lines = ["## B. Accuracy on MNIST-5k and digits", "", *_part_head(acc),
             "Each edgekd row is one `edgekd compress --model builtin:<ds>-student --teacher builtin:<ds>-teacher "
             "--data builtin:<ds> --recipe P --target cpu --target openvino-cpu --seed S` in a child process, with "
             "the shipped profile" + (f" (every epoch count set to {acc['datasets'][next(iter(acc['datasets']))]['epochs']})"
                                      if next(iter(acc["datasets"].values()))["epochs"] else "")
             + "; top-1 % on the test split as the built artifact runs it (ORT = target `cpu`, OV = `openvino-cpu`). "
             "\"student CE\" is kd.toml with loss = ce. \"FP32 stage\" is the same run's student after its distill "
             "pass (before pruning/sparsity/quantization). The peers quantize the `kd` bundle's model.onnx "
             f"(the FP32 KD student) with {PEER_CALIB} training images: ORT quant_pre_process + quantize_static "
             "(QDQ, per-channel) and NNCF -> OpenVINO (run with INFERENCE_PRECISION_HINT f32). Mean ± std over seeds; "
             "\"vs KD\" = per-seed difference to the kd recipe on ORT, averaged.", ""]
    for res in acc["datasets"].values():
        kd = {r["seed"]: r["targets"]["cpu"]["accuracy"] for r in res["runs"].get("kd", []) if "error" not in r}
        teacher = [r["accuracy"].get("teacher") for p in res["runs"].values() for r in p
                   if "error" not in r and r["accuracy"].get("teacher") is not None][:1]
        table = [["teacher (builtin, CE)", bl.mean_std(teacher), "", "", "", ""]]
        for label, prof in PROFILES:
            if prof not in res["runs"]:
                continue
            ok = [r for r in res["runs"][prof] if "error" not in r]
            if not ok:
                err = next((r["error"] for r in res["runs"][prof]), "not run")
                table.append([label, f"failed: {err[:120]}", "", "", "", ""])
                continue
            ort = [r["targets"]["cpu"]["accuracy"] for r in ok]
            ov = [r["targets"]["openvino-cpu"]["accuracy"] for r in ok]
            stage = [r["fp32_stage"] for r in ok if r["fp32_stage"] is not None]
            diff = [r["targets"]["cpu"]["accuracy"] - kd[r["seed"]] for r in ok if r["seed"] in kd] or [np.nan]
            status = sorted({f"{t}: {v['status']}" for r in ok for t, v in r["targets"].items() if not is_passing(v["status"])})
            name = f"**edgekd {label}**" if prof in INT8_PROFILES else f"edgekd {label}"
            table.append([name, bl.mean_std(ort), bl.mean_std(ov), bl.mean_std(stage),
                          "" if prof == "kd" else f"{np.mean(diff):+.2f}", "; ".join(status)])
        for label, values in res["peers"].items():
            diff = [v - kd[s] for s, v in zip(sorted(kd), values)] or [np.nan]
            table.append([f"peer PTQ of the KD student: {label}", bl.mean_std(values) if "ORT" in label else "",
                          "" if "ORT" in label else bl.mean_std(values), "", f"{np.mean(diff):+.2f}", ""])
        skipped = [p for _, p in PROFILES if p not in res["runs"]]
        lines += [f"### {res['dataset']} ({res['n_train']} train / {res['n_test']} test), {res['seeds']} seed(s)"
                  + (f"; profiles not run: {', '.join(skipped)}" if skipped else ""), "",
                  f"Teacher `{res['teacher']}` loaded (trained first if not cached) in {res['teacher_load_s']:.0f} s, "
                  "before any child ran.", "",
                  *bl.md_table(["model", "top-1 % ORT", "top-1 % OV", "FP32 stage", "vs KD (points)",
                                "compress checks not ok"], table, "lrrrrl"), ""]
    return lines


def render_cost(results: dict[str, Any]) -> list[str]:
    rows = all_cost_rows(results)
    if not rows:
        return []
    table = []
    for r in rows:
        if "error" in r:
            table.append([r["label"], f"{r['wall_s']:.1f}", f"{r['peak_rss_mb']:.0f}", "failed: " + r["error"][:120]])
            continue
        passes = ", ".join(f"{k} {v:.1f}" for k, v in r["pass_seconds"].items() if v is not None)
        table.append([r["label"], f"{r['wall_s']:.1f}", f"{r['peak_rss_mb']:.0f}", passes or "(no passes)"])
    return ["## C. Pipeline cost of `edgekd compress` (2 cores)", "",
            "Wall time of the whole child process (interpreter start, loading, passes, export, builds for `cpu` + "
            "`openvino-cpu`, parity, accuracy, latency measurement, bundle) and its peak resident memory (ru_maxrss: "
            "the largest single process of its tree). Seed 0 of each accuracy run; the big models' rows are the bundles timed in part A. "
            "Teachers were trained and cached before any child ran. Aim: every profile under 10 minutes and 4 GiB.", "",
            *bl.md_table(["compress", "wall s", "peak RSS MiB", "pass seconds"], table, "lrrl"), ""]


def render(results: dict[str, Any]) -> str:
    lines = ["# edgekd against its peers", "",
             "Generated by `tools/bench_peers.py` (each part below names the command that produced it); "
             "results also in `docs/bench/peers.json`. Environment:", "",
             *bl.environment_lines(results["environment"]), ""]
    if results.get("goals"):
        lines += ["Goals computed from the numbers below:", "",
                  *bl.md_table(["goal", "measured", "aim", "verdict", "what was compared / why"], results["goals"],
                               "lrrll"), ""]
    if "latency" in results:
        lines += render_latency(results["latency"])
    if "accuracy" in results:
        lines += render_accuracy(results["accuracy"])
    lines += render_cost(results)
    return "\n".join(lines)
