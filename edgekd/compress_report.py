"""Human-readable views of a compress run's report (report.json): report.md and the terminal summary table.

Not to be confused with ``edgekd.profiler.report`` (latency profile results)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgekd.textfmt import fmt as _fmt


def quantize_section(report: dict[str, Any], target: str) -> dict[str, Any] | None:
    """The quantize pass report that made ``target``'s model: ``quantize`` or, for another numerics group,
    ``quantize@<its targets>`` (see pipeline._run_per_numerics_group)."""
    passes = report.get("passes") or {}
    for key, section in passes.items():
        if key.startswith("quantize@") and target in key.partition("@")[2].split(","):
            return section
    return passes.get("quantize")


def _precision(report: dict[str, Any], target: str, precision: str) -> str:
    """The backend's kernel precision plus the weight/activation bit widths: W4 weights run on int8 kernels, and
    "int8" alone would hide the 4 bits."""
    section = quantize_section(report, target)
    if section and section.get("scheme") and ("int" in precision or precision == "mixed"):
        return f"{precision} ({section['scheme']})"
    return precision


def target_rows(report: dict[str, Any]) -> list[list[str]]:
    rows = []
    for name, entry in report.get("targets", {}).items():
        lat = entry.get("latency", {})
        parity = entry.get("parity", {})
        mark = "≈" if lat.get("source") == "estimate" else ""  # FPGA: analytical estimate, not a measurement
        rows.append([
            name, entry.get("backend", ""), _precision(report, name, entry.get("build", {}).get("precision", "")),
            _fmt(entry.get("accuracy")), _fmt(parity.get("top1_agreement", None) and parity["top1_agreement"] * 100),
            _fmt(entry.get("size_mb"), 3), mark + _fmt(lat.get("p50_ms"), 3), mark + _fmt(lat.get("p90_ms"), 3),
            entry.get("status", ""),
        ])
    return rows


TARGET_HEADER = ["target", "backend", "precision", "accuracy %", "parity top-1 %", "size MB", "p50 ms", "p90 ms",
                 "status"]


def metric_label(report: dict[str, Any]) -> str:
    """The column name of the task metric: "accuracy %" for classifiers, e.g. "miou %" or "mae px" otherwise."""
    task = report.get("task") or {}
    if not task or task.get("metric") == "top1":
        return "accuracy %"
    return f"{task['metric']} {task.get('unit') or ''}".strip()


def _header(report: dict[str, Any]) -> list[str]:
    return [metric_label(report) if col == "accuracy %" else col for col in TARGET_HEADER]


def _fmt_macs(value: int | None) -> str:
    return "—" if value is None else f"{value:,}"


def _quantize_md(key: str, q: dict[str, Any]) -> list[str]:
    """What was quantized how, where the budget was judged and what it decided, and every layer left in higher
    precision (name, precision, MACs, why)."""
    title = "## Quantization" + (f" (targets {key.partition('@')[2]})" if "@" in key else "")
    ev, budget = q.get("eval") or {}, q.get("budget") or {}
    lines = [title, "", f"- {q.get('scheme')} ({q.get('mode')}): weights {q.get('weights')}, activations "
             f"{q.get('activations')}"]
    ptq = ev.get("ptq") or {}
    measured = (f"FP32 {_fmt(ev.get('fp32_accuracy'))} %, PTQ {_fmt(ptq.get('accuracy'))} %"
                if ev.get("fp32_accuracy") is not None else f"PTQ top-1 agreement with FP32 {_fmt(ptq.get('agreement'))} %")
    lines.append(f"- judged on the {ev.get('split', '?')}: {measured}, drop {_fmt(ptq.get('drop'))} points")
    decision = budget.get("decision")
    if decision:
        verdict = "missed" if decision["missed"] else "not missed"
        lines.append(f"- budget {_fmt(budget.get('points'))} points ({budget.get('source')}): {verdict} -- "
                     f"{decision['test']}, p = {decision['p_value']:.3g} (alpha {decision['alpha']}); drops from "
                     f"{_fmt(decision['min_detectable_drop'])} points can be significant on {decision['samples']} samples")
    rows = q.get("higher_precision") or []
    if not rows:
        lines += [f"- every quantized layer runs at {q.get('scheme')}: none kept in higher precision", ""]
        return lines
    share = q.get("higher_precision_mac_fraction")
    lines += [f"- {len(rows)} layer(s) kept in higher precision"
              + (f" ({100 * share:.1f} % of the weighted layers' MACs)" if share is not None else ""), "",
              "| layer | precision | MACs | why |", "|---|---|---:|---|"]
    lines += [f"| {r['layer']} | {r['precision']} | {_fmt_macs(r.get('macs'))} | {r['why']} |" for r in rows]
    return [*lines, ""]


def write_report_md(report: dict[str, Any], path: Path) -> None:
    src = report["sources"]
    lines = [f"# edgekd report: {src['model']}", "",
             f"recipe `{src['recipe']}`, data `{src['data']}`, teacher `{src['teacher']}`; "
             f"started {report.get('started_at')}, {report.get('duration_s')} s", ""]
    acc = report.get("accuracy", {})
    if acc:
        name, _, unit = metric_label(report).partition(" ")
        lines += [f"## {name.capitalize()} (test set{', ' + unit if unit else ''})", "", f"| model | {name} |", "|---|---:|"]
        lines += [f"| {k} | {_fmt(v)} |" for k, v in acc.items()]
        lines.append("")
    lines += _stage_lines(report)
    training = (report.get("plots") or {}).get("training")
    if training:
        lines += ["## Training and per-stage metric", "",
                  f"![loss and validation metric per epoch, metric per stage and per target]({training})", ""]
    params = report.get("params", {})
    if params:
        lines += ["## Parameters", "", "| model | parameters |", "|---|---:|"]
        lines += [f"| {k} | {v:,} |" for k, v in params.items()]
        lines.append("")
    export = report.get("export", {})
    if export:
        parity = export.get("parity_vs_torch") or {}
        lines += ["## Export", "", f"- exporter `{export.get('exporter')}`, opset {export.get('opset')}, "
                  f"{_fmt(export.get('size_mb'), 3)} MB",
                  f"- parity vs PyTorch: max abs error {_fmt(parity.get('max_abs_error'), 6)}, "
                  f"top-1 agreement {_fmt((parity.get('top1_agreement') or 0) * 100)} %", ""]
    if report.get("passes"):
        lines += ["## Passes", ""]
        for name, info in report["passes"].items():
            lines.append(f"- **{name}**: " + ", ".join(f"{k}={_fmt(v, 4)}" for k, v in info.items()
                                                       if not isinstance(v, (dict, list))))
            lines += [f"  - note: {n}" for n in info.get("notes", []) if isinstance(n, str)]
            kept = info.get("kept") if isinstance(info.get("kept"), dict) else None
            if kept and kept.get("epoch"):
                lines.append(f"  - kept epoch {kept['epoch']} of {kept['of']}: {kept['why']}")
        lines.append("")
        for name, info in report["passes"].items():
            if name == "quantize" or name.startswith("quantize@"):
                lines += _quantize_md(name, info)
    lines += ["## Targets", "", "| " + " | ".join(_header(report)) + " |", "|" + "---|" * len(TARGET_HEADER)]
    lines += ["| " + " | ".join(row) + " |" for row in target_rows(report)]
    for name, entry in report.get("targets", {}).items():
        notes = entry.get("build", {}).get("notes", [])
        budgets = entry.get("budgets", {})
        auto = entry.get("auto_precision")
        reasons = entry.get("reasons") or []
        variant = entry.get("variant_accuracy")
        if notes or budgets or auto or reasons or variant:
            lines += ["", f"### {name}"]
        lines += [f"- **{str(entry.get('status', '')).upper()}**: {r}" for r in reasons]
        if variant:
            lines.append(f"- accuracy {_fmt(variant['accuracy'])} % measured with {variant['runtime']} "
                         f"({variant['why']}; not the engine's)")
        if auto:
            lines += [f"- precision auto chose **{auto['winner']}**: {auto['reason']}", "",
                      "| candidate | ran as | p90 ms | accuracy % | within budget |", "|---|---|---:|---:|---|"]
            lines += [f"| {c['label']} | {c['ran']} | {_fmt(c['p90_ms'], 4)} | {_fmt(c['accuracy'])} | "
                      f"{'yes' if c['within_budget'] else 'no'} |" for c in auto["candidates"]]
            lines.append("")
        lines += [f"- note: {n}" for n in notes]
        lines += [f"- budget {k}: {_fmt(v['value'], 3)} vs limit {v['limit']} -> {'ok' if v['ok'] else 'FAILED'}"
                  + (f" ({v['reason']})" if v.get("reason") else "") for k, v in budgets.items()]
    if any(e.get("latency", {}).get("source") == "estimate" for e in report.get("targets", {}).values()):
        lines += ["", "≈ latency is an analytical estimate at the target clock (FPGA), not a measurement."]
    lines += _contents_lines(report.get("bundle_contents") or [], report)
    path.write_text("\n".join(lines) + "\n")


def _contents_lines(rows: list[dict[str, Any]], report: dict[str, Any] | None = None) -> list[str]:
    """The bundle's "what is inside" list: every file, its size and what it is; how much of the test split eval.npz
    holds, and the target files stored once."""
    if not rows:
        return []
    lines = ["", "## Bundle contents", "", "| file | size | what |", "|---|---:|---|"]
    lines += [f"| {r['file']} | {_size(r.get('bytes'))} | {r.get('what', '')} |" for r in rows]
    report = report or {}
    ev = (report.get("data") or {}).get("eval_set") or {}
    if ev:
        lines += ["", f"- {ev['file']}: {ev['samples']} of the {ev['test_samples']} test samples"
                  + (f" (capped: --eval-samples {ev['cap']}; `edgekd check` compares with the FP32 reference on the "
                     "same samples)" if ev.get("capped") else " (all of them)")]
    for name, entry in (report.get("targets") or {}).items():
        for file, stored in (entry.get("stored_as") or {}).items():
            lines.append(f"- {name}/{file} is byte-identical to {stored['path']}: stored once (manifest `stored_as`)")
    return lines


def _size(n: int | None) -> str:
    if n is None:
        return "—"
    return f"{n / 1e6:.2f} MB" if n >= 100_000 else f"{n / 1e3:.1f} kB"


def _stage_lines(report: dict[str, Any]) -> list[str]:
    """Accuracy after each pass and the FP32 reference the accuracy budget is judged against."""
    stages, ref = report.get("stages") or [], report.get("fp32_reference") or {}
    if not any(row.get("accuracy") is not None for row in stages):
        return []
    lines = ["## Accuracy by stage (PyTorch, test split, %)", "", "| stage | accuracy | parameters |", "|---|---:|---:|"]
    lines += [f"| {row['stage']}{' (FP32 reference)' if row['stage'] == ref.get('stage') else ''} | "
              f"{_fmt(row.get('accuracy'))} | {row.get('params', 0):,} |" for row in stages]
    lines += ["", f"Budgets judge each target's accuracy against the FP32 reference, {ref.get('stage')} "
                  f"({_fmt(ref.get('accuracy'))} %, {ref.get('data')}): {ref.get('why')}.", ""]
    return lines


def failure_lines(report: dict[str, Any]) -> list[str]:
    """One line per reason a target failed (console and CI logs)."""
    return [f"{name} {entry.get('status')}: {reason}" for name, entry in report.get("targets", {}).items()
            for reason in entry.get("reasons") or []]


# On a console too narrow for the whole table, print it as two tables that both lead with the target name:
# rich would otherwise cut every cell (names included) to "open…".
_NARROW_SPLIT = (("target", "backend", "precision", "status"),
                 ("target", "accuracy %", "parity top-1 %", "size MB", "p50 ms", "p90 ms"))


def _summary_table(rows: list[list[str]], columns: tuple[str, ...], title: str | None, metric: str = "accuracy %") -> Any:
    from rich.table import Table

    table = Table(title=title)
    name_width = max((len(row[0]) for row in rows), default=len("target"))
    for col in columns:
        numeric = col.endswith(("%", "MB", "ms"))
        table.add_column(metric if col == "accuracy %" else col, justify="right" if numeric else "left",
                         no_wrap=col in ("target", "status"),
                         min_width=name_width if col == "target" else None)
    index = [TARGET_HEADER.index(col) for col in columns]
    for row in rows:
        table.add_row(*(row[i] for i in index))
    return table


def _print_target_tables(console: Any, rows: list[list[str]], title: str, metric: str = "accuracy %") -> None:
    from rich.measure import Measurement

    whole = _summary_table(rows, tuple(TARGET_HEADER), title, metric)
    if Measurement.get(console, console.options.update_width(10_000), whole).maximum <= console.width:
        console.print(whole)
        return
    for i, columns in enumerate(_NARROW_SPLIT):
        console.print(_summary_table(rows, columns, title if i == 0 else None, metric))


def print_summary(report: dict[str, Any], title: str = "edgekd", console: Any = None) -> None:
    """The terminal summary: accuracy line, target table, one line per failure reason. ``console`` (a rich
    Console) defaults to stdout at the terminal's width ($COLUMNS when set), else 140 columns when stdout is not a
    terminal."""
    import os

    from rich.console import Console

    if console is None:
        console = Console(width=None if Console().is_terminal or os.environ.get("COLUMNS", "").isdigit() else 140)
    acc = report.get("accuracy", {})
    label = metric_label(report)
    if acc:
        name, _, unit = label.partition(" ")
        console.print(f"{name}: " + ", ".join(f"{k} {_fmt(v)}{unit if unit == '%' else ' ' + unit if unit else ''}"
                                             for k, v in acc.items()))
    _print_target_tables(console, target_rows(report), title, label)
    for line in failure_lines(report):
        console.print(line, style="red", markup=False, highlight=False)
    if any(e.get("latency", {}).get("source") == "estimate" for e in report.get("targets", {}).values()):
        console.print("≈ analytical FPGA latency estimate at the target clock, not a measurement")


def training_runs(report: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Every training run in the passes' reports (distill, KD-QAT, sparsity / pruning fine-tunes): its label and its
    section, whose ``history`` holds the per-epoch loss and validation metric and ``kept`` the epoch returned."""
    found: list[tuple[str, dict[str, Any]]] = []

    def walk(label: str, node: Any) -> None:
        if isinstance(node, dict):
            history = node.get("history")
            if isinstance(history, list) and history and isinstance(history[0], dict) and "loss" in history[0]:
                found.append((label, node))
            for key, value in node.items():
                if key != "history":
                    walk(f"{label} {key}", value)
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(f"{label}[{i}]", value)

    for name, section in (report.get("passes") or {}).items():
        walk(name, section)
    return found


