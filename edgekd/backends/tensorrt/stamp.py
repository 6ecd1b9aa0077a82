"""The engine stamp: which TensorRT version, GPU and ONNX file a ``model.engine`` was built from.

A TensorRT engine is only valid for the TensorRT version and GPU model that built it, and only for the ONNX file
it was built from. ``build_engine.sh`` (on the device) and the Python build both write ``engine.json`` beside the
engine; the runner checks it before deserializing, so a stale engine (another TensorRT, another GPU, or an ONNX
file re-exported since) is refused with what differs and how to fix it, instead of TensorRT's bare failure to
deserialize or, worse, an engine that runs the previous model. Torch- and tensorrt-free.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekd.errors import BuildError

STAMP = "engine.json"
UNKNOWN_GPU = "unknown-gpu"


def version_code(version: str) -> int:
    """TensorRT's own version integer, as ``trtexec --help`` prints it (``TensorRT v100300``): major x 10000 +
    minor x 100 + patch from TensorRT 10 on, major x 1000 + minor x 100 + patch before.

    >>> version_code("10.3.0.26"), version_code("8.6.1.6"), version_code("11.0.1")
    (100300, 8601, 110001)
    """
    parts = [int(p) for p in re.findall(r"\d+", version)[:3]] + [0, 0, 0]
    major, minor, patch = parts[:3]
    return major * (10000 if major >= 10 else 1000) + minor * 100 + patch


def version_text(code: int) -> str:
    """``100300`` -> ``"10.3.0"`` (the inverse of ``version_code``)."""
    major, rest = (code // 10000, code % 10000) if code >= 10000 else (code // 1000, code % 1000)
    return f"{major}.{rest // 100}.{rest % 100}"


@dataclass(frozen=True)
class EngineStamp:
    tensorrt_code: int
    gpu: str
    onnx_sha256: str
    built_by: str

    def to_dict(self) -> dict[str, Any]:
        return {"tensorrt": version_text(self.tensorrt_code), "tensorrt_code": self.tensorrt_code, "gpu": self.gpu,
                "onnx_sha256": self.onnx_sha256, "built_by": self.built_by}


def write_stamp(target_dir: Path, *, tensorrt_version: str, gpu: str, onnx_sha256: str, built_by: str) -> Path:
    path = target_dir / STAMP
    stamp = EngineStamp(version_code(tensorrt_version), gpu or UNKNOWN_GPU, onnx_sha256, built_by)
    path.write_text(json.dumps(stamp.to_dict(), indent=1) + "\n")
    return path


def read_stamp(path: Path) -> EngineStamp:
    if not path.is_file():
        raise BuildError(f"the TensorRT engine has no {STAMP} beside it, so nothing says which TensorRT, GPU and ONNX "
                         "file it was built for", where=str(path.parent / "model.engine"),
                         hint="rebuild it on this device with build_engine.sh (it writes the stamp)")
    try:
        data = json.loads(path.read_text())
        return EngineStamp(int(data["tensorrt_code"]), str(data["gpu"]), str(data["onnx_sha256"]),
                           str(data.get("built_by", "")))
    except (ValueError, KeyError, TypeError) as exc:
        raise BuildError(f"cannot read the engine stamp: {type(exc).__name__}: {exc}", where=str(path),
                         hint="rebuild the engine with build_engine.sh") from None


def _same_gpu(built: str, here: str | None) -> bool | None:
    """None when either side could not tell its GPU (a Jetson without nvidia-smi): the TensorRT check decides."""
    if not here or built == UNKNOWN_GPU:
        return None
    norm = lambda s: re.sub(r"\s+", " ", s).strip().lower()  # noqa: E731
    return norm(built) == norm(here)


def stamp_problems(stamp: EngineStamp, *, onnx_sha256: str, tensorrt_version: str, gpu: str | None) -> list[str]:
    """What makes the stamped engine stale here; empty when it is not."""
    problems = []
    if stamp.onnx_sha256 != onnx_sha256:
        problems.append(f"it was built from another ONNX file (sha256 {stamp.onnx_sha256[:12]}..., the bundle's "
                        f"model.onnx is {onnx_sha256[:12]}...)")
    if stamp.tensorrt_code != version_code(tensorrt_version):
        problems.append(f"it was built by TensorRT {version_text(stamp.tensorrt_code)}, this is TensorRT "
                        f"{version_text(version_code(tensorrt_version))}")
    if _same_gpu(stamp.gpu, gpu) is False:
        problems.append(f"it was built on a {stamp.gpu}, this GPU is a {gpu}")
    return problems


def check_stamp(target_dir: Path, *, onnx_sha256: str, tensorrt_version: str, gpu: str | None) -> EngineStamp:
    """Refuse a stale engine (``BuildError`` naming every difference); returns the stamp when it is current."""
    stamp = read_stamp(target_dir / STAMP)
    problems = stamp_problems(stamp, onnx_sha256=onnx_sha256, tensorrt_version=tensorrt_version, gpu=gpu)
    if problems:
        raise BuildError("the TensorRT engine is stale: " + "; ".join(problems), where=str(target_dir / "model.engine"),
                         hint="rebuild it on this device: bash build_engine.sh in the target folder")
    return stamp
