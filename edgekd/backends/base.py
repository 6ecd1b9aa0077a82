"""Backend and Runner protocols (after Polygraphy: one loader + one runner per backend).

A backend builds an ONNX file into its own artifact inside ``out_dir`` and loads that
artifact back as a Runner. Backends import their SDK lazily, inside methods, so a
missing SDK shows up as ``availability()`` saying why, never as an import crash.
This module is torch-free: ``edgekd.runtime`` uses it.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from edgekd.artifact import IOSpec
from edgekd.errors import BuildError


@dataclass(frozen=True)
class Availability:
    available: bool
    reason: str = ""

    def __str__(self) -> str:
        return "available" if self.available else f"unavailable: {self.reason}"


@dataclass
class BuildResult:
    """What a backend produced for one target. Paths are relative to the target folder."""

    backend: str
    artifact: str  # main file, e.g. "model.onnx", "model.xml", "model.engine"
    files: list[str] = field(default_factory=list)
    precision: str = "fp32"  # what the backend will execute: fp32, bf16, fp16, int8, mixed
    notes: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    runnable: bool = True  # False when the artifact cannot execute on this machine (e.g. TensorRT without GPU)

    def to_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "artifact": self.artifact,
            "files": list(self.files),
            "precision": self.precision,
            "runnable": self.runnable,
            "notes": list(self.notes),
            "details": self.details,
        }


@runtime_checkable
class Runner(Protocol):
    inputs: tuple[IOSpec, ...]
    outputs: tuple[IOSpec, ...]

    def infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run once; feeds and results are keyed by I/O name."""
        ...

    def describe(self) -> dict[str, Any]:
        """What actually runs: provider/device, precision, per-layer facts if known."""
        ...


class Backend(Protocol):
    name: str
    options_type: type
    #: which ONNX variant this backend wants from a quantized model ("ort", "openvino", "tensorrt", "hls")
    onnx_flavor: str

    def availability(self) -> Availability: ...

    def build(self, onnx_path: Path, target: Any, out_dir: Path) -> BuildResult: ...

    def load(self, target_dir: Path, target: Any, build: BuildResult | None = None) -> Runner: ...


def dtype_hint(given: np.dtype, wanted: str, preprocessing: Mapping[str, Any] | None = None) -> str:
    """How to convert an input of the wrong dtype; for integer images, the bundle's preprocessing spelled out."""
    if not (np.issubdtype(given, np.integer) and wanted.startswith("float")):
        return f"convert with x.astype(np.{wanted})"
    pre = preprocessing or {}
    steps = f"x.astype(np.{wanted})"
    if pre.get("scale") not in (None, 1, 1.0):
        steps += f" * {pre['scale']:.8g}"
    if pre.get("mean") is not None:
        steps = f"({steps} - mean) / std with mean={pre['mean']}, std={pre.get('std')}"
    # uint8 images: a bare astype keeps 0..255 where the model was trained on scaled values
    where = "" if preprocessing else " (manifest.json 'preprocessing' says which)"
    return f"apply the model's preprocessing{where}: {steps}; a bare astype keeps a range the model never saw"


def check_feeds(inputs: tuple[IOSpec, ...], feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Validate feed names, shapes and dtypes against the model's inputs; clear errors."""
    names = [spec.name for spec in inputs]
    unknown = [k for k in feeds if k not in names]
    missing = [n for n in names if n not in feeds]
    if unknown or missing:
        raise BuildError(
            f"feeds do not match the model inputs {names}: missing {missing}, unexpected {unknown}",
            hint="pass a dict keyed by the input names listed in manifest.json",
        )
    out = {}
    for spec in inputs:
        arr = np.asarray(feeds[spec.name])
        if str(arr.dtype) != spec.dtype:
            raise BuildError(
                f"input {spec.name!r} has dtype {arr.dtype}, the model expects {spec.dtype}",
                hint=dtype_hint(arr.dtype, spec.dtype),
            )
        if not spec.matches(tuple(arr.shape)):
            raise BuildError(
                f"input {spec.name!r} has shape {tuple(arr.shape)}, the model expects {tuple(spec.shape)}",
                hint="dynamic dimensions are shown as a name or None",
            )
        out[spec.name] = arr
    return out


def copy_onnx(source: Path, dest: Path) -> list[str]:
    """Copy an ONNX model into a target folder, external-data files included.

    Files from other tools often keep weights in a sidecar (``model.onnx.data``, torch's dynamo exporter does
    by default). The copy is made self-contained when it fits in one protobuf (< 2 GB); otherwise the weights go
    to ``<dest>.data`` beside it. Returns the file names written, relative to ``dest.parent``.
    """
    import onnx
    from onnx.external_data_helper import uses_external_data

    model = onnx.load(str(source), load_external_data=False)
    if not any(uses_external_data(t) for t in model.graph.initializer):
        shutil.copyfile(source, dest)
        return [dest.name]
    try:
        model = onnx.load(str(source))  # resolves the sidecar relative to the source file
    except Exception as exc:  # onnx raises plain exceptions for missing/short sidecars
        raise BuildError(f"cannot read the ONNX model's external data: {exc}", where=str(source),
                         hint="keep the .data file next to the .onnx file it belongs to") from exc
    if model.ByteSize() < 2**31 - 2**20:
        onnx.save(model, str(dest), save_as_external_data=False)
        return [dest.name]
    onnx.save(model, str(dest), save_as_external_data=True, location=dest.name + ".data")
    return [dest.name, dest.name + ".data"]
