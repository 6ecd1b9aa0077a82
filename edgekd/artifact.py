"""Artifact: one model at one stage, with its I/O spec and history.

An Artifact is immutable: every pass and stage returns a new one (``evolve``).
This module must stay torch-free (the runtime imports it).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

Dim = int | str | None  # str/None = dynamic axis (e.g. "batch")


@dataclass(frozen=True)
class IOSpec:
    """One model input or output."""

    name: str
    shape: tuple[Dim, ...]
    dtype: str = "float32"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> IOSpec:
        return cls(name=data["name"], shape=tuple(data["shape"]), dtype=data.get("dtype", "float32"))

    def matches(self, shape: tuple[int, ...]) -> bool:
        """True if a concrete ``shape`` fits this spec (dynamic dims match anything)."""
        if len(shape) != len(self.shape):
            return False
        return all(not isinstance(d, int) or d == s for d, s in zip(self.shape, shape, strict=True))


@dataclass(frozen=True)
class Artifact:
    """A model at one stage.

    kind: "torch" (payload is an nn.Module), "onnx" (payload is a Path), or a backend's
    own kind ("openvino-ir", "tensorrt-engine", "hls-project") whose payload is a Path.
    meta: free-form facts passes attach (e.g. ``quantized``, ``sparsity``); never mutated.
    """

    kind: str
    payload: Any
    inputs: tuple[IOSpec, ...] = ()
    outputs: tuple[IOSpec, ...] = ()
    history: tuple[str, ...] = ()
    meta: dict[str, Any] = field(default_factory=dict)

    def evolve(self, step: str, **changes: Any) -> Artifact:
        """A new Artifact with ``changes`` applied and ``step`` appended to the history."""
        meta = {**self.meta, **changes.pop("meta", {})}
        return dataclasses.replace(self, history=(*self.history, step), meta=meta, **changes)

    @property
    def path(self) -> Path:
        if not isinstance(self.payload, Path):
            raise TypeError(f"artifact of kind {self.kind!r} has no file path")
        return self.payload