def write_training_plot(report: dict[str, Any], path: Path) -> Path | None:
    """plots/training.png: the loss and the validation metric per epoch of every training run (the kept epoch
    starred), and the metric at every stage: FP32 reference, after each pass, and each target on its runtime.
    None when there is nothing to draw (no training and no metric)."""
    runs = training_runs(report)
    stages = [(row["stage"], row["accuracy"]) for row in report.get("stages") or [] if row.get("accuracy") is not None]
    targets = [(f"{name} ({entry.get('backend', '')})", entry["accuracy"]) for name, entry in
               (report.get("targets") or {}).items() if entry.get("accuracy") is not None]
    if not runs and not stages:
        return None
    from edgekd.profiler.plots import pyplot

    plt = pyplot()
    from matplotlib.ticker import MaxNLocator
    label = metric_label(report)
    fig, (loss_ax, val_ax, stage_ax) = plt.subplots(1, 3, figsize=(15, 4.6), dpi=100)
    for name, section in runs:
        history = section["history"]
        epochs = [h["epoch"] for h in history]
        line, = loss_ax.plot(epochs, [h["loss"] for h in history], marker="o", ms=3, label=name)
        scores = [h.get("accuracy") for h in history]
        if any(s is not None for s in scores):
            val_ax.plot(epochs, scores, marker="o", ms=3, color=line.get_color(), label=name)
        kept = section.get("kept")
        if isinstance(kept, dict) and kept.get("keep") == "best" and kept.get("epoch"):
            val_ax.plot([kept["epoch"]], [scores[kept["epoch"] - 1]], marker="*", ms=14, color=line.get_color(),
                        linestyle="none", label=f"{name}: kept epoch {kept['epoch']}")
    for ax, title, ylabel in ((loss_ax, "training loss per epoch", "loss (mean over the epoch)"),
                              (val_ax, "validation metric per epoch", f"{label} (validation split)")):
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
        if runs:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "no training pass in this recipe", ha="center", va="center", transform=ax.transAxes)
    bars = [*stages, *targets]
    if bars:
        names = [n for n, _ in bars]
        values = [v for _, v in bars]
        colors = ["#457b9d"] * len(stages) + ["#e76f51"] * len(targets)
        y = np.arange(len(bars))[::-1]
        stage_ax.barh(y, values, color=colors)
        stage_ax.set_yticks(y, names, fontsize=8)
        lo, hi = min(values), max(values)
        left = max(0.0, lo - (hi - lo) * 0.5 - 1) if lo > 0 else lo * 1.1
        stage_ax.set_xlim(left, hi + (hi - left) * 0.12)  # room for the value labels
        for yi, v in zip(y, values, strict=True):
            stage_ax.text(v, yi, f" {v:.2f}", va="center", fontsize=8)
    fp32 = (report.get("fp32_reference") or {}).get("accuracy")
    if fp32 is not None:
        stage_ax.axvline(fp32, color="#2a9d8f", linestyle="--")
    stage_ax.set_title("stages (blue, PyTorch) and targets (red)")
    stage_ax.set_xlabel(f"{label} (test split)" + (f"; dashed: FP32 reference {fp32:.2f}" if fp32 is not None else ""))
    fig.suptitle(f"{(report.get('sources') or {}).get('model', '')}: recipe {(report.get('sources') or {}).get('recipe', '')}")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path

