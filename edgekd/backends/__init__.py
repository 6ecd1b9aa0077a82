"""Backend registry. Built-in backends are imported lazily; third parties register through
the ``edgekd.backends`` entry-point group (value: ``module:Class``)."""

from __future__ import annotations

import importlib
import importlib.util
from importlib.metadata import entry_points
from typing import Any

from edgekd.backends.base import Availability, Backend, BuildResult, Runner
from edgekd.registry import Registry

__all__ = ["BACKENDS", "Availability", "Backend", "BuildResult", "Runner", "backend_status"]

_BUILTIN = {
    "onnxruntime": "edgekd.backends.onnxruntime:OnnxRuntimeBackend",
    "openvino": "edgekd.backends.openvino:OpenVINOBackend",
    "tensorrt": "edgekd.backends.tensorrt:TensorRTBackend",
    "hls": "edgekd.backends.hls:HLSBackend",
}


def _load(ref: str) -> Any:
    module_name, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module_name), attr)()


def _populate(registry: Registry[Any]) -> None:
    for name, ref in _BUILTIN.items():
        if importlib.util.find_spec(ref.partition(":")[0]) is not None:
            registry.add(name, _load(ref))
    for ep in entry_points(group="edgekd.backends"):
        if ep.name not in registry:
            registry.add(ep.name, ep.load()())


BACKENDS: Registry[Any] = Registry("backend")
_populate(BACKENDS)


def backend_status() -> dict[str, Availability]:
    return {name: BACKENDS.get(name).availability() for name in BACKENDS.names()}
