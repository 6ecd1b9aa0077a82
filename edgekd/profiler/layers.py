"""Per-layer profiling: ONNX Runtime's profiling trace and OpenVINO's performance counters,
turned into one table (layer, op type, kernel/exec type, precision, time, share of total).

This is where a user sees that a convolution fell back to FP32 inside an "INT8" model.
Per-layer runs use their own session / compiled model with profiling switched on, never
the latency loop's: profiling adds overhead, so the two kinds of numbers are kept apart.
"""

from __future__ import annotations

import json
import re
import tempfile
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.errors import BuildError


@dataclass(frozen=True)
class LayerRow:
    layer: str
    op_type: str
    exec_type: str
    precision: str
    time_ms: float  # mean per inference over the profiled runs
    share: float  # fraction of the summed layer time (0..1)
    calls: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _finish(acc: dict[str, dict[str, Any]], runs: int) -> list[LayerRow]:
    total = sum(v["time_ms"] for v in acc.values()) or 1.0
    rows = [LayerRow(name, v["op_type"], v["exec_type"], v["precision"], v["time_ms"] / runs, v["time_ms"] / total,
                     v["calls"]) for name, v in acc.items()]
    return sorted(rows, key=lambda r: r.time_ms, reverse=True)


# ------------------------------------------------------------------ ONNX Runtime

_ORT_INT8_OPS = re.compile(r"^(QLinear|QGemm|ConvInteger|MatMulInteger|DynamicQuantize|QAttention|QOrdered)")
_TYPE_PRECISION = {"float": "fp32", "float16": "fp16", "bfloat16": "bf16", "double": "fp64", "int8": "int8",
                   "uint8": "uint8", "int32": "int32", "int64": "int64", "bool": "bool"}


def _ort_precision(op: str, args: Mapping[str, Any]) -> str:
    if _ORT_INT8_OPS.match(op):
        return "int8"
    types = args.get("input_type_shape") or []
    first = next(iter(types[0]), None) if types and isinstance(types[0], dict) else None
    if op == "DequantizeLinear":
        return "int8->fp32"
    if op == "QuantizeLinear":
        return "fp32->int8"
    return _TYPE_PRECISION.get(str(first), str(first) if first else "?")


def parse_ort_trace(events: list[dict[str, Any]], skip_runs: int = 1) -> tuple[list[LayerRow], int]:
    """Aggregate an ORT profiling trace (chrome-trace JSON list) into layer rows.

    Runs are delimited by the ``model_run`` session events; the first ``skip_runs`` are
    warm-up and ignored. Returns (rows, runs counted).
    """
    acc: dict[str, dict[str, Any]] = {}
    run = 0
    counted = 0
    for ev in events:
        cat, name = ev.get("cat"), str(ev.get("name", ""))
        if cat == "Session" and name == "model_run":
            run += 1
            if run > skip_runs:
                counted += 1
            continue
        if cat != "Node" or not name.endswith("_kernel_time") or run < skip_runs:
            continue
        args = ev.get("args", {})
        layer = name[: -len("_kernel_time")]
        op = str(args.get("op_name", "?"))
        row = acc.setdefault(layer, {"op_type": op, "exec_type": str(args.get("provider", "?")).replace(
            "ExecutionProvider", ""), "precision": _ort_precision(op, args), "time_ms": 0.0, "calls": 0})
        row["time_ms"] += float(ev.get("dur", 0)) / 1e3
        row["calls"] += 1
    # node events of a run are written before its model_run event: the first skip_runs groups were dropped above
    return _finish(acc, max(counted, 1)), counted


def ort_layers(model_path: Path, feeds: Mapping[str, np.ndarray], *, options: Any = None, runs: int = 20) -> list[LayerRow]:
    """Run ``model_path`` ``runs`` + 1 times with ORT profiling on and return the layer table."""
    import onnxruntime as ort

    from edgekd.backends.onnxruntime import OnnxRuntimeOptions, session_options

    opts = options or OnnxRuntimeOptions()
    with tempfile.TemporaryDirectory(prefix="edgekd-ortprof-") as tmp:
        so = session_options(opts)
        so.enable_profiling = True
        so.profile_file_prefix = str(Path(tmp) / "ort")
        try:
            session = ort.InferenceSession(str(model_path), sess_options=so, providers=list(opts.providers))
        except Exception as exc:  # ORT raises its own exception types
            raise BuildError(f"ONNX Runtime could not load the model for profiling: {exc}", where=str(model_path)) from exc
        for _ in range(runs + 1):
            session.run(None, dict(feeds))
        trace = Path(session.end_profiling())
        events = json.loads(trace.read_text())
    rows, _ = parse_ort_trace(events, skip_runs=1)
    return rows


