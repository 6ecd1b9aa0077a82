"""Backend registry. Built-in backends are lazy references (imported on first use); third parties register
through the ``edgekd.backends`` entry-point group (value: ``module:Class``). A backend whose module fails to
import is listed as unavailable with the reason, never an import crash."""

from __future__ import annotations

from typing import Any

from edgekd.backends.base import Availability, Backend, BuildResult, Runner
from edgekd.registry import Registry

__all__ = ["BACKENDS", "Availability", "Backend", "BuildResult", "Runner", "backend_status"]

_BUILTIN = {
    "onnxruntime": "edgekd.backends.onnxruntime:OnnxRuntimeBackend",
    "openvino": "edgekd.backends.openvino:OpenVINOBackend",
    "tensorrt": "edgekd.backends.tensorrt:TensorRTBackend",
    "hls": "edgekd.backends.hls:HLSBackend",
    "rtl": "edgekd.backends.rtl:RTLBackend",
}


def _instantiate(obj: Any) -> Any:
    """An entry point names a backend class (or a factory): the registry holds one instance."""
    return obj() if callable(obj) else obj


BACKENDS: Registry[Any] = Registry("backend", group="edgekd.backends", adapt=_instantiate)
for _name, _ref in _BUILTIN.items():
    BACKENDS.add_lazy(_name, _ref)


def backend_status() -> dict[str, Availability]:
    """Every registered backend's availability; one that cannot be loaded is unavailable with the reason."""
    status = {}
    for name in BACKENDS.names():
        reason = BACKENDS.unavailable_reason(name)
        if reason is not None:
            entry = BACKENDS.entry(name)
            status[name] = Availability(False, f"cannot load {entry.ref} ({entry.origin}): {reason}")
            continue
        try:
            status[name] = BACKENDS.get(name).availability()
        except Exception as exc:  # a plugin's availability() that raises is that plugin's problem only
            status[name] = Availability(False, f"availability() raised {type(exc).__name__}: {exc}")
    return status
