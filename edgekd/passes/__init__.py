"""Compression passes: functions ``(Artifact, Config, PassContext) -> Artifact``.

Each pass module registers itself with ``@register_pass(name, ConfigType)``; the config
type (a frozen dataclass) is what a profile's ``[[passes]]`` table is validated against.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgekd.artifact import Artifact
from edgekd.registry import Registry

PassFn = Callable[[Artifact, Any, "PassContext"], Artifact]


@dataclass(frozen=True)
class PassInfo:
    name: str
    fn: PassFn
    config_type: type
    summary: str
    #: the pass's result depends on the targets (quantization numerics): the pipeline runs it, and every pass
    #: after it, once per group of targets that can share one model (pipeline.target_groups)
    target_dependent: bool = False


@dataclass
class PassContext:
    """What a pass may use besides its input artifact.

    teacher: the frozen teacher nn.Module (or None); data: DataSplits; targets: the Target
    objects being built (passes adapt, e.g. symmetric INT8 for TensorRT); workdir: scratch
    space inside the run; report: each pass adds ``report[pass_name] = {...}``.
    """

    teacher: Any = None
    data: Any = None
    targets: tuple[Any, ...] = ()
    seed: int = 0
    workdir: Path | None = None
    nproc: int = 1
    report: dict[str, Any] = field(default_factory=dict)

    def backends(self) -> set[str]:
        return {t.backend for t in self.targets}


PASSES: Registry[PassInfo] = Registry("pass")


def register_pass(name: str, config_type: type, *, target_dependent: bool = False) -> Callable[[PassFn], PassFn]:
    def deco(fn: PassFn) -> PassFn:
        summary = (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else ""
        PASSES.add(name, PassInfo(name, fn, config_type, summary, target_dependent))
        return fn

    return deco


_BUILTIN_MODULES = ("distill", "sparsity", "prune", "quantize")
for _mod in _BUILTIN_MODULES:
    if importlib.util.find_spec(f"edgekd.passes.{_mod}") is not None:
        importlib.import_module(f"edgekd.passes.{_mod}")