# ------------------------------------------------------------------ OpenVINO

_OV_PRECISION = [("i8", "int8"), ("u8", "int8"), ("bf16", "bf16"), ("f16", "fp16"), ("fp16", "fp16"),
                 ("f32", "fp32"), ("fp32", "fp32"), ("i32", "int32")]


def ov_precision(exec_type: str) -> str:
    """Precision from an OpenVINO CPU exec type such as ``brgconv_avx512_amx_I8`` or ``jit_uni_bf16``.

    >>> ov_precision("brgconv_avx512_amx_I8"), ov_precision("gemm_mlas_f32"), ov_precision("jit_uni_bf16")
    ('int8', 'fp32', 'bf16')
    """
    last = exec_type.lower().rsplit("_", 1)[-1]
    for suffix, name in _OV_PRECISION:
        if last == suffix:
            return name
    return "?"


def parse_ov_counters(per_run: list[list[Any]]) -> list[LayerRow]:
    """Aggregate ``InferRequest.get_profiling_info()`` lists (one per run); NOT_RUN nodes are
    fused or constant-folded and left out."""
    acc: dict[str, dict[str, Any]] = {}
    for infos in per_run:
        for info in infos:
            if "EXECUTED" not in str(info.status):
                continue
            row = acc.setdefault(info.node_name, {"op_type": info.node_type, "exec_type": info.exec_type,
                                                  "precision": ov_precision(info.exec_type), "time_ms": 0.0,
                                                  "calls": 0})
            row["time_ms"] += info.real_time.total_seconds() * 1e3
            row["calls"] += 1
    return _finish(acc, max(len(per_run), 1))


def ov_layers(model_path: Path, feeds: Mapping[str, np.ndarray], *, properties: Mapping[str, Any] | None = None,
              device: str = "CPU", runs: int = 20) -> list[LayerRow]:
    """Compile ``model_path`` (.onnx or .xml) with PERF_COUNT on, run it, and return the layer table.

    ``properties`` should be the target's compile properties (threads, INFERENCE_PRECISION_HINT, ...)
    so the per-layer view shows the kernels the latency run used.
    """
    import openvino as ov

    core = ov.Core()
    model = core.read_model(str(model_path))
    shapes = {name: list(arr.shape) for name, arr in feeds.items()}
    try:
        model.reshape(shapes)
    except Exception:  # static models already have these shapes; a real mismatch fails at infer below
        pass
    props = {**dict(properties or {}), "PERF_COUNT": True}
    compiled = core.compile_model(model, device, props)
    request = compiled.create_infer_request()
    request.infer(dict(feeds))  # warm-up
    per_run = []
    for _ in range(runs):
        request.infer(dict(feeds))
        per_run.append(list(request.get_profiling_info()))
    return parse_ov_counters(per_run)


# ------------------------------------------------------------------ summaries


def precision_mix(rows: list[LayerRow]) -> dict[str, float]:
    """Share of layer time per precision -- the one-line answer to "why is INT8 slower"."""
    mix: dict[str, float] = defaultdict(float)
    for r in rows:
        mix[r.precision] += r.share
    return dict(sorted(mix.items(), key=lambda kv: -kv[1]))


def heavy_layers_not_in(rows: list[LayerRow], precision: str, ops: tuple[str, ...] = ("Conv", "Gemm", "MatMul",
                        "Convolution", "FullyConnected", "GroupConvolution")) -> list[LayerRow]:
    """Compute layers that did not run in ``precision`` (e.g. convolutions left in fp32 in an int8 model)."""
    return [r for r in rows if any(o in r.op_type for o in ops) and r.precision != precision]
