"""Compression passes: functions ``(Artifact, Config, PassContext) -> Artifact``.

Each pass module registers itself with ``@register_pass(name, ConfigType)``; the config
type (a frozen dataclass) is what a recipe's ``[[passes]]`` table is validated against.
Built-in passes are lazy references (importing this package imports no torch); plugins add
theirs through the ``edgekd.passes`` entry-point group (docs/plugins-passes-and-data.md).
"""

from __future__ import annotations

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
    #: the pass makes the model smaller or lower-precision (sparsity, pruning, quantization). The accuracy budget
    #: is a drop against the model *before* the first such pass (FP32, after distillation): distill sets False
    compresses: bool = True
    #: passes that must not run before this one: they leave a model it cannot take (a recipe that orders them so
    #: is refused when it is loaded, before any training; config.recipe_from_mapping)
    not_after: tuple[str, ...] = ()
    #: the pass handles a model with several inputs (edgekd.inputs); one that does not is refused before training
    #: for such a model (preflight.check_before_training)
    multi_input: bool = True


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


def _pass_info(fn: Any) -> PassInfo:
    """What an ``edgekd.passes`` entry point names: a function decorated with ``@register_pass``."""
    info = getattr(fn, "pass_info", None)
    if not isinstance(info, PassInfo):
        raise TypeError(f"{getattr(fn, '__qualname__', fn)!r} is not a pass: decorate it with @edgekd.passes.register_pass")
    return info


#: plugins register more under the ``edgekd.passes`` entry-point group (value: ``module:function``)
PASSES: Registry[PassInfo] = Registry("pass", group="edgekd.passes", adapt=_pass_info)


def register_pass(name: str, config_type: type, *, target_dependent: bool = False,
                  compresses: bool = True, not_after: tuple[str, ...] = (),
                  multi_input: bool = True) -> Callable[[PassFn], PassFn]:
    """Register ``fn`` as pass ``name``; ``config_type`` is the frozen dataclass its ``[[passes]]`` table fills."""

    def deco(fn: PassFn) -> PassFn:
        summary = (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else ""
        info = PassInfo(name, fn, config_type, summary, target_dependent, compresses, tuple(not_after), multi_input)
        fn.pass_info = info  # type: ignore[attr-defined]
        PASSES.add(name, info, module=fn.__module__)
        return fn

    return deco


#: the built-in passes: imported on first use (they import torch); what ``edgekd list passes`` shows is here,
#: so listing imports nothing (tests/test_registry.py checks it equals the modules' own docstrings and types)
BUILTIN_PASSES = {
    "distill": ("edgekd.passes.distill:distill", "DistillConfig",
                "Knowledge distillation: train the student against the frozen teacher."),
    "sparsify": ("edgekd.passes.sparsity:sparsify", "SparsifyConfig",
                 "N:M (default 2:4) semi-structured sparsity for sparse tensor cores, recovered by distillation."),
    "prune_channels": ("edgekd.passes.prune:prune_channels", "PruneChannelsConfig",
                       "Channel pruning with torch-pruning (DepGraph): a smaller dense model, recovered by distillation."),
    "quantize": ("edgekd.passes.quantize:quantize", "QuantizeConfig",
                 "brevitas PTQ / KD-QAT (W8A8, W4A8) with calibration, bias correction and sensitivity analysis."),
}
for _name, (_ref, _config, _summary) in BUILTIN_PASSES.items():
    PASSES.add_lazy(_name, _ref, summary=_summary, config=_config)


def pass_listing(name: str) -> dict[str, str]:
    """Name, summary and config type of a pass: from the static table for a built-in, by loading a plugin."""
    entry = PASSES.entry(name)
    if "summary" in entry.meta:
        return {"name": name, "description": entry.meta["summary"], "config": entry.meta["config"]}
    reason = PASSES.unavailable_reason(name)
    if reason is not None:
        return {"name": name, "description": f"unavailable: {reason}", "config": ""}
    info = PASSES.get(name)
    return {"name": name, "description": info.summary, "config": info.config_type.__name__}
