"""The one export stage: torch -> ONNX, checked, shape-inferred, and compared with PyTorch.

Quantized artifacts name their own exporter in ``artifact.meta["exporter"]`` (the quantize
pass registers "brevitas-qdq"); plain models use torch.onnx. ``flavor`` asks for a
runtime-specific Q/DQ variant (the ``QDQFlavor`` a backend declares, or a built-in flavor's
name); exporters that have no variants ignore it.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgekd import inputs as model_inputs
from edgekd.artifact import Artifact, IOSpec
from edgekd.backends.base import QDQFlavor
from edgekd.backends.flavors import REFERENCE_FLAVOR
from edgekd.config import ExportSettings
from edgekd.errors import ExportError
from edgekd.parity import ParityResult, compare_outputs
from edgekd.registry import Registry

INPUT_NAME = model_inputs.SINGLE_NAME  # a single-input model's graph input
OUTPUT_NAME = "logits"

Exporter = Callable[[torch.nn.Module, Path, torch.Tensor, ExportSettings, QDQFlavor | str], None]
#: exporters by name (an artifact's ``meta["exporter"]``); plugins add theirs under the ``edgekd.exporters``
#: entry-point group (value: ``module:function``). brevitas' Q/DQ exporter is loaded when a quantized model asks.
EXPORTERS: Registry[Exporter] = Registry("exporter", group="edgekd.exporters", error=ExportError)
EXPORTERS.add_lazy("brevitas-qdq", "edgekd.quant.onnx_export:brevitas_qdq_export")
__all__ = ["EXPORTERS", "ParityResult", "check_single_output", "compare_outputs", "export_onnx", "onnx_outputs", "register_exporter",
           "torch_outputs"]


def register_exporter(name: str) -> Callable[[Exporter], Exporter]:
    def deco(fn: Exporter) -> Exporter:
        return EXPORTERS.add(name, fn, module=fn.__module__)

    return deco


class NamedOutputs(torch.nn.Module):
    """``module`` with its outputs as a tuple in the task's order (a dict by key, ``.logits``, a tuple as is), so
    the exporters name each graph output after the task's output."""

    def __init__(self, module: torch.nn.Module, names: tuple[str, ...]) -> None:
        super().__init__()
        self.module = module
        self.names = names

    def forward(self, *xs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return as_tuple(self.module(*xs), self.names)


def as_tuple(out: Any, names: tuple[str, ...]) -> tuple[torch.Tensor, ...]:
    if isinstance(out, dict):
        return tuple(out[n] for n in names) if all(n in out for n in names) else tuple(out.values())
    if isinstance(out, (tuple, list)):
        return tuple(out)
    if not isinstance(out, torch.Tensor) and hasattr(out, "logits"):
        return (out.logits,)
    return (out,)


def output_names_of(artifact: Artifact) -> tuple[str, ...]:
    """The graph output names: the task's (``meta["output_names"]``), else ``logits``."""
    return tuple(artifact.meta.get("output_names") or (OUTPUT_NAME,))


@register_exporter("torch")
def torch_export(module: torch.nn.Module, path: Path, example: torch.Tensor, settings: ExportSettings,
                 flavor: QDQFlavor | str, output_names: tuple[str, ...] = (OUTPUT_NAME,)) -> None:
    """Plain float export. TorchScript exporter by default: 40x faster than dynamo on small
    models here and deterministic; ``exporter = "dynamo"`` in a profile selects the new one."""
    names = list(output_names)
    if names != [OUTPUT_NAME]:
        module = NamedOutputs(module, tuple(names))
    # one graph input per model input (edgekd.inputs), each with its own dynamic batch axis
    in_names = list(example.names) if isinstance(example, model_inputs.TensorInputs) else [INPUT_NAME]
    example_args = model_inputs.args(example)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation notice
        if settings.exporter == "dynamo":
            dyn = None
            if settings.dynamic_batch:
                # torch.export specializes a size-1 dim to a constant: trace with batch 2
                example_args = tuple(t.expand(2, *t.shape[1:]).contiguous() for t in example_args)
                batch = torch.export.Dim("batch")
                dyn = tuple({0: batch} for _ in example_args)
            torch.onnx.export(module, example_args, str(path), dynamo=True, external_data=False,
                              opset_version=max(settings.opset, 18), input_names=in_names,
                              output_names=names, dynamic_shapes=dyn, verbose=False)
        else:
            axes = {**{n: {0: "batch"} for n in in_names}, **{n: {0: "batch"} for n in names}} \
                if settings.dynamic_batch else None
            torch.onnx.export(module, example_args, str(path), dynamo=False, opset_version=settings.opset,
                              input_names=in_names, output_names=names, dynamic_axes=axes,
                              do_constant_folding=True)


def _io_specs(model: Any) -> tuple[tuple[IOSpec, ...], tuple[IOSpec, ...]]:
    import onnx

    init_names = {i.name for i in model.graph.initializer}

    def spec(value: Any) -> IOSpec:
        t = value.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in t.shape.dim)
        dtype = onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name
        return IOSpec(value.name, dims, dtype)

    inputs = tuple(spec(v) for v in model.graph.input if v.name not in init_names)
    return inputs, tuple(spec(v) for v in model.graph.output)


