"""The one benchmark command (``make bench``): run every topic benchmark, then assemble docs/BENCHMARKS.md.

Each topic bench runs as its own child process (fresh interpreter, its own thread settings) and
writes docs/bench/<topic>.md with the command that produced it; bench_peers.py writes the headline
peer-comparison tables (docs/bench/peers.md + peers.json). BENCHMARKS.md then gets the environment,
this command, a summary with the issue's goals (met / missed, computed from the numbers), and every
topic section verbatim. ``--only`` reruns some topics and re-assembles with the others' last files.

    .venv/bin/python tools/bench.py                    # full suite (~35 min on 2 quiet cores)
    .venv/bin/python tools/bench.py --quick            # smoke run of everything (3 min measured, quiet 2 cores)
    .venv/bin/python tools/bench.py --only peers,quant # rerun two topics, keep the other sections
    .venv/bin/python tools/bench.py --assemble-only    # no benchmark runs: rebuild BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import benchlib as bl

ROOT = bl.ROOT
DEFAULT_DIR = ROOT / "docs" / "bench"


@dataclass(frozen=True)
class Topic:
    script: str
    full: tuple[str, ...] = ()
    quick: tuple[str, ...] = ("--quick",)
    env: dict[str, str] = field(default_factory=dict)  # as each script's docstring runs it
    why: str = ""  # why the suite passes non-default arguments


# Order: the cheap topics first, the headline tables last. Full-suite budget (2 quiet cores), about:
# profiler 0.5, binding 5, hls 1, hil 1.5, compare 1.5, openvino 1.5, distill 6, structure 3, quant 2, peers 18 minutes.
TOPICS: dict[str, Topic] = {
    "profiler": Topic("tools/bench_profiler.py", quick=("--rounds", "3", "--queries", "500"),
                      env={"OMP_NUM_THREADS": "1"}),
    "binding": Topic("tools/bench_binding.py", quick=("--models", "digits", "--rounds", "2")),
    "hls": Topic("tools/bench_hls.py", quick=("--repeats", "1", "--epochs", "1"), env={"OMP_NUM_THREADS": "1"}),
    "hil": Topic("tools/bench_hil.py", quick=("--repeats", "1"), env={"OMP_NUM_THREADS": "1"}),
    "compare": Topic("tools/bench_compare.py", quick=("--iterations", "30")),
    "openvino": Topic("tools/bench_openvino.py", quick=("--models", "digits", "--rounds", "3", "--calls", "20")),
    "distill": Topic("tools/bench_distill.py", quick=("--quick", "--datasets", "digits")),
    "structure": Topic("tools/bench_structure.py", full=("--seeds", "2"), quick=("--quick", "--part", "latency"),
                       why="2 seeds instead of 3 to fit the suite's time budget"),
    "quant": Topic("tools/bench_quant.py", full=("--skip-latency",), quick=("--quick", "--skip-latency"),
                   why="its latency part (INT8 vs FP32, same three models) is inside the peers latency tables"),
    "peers": Topic("tools/bench_peers.py"),
}


METHOD = """\
## Method and decisions

- **Peers get their documented best recipe.** ONNX Runtime: `quant_pre_process`, then `quantize_static` QDQ with
  per-channel S8 weights, reported with both activation types (S8S8 is the default, U8S8 is the fast one on x86).
  NNCF: `nncf.quantize` on the OpenVINO model (`model_type=TRANSFORMER` for the ViT, as NNCF advises), compiled with
  OpenVINO's default precision (bf16 for the float parts on CPUs with AVX512-BF16 or AMX). Every peer starts from
  the same FP32 ONNX (edgekd's export, dynamic batch) of the same seeded random weights, calibrated on the same inputs as edgekd.
- **edgekd rows are `edgekd compress` bundles** with the shipped `cpu` and `openvino-cpu` targets, loaded through
  `edgekd.runtime` (what a deployed app runs). `openvino-cpu` keeps non-int8 layers in f32 (exact accuracy); it does
  not borrow OpenVINO's bf16 default.
- **No ImageNet here**: the resnet18 / mobilenet_v2 / vit_tiny rows use random weights and random calibration
  inputs; their latency depends on the graph (int8 everywhere, channels removed), not on QAT or KD recovery.
- **"The FP32 student"** of the 1-point goal is the `kd` profile's student on ONNX Runtime; each INT8 recipe's own
  FP32 stage (after its distill pass, same recipe as kd.toml: one-cycle max lr 1e-2) is shown beside it.
- **Side by side**: all variants of one model run in one process in interleaved rounds with a rotating start; speed
  ratios are medians of per-round ratios with their range. Each variant's block starts after a 0.5 s idle gap:
  ONNX Runtime's thread pool keeps spinning after its last call and slowed whatever ran next (a one-off check
  during development, not re-run by this suite: OpenVINO resnet18 INT8 about 1.75x slower right after ORT calls).
  Costs are child processes (their own peak RSS).
