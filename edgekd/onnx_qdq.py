"""QDQ files for the ONNX model sources (``edgekd.onnx_source``): ONNX Runtime's ``quantize_static`` with the
numerics the targets' backends declare, and the per-target Q/DQ variants of a quantized file (the flavor
rewrites of ``quant/onnx_export.py`` that change it, and the flavor rules it does not follow)."""

from __future__ import annotations

import fnmatch
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.artifact import IOSpec
from edgekd.backends import BACKENDS
from edgekd.backends.base import Numerics, QDQFlavor, is_power_of_two
from edgekd.backends.flavors import flavor_of
from edgekd.config import Target
from edgekd.errors import ExportError
from edgekd.onnxgraph import OnnxGraph

ONNX_PTQ = "onnx-ptq via onnxruntime.quantization"
#: the quantize pass settings ONNX Runtime's quantizer has no counterpart for (reported as not applied)
_NOT_APPLIED = {"bias_correction": "ONNX Runtime's quantize_static has no bias correction",
                "sensitivity": "no per-layer sensitivity search at the ONNX level; exclude = [node names] keeps layers float"}


# ---------------------------------------------------------------- PTQ with ONNX Runtime


def ort_ptq(float_path: Path, out_path: Path, calib: np.ndarray, input_spec: IOSpec, config: Any,
            numerics: Numerics, where: str = "") -> dict[str, Any]:
    """``quantize_static`` (QDQ) with the numerics the targets' backends declare; returns the report section."""
    symmetric = bool(config.symmetric_activations if config.symmetric_activations is not None
                     else numerics.symmetric_activations)
    samples = calib[: config.calibration_samples]
    fixed_batch = input_spec.shape[0] if input_spec.shape and isinstance(input_spec.shape[0], int) else None
    # equal batches: ORT's histogram calibrators stack them (a short last batch is dropped)
    step = fixed_batch or min(config.calibration_batch, len(samples))
    batches = [{input_spec.name: samples[i : i + step]} for i in range(0, len(samples) - step + 1, step)]
    names = [n.name for n in _load(float_path).graph.node]
    exclude = sorted({n for n in names for pattern in config.exclude if fnmatch.fnmatchcase(n, pattern)})
    settings = {"per_channel": config.granularity == "per_channel", "symmetric": symmetric, "exclude": exclude,
                "percentile": config.percentile}
    notes = [f"{key}: not applied ({why})" for key, why in _NOT_APPLIED.items() if getattr(config, key, None) not in
             (False, "off", None)]
    calibration = config.calibration
    out_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        _quantize_static(float_path, out_path, batches, calibration, settings)
    except ValueError as exc:
        if calibration != "percentile" or "bins" not in str(exc):
            raise _ptq_error(exc, where or str(float_path)) from None
        # ORT's histogram cannot bin a tensor whose range is degenerate (a constant or all-zero activation)
        notes.append(f"percentile calibration failed in ONNX Runtime ({exc}); calibrated with minmax instead")
        calibration = "minmax"
        _quantize_static(float_path, out_path, batches, calibration, settings)
    except Exception as exc:  # ORT's quantizer raises its own types
        raise _ptq_error(exc, where or str(float_path)) from None
    if numerics.power_of_two_scales:
        notes.append("power-of-two scales: not applied (quantize_static writes float scales); the FPGA backend "
                     "requantizes with an integer multiplier and shift")
    return {"path": ONNX_PTQ, "tool": "onnxruntime.quantization.quantize_static", "format": "QDQ",
            "activations": "int8 symmetric" if symmetric else "uint8 asymmetric",
            "weights": "int8 symmetric " + config.granularity.replace("_", "-"),
            "calibration": f"{calibration} on {len(batches) * step} training samples",
            "excluded": exclude, "notes": notes}


def _quantize_static(float_path: Path, out_path: Path, batches: list[dict[str, np.ndarray]], calibration: str,
                     settings: dict[str, Any]) -> None:
    import contextlib
    import io
    import logging

    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(batches)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.batches, None)

    percentile = calibration == "percentile"
    extra = {"ActivationSymmetric": settings["symmetric"], "WeightSymmetric": True,
             **({"CalibPercentile": settings["percentile"]} if percentile else {})}
    level = logging.getLogger().level
    logging.getLogger().setLevel(logging.ERROR)  # quantize_static's pre-processing advice
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # its calibrators print progress
            quantize_static(str(float_path), str(out_path), Reader(), quant_format=QuantFormat.QDQ,
                            per_channel=settings["per_channel"],
                            calibrate_method=CalibrationMethod.Percentile if percentile else CalibrationMethod.MinMax,
                            activation_type=QuantType.QInt8 if settings["symmetric"] else QuantType.QUInt8,
                            weight_type=QuantType.QInt8, nodes_to_exclude=settings["exclude"], extra_options=extra)
    finally:
        logging.getLogger().setLevel(level)


