"""edgekd: distillation-aware compression and deployment of PyTorch models to edge devices.

Public API (imported lazily so that ``import edgekd.runtime`` stays torch-free)::

    from edgekd import compress, load_recipe, load_target
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "compress": "edgekd.pipeline",
    "export_onnx": "edgekd.export",
    "load_recipe": "edgekd.config",
    "load_profile": "edgekd.config",  # deprecated: load_recipe
    "load_target": "edgekd.config",
    "load_model": "edgekd.models",
    "load_data": "edgekd.data",
    "Artifact": "edgekd.artifact",
    "IOSpec": "edgekd.artifact",
    "EdgekdError": "edgekd.errors",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'edgekd' has no attribute {name!r}")
