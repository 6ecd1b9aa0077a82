"""Profile results on disk: JSON (versioned schema), CSV and Markdown.

The JSON schema is described once, in ``FIELDS``; ``validate`` checks a document against it
and docs/profiler.md carries the same table (a test keeps them in step). Bump ``SCHEMA`` when a
field changes meaning or disappears; adding optional fields keeps the version.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from edgekd.errors import EdgekdError
from edgekd.textfmt import fmt

SCHEMA = "edgekd.profile/1"

#: (dotted key, JSON type, required, meaning). Types: object, array, string, number, integer, boolean, "x|null".
FIELDS: tuple[tuple[str, str, bool, str], ...] = (
    ("schema", "string", True, f'always "{SCHEMA}"'),
    ("created_at", "string", True, "UTC ISO-8601 time the profile finished"),
    ("command", "string", True, "the command line (or API call) that produced this file"),
    ("label", "string", True, "short name of the variant (target name, or auto-precision candidate)"),
    ("artifact", "object", True, "what was profiled"),
    ("artifact.path", "string", True, "path given by the user (bundle dir, .onnx, .xml, .engine)"),
    ("artifact.kind", "string", True, "bundle | onnx | openvino-ir | tensorrt-engine | hls-project"),
    ("artifact.file", "string|null", True, "model file actually loaded"),
    ("artifact.size_mb", "number|null", True, "size on disk of the model file(s) the runtime loads (MB = 1e6 bytes)"),
    ("artifact.sha256", "string|null", False, "sha256 of artifact.file (baseline provenance: which model was measured)"),
    ("target", "object", True, "resolved target: name, backend, device, options, budgets, profiling"),
    ("target.name", "string", True, "target name"),
    ("target.backend", "string", True, "backend registry name"),
    ("build", "object|null", True, "BuildResult of the backend (precision, notes, details), when known"),
    ("runtime", "object|null", True, "runner.describe(): provider/device/precision actually used"),
    ("environment", "object", True, "CPU model and flags, cores, OS, versions (edgekd.profiler.env.capture)"),
    ("environment.cpu.features", "object", True, "avx2/avx512/vnni/bf16/fp16/amx booleans from /proc/cpuinfo"),
    ("environment.versions", "object", True, "python, numpy, torch, onnxruntime, openvino, tensorrt... versions"),
    ("settings", "object", True, "warmup, warmup_s, iterations, duration_s, idle_gap_ms, batch_size, batches, layer_runs, "
                                 "call_path"),
    ("load_s", "number|null", True, "seconds to load/compile the artifact into a runner"),
    ("single_stream", "object|null", True, "single-stream scenario (null for FPGA C-sim or when skipped)"),
    ("single_stream.iterations", "integer", False, "measured queries"),
    ("single_stream.first_call_ms", "number", False, "first (cold) inference, measured separately from warm queries"),
    ("single_stream.p50_ms", "number", False, "median warm latency; also min/p90/p95/p99/max/mean/std/iqr _ms"),
    ("single_stream.p50_ci_ms", "object", False, "bootstrap CI of p50: estimate, low, high, confidence"),
    ("single_stream.p90_ci_ms", "object", False, "bootstrap CI of p90"),
    ("single_stream.p90_early_stop", "object", False, "MLPerf early-stopping p90: ok, estimate_ms, discarded, min_queries"),
    ("single_stream.p99_early_stop", "object", False, "same for p99 (needs >= 662 queries)"),
    ("single_stream.call_path", "string", False, "the timed call: bound (the runtime's lowest-overhead call, inputs "
                                                 "bound once: ORT IOBinding, a pre-set OpenVINO InferRequest) or plain "
                                                 "(runner.infer_unchecked(feeds)); --call-path"),
    ("single_stream.call_path_detail", "string", False, "what the timed call is, in words (the runner's own description)"),
    ("single_stream.binding_overhead_us", "number|null", False, "per-call cost of the plain call over the bound one "
                                                                "(median over interleaved rounds); null: no bound call"),
    ("single_stream.binding", "object|null", False, "how binding_overhead_us was measured: plain_p50_us, bound_p50_us, "
                                                    "range_us, rounds, calls_per_round, method"),
    ("single_stream.runtime_p50_ms", "number", False, "median of the runtime's own timing of each query, where it keeps "
                                                      "one (OpenVINO InferRequest.latency, what benchmark_app reports)"),
    ("single_stream.harness_overhead_us", "number", False, "median cost of the clock pair around a no-op Python call "
                                                           "(the loop's own cost, not the binding's: binding_overhead_us)"),
    ("single_stream.peak_rss_mb", "number", False, "process peak RSS (whole process, includes imports)"),
    ("single_stream.times_ms", "array", False, "every warm query's latency in ms, in order"),
    ("offline", "object|null", True, "offline scenario: {points: [{batch_size, p50_ms, throughput_per_s, ...}]}"),
    ("layers", "object|null", True, "per-layer table: source, runs, rows[], precision_mix"),
    ("fpga", "object|null", True, "FPGA only: analytical_estimate and csim blocks, each labelled"),
    ("accuracy", "object|null", True, "{value, metric, source} when known (bundle report), for the scatter plot"),
    ("inputs", "object|null", False, "what was fed: source (--inputs FILE, golden.npz, or generated with its seed) and "
                                     "each input's shape and dtype"),
    ("concurrent", "array|null", False, "offline with several requests in flight (--requests N,M): per N, "
                                        "throughput_per_s, p50/p90/p99 per query, call_path (profiler/scenarios.py)"),
    ("server", "object|null", False, "LoadGen Server scenario (--server-qps): Poisson arrivals, latency from the "
                                     "scheduled arrival, p50-p99.9, achieved_qps, p99_early_stop, valid and reason"),
)

_PY_TYPES: dict[str, type] = {"object": dict, "array": list, "string": str, "number": float, "integer": int,
                              "boolean": bool, "null": type(None)}


def _lookup(doc: dict[str, Any], dotted: str) -> tuple[bool, Any]:
    cur: Any = doc
    for part in dotted.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return False, None
        cur = cur[part]
    return True, cur


def validate(doc: Any, where: str = "profile JSON") -> dict[str, Any]:
    """Check ``doc`` against ``FIELDS``; returns it, or raises EdgekdError naming the key."""
    if not isinstance(doc, dict):
        raise EdgekdError("a profile result must be a JSON object", where=where)
    if doc.get("schema") != SCHEMA:
        raise EdgekdError(f"unsupported schema {doc.get('schema')!r}; this edgekd reads {SCHEMA}", where=where,
                          hint="re-run `edgekd profile` with this version of edgekd")
    for key, typ, required, _ in FIELDS:
        parent, _, _leaf = key.rpartition(".")
        if parent:
            found_parent, parent_val = _lookup(doc, parent)
            if not found_parent or parent_val is None:
                continue  # a nullable block that is null carries no children
        found, value = _lookup(doc, key)
        if not found:
            if required:
                raise EdgekdError(f"missing key {key!r} ({typ})", where=where)
            continue
        names = typ.split("|")
        allowed = tuple(_PY_TYPES[n] for n in names if n != "number") + ((int, float) if "number" in names else ())
        # bool is an int in Python; JSON true/false is only a boolean
        allowed_ok = isinstance(value, allowed) and (not isinstance(value, bool) or "boolean" in names)
        if not allowed_ok:
            raise EdgekdError(f"key {key!r} should be {typ}, got {type(value).__name__}", where=where)
    return doc


def load(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if p.is_dir() and (p / "profile.json").is_file():
        p = p / "profile.json"
    if not p.is_file():
        raise EdgekdError("profile result not found", where=str(path), hint="pass a profile.json written by `edgekd profile`")
    try:
        doc = json.loads(p.read_text())
    except json.JSONDecodeError as exc:
        raise EdgekdError(f"not valid JSON: {exc}", where=str(p)) from None
    return validate(doc, where=str(p))


def schema_markdown() -> str:
    lines = ["| key | type | required | meaning |", "|---|---|---|---|"]
    lines += [f"| `{k}` | {t} | {'yes' if r else 'no'} | {m} |" for k, t, r, m in FIELDS]
    return "\n".join(lines)


# ------------------------------------------------------------------ writers


def write_json(doc: dict[str, Any], path: Path) -> Path:
    validate(doc, where=str(path))
    path.write_text(json.dumps(doc, indent=1, default=str) + "\n")
    return path


SUMMARY_KEYS = ("iterations", "first_call_ms", "min_ms", "p50_ms", "p90_ms", "p95_ms", "p99_ms", "max_ms", "mean_ms",
                "std_ms", "iqr_ms", "throughput_per_s", "call_path", "binding_overhead_us", "runtime_p50_ms",
                "harness_overhead_us", "peak_rss_mb")


def write_csv(doc: dict[str, Any], out_dir: Path) -> list[Path]:
    """summary.csv (one row), latency.csv (every query), layers.csv, offline.csv -- those that apply."""
    written = []
    ss = doc.get("single_stream") or {}
    path = out_dir / "summary.csv"
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["label", "target", "backend", "precision", "batch_size", *SUMMARY_KEYS, "p50_ci_low_ms",
                    "p50_ci_high_ms", "p90_early_stop_ms", "size_mb"])
        ci = ss.get("p50_ci_ms") or {}
        w.writerow([doc["label"], doc["target"]["name"], doc["target"]["backend"], (doc.get("build") or {}).get("precision"),
                    ss.get("batch_size"), *[ss.get(k) for k in SUMMARY_KEYS], ci.get("low"), ci.get("high"),
                    (ss.get("p90_early_stop") or {}).get("estimate_ms"), doc["artifact"].get("size_mb")])
    written.append(path)
    if ss.get("times_ms"):
        path = out_dir / "latency.csv"
        with path.open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["query", "latency_ms"])
            w.writerows(enumerate(ss["times_ms"]))
        written.append(path)
    layers = doc.get("layers") or {}
    if layers.get("rows"):
        path = out_dir / "layers.csv"
        with path.open("w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(layers["rows"][0]))
            w.writeheader()
            w.writerows(layers["rows"])
        written.append(path)
    points = (doc.get("offline") or {}).get("points") or []
    if points:
        path = out_dir / "offline.csv"
        keys = ["batch_size", "iterations", "p50_ms", "p90_ms", "per_sample_ms", "throughput_per_s", "skipped"]
        with path.open("w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=keys, extrasaction="ignore")
            w.writeheader()
            w.writerows(points)
        written.append(path)
    return written


def _f(v: Any, d: int = 3) -> str:
    return fmt(v, d)


def _scenario_lines(doc: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    if doc.get("concurrent"):
        lines += ["## Offline, several requests in flight", "", f"Call: {doc['concurrent'][0]['call_path'].split(':')[0]}",
                  "", "| requests | samples/s | p50 ms | p90 ms | p99 ms | queries |", "|---:|---:|---:|---:|---:|---:|"]
        lines += [f"| {c['requests']} | {_f(c['throughput_per_s'], 1)} | {_f(c['p50_ms'])} | {_f(c['p90_ms'])} | "
                  f"{_f(c['p99_ms'])} | {c['queries']} |" for c in doc["concurrent"]]
        lines.append("")
    srv = doc.get("server")
    if srv:
        verdict = {True: "VALID", False: "INVALID", None: "not judged"}[srv.get("valid")]
        lines += ["## Server scenario (Poisson arrivals)", "",
                  f"- {srv['queries']} queries at {srv['target_qps']:g} QPS for {srv['duration_s']:g} s "
                  f"(achieved {_f(srv.get('achieved_qps'), 1)} QPS), {srv['requests']} requests; {srv['call_path']}",
                  f"- latency from the scheduled arrival: p50 {_f(srv['p50_ms'])}, p90 {_f(srv['p90_ms'])}, "
                  f"p99 {_f(srv['p99_ms'])}, p99.9 {_f(srv['p99_9_ms'])} ms; {srv['issued_late']} issued > 1 ms late",
                  f"- **{verdict}**: {srv['reason']}", ""]
    return lines


def _cache_note(doc: dict[str, Any]) -> str:
    """Whether the load time includes compiling (an OpenVINO compile cache hit makes it a warm load)."""
    cache = (doc.get("runtime") or {}).get("compile_cache") or {}
    return f" ({cache['state']}, CACHE_DIR {cache.get('mb')} of {cache.get('max_mb')} MB)" if cache.get("state") else ""


def binding_line(ss: dict[str, Any]) -> str:
    """One sentence on the Python binding's per-call cost (console and profile.md)."""
    b = ss.get("binding")
    runtime = ss.get("runtime_p50_ms")
    own = f"; the runtime's own timing p50 {_f(runtime * 1e3, 1)} µs" if runtime is not None else ""
    if not b:
        return "binding overhead: not measured (the runner has no bound call)" + own
    lo, hi = b["range_us"]
    return (f"binding overhead {_f(b['binding_overhead_us'], 1)} µs/query [{_f(lo, 1)}, {_f(hi, 1)}] (plain call "
            f"{_f(b['plain_p50_us'], 1)} µs - bound call {_f(b['bound_p50_us'], 1)} µs, {b['rounds']} interleaved "
            f"rounds){own}")