def _ptq_error(exc: Exception, where: str) -> ExportError:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return ExportError(f"ONNX Runtime's quantize_static failed on this model: {type(exc).__name__}: {first}",
                       where=where, hint="try calibration = \"minmax\" (--set quantize.calibration=minmax), or "
                       "quantize the file yourself and pass the QDQ file with --recipe fp32")


def _load(path: Path) -> Any:
    import onnx

    return onnx.load(str(path))


# ---------------------------------------------------------------- per-target Q/DQ variants


def flavor_variant(model: Any, flavor: QDQFlavor) -> tuple[Any, list[str]]:
    """A copy of a quantized model with ``flavor``'s post-processing, and what changed / does not apply."""
    import onnx

    from edgekd.quant.onnx_export import REWRITES, _unshare_weight_dq_params

    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    changes = []
    if _unshare_weight_dq_params(copy):
        changes.append("private weight scale/zero-point initializers")
    for name in flavor.rewrites:
        count = REWRITES[name](copy) if name in REWRITES else 0
        changes.append(f"{name}: {count} rewritten" if count else f"{name}: does not apply to this file")
    if flavor.postprocess is not None:
        flavor.postprocess(copy)
        changes.append("the flavor's own postprocess")
    return copy, changes + _flavor_rule_notes(copy, flavor)


def _flavor_rule_notes(model: Any, flavor: QDQFlavor) -> list[str]:
    """The flavor's storage rules this file does not follow (built as it is; the backend's build decides)."""
    g = OnnxGraph(model)
    zero_points, scales = [], []
    for node in g.nodes:
        if node.op_type == "QuantizeLinear":
            scales.append(g.constant(node.input[1]))
            zero_points.append(g.constant(node.input[2]) if len(node.input) > 2 else np.zeros((), np.uint8))
    zps = [z for z in zero_points if z is not None]
    notes = []
    if flavor.activations == "int8" and any(z.dtype != np.int8 or np.any(z != 0) for z in zps):
        notes.append(f"{flavor.runtime} reads symmetric int8 activations (zero point 0); this file has uint8 or "
                     "nonzero zero points: built as it is" + (f" ({flavor.hint})" if flavor.hint else ""))
    elif flavor.zero_point_zero and any(np.any(z != 0) for z in zps):
        notes.append(f"the {flavor.name} flavor prefers zero point 0; this file has nonzero activation zero points")
    if flavor.power_of_two_scales and not all(s is not None and is_power_of_two(s) for s in scales):
        notes.append(f"the {flavor.name} flavor prefers power-of-two scales; this file's are not (requantized with "
                     "a multiplier and shift)")
    return notes


def target_sources(groups: list[list[Target]], group_files: list[Path], writer: Any) -> tuple[dict[str, Path], dict[str, Any]]:
    """The file each target builds from: its group's quantized file, or a flavor variant of it where the flavor's
    post-processing changes the graph. Returns (target -> file, flavor notes for the report)."""
    import onnx

    sources: dict[str, Path] = {}
    notes: dict[str, Any] = {}
    made: dict[tuple[int, str], Path] = {}
    for gi, (group, path) in enumerate(zip(groups, group_files, strict=True)):
        model = _load(path)
        for target in group:
            flavor = flavor_of(BACKENDS.get(target.backend))
            key = (gi, flavor.name)
            if key not in made:
                variant, changes = flavor_variant(model, flavor)
                changed = variant.SerializeToString() != model.SerializeToString()
                dest = path
                if changed:
                    dest = writer.variant_path(f"model.{flavor.name}{'' if gi == 0 else f'-{gi}'}.onnx")
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    onnx.save(variant, str(dest))
                made[key] = dest
                notes[flavor.name if gi == 0 else f"{flavor.name}@{gi}"] = {"file": writer.relpath(dest), "changes": changes}
            sources[target.name] = made[key]
    return sources, notes
