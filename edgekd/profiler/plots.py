"""PNG plots (matplotlib, Agg backend: no display needed): latency histogram and CDF, per-layer
top-N bar chart, and the accuracy-vs-p90 scatter with its Pareto front for several variants.
Every axis says what it shows and in which unit; titles name the model and target."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

_PRECISION_COLORS = {"int8": "#2a9d8f", "bf16": "#e9c46a", "fp16": "#f4a261", "fp32": "#e76f51",
                     "int8->fp32": "#8ab17d", "fp32->int8": "#8ab17d"}


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (no display needed); every PNG edgekd writes is drawn through it."""
    return _plt()


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _title(doc: dict[str, Any]) -> str:
    prec = (doc.get("build") or {}).get("precision", "?")
    name = Path(str(doc["artifact"].get("path", ""))).name
    who = doc["label"] if doc["label"] == doc["target"]["name"] else f"{doc['label']}, target {doc['target']['name']}"
    return f"{name}: {who} ({doc['target']['backend']}, {prec})"


def _view(ms: np.ndarray) -> tuple[np.ndarray, str]:
    """The queries to draw and a note on those left out: a few stalls of a shared host (one query at 50x the
    median) would stretch the axis until the body is one bar; beyond 3x the p99 they are counted, not drawn."""
    cut = 3 * float(np.percentile(ms, 99))
    out = ms[ms > cut]
    if out.size == 0:
        return ms, ""
    return ms[ms <= cut], f"{out.size} slower queries not drawn (up to {ms.max():.3g} ms)"


def histogram(doc: dict[str, Any], path: Path) -> Path:
    plt = _plt()
    ss = doc["single_stream"]
    ms = np.asarray(ss["times_ms"])
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    shown, tail = _view(ms)
    # long tails (OS jitter) squash the body on a linear axis: use log-spaced bins when the range is wide
    log_x = shown.max() / max(shown.min(), 1e-9) > 20
    bins = (np.geomspace(shown.min(), shown.max(), 60) if log_x else min(60, max(10, shown.size // 10)))
    ax.hist(shown, bins=bins, color="#457b9d", edgecolor="white")
    if log_x:
        ax.set_xscale("log")
    if tail:
        ax.annotate(tail, xy=(0.99, 0.97), xycoords="axes fraction", ha="right", va="top", fontsize=8,
                    color="#6a040f", bbox={"fc": "white", "ec": "none", "alpha": 0.8})
    for key, style, color in (("p50_ms", "-", "#1d3557"), ("p90_ms", "--", "#e63946"), ("p99_ms", ":", "#6a040f")):
        ax.axvline(ss[key], linestyle=style, color=color, label=f"{key[:-3]} = {ss[key]:.3f} ms")
    ax.set_xlabel("latency per query (ms" + (", log scale)" if log_x else ")"))
    ax.set_ylabel("queries (count)")
    ax.set_title(f"Latency histogram, batch {ss.get('batch_size')}, {ms.size} queries\n{_title(doc)}", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def cdf(doc: dict[str, Any], path: Path) -> Path:
    plt = _plt()
    ss = doc["single_stream"]
    ms = np.sort(np.asarray(ss["times_ms"]))
    frac = np.arange(1, ms.size + 1) / ms.size * 100
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    ax.step(ms, frac, where="post", color="#1d3557")
    for q in (50, 90, 99):
        ax.axhline(q, color="#adb5bd", linewidth=0.7)
    es = (ss.get("p90_early_stop") or {})
    if es.get("ok"):
        ax.axvline(es["estimate_ms"], color="#e63946", linestyle="--",
                   label=f"early-stopping p90 = {es['estimate_ms']:.3f} ms (99% conf.)")
        ax.legend(fontsize=8, loc="lower right")
    ax.set_xscale("log")
    ax.set_xlabel("latency per query (ms, log scale)")
    ax.set_ylabel("queries at or below (%)")
    ax.set_ylim(0, 100.5)
    ax.set_title(f"Latency CDF\n{_title(doc)}", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def layers_bar(doc: dict[str, Any], path: Path, top: int = 15) -> Path:
    plt = _plt()
    layers = doc["layers"]
    rows = layers["rows"][:top][::-1]
    fig, ax = plt.subplots(figsize=(8, 0.35 * len(rows) + 1.6), dpi=110)
    names = [(r["layer"] if len(r["layer"]) <= 40 else "…" + r["layer"][-39:]) + f"  [{r['op_type']}]" for r in rows]
    colors = [_PRECISION_COLORS.get(r["precision"], "#8d99ae") for r in rows]
    ax.barh(range(len(rows)), [r["time_ms"] for r in rows], color=colors)
    ax.set_yticks(range(len(rows)), names, fontsize=7)
    for i, r in enumerate(rows):
        ax.text(r["time_ms"], i, f" {r['precision']} {r['share'] * 100:.0f}%", va="center", fontsize=7)
    ax.set_xlabel(f"time per inference (ms, mean of {layers['runs']} profiled runs)")
    ax.set_title(f"Top {len(rows)} layers by time ({layers['source']})\n{_title(doc)}", fontsize=10)
    ax.margins(x=0.2)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of (latency, accuracy) points no other point beats on both (lower latency, higher accuracy).

    >>> pareto_front([(1.0, 90.0), (2.0, 95.0), (3.0, 94.0), (0.5, 80.0)])
    [3, 0, 1]
    """
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], -np.inf
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def accuracy_scatter(docs: list[dict[str, Any]], path: Path, title: str = "Accuracy vs p90 latency") -> Path:
    """One point per variant with known accuracy; the Pareto front is drawn and labelled."""
    plt = _plt()
    usable = [d for d in docs if d.get("accuracy") and d.get("single_stream")]
    if not usable:
        raise ValueError("no variant has both an accuracy and a single-stream result")
    pts = [(d["single_stream"]["p90_ms"], d["accuracy"]["value"]) for d in usable]
    front = pareto_front(pts)
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    for i, (d, (x, y)) in enumerate(zip(usable, pts, strict=True)):
        on = i in front
        ax.scatter([x], [y], s=60 if on else 35, color="#e63946" if on else "#457b9d", zorder=3)
        ax.annotate(d["label"], (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
    fx = [pts[i][0] for i in front]
    fy = [pts[i][1] for i in front]
    ax.step(fx, fy, where="post", color="#e63946", linestyle="--", label="Pareto front")
    metric = usable[0]["accuracy"].get("metric", "accuracy (%)")
    ax.set_xlabel("p90 latency per query (ms)")
    ax.set_ylabel(metric)
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


#: every PNG ``plot_profile`` may write (a reused output folder is cleared of them first: ``report.write_all``)
PROFILE_PLOTS = ("latency_hist.png", "latency_cdf.png", "layers_top.png")


def plot_profile(doc: dict[str, Any], out_dir: Path) -> list[Path]:
    hist, cdf_png, layers_png = PROFILE_PLOTS
    out = []
    ss = doc.get("single_stream")
    if ss and ss.get("times_ms"):
        out.append(histogram(doc, out_dir / hist))
        out.append(cdf(doc, out_dir / cdf_png))
    if (doc.get("layers") or {}).get("rows"):
        out.append(layers_bar(doc, out_dir / layers_png))
    return out