def inputs_line(inputs: dict[str, Any]) -> str:
    """``--inputs feeds.npz: input_ids [1, 16] int64, mask [1, 16] int64`` (a profile's ``inputs`` block)."""
    shapes = ", ".join(f"{k} {v['shape']} {v['dtype']}" for k, v in (inputs.get("inputs") or {}).items())
    return f"{inputs.get('source')}: {shapes}"


def markdown(doc: dict[str, Any], plots: list[str] | None = None, top: int = 15) -> str:
    t, env = doc["target"], doc["environment"]
    cpu = env.get("cpu", {})
    feats = ", ".join(k for k, v in (cpu.get("features") or {}).items() if v) or "unknown"
    ver = env.get("versions", {})
    lines = [f"# edgekd profile: {doc['label']}", "",
             f"- artifact: `{doc['artifact']['path']}` ({doc['artifact']['kind']}, {_f(doc['artifact'].get('size_mb'))} MB)",
             f"- target: `{t['name']}` (backend {t['backend']}, device {t.get('device')}); "
             f"precision {(doc.get('build') or {}).get('precision', '?')}",
             f"- CPU: {cpu.get('model')} ({cpu.get('logical_cpus')} logical CPUs, affinity {cpu.get('affinity_cpus')}); "
             f"features: {feats}",
             f"- OS: {env['os']['system']} {env['os']['release']}; python {ver.get('python')}, "
             + ", ".join(f"{k} {v}" for k, v in ver.items() if k not in ("python", "edgekd")),
             f"- command: `{doc['command']}`", f"- created: {doc['created_at']}"]
    if doc.get("inputs"):
        lines.append(f"- inputs: {inputs_line(doc['inputs'])}")
    lines.append("")
    ss = doc.get("single_stream")
    if ss:
        es90 = ss.get("p90_early_stop") or {}
        es99 = ss.get("p99_early_stop") or {}
        ci50, ci90 = ss.get("p50_ci_ms") or {}, ss.get("p90_ci_ms") or {}
        lines += [f"## Single-stream latency (batch {ss.get('batch_size')}, {ss.get('iterations')} queries)", "",
                  "| statistic | ms |", "|---|---:|"]
        for key in ("first_call_ms", "min_ms", "p50_ms", "p90_ms", "p95_ms", "p99_ms", "max_ms", "mean_ms", "std_ms",
                    "iqr_ms"):
            lines.append(f"| {key[:-3]} | {_f(ss.get(key))} |")
        lines += ["",
                  f"- p50 95% CI: [{_f(ci50.get('low'))}, {_f(ci50.get('high'))}] ms; "
                  f"p90 95% CI: [{_f(ci90.get('low'))}, {_f(ci90.get('high'))}] ms",
                  "- early-stopping p90 (99% confidence): "
                  + (f"{_f(es90.get('estimate_ms'))} ms, {es90.get('discarded')} slowest discarded" if es90.get("ok")
                     else f"not available: {es90.get('queries')} < {es90.get('min_queries')} queries"),
                  "- early-stopping p99: " + (f"{_f(es99.get('estimate_ms'))} ms" if es99.get("ok")
                                               else f"not available: needs {es99.get('min_queries')} queries"),
                  f"- timed call: {ss.get('call_path', 'plain')} ({ss.get('call_path_detail') or 'not recorded'})",
                  f"- {binding_line(ss)}",
                  f"- throughput {_f(ss.get('throughput_per_s'), 1)}/s; timer cost (clock pair around a no-op call) "
                  f"{_f(ss.get('harness_overhead_us'), 2)} µs/query; peak RSS {_f(ss.get('peak_rss_mb'), 1)} MB; "
                  f"load {_f(doc.get('load_s'))} s{_cache_note(doc)}", ""]
    points = (doc.get("offline") or {}).get("points") or []
    if points:
        lines += ["## Offline (batch sweep)", "", "| batch | p50 ms | per-sample ms | samples/s |", "|---:|---:|---:|---:|"]
        for p in points:
            if "skipped" in p:
                lines.append(f"| {p['batch_size']} | skipped: {p['skipped']} | | |")
            else:
                lines.append(f"| {p['batch_size']} | {_f(p['p50_ms'])} | {_f(p['per_sample_ms'])} | "
                             f"{_f(p['throughput_per_s'], 1)} |")
        lines.append("")
    lines += _scenario_lines(doc)
    layers = doc.get("layers")
    if layers and layers.get("rows"):
        mix = ", ".join(f"{k} {v * 100:.1f}%" for k, v in layers.get("precision_mix", {}).items())
        lines += [f"## Per-layer time (top {top}; source: {layers['source']}, {layers['runs']} runs)", "",
                  f"Time share by precision: {mix}", "",
                  "| layer | op type | kernel / exec type | precision | ms | share |", "|---|---|---|---|---:|---:|"]
        for r in layers["rows"][:top]:
            lines.append(f"| `{r['layer']}` | {r['op_type']} | {r['exec_type']} | {r['precision']} | "
                         f"{_f(r['time_ms'], 4)} | {r['share'] * 100:.1f}% |")
        lines.append("")
    fpga = doc.get("fpga")
    if fpga:
        lines += ["## FPGA", ""]
        for key, title in (("analytical_estimate", "Analytical estimate (no vendor synthesis run)"),
                           ("csim", "C simulation (g++ on this host; functional, not FPGA timing)")):
            block = fpga.get(key)
            lines += [f"### {title}", ""]
            if block:
                lines += [f"- {k}: {_f(v)}" for k, v in block.items() if not isinstance(v, (dict, list))]
            else:
                lines.append("- not available")
            lines.append("")
    if plots:
        lines += ["## Plots", ""] + [f"![{p}]({p})" for p in plots] + [""]
    return "\n".join(lines)