- **The CPU decides the INT8 speed-up**: AMX (Xeon Sapphire Rapids and newer) runs int8 and bf16 tiles; a CPU with
  only AVX-512 VNNI does not. The environment names the CPU of this run; earlier runs on other CPUs are linked below.
- **Time budget** (full suite ~35 min on 2 quiet cores): bench_structure runs 2 seeds; bench_quant skips its latency
  part (the peers tables time the same models' INT8 and FP32 on both runtimes); bench_peers runs 2 seeds on MNIST-5k
  and digits. Every section below names its exact command.
"""


def section_path(topic: str, bench_dir: Path) -> Path:
    return bench_dir / f"{topic}.md"


def run_topic(name: str, quick: bool, timeout: float, bench_dir: Path = DEFAULT_DIR) -> dict[str, Any]:
    topic = TOPICS[name]
    # --out only for a non-default folder, so the sections' command lines stay the plain ones
    out = [] if bench_dir.resolve() == DEFAULT_DIR.resolve() else ["--out", str(section_path(name, bench_dir))]
    cmd = [bl.python(), topic.script, *(topic.quick if quick else topic.full), *out]
    env = {"EDGEKD_QUIET": "1", **topic.env}
    shown = " ".join(f"{k}={v}" for k, v in topic.env.items()) + " " + " ".join(
        [".venv/bin/python", *cmd[1:]])
    print(f"== {name}: {shown.strip()}", file=sys.stderr, flush=True)
    # the caller's OMP_NUM_THREADS is dropped: each topic runs with the thread settings its docstring names
    m = bl.run_measured(cmd, env=env, unset=[] if "OMP_NUM_THREADS" in env else ["OMP_NUM_THREADS"], cwd=ROOT,
                        timeout=timeout)
    status = "ok" if m.returncode == 0 else f"FAILED (exit {m.returncode})"
    if m.returncode != 0:
        tail = "\n".join(m.stderr.strip().splitlines()[-15:])
        print(f"!! {name} failed:\n{tail}", file=sys.stderr)
    else:
        print(f"   {name}: {m.wall_s / 60:.1f} min", file=sys.stderr)
    return {"topic": name, "command": shown.strip(), "wall_s": m.wall_s, "peak_rss_mb": m.peak_rss_mb,
            "status": status, "quick": quick, "when": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "stderr_tail": m.stderr.strip().splitlines()[-5:] if m.returncode else [],
            "environment": bl.environment()}


def record_runs(bench_dir: Path, runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """suite.json keeps each topic's last run by this command (so --only and --assemble-only still know
    how every section was made, and which ones are smoke runs)."""
    path = bench_dir / "suite.json"
    record = json.loads(path.read_text()) if path.exists() else {}
    record.update({r["topic"]: r for r in runs})
    path.write_text(json.dumps(record, indent=1))
    return record


# ---------------------------------------------------------------- reading the topic sections back


def _table_with(text: str, *columns: str) -> bl.MdTable:
    for t in bl.parse_md_tables(text):
        if all(c in t.header for c in columns):
            return t
    raise ValueError(f"no table with columns {', '.join(columns)}")


def headline_rows(sections: dict[str, str]) -> list[list[str]]:
    """One row per topic headline, each read from the topic's own Markdown (never typed in by hand).
    A section that cannot be read says so in its row."""
    rows: list[list[str]] = []

    def add(topic: str, what: str, fn: Any) -> None:
        if topic not in sections:
            rows.append([topic, what, "section missing", ""])
            return
        try:
            value, note = fn(sections[topic])
        except (ValueError, KeyError, IndexError) as exc:
            value, note = "could not read", str(exc)
        rows.append([topic, what, value, note])

    def profiler(text: str) -> tuple[str, str]:
        t = _table_with(text, "quantity", "value")
        row = next(r for r in t.rows if r["quantity"].startswith("overhead per query"))
        m = re.search(r"= ([\d.]+) µs -> \*\*(\w+)\*\*", text)
        if m is None:
            raise ValueError("no 'Aim: ... -> **verdict**' line")
        return row["value"], f"aim <= {m.group(1)} µs: {m.group(2)}"

    def hls(text: str) -> tuple[str, str]:
        t = _table_with(text, "requant", "identical elements", "max LSB", "top-1 identical")
        ident = [bl.number(r["identical elements"]) / bl.number(r["identical elements"].split("/")[1]) for r in t.rows]
        top1 = [bl.number(r["top-1 identical"]) / bl.number(r["top-1 identical"].split("/")[1]) for r in t.rows]
        lsb = max(bl.number(r["max LSB"]) for r in t.rows)
        return (f"{100 * min(top1):.1f} % top-1 identical (worst case)",
                f"{len(t.rows)} model/requant cases; identical elements {100 * min(ident):.1f}-{100 * max(ident):.1f} %"
                f", max {lsb:.0f} LSB")

    def distill(text: str) -> tuple[str, str]:
        t = _table_with(text, "dataset", "student KD", "KD − CE")
        return ("; ".join(f"{r['dataset'].split(' ')[0]} {r['KD − CE']} points" for r in t.rows),
                "; ".join(f"{r['dataset'].split(' ')[0]}: teacher {r['teacher']}, CE {r['student CE']}, "
                          f"KD {r['student KD'].strip('*')}" for r in t.rows))

    def structure(text: str) -> tuple[str, str]:
        t = _table_with(text, "runtime", "speed-up pruned")
        return ("; ".join(f"{r['runtime']} {r['speed-up pruned'].split(' ')[0].strip('*')}" for r in t.rows),
                "resnet18, 50 % channels vs dense, same runtime")

    def hil(text: str) -> tuple[str, str]:
        t = _table_with(text, "what", "ratio (median)")
        row = next(r for r in t.rows if "cache hit" in r["what"])
        return row["ratio (median)"], f"`edgekd build` cache hit {row['seconds']} s"

    add("profiler", "profiler harness overhead per query", profiler)
    add("hls", "HLS C-sim vs ONNX Runtime INT8", hls)
    add("distill", "KD minus CE student (top-1 points)", distill)
    add("structure", "channel pruning speed-up", structure)
    add("hil", "app build cache hit vs miss", hil)
    return rows


def is_smoke(text: str) -> bool:
    """A section produced by a --quick run (its command line or its own banner says so).

    >>> is_smoke("Command: `python tools/bench_quant.py --quick`"), is_smoke("Command: `bench_hls.py --repeats 5`")
    (True, False)
    """
    return "--quick" in text or "Smoke run" in text or "QUICK smoke run" in text


# ---------------------------------------------------------------- BENCHMARKS.md


def peers_summary(peers: dict[str, Any]) -> list[str]:
    """Headline bullets computed from peers.json."""
    import peers_report as bp

    lines = []
    for res in peers.get("latency", {}).get("models", {}).values():
        rows = res["rows"]
        eager = next(r for r in rows if r["key"] == "eager")
        ours = [r for r in rows if r["group"] == "edgekd"]
        theirs = [r for r in rows if r["group"] in ("peer", "reference")]
        if not ours:
            lines.append(f"- **{res['model']}**: no edgekd rows ({'; '.join(res['notes'])})")
            continue
        best, peer = min(ours, key=bp._p50), min(theirs, key=bp._p50)
        lines.append(f"- **{res['model']}** (batch 1, 2 threads): fastest edgekd variant {best['label']} "
                     f"{bl.fmt_ms(bp._p50(best))} ms = {bl.ratio_stats(eager['p50_rounds'], best['p50_rounds'])} "
                     f"PyTorch eager FP32 ({bl.fmt_ms(bp._p50(eager))} ms) and "
                     f"{bl.ratio_stats(peer['p50_rounds'], best['p50_rounds'])} the best peer, {peer['label']} "
                     f"({bl.fmt_ms(bp._p50(peer))} ms).")
    for res in peers.get("accuracy", {}).get("datasets", {}).values():
        def acc(prof: str, res: dict[str, Any] = res) -> str:
            if prof not in res["runs"]:
                return "not run"
            return bl.mean_std([r["targets"]["cpu"]["accuracy"] for r in res["runs"][prof] if "error" not in r])
        lines.append(f"- **{res['dataset']}** top-1 % on ORT ({res['seeds']} seed(s)): student CE {acc('ce')}, "
                     f"student KD {acc('kd')}; " + ", ".join(f"{p} {acc(p)}" for p in bp.INT8_PROFILES)
                     + "; peers' PTQ of the KD student: " + ", ".join(
                         f"{k} {bl.mean_std(v)}" for k, v in res["peers"].items()) + ".")
    return lines


def _machine(env: dict[str, Any]) -> str:
    cpu = env.get("cpu", {})
    flags = set(cpu.get("flags") or [])
    isa = "AMX" if flags & {"amx_int8", "amx_bf16"} else "AVX-512 VNNI" if "avx512_vnni" in flags else "no VNNI"
    return f"{cpu.get('model') or 'unknown CPU'} ({isa}, {cpu.get('logical_cpus')} logical CPUs)"


def environment_section(record: dict[str, dict[str, Any]], sections: dict[str, str]) -> list[str]:
    """The machine the sections were measured on (recorded by each run), never the assembling machine's
    unless no run recorded one: INT8 speed-ups depend on the CPU (AMX or not), so mixing is flagged."""
    envs = {t: r["environment"] for t, r in record.items() if t in sections and r.get("environment")}
    if not envs:
        return ["Not recorded by the runs; the machine that assembled this file:", "",
                *bl.environment_lines(bl.environment())]
    machines: dict[str, list[str]] = {}
    for topic, env in envs.items():
        machines.setdefault(_machine(env), []).append(topic)
    latest = max(envs, key=lambda t: record[t]["when"])
    lines = bl.environment_lines(envs[latest])
    unknown = [t for t in sections if t not in envs]
    if len(machines) > 1 or unknown:
        lines += ["", "**The sections were not all measured on one machine:** "
                  + "; ".join(f"{m}: {', '.join(ts)}" for m, ts in machines.items())
                  + (f"; not recorded: {', '.join(unknown)}" if unknown else "")
                  + ". Compare ratios within a section only."]
    return lines


def archived_runs(bench_dir: Path, relative_to: Path) -> list[str]:
    """Links to whole earlier BENCHMARKS.md files kept in ``bench_dir/archive`` (other machines, other code)."""
    rows = []
    for path in sorted((bench_dir / "archive").glob("*.md")):
        text = path.read_text()
        cpu = next((ln[len("- CPU: "):] for ln in text.splitlines() if ln.startswith("- CPU: ")), "?")
        when = next((ln for ln in text.splitlines() if ln.startswith("Generated by")), "")
        met = next((ln.split(";")[0].rstrip(".") for ln in text.splitlines() if " goals met" in ln), "")
        rows.append([f"[{path.stem}]({path.relative_to(relative_to).as_posix()})", cpu.split(";")[0],
                     when.split(" on ")[-1].split(";")[0] if " on " in when else "", met])
    if not rows:
        return []
    return ["## Earlier full runs (kept as they were)", "",
            "Whole BENCHMARKS.md files of earlier suite runs, on other machines or older code; their numbers are "
            "not mixed into the tables here.", "",
            *bl.md_table(["run", "CPU", "generated", "goals"], rows, "llll"), ""]


def assemble(bench_dir: Path, out: Path, *, command: str, runs: list[dict[str, Any]]) -> str:
    import peers_report as bp

    sections = {t: section_path(t, bench_dir).read_text() for t in TOPICS if section_path(t, bench_dir).exists()}
    peers_json = bench_dir / "peers.json"
    peers = json.loads(peers_json.read_text()) if peers_json.exists() else {}
    record = record_runs(bench_dir, runs)
    now = {r["topic"] for r in runs}
    total = sum(r["wall_s"] for r in runs)
    lines = ["# edgekd benchmarks", "",
             f"Generated by `{command}` on {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}"
             + (f"; benchmarks ran {total / 60:.1f} min." if runs else " (assembled from the existing sections)."), "",
             "Every number below was produced by a script in `tools/` in the run named in its section; the summary is "
             "computed from those sections and `docs/bench/peers.json`. Timings are medians over interleaved rounds and "
             "ratios measured side by side in one process; on a shared machine absolute times drift "
             "between runs, so read the ratios.", ""]
    smoke = [t for t in TOPICS if t in sections and (is_smoke(sections[t]) or record.get(t, {}).get("quick"))]
    if smoke:
        lines += [f"**Smoke-run sections: {', '.join(smoke)}.** Made with `--quick` settings: they only show that the "
                  "scripts run; their numbers (and the verdicts computed from them) mean nothing. Run "
                  "`make bench` on a quiet machine for real numbers.", ""]
    lines += ["## Environment", "", *environment_section(record, sections), ""]

    lines += ["## Benchmark goals (computed)", ""]
    goals = bp.goals(peers) if peers else []
    if goals:
        lines += [*bl.goal_table(goals), ""]
        missed = [g for g in goals if g.met is False]
        lines += [f"{sum(g.met is True for g in goals)} of {len(goals)} goals met" + (
            "; missed: " + "; ".join(f"{g.name} ({g.detail})" for g in missed) if missed else "") + ".", ""]
    else:
        lines += ["No peers results yet (`docs/bench/peers.json` missing): run `tools/bench.py --only peers`.", ""]
    lines += ["## Headline results", "", *peers_summary(peers), "",
              *bl.md_table(["topic", "headline", "value", "detail"], headline_rows(sections), "llll"), ""]

    lines += archived_runs(bench_dir, out.parent)
    table = []
    for t in TOPICS:
        r = record.get(t)
        when = ("this run" if t in now else f"earlier ({r['when']})") if r else "not by tools/bench.py"
        table.append([f"[{t}](#{t})" if t in sections else f"{t} (no section file)", when,
                      r["status"] if r else "", f"{r['wall_s'] / 60:.1f}" if r else "",
                      f"{r['peak_rss_mb']:.0f}" if r else "", f"`{r['command']}`" if r else "",
                      "" if (r and r["quick"]) or not TOPICS[t].why else TOPICS[t].why])
    lines += [METHOD, "## How each section was made", "",
              *bl.md_table(["section", "run by tools/bench.py", "status", "minutes", "peak RSS MiB", "command",
                            "why these arguments"], table, "lllrrll"), ""]
    for r in runs:
        if r["stderr_tail"]:
            lines += [f"`{r['topic']}` failed; its section below is from an earlier run (if any). Last lines:", "",
                      "```", *r["stderr_tail"], "```", ""]
    for t in TOPICS:
        if t in sections:
            lines += [f'<a id="{t}"></a>', "", sections[t].rstrip(), "", "---", ""]
    text = "\n".join(lines)
    out.write_text(text)
    return text


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="pass each topic's smoke-run switch")
    ap.add_argument("--only", default="", help=f"comma list of topics to rerun: {', '.join(TOPICS)}")
    ap.add_argument("--assemble-only", action="store_true", help="run nothing; rebuild BENCHMARKS.md from the sections")
    ap.add_argument("--timeout", type=float, default=2400, help="seconds per topic before it is stopped")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "BENCHMARKS.md")
    ap.add_argument("--bench-dir", type=Path, default=DEFAULT_DIR,
                    help="where the topic sections are written and read [docs/bench]")
    args = ap.parse_args(argv)
    only = [t for t in args.only.split(",") if t]
    unknown = [t for t in only if t not in TOPICS]
    if unknown:
        ap.error(f"unknown topic(s) {', '.join(unknown)}; known: {', '.join(TOPICS)}")
    todo = [] if args.assemble_only else (only or list(TOPICS))
    args.bench_dir.mkdir(parents=True, exist_ok=True)
    runs = [run_topic(t, args.quick, args.timeout, args.bench_dir) for t in todo]
    text = assemble(args.bench_dir, args.out, command=bl.command_line("tools/bench.py", argv), runs=runs)
    print(f"{args.out} written ({len(text.splitlines())} lines)", file=sys.stderr)
    return 0 if all(r["status"] == "ok" for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
