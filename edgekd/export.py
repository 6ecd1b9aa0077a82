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

from edgekd.artifact import Artifact, IOSpec
from edgekd.backends.base import QDQFlavor
from edgekd.backends.flavors import REFERENCE_FLAVOR
from edgekd.config import ExportSettings
from edgekd.errors import ExportError
from edgekd.parity import ParityResult, compare_outputs
from edgekd.registry import Registry

INPUT_NAME = "input"
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


@register_exporter("torch")
def torch_export(module: torch.nn.Module, path: Path, example: torch.Tensor, settings: ExportSettings,
                 flavor: QDQFlavor | str) -> None:
    """Plain float export. TorchScript exporter by default: 40x faster than dynamo on small
    models here and deterministic; ``exporter = "dynamo"`` in a profile selects the new one."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation notice
        if settings.exporter == "dynamo":
            dyn = None
            if settings.dynamic_batch:
                # torch.export specializes a size-1 dim to a constant: trace with batch 2
                example = example.expand(2, *example.shape[1:]).contiguous()
                dyn = ({0: torch.export.Dim("batch")},)
            torch.onnx.export(module, (example,), str(path), dynamo=True, external_data=False,
                              opset_version=max(settings.opset, 18), input_names=[INPUT_NAME],
                              output_names=[OUTPUT_NAME], dynamic_shapes=dyn, verbose=False)
        else:
            axes = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}} if settings.dynamic_batch else None
            torch.onnx.export(module, (example,), str(path), dynamo=False, opset_version=settings.opset,
                              input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], dynamic_axes=axes,
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
        out = module(example)
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


def model_input(x: np.ndarray) -> np.ndarray:
    """Inputs as the model takes them: integer arrays (token ids) stay int64, everything else is float32."""
    return np.ascontiguousarray(x, dtype=np.int64 if np.issubdtype(x.dtype, np.integer) else np.float32)


def torch_outputs(module: torch.nn.Module, x: np.ndarray, batch: int = 256) -> np.ndarray:
    module.eval()
    outs = []
    with torch.no_grad():
        for i in range(0, len(x), batch):
            outs.append(module(torch.from_numpy(x[i : i + batch])).float().numpy())
    return np.concatenate(outs)


def onnx_outputs(path: Path, x: np.ndarray, batch: int = 256) -> np.ndarray:
    """Reference execution: ONNX Runtime CPU, all graph optimizations, 2 threads."""
    from edgekd.backends.onnxruntime import OnnxRuntimeOptions, OnnxRuntimeRunner

    runner = OnnxRuntimeRunner(path, OnnxRuntimeOptions())
    name = runner.inputs[0].name
    fixed_batch = runner.inputs[0].shape[0]
    step = fixed_batch if isinstance(fixed_batch, int) else batch
    outs = [runner.infer_unchecked({name: x[i : i + step]})[0] for i in range(0, len(x), step)]
    return np.concatenate(outs)


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
    example_t = torch.from_numpy(model_input(example[:1]))
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.onnx")
    try:
        check_single_output(module, example_t)
        exporter(module, tmp, example_t, settings, flavor)
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
        parity = compare_outputs(torch_outputs(module, sample), onnx_outputs(path, sample))
        meta["parity_vs_torch"] = parity.to_dict()
    return Artifact(kind="onnx", payload=path, inputs=inputs, outputs=outputs,
                    history=(*artifact.history, f"export:{exporter_name}:{flavor}"), meta={**artifact.meta, **meta})
