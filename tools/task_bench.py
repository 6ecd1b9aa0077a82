"""Benchmark (issue 15): every built-in task through teacher, no-teacher, KD, INT8 and NNCF PTQ, side by side.

For each built-in task (edgekd/task_models.TASK_PAIRS) and seed, in one run:

- **teacher**: the built-in teacher (trained once for its task and cached; seed 0 for every student seed);
- **no-teacher**: the student trained by recipe ``kd`` with ``distill.loss = "ce"`` (labels only);
- **KD**: the student trained by recipe ``kd`` (the task's per-output KD losses);
- **int8-kd** and **channels50-int8-kd**: those recipes *without their distill step*, started from the KD
  student above (the recipes' own comment: "drop the distill step when --model is already a trained student"),
  so INT8 is compared with the very FP32 model it quantizes. Multi-output tasks (detection) are refused by the
  pipeline before training; the refusal text is the cell;
- **NNCF PTQ**: ``nncf.quantize`` on the KD student's exported ``model.onnx`` with the calibration split (the first
  ``calibration_samples`` training samples, as edgekd's quantize pass), run by ONNX Runtime (edgekd's exact
  session) and OpenVINO on that ONNX file, scored by ``edgekd.tasks.task_metric``.

Every row except NNCF is an ``edgekd.pipeline.compress`` run (Python API, ``measure=False``) to targets ``cpu``
(ONNX Runtime) and ``openvino-cpu``; its cells are ``report["targets"][t]["accuracy"]``, the task metric on the
test split. Epochs are the recipes' own times ``--epochs`` (a scale, printed with the results). Layers left
FP32 and the int8 MAC share come from the quantize pass report (edgekd.quant.int8.int8_mac_report), and from the
same function on NNCF's file.

    PYTHONPATH=$PWD .venv/bin/python tools/task_bench.py                        # default: 1 seed, epochs x 0.25
    PYTHONPATH=$PWD .venv/bin/python tools/task_bench.py --seeds 3 --epochs 1   # the issue's full benchmark
    ... --tasks segmentation,keypoints,detection:teacher+kd      # a task's rows after ':' (joined by '+')
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TARGETS = ("cpu", "openvino-cpu")
ROWS = ("teacher", "no-teacher", "kd", "int8-kd", "channels50-int8-kd", "nncf-ptq")
ROW_TITLES = {"teacher": "teacher", "no-teacher": "no teacher (CE)", "kd": "KD", "int8-kd": "int8-kd",
              "channels50-int8-kd": "channels50-int8-kd", "nncf-ptq": "NNCF PTQ of KD"}


@dataclass(frozen=True)
class TaskCase:
    """One built-in task: its dataset, preset and teacher / student pair."""

    key: str
    dataset: str
    task: str
    teacher: str
    student: str


def task_cases() -> dict[str, TaskCase]:
    from edgekd.models import TASK_OF_DATASET
    from edgekd.task_models import TASK_PAIRS

    cases = {}
    for dataset, (teacher, student, _shape, _dtype) in TASK_PAIRS.items():
        task = TASK_OF_DATASET[dataset]
        key = "signal-classification" if dataset == "signal-synth" else task
        cases[key] = TaskCase(key, dataset, task, teacher, student)
    return cases


@dataclass
class Settings:
    seeds: int = 1
    epochs: float = 0.25
    work: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="task-bench-")))
    log: Callable[[str], None] = lambda text: print(text, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- recipes with scaled epochs


def _scaled(recipe: str, scale: float, extra: Sequence[str] = (), drop_distill: bool = False) -> Any:
    """Recipe ``recipe`` with every ``epochs`` (the passes' and their finetune tables') times ``scale`` (at least
    1), plus ``extra`` --set overrides; without its distill pass when ``drop_distill``."""
    from edgekd.config import load_recipe

    base = load_recipe(recipe).to_dict()
    sets = []
    counts: dict[str, int] = {}
    for p in base["passes"]:
        counts[p["name"]] = counts.get(p["name"], 0) + 1
    seen: dict[str, int] = {}
    for p in base["passes"]:
        name = p["name"]
        ref = name if counts[name] == 1 else f"{name}[{seen.get(name, 0)}]"
        seen[name] = seen.get(name, 0) + 1
        if isinstance(p.get("epochs"), int):
            sets.append(f"{ref}.epochs={max(1, math.ceil(p['epochs'] * scale))}")
        if isinstance(p.get("finetune"), dict) and isinstance(p["finetune"].get("epochs"), int):
            sets.append(f"{ref}.finetune.epochs={max(1, math.ceil(p['finetune']['epochs'] * scale))}")
    loaded = load_recipe(recipe, [*sets, *extra])
    if drop_distill:
        loaded = replace(loaded, passes=tuple(p for p in loaded.passes if p.name != "distill"))
    return loaded


def epochs_summary(scale: float) -> dict[str, list[str]]:
    """Per recipe: the epochs each pass runs at this scale (for the output's header)."""
    out = {}
    for name in ("kd", "int8-kd", "channels50-int8-kd"):
        recipe = _scaled(name, scale).to_dict()
        out[name] = [f"{p['name']} {p['epochs']}" if "epochs" in p else f"{p['name']}.finetune {p['finetune']['epochs']}"
                     for p in recipe["passes"] if "epochs" in p or isinstance(p.get("finetune"), dict)]
    return out


# ---------------------------------------------------------------- rows


def _error_text(exc: BaseException) -> str:
    message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    where = getattr(exc, "where", None)
    text = f"{type(exc).__name__}: {message}" + (f" ({where})" if where else "")
    return " ".join(text.split()).replace("|", "/")  # one table cell: no line breaks, no column separators


def _cells(report: dict[str, Any]) -> dict[str, Any]:
    """The task metric per target of a compress report, and what its quantize pass left in FP32."""
    cells: dict[str, Any] = {}
    for target in TARGETS:
        entry = report.get("targets", {}).get(target, {})
        value = entry.get("accuracy")
        cells[target] = value if value is not None else "failed: " + "; ".join(entry.get("reasons") or ["no metric"])
        if entry.get("parity_ok") is False:
            cells[f"{target}_parity"] = "; ".join(entry.get("reasons") or [])[:300]
    cells["torch"] = report.get("accuracy", {}).get("student_after")
    quant = report.get("passes", {}).get("quantize")
    if quant:
        cells["int8_mac_fraction"] = quant.get("int8_mac_fraction")
        cells["float_layers"] = quant.get("float_layers")
        cells["kept_higher_precision"] = [k.get("layer") for k in quant.get("kept_higher_precision", [])]
    prune = report.get("passes", {}).get("prune_channels")
    if prune:
        cells["params"] = report.get("params", {}).get("student_after")
    return cells


def _compress(model: Any, case: TaskCase, recipe: Any, out: Path, seed: int, teacher: Any = None) -> dict[str, Any]:
    from edgekd.pipeline import CompressOptions, compress

    report = compress(model, data=f"builtin:{case.dataset}", recipe=recipe, task=case.task, teacher=teacher,
                      targets=list(TARGETS), out=out, options=CompressOptions(seed=seed, measure=False))
    return report


def _train(case: TaskCase, student: Any, teacher: Any, data: Any, loss: str | None, scale: float, seed: int,
           work: Path) -> Any:
    """The student after recipe ``kd``'s distill pass (``loss`` overrides distill.loss), run by edgekd's pass."""
    from edgekd.artifact import Artifact
    from edgekd.passes import PASSES, PassContext

    recipe = _scaled("kd", scale, [f'distill.loss="{loss}"'] if loss else [])
    spec = next(p for p in recipe.passes if p.name == "distill")
    ctx = PassContext(teacher=teacher if loss != "ce" else None, data=data, seed=seed, workdir=work)
    art = Artifact(kind="torch", payload=student, history=(f"load:builtin:{case.student}",), meta={})
    return PASSES.get("distill").fn(art, spec.config, ctx).payload


def _row(name: str, fn: Callable[[], dict[str, Any]], log: Callable[[str], None], where: str) -> dict[str, Any]:
    started = time.perf_counter()
    log(f"[task-bench] {where}: {name} ...")
    try:
        cells = fn()
    except Exception as exc:  # a combination that fails is a finding: its error text is the cell
        text = _error_text(exc)
        if not hasattr(exc, "message"):
            log(traceback.format_exc())
        cells = {t: f"error: {text}" for t in TARGETS} | {"error": text}
    cells["seconds"] = round(time.perf_counter() - started, 1)
    shown = ", ".join(f"{t} {_fmt(cells.get(t))}" for t in TARGETS)
    log(f"[task-bench] {where}: {name}: {shown} ({cells['seconds']:.0f} s)")
    return {"row": name, **cells}


def run_task(case: TaskCase, seed: int, settings: Settings, rows: Sequence[str] = ROWS) -> dict[str, Any]:
    """Every requested row of one task and seed. Returns {"task", "seed", "metric", "rows": [...]}."""
    import torch

    from edgekd.data import load_data
    from edgekd.models import load_model

    where = f"{case.key} seed {seed}"
    work = settings.work / f"{case.key}-s{seed}"
    work.mkdir(parents=True, exist_ok=True)
    settings.log(f"[task-bench] {where}: teacher builtin:{case.teacher} (trained once and cached)")
    teacher = load_model(f"builtin:{case.teacher}").module
    data = load_data(f"builtin:{case.dataset}")
    data.task = case.task  # resolved against the student by the distill pass (edgekd.train.task_losses.task_for)
    result: dict[str, Any] = {"task": case.key, "dataset": case.dataset, "preset": case.task, "seed": seed, "rows": []}
    trained: dict[str, Any] = {}
    reports: dict[str, dict[str, Any]] = {}

    def fp32_row(label: str, module: Any) -> dict[str, Any]:
        reports[label] = _compress(module, case, "fp32", work / label, seed)
        return _cells(reports[label])

    def student_row(label: str, loss: str | None) -> dict[str, Any]:
        torch.manual_seed(seed)  # the CE and KD students of a seed share their initialisation
        student = load_model(f"builtin:{case.student}?seed={seed}").module
        trained[label] = _train(case, student, teacher, data, loss, settings.epochs, seed, work)
        return fp32_row(label, trained[label])

    def int8_row(recipe_name: str) -> dict[str, Any]:
        if "kd" not in trained:
            raise RuntimeError("needs the kd row (it starts from the KD student)")
        recipe = _scaled(recipe_name, settings.epochs, drop_distill=True)
        report = _compress(copy.deepcopy(trained["kd"]), case, recipe, work / recipe_name, seed, teacher=teacher)
        return _cells(report)

    def nncf_row() -> dict[str, Any]:
        if "kd" not in reports:
            raise RuntimeError("needs the kd row (it quantizes the KD student's model.onnx)")
        return nncf_ptq(work / "kd" / "model.onnx", reports["kd"], data, work / "nncf")

    makers: dict[str, Callable[[], dict[str, Any]]] = {
        "teacher": lambda: fp32_row("teacher", teacher), "no-teacher": lambda: student_row("no-teacher", "ce"),
        "kd": lambda: student_row("kd", None), "int8-kd": lambda: int8_row("int8-kd"),
        "channels50-int8-kd": lambda: int8_row("channels50-int8-kd"), "nncf-ptq": nncf_row}
    for name in ROWS:
        if name in rows:
            result["rows"].append(_row(name, makers[name], settings.log, where))
    task = next((r["task"] for r in reports.values() if r.get("task")), None)
    if task:
        result["metric"] = {k: task[k] for k in ("metric", "higher_is_better", "unit")}
    return result


# ---------------------------------------------------------------- NNCF PTQ (the peer)


def nncf_ptq(fp32_onnx: Path, kd_report: dict[str, Any], data: Any, out: Path) -> dict[str, Any]:
    """nncf.quantize of ``fp32_onnx`` (ONNX backend) on the calibration split, scored on ORT and OpenVINO."""
    import nncf
    import onnx

    from edgekd.export import onnx_outputs_all
    from edgekd.quant.int8 import int8_mac_report
    from edgekd.tasks import TaskSpec, task_metric

    spec = TaskSpec.from_dict(kd_report["task"])
    samples = int(_scaled("int8-kd", 1.0).to_dict()["passes"][-1].get("calibration_samples", 512))
    model = onnx.load(str(fp32_onnx))
    input_name = model.graph.input[0].name
    calib = data.x_train[:samples]
    started = time.perf_counter()
    quantized = nncf.quantize(model, nncf.Dataset([{input_name: calib[i : i + 1]} for i in range(len(calib))]),
                              subset_size=len(calib))
    seconds = time.perf_counter() - started
    out.mkdir(parents=True, exist_ok=True)
    path = out / "model.nncf.onnx"
    onnx.save(quantized, str(path))
    names = [o.name for o in spec.outputs]

    def score(outputs: list[np.ndarray]) -> float | None:
        return task_metric(spec, dict(zip(names, outputs, strict=True)), data.y_test, data.x_test)

    cells: dict[str, Any] = {"nncf_seconds": round(seconds, 1), "calibration_samples": len(calib)}
    cells["cpu"] = score(list(onnx_outputs_all(path, data.x_test).values()))
    try:
        cells["openvino-cpu"] = score(_openvino_outputs(path, data.x_test))
    except Exception as exc:  # OpenVINO failing on NNCF's file is a finding, not a crash
        cells["openvino-cpu"] = f"error: {_error_text(exc)}"
    macs = int8_mac_report(path)
    cells["int8_mac_fraction"] = macs["int8_mac_fraction"]
    cells["float_layers"] = macs["float_layers"]
    return cells


def _openvino_outputs(path: Path, x: np.ndarray, batch: int = 256) -> list[np.ndarray]:
    import openvino as ov

    compiled = ov.Core().compile_model(str(path), "CPU")
    parts = [compiled(x[i : i + batch]) for i in range(0, len(x), batch)]
    return [np.concatenate([np.asarray(p[port]) for p in parts]) for port in compiled.outputs]


# ---------------------------------------------------------------- summary, table, markdown


def _fmt(value: Any) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"{value:.4g}" if abs(value) < 0.1 else f"{value:.2f}"
    return "–" if value is None else str(value)


def _numbers(results: list[dict[str, Any]], task: str, row: str, target: str) -> list[float]:
    return [r[target] for res in results if res["task"] == task for r in res["rows"]
            if r["row"] == row and isinstance(r.get(target), (int, float))]


def _cell(results: list[dict[str, Any]], task: str, row: str, target: str) -> str:
    values = _numbers(results, task, row, target)
    found = [r for res in results if res["task"] == task for r in res["rows"] if r["row"] == row]
    if values:
        text = f"{values[0]:.2f}" if len(values) == 1 else f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"
        failed = sum(1 for r in found if f"{target}_parity" in r)
        text += f" (parity failed, {failed}/{len(found)} seeds)" if failed else ""
        return text if len(values) == len(found) else text + " (some seeds failed)"
    texts = [str(r.get(target)) for res in results if res["task"] == task for r in res["rows"] if r["row"] == row]
    return texts[0].replace("|", "/")[:240] if texts else "not run"


def verdicts(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The issue's aims per task and target: KD beats no-teacher; INT8 within 1 % relative of the FP32 KD student."""
    out = []
    for task in dict.fromkeys(r["task"] for r in results):
        metric = next((r["metric"] for r in results if r["task"] == task and r.get("metric")), None)
        if metric is None:
            continue
        higher = metric["higher_is_better"]
        for target in TARGETS:
            kd = _numbers(results, task, "kd", target)
            ce = _numbers(results, task, "no-teacher", target)
            if kd and ce:
                better = statistics.mean(kd) > statistics.mean(ce) if higher else statistics.mean(kd) < statistics.mean(ce)
                out.append({"task": task, "target": target, "aim": "KD beats no-teacher", "holds": better,
                            "kd": statistics.mean(kd), "no_teacher": statistics.mean(ce)})
            for row in ("int8-kd", "channels50-int8-kd", "nncf-ptq"):
                q = _numbers(results, task, row, target)
                if kd and q:
                    ref, val = statistics.mean(kd), statistics.mean(q)
                    worse = (ref - val) if higher else (val - ref)
                    rel = 100.0 * worse / abs(ref) if ref else math.inf
                    out.append({"task": task, "target": target, "aim": f"{row} within 1 % of FP32 KD", "holds": rel <= 1.0,
                                "kd": ref, "int8": val, "relative_drop_pct": rel})
    return out


def markdown(results: list[dict[str, Any]], header: list[str]) -> str:
    lines = [*header, ""]
    for task in dict.fromkeys(r["task"] for r in results):
        metric = next((r["metric"] for r in results if r["task"] == task and r.get("metric")), None)
        what = (f"{metric['metric']} ({metric['unit'] or 'no unit'}, {'higher' if metric['higher_is_better'] else 'lower'}"
                " is better)") if metric else "metric unknown (no row ran)"
        seeds = sorted({r["seed"] for r in results if r["task"] == task})
        lines += [f"### {task}: {what}, seeds {', '.join(map(str, seeds))}", "",
                  "| row | ORT (`cpu`) | OpenVINO (`openvino-cpu`) | int8 MAC share | layers left FP32 | s |",
                  "|---|---:|---:|---:|---|---:|"]
        for row in ROWS:
            found = [r for res in results if res["task"] == task for r in res["rows"] if r["row"] == row]
            if not found:
                continue
            first = found[0]
            share = first.get("int8_mac_fraction")
            floats = first.get("float_layers")
            ort, ov = _cell(results, task, row, "cpu"), _cell(results, task, row, "openvino-cpu")
            ov = "same error" if ov == ort and not _numbers(results, task, row, "cpu") else ov
            lines.append(f"| {ROW_TITLES[row]} | {ort} | {ov}"
                         f" | {f'{100 * share:.1f} %' if isinstance(share, float) else '–'}"
                         f" | {', '.join(floats) if floats else ('none' if floats == [] else '–')}"
                         f" | {statistics.mean(r['seconds'] for r in found):.0f} |")
        lines.append("")
    checks = verdicts(results)
    if checks:
        lines += ["Aims:", ""]
        for v in checks:
            if "no_teacher" in v:
                lines.append(f"- {v['task']} / {v['target']}: KD beats no-teacher: **{'yes' if v['holds'] else 'no'}** "
                             f"(KD {v['kd']:.3f} vs no-teacher {v['no_teacher']:.3f})")
            else:
                lines.append(f"- {v['task']} / {v['target']}: {v['aim']}: **{'yes' if v['holds'] else 'no'}** "
                             f"({v['int8']:.3f} vs {v['kd']:.3f}, {v['relative_drop_pct']:+.2f} % relative drop)")
        lines.append("")
    return "\n".join(lines)


def header_lines(command: str, seconds: float, scale: float, epochs: dict[str, list[str]]) -> list[str]:
    import platform

    return [f"Command: `{command.strip()}`; {platform.machine()}, whole run {seconds / 60:.1f} min.", "",
            f"Epochs (recipe epochs x {scale:g}): " + "; ".join(f"{k}: {', '.join(v)}" for k, v in epochs.items())
            + ". int8-kd and channels50-int8-kd start from the KD student (their distill step dropped)."]


def render_saved(saved: list[dict[str, Any]]) -> str:
    """The markdown of one or more saved runs (their results side by side, each run's command in the header)."""
    header: list[str] = []
    for run_json in saved:
        header += header_lines(run_json["command"], run_json["seconds"], run_json["epochs_scale"], run_json["epochs"])
        header += ["", "**This run was stopped before it finished: the results it had.**", ""] if run_json.get("partial") else [""]
    return markdown([r for run_json in saved for r in run_json["results"]], header[:-1])


def parse_tasks(text: str, cases: dict[str, TaskCase]) -> list[tuple[TaskCase, tuple[str, ...]]]:
    """``segmentation,detection:teacher+kd`` -> [(case, rows)]; a clear error naming the unknown task or row."""
    picked = []
    for item in filter(None, (t.strip() for t in text.split(","))):
        key, _, rows_text = item.partition(":")
        if key not in cases:
            raise SystemExit(f"task_bench: unknown task {key!r} in --tasks; tasks: {', '.join(cases)}")
        rows = tuple(filter(None, rows_text.split("+"))) or ROWS
        bad = [r for r in rows if r not in ROWS]
        if bad:
            raise SystemExit(f"task_bench: unknown row(s) {bad} for {key} in --tasks; rows: {'+'.join(ROWS)}")
        picked.append((cases[key], rows))
    return picked


def run(picked: list[tuple[TaskCase, tuple[str, ...]]], settings: Settings,
        after_each: Callable[[list[dict[str, Any]]], None] = lambda _results: None) -> list[dict[str, Any]]:
    """Every task and seed in order; ``after_each`` sees the results so far (the JSON is rewritten after each, so a
    run that is stopped keeps what it measured)."""
    results: list[dict[str, Any]] = []
    for case, rows in picked:
        for seed in range(settings.seeds):
            results.append(run_task(case, seed, settings, rows))
            after_each(results)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    import shlex

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cases = task_cases()
    p.add_argument("--tasks", default=",".join(cases), help=f"comma list of {', '.join(cases)}; "
                   f"'TASK:row+row' runs only those rows ({'+'.join(ROWS)})")
    p.add_argument("--seeds", type=int, default=1, help="student seeds 0..N-1 (the issue's full benchmark: 3)")
    p.add_argument("--epochs", type=float, default=0.25, help="scale on every epoch count of the recipes (1 = as shipped)")
    p.add_argument("--out", default=str(ROOT / "docs" / "bench" / "tasks.md"), help="markdown file to write")
    p.add_argument("--json", default=None, help="JSON file to write (default: --out with .json)")
    p.add_argument("--work", default=None, help="folder for the bundles (default: a temporary folder)")
    p.add_argument("--from-json", nargs="+", default=None, metavar="JSON",
                   help="render the markdown of earlier runs' JSON files (one run made in parts; runs nothing)")
    args = p.parse_args(argv)
    if args.from_json:
        print(render_saved([json.loads(Path(f).read_text()) for f in args.from_json]))
        return 0
    picked = parse_tasks(args.tasks, cases)
    settings = Settings(seeds=args.seeds, epochs=args.epochs)
    if args.work:
        settings.work = Path(args.work)
    epochs = epochs_summary(args.epochs)
    started = time.perf_counter()
    command = "PYTHONPATH=$PWD .venv/bin/python tools/task_bench.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    json_path = Path(args.json) if args.json else out.with_suffix(".json")

    def save(results: list[dict[str, Any]], partial: bool = True) -> None:
        json_path.write_text(json.dumps({"command": command, "seconds": time.perf_counter() - started,
                                         "epochs_scale": args.epochs, "epochs": epochs, "partial": partial,
                                         "results": results, "verdicts": verdicts(results)}, indent=1, default=str))

    results = run(picked, settings, save)
    save(results, partial=False)
    text = markdown(results, header_lines(command, time.perf_counter() - started, args.epochs, epochs))
    out.write_text("# Task benchmark (issue 15)\n\n" + text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