def finalize_onnx(path: Path) -> tuple[tuple[IOSpec, ...], tuple[IOSpec, ...]]:
    """checker + shape inference, re-saved as one self-contained file (no external data)."""
    import onnx

    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model, full_check=False)
        model = onnx.shape_inference.infer_shapes(model, check_type=True)
    except Exception as exc:
        raise ExportError(f"exported ONNX failed validation: {exc}", where=str(path)) from exc
    model.doc_string = ""
    for sidecar in path.parent.glob(path.name + ".data"):
        sidecar.unlink()
    onnx.save(model, str(path), save_as_external_data=False)
    return _io_specs(model)


def check_single_output(module: torch.nn.Module, example: torch.Tensor, *, error: type[Exception] = ExportError,
                        where: str = "model output") -> None:
    """Raise ``error`` unless ``module(example)`` returns one tensor (edgekd's golden outputs, parity and
    runtimes handle exactly one output, named ``logits``)."""
    was_training = module.training
    module.eval()
    with torch.no_grad():
        out = model_inputs.call(module, example)
    module.train(was_training)
    out = getattr(out, "value", out)  # a brevitas QuantTensor
    if isinstance(out, torch.Tensor):
        return
    if isinstance(out, (tuple, list)):
        kind = f"a {type(out).__name__} of {len(out)} outputs"
    elif isinstance(out, dict):
        kind = f"a dict with keys {', '.join(map(str, list(out)[:5]))}"
    else:
        kind = f"a {type(out).__name__}"
    raise error(f"the model returns {kind}; edgekd exports models with one output tensor today (training and "
                "task metrics take several: see docs/tasks.md)",
                where=where, hint="wrap the model so forward() returns one tensor (e.g. the logits head, or "
                                  "torch.cat of the heads along dim 1) and pass the wrapper as a py: source")


def model_input(x: Any) -> Any:
    """Inputs as the model takes them: integer arrays (token ids) stay int64, everything else is float32 (each input
    of a multi-input batch alike; edgekd.inputs)."""
    if isinstance(x, model_inputs.ModelInputs):
        return model_inputs.ModelInputs({k: model_inputs.as_model_array(v) for k, v in x.arrays.items()})
    return model_inputs.as_model_array(x)


def torch_outputs(module: torch.nn.Module, x: np.ndarray, batch: int = 256) -> np.ndarray:
    """The model's (first) output on ``x``."""
    return next(iter(torch_outputs_all(module, x, (OUTPUT_NAME,), batch).values()))