#: every file ``write_all`` may write besides the plots (``plots.PROFILE_PLOTS``)
PROFILE_FILES = ("profile.json", "summary.csv", "latency.csv", "layers.csv", "offline.csv", "profile.md")


def write_all(doc: dict[str, Any], out_dir: Path, *, plots: bool = True) -> dict[str, list[str]]:
    """profile.json, CSVs, PNGs and profile.md into ``out_dir``; returns the written file names. Files of an
    earlier profile in the same folder are removed first (only the names this writes): a layers.csv or a plot this
    run does not produce would otherwise sit next to the new profile.json as if it belonged to it."""
    from edgekd.profiler.plots import PROFILE_PLOTS

    validate(doc, where=str(out_dir / "profile.json"))  # a bad document leaves the earlier profile in place
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in (*PROFILE_FILES, *PROFILE_PLOTS):
        (out_dir / name).unlink(missing_ok=True)
    write_json(doc, out_dir / "profile.json")
    csvs = write_csv(doc, out_dir)
    pngs: list[Path] = []
    if plots:
        from edgekd.profiler import plots as plotting

        pngs = plotting.plot_profile(doc, out_dir)
    (out_dir / "profile.md").write_text(markdown(doc, [p.name for p in pngs]))
    return {"json": ["profile.json"], "csv": [p.name for p in csvs], "png": [p.name for p in pngs],
            "md": ["profile.md"]}
