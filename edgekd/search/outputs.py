"""What a search leaves in its folder: search-report.json (everything), pareto.json (every evaluated candidate),
pareto.png (proxy metric vs cost, measured where measured, the budget lines, the teacher), search.toml (the
recipe that reproduces the winner: ``edgekd search --replay search.toml``) and search.md (the summary a person reads).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edgekd.search.cost import does_not_fit

_UNITS = {"p90_ms": "p90 latency (ms)", "macs": "MACs per sample", "params": "parameters", "size_mb": "weights (MB)",
          "cycles": "estimated latency (cycles)", "dsp": "estimated DSP slices"}


def _write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def pareto_front(points: list[dict[str, Any]], *, cost_key: str = "predicted_cost") -> list[int]:
    """Indices of the points no other point beats on both cost (lower) and proxy (higher)."""
    order = sorted(range(len(points)), key=lambda i: (points[i][cost_key], -points[i]["proxy"]))
    front, best = [], float("-inf")
    for i in order:
        if points[i]["proxy"] > best:
            front.append(i)
            best = points[i]["proxy"]
    return front


def _toml_value(value: Any) -> str:
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(type(value).__name__)


def search_toml(report: dict[str, Any], entry: dict[str, Any]) -> str:
    """The winner as data: the teacher, target, recipe and the student's widths and removed blocks. Replaying it
    rebuilds the same student from the same teacher (no code is named in it: the teacher comes from the command)."""
    winner = entry["winner"]
    lines = ["# written by edgekd search: replay with", "#   edgekd search --replay search.toml --teacher SRC "
             "--data SRC --target T", f"# teacher at search time: {report['teacher']}", "",
             "[search]", f"budget = {_toml_value(entry['budget'])}", f"target = {_toml_value(report['target'])}",
             f"recipe = {_toml_value(report['recipe'])}", f"granule = {report['space']['granule']}", "",
             "[search.student]", f"removed = {_toml_value(list(winner['removed']))}", "",
             "[search.student.widths]"]
    lines += [f"{json.dumps(k)} = {v}" for k, v in sorted(winner["widths"].items())]
    return "\n".join(lines) + "\n"


def _plot(report: dict[str, Any], path: Path, kind: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    unfit = [p for p in report["points"] if does_not_fit(p["predicted_cost"])]
    points = [p for p in report["points"] if not does_not_fit(p["predicted_cost"])]
    fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=110)
    if unfit:
        ax.text(0.01, 0.01, f"{len(unfit)} evaluated designs do not fit the part (not plotted)",
                transform=ax.transAxes, fontsize=7, color="#666666")
    if not points:
        points = [{"predicted_cost": 1.0, "proxy": 0.0, "on_path": False}]  # an empty frame, said above
    xs = [p["predicted_cost"] for p in points]
    ys = [p["proxy"] for p in points]
    ax.scatter(xs, ys, s=14, c="#b0b7c3", label="evaluated (predicted cost)")
    path_pts = [p for p in points if p["on_path"]]
    ax.plot([p["predicted_cost"] for p in path_pts], [p["proxy"] for p in path_pts], "-o", ms=3, lw=1,
            c="#4c72b0", label="search path")
    measured = [p for p in points if p.get("measured")]
    if measured:
        ax.scatter([p["measured"]["p90_ms"] for p in measured], [p["proxy"] for p in measured], marker="D", s=28,
                   c="#dd8452", label="measured p90 on the target", zorder=3)
    teacher = report["points"][0]
    if not does_not_fit(teacher["predicted_cost"]):
        ax.scatter([teacher.get("measured", {}).get("p90_ms", teacher["predicted_cost"])], [teacher["proxy"]],
                   marker="*", s=140, c="#55a868", label="teacher", zorder=4)
    for entry in report["budgets"]:
        ax.axvline(entry["limit"], ls="--", lw=1, c="#c44e52")
        ax.annotate(entry["budget"], (entry["limit"], min(ys)), rotation=90, va="bottom", ha="right", fontsize=7,
                    color="#c44e52")
    ax.set_xscale("log")
    from matplotlib.ticker import EngFormatter, LogLocator, NullFormatter

    ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(EngFormatter(sep=""))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(_UNITS.get(kind, kind) + (" (log)" if kind else ""))
    ax.set_ylabel(report["proxy"])
    ax.set_title(f"edgekd search on {report['target']} ({report['precision']})", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)


def _markdown(report: dict[str, Any]) -> str:
    cost = report["cost"]
    lines = [f"# edgekd search: {report['teacher']} on {report['target']} ({report['precision']})", "",
             f"- space: {len(report['space']['groups'])} channel groups (granule {report['space']['granule']}), "
             f"{len(report['space']['blocks'])} removable blocks",
             f"- ranking: {report['proxy']}",
             f"- cost: {cost['seconds']:.0f} s, {cost['candidates_ranked']} candidates ranked, "
             f"{cost['measured']} measured on the target, peak RSS {cost.get('peak_rss_mb', 0):.0f} MB", "",
             "| budget | status | winner MACs | measured p90 (ms) | metric | note |", "|---|---|---|---|---|---|"]
    by_key = {json.dumps(p["candidate"], sort_keys=True): p for p in report["points"]}
    for entry in report["budgets"]:
        winner = by_key.get(json.dumps(entry.get("winner"), sort_keys=True), {})
        final = entry.get("final", {})
        p90 = (final.get("measured") or {}).get("p90_ms")
        lines.append(f"| {entry['budget']} | {entry['status']} | {winner.get('macs', '—')} | "
                     f"{'—' if p90 is None else f'{p90:.4g}'} | {final.get('metric', '—')} | "
                     f"{entry.get('reason', '')} |")
    lines += ["", "![pareto](pareto.png)", ""] + [f"- {n}" for n in report.get("notes", [])]
    return "\n".join(lines) + "\n"


def write_outputs(report: dict[str, Any], out: Path, *, kind: str) -> None:
    from edgekd.search.latency import write_json_atomic as write_json

    points = report["points"]
    front = pareto_front(points)
    write_json(out / "pareto.json", {"cost": kind, "proxy": report["proxy"], "front": front, "points": points})
    for entry in report["budgets"]:
        if entry.get("winner") is not None:
            name = "search.toml" if len(report["budgets"]) == 1 else f"search-{entry['kind']}-{entry['limit']:g}.toml"
            _write(out / name, search_toml(report, entry))
    _plot(report, out / "pareto.png", kind)
    _write(out / "search.md", _markdown(report))
    write_json(out / "search-report.json", report)