def torch_outputs_all(module: torch.nn.Module, x: np.ndarray, names: tuple[str, ...], batch: int = 256) -> dict[str, np.ndarray]:
    """Every output on ``x`` by name (``names`` in the model's order; one name for a one-output model)."""
    module.eval()
    parts: list[tuple[torch.Tensor, ...]] = []
    with torch.no_grad():
        for i in range(0, len(x), batch):
            out = model_inputs.call(module, model_inputs.to_torch(x[i : i + batch]))
            parts.append(as_tuple(getattr(out, "value", out), names))
    if len(names) == 1:
        return {names[0]: np.concatenate([getattr(p[0], "value", p[0]).float().numpy() for p in parts])}
    return {n: np.concatenate([p[k].float().numpy() for p in parts]) for k, n in enumerate(names)}


def onnx_outputs(path: Path, x: np.ndarray, batch: int = 256) -> np.ndarray:
    """Reference execution: ONNX Runtime CPU, all graph optimizations, 2 threads (the first output)."""
    return next(iter(onnx_outputs_all(path, x, batch).values()))


def onnx_outputs_all(path: Path, x: np.ndarray, batch: int = 256) -> dict[str, np.ndarray]:
    """Every graph output of ``path`` on ``x`` through the reference ONNX Runtime session, by output name."""
    from edgekd.backends.onnxruntime import OnnxRuntimeOptions, OnnxRuntimeRunner

    runner = OnnxRuntimeRunner(path, OnnxRuntimeOptions())
    return model_inputs.run_batched(runner.infer_unchecked, runner.inputs, x, [o.name for o in runner.outputs], batch)


def export_onnx(artifact: Artifact, path: Path, *, example: np.ndarray, settings: ExportSettings | None = None,
                flavor: QDQFlavor | str = REFERENCE_FLAVOR, parity_inputs: np.ndarray | None = None) -> Artifact:
    """Export a torch Artifact to ``path`` and return the ONNX Artifact (with parity in meta)."""
    settings = settings or ExportSettings()
    if artifact.kind != "torch":
        raise ExportError(f"cannot export an artifact of kind {artifact.kind!r}; expected a torch model")
    exporter_name = artifact.meta.get("exporter", "torch")
    exporter = EXPORTERS.get(exporter_name, where="artifact.meta['exporter']")
    module: torch.nn.Module = artifact.payload
    module.eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    example_t = model_inputs.to_torch(example[:1])
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.onnx")
    names = output_names_of(artifact)
    try:
        if len(names) == 1:
            check_single_output(module, example_t)
            exporter(module, tmp, example_t, settings, flavor)
        else:
            exporter(module, tmp, example_t, settings, flavor, output_names=names)
        inputs, outputs = finalize_onnx(tmp)
        os.replace(tmp, path)
    except ExportError:
        raise
    except Exception as exc:
        raise ExportError(f"torch -> ONNX export failed ({exporter_name}, flavor {flavor}): {exc}",
                          hint="see the error above; a recipe's [export] exporter = 'dynamo' may help") from exc
    finally:
        for leftover in path.parent.glob(tmp.name + "*"):
            leftover.unlink()
    meta: dict[str, Any] = {"flavor": str(flavor), "exporter": exporter_name, "opset": settings.opset}
    if parity_inputs is not None and len(parity_inputs):
        sample = model_input(parity_inputs[: settings.parity_samples])
        ref, got = torch_outputs_all(module, sample, names), onnx_outputs_all(path, sample)
        results = {n: compare_outputs(ref[n], got[n]) for n in names}
        meta["parity_vs_torch"] = results[names[0]].to_dict() | (
            {"outputs": {n: r.to_dict() for n, r in results.items()}} if len(names) > 1 else {})
    return Artifact(kind="onnx", payload=path, inputs=inputs, outputs=outputs,
                    history=(*artifact.history, f"export:{exporter_name}:{flavor}"), meta={**artifact.meta, **meta})
