"""Refuse before you run: every target's requirements checked against the model and the recipe before training.

A target that cannot be built from what the recipe will produce must fail in seconds, not after an hour of
distillation. Three kinds of facts are checked here:

- the recipe against the backend's declarations: an integer-only backend (``requires_quantized``) gets a recipe
  with a quantize pass, and that pass leaves no weighted layer in float (``exclude`` patterns that match a Conv or
  Linear, ``unsupported = "float"``);
- the model against the backend (``Backend.preflight``): the float ONNX export, made once into scratch space,
  asked for ops the backend cannot build;
- the model against the quantize pass (``passes.quantize.quantizable_problem``): the brevitas model is built and
  run once on the untrained student, so a layer or op it cannot run quantized (with ``unsupported = "error"``)
  stops the run here rather than after distillation.

Problems are collected over all targets and reported in one error.
"""

from __future__ import annotations

import fnmatch
import tempfile
from pathlib import Path
from typing import Any

from edgekd.backends import BACKENDS
from edgekd.errors import ConfigError


def check_before_training(recipe: Any, targets: list[Any], module: Any, example: Any) -> None:
    problems: list[str] = _multi_input_problems(recipe, example) + _quantize_problems(recipe, targets, module, example)
    for target in targets:
        backend = BACKENDS.get(target.backend)
        if getattr(backend, "requires_quantized", False):
            problems += [f"target {target.name}: {p}" for p in _integer_only_problems(recipe, module, target)]
    if any(callable(getattr(BACKENDS.get(t.backend), "preflight", None)) for t in targets):
        with tempfile.TemporaryDirectory(prefix="edgekd-preflight-") as tmp:
            float_onnx = _float_export(module, example, Path(tmp))
            if float_onnx is not None:
                problems += backend_problems(targets, float_onnx)
    _refuse(problems, targets, "before any training", "nothing was trained")


def _quantize_problems(recipe: Any, targets: list[Any], module: Any, example: Any) -> list[str]:
    """The quantize pass's own question (can brevitas run this model quantized?), asked of the untrained student,
    so a model it would refuse after distillation is refused before it."""
    from edgekd.passes.quantize import QuantizeConfig, quantizable_problem

    spec = next((s for s in recipe.passes if s.name == "quantize"), None)
    if spec is None or not isinstance(spec.config, QuantizeConfig):
        return []

    problem = quantizable_problem(module, spec.config, tuple(targets), example)
    return [problem] if problem else []


def _multi_input_problems(recipe: Any, example: Any) -> list[str]:
    """Passes that cannot take a model with several inputs (``PassInfo.multi_input``), named."""
    from edgekd.inputs import is_multi
    from edgekd.passes import PASSES

    if not is_multi(example):
        return []
    return [f"recipe {recipe.name!r}: the {spec.name} pass takes single-input models only; this model has "
            f"{len(example.names)} inputs ({', '.join(example.names)})" for spec in recipe.passes
            if not getattr(PASSES.get(spec.name), "multi_input", True)]


def backend_problems(targets: list[Any], onnx_path: Path) -> list[str]:
    """What each target's backend says it cannot build in ``onnx_path`` (``Backend.preflight``)."""
    return [f"target {target.name}: {p}" for target in targets
            if callable(getattr(BACKENDS.get(target.backend), "preflight", None))
            for p in BACKENDS.get(target.backend).preflight(onnx_path, target)]


def check_onnx_file(targets: list[Any], onnx_path: Path) -> None:
    """The backends' questions for a model that arrives as ONNX (``edgekd.onnx_source``), before quantizing it."""
    _refuse(backend_problems(targets, onnx_path), targets, "before anything was built", "nothing was built")


def _refuse(problems: list[str], targets: list[Any], when: str, nothing: str) -> None:
    if problems:
        raise ConfigError(f"the model cannot be built for every target (checked {when}):\n  - "
                          + "\n  - ".join(problems), where=", ".join(t.source or t.name for t in targets),
                          hint=f"drop the target, change the model, or change the recipe; {nothing}")


def _integer_only_problems(recipe: Any, module: Any, target: Any) -> list[str]:
    quantize = next((spec for spec in recipe.passes if spec.name == "quantize"), None)
    if quantize is None:
        return []  # compress refuses that case itself, naming the recipe
    config = quantize.config
    excluded = [(name, type(layer).__name__) for name, layer in _weighted_layers(module)
                if any(fnmatch.fnmatchcase(name, pattern) for pattern in getattr(config, "exclude", ()))]
    problems = [f"the {target.backend} backend runs integers only, but quantize.exclude keeps {name} ({kind}) in "
                "float" for name, kind in excluded]
    if getattr(config, "unsupported", "error") == "float":
        problems.append(f"the {target.backend} backend runs integers only, but quantize.unsupported = \"float\" "
                        "may leave layers in float; use unsupported = \"error\" for this target")
    return problems


def _weighted_layers(module: Any) -> list[tuple[str, Any]]:
    from torch import nn

    kinds = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.Linear)
    return [(name, layer) for name, layer in module.named_modules() if isinstance(layer, kinds)]


def _float_export(module: Any, example: Any, workdir: Path) -> Path | None:
    """The student's float ONNX (the graph the backends will see, less Q/DQ); None if it does not export:
    the export stage after training reports that with its own error."""
    from edgekd.artifact import Artifact
    from edgekd.errors import ExportError
    from edgekd.export import export_onnx

    path = workdir / "float.onnx"
    try:
        export_onnx(Artifact(kind="torch", payload=module), path, example=example)
    except ExportError:
        return None
    return path
