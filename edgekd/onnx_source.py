"""Models that arrive as ONNX files (a vendor export, a model zoo, ONNX Runtime's or NNCF's quantizer).

Two paths, each named in report.json (``onnx_source.path``) and report.md:

- **as-is QDQ**: an already-quantized file (QuantizeLinear/DequantizeLinear or integer kernels) is built for
  every target as it is. A recipe with passes is refused before anything runs: quantizing twice is not a thing.
- **onnx-ptq via onnxruntime.quantization**: a float file with a PTQ-only recipe (``ptq``) is quantized by
  ONNX Runtime's ``quantize_static`` (QDQ, per-channel symmetric int8 weights, calibrated on ``--data``'s
  training split), once per numerics group of the targets (symmetric int8 activations where a backend's
  ``Numerics`` asks for them, asymmetric uint8 otherwise).

A float file with the ``fp32`` recipe is built as it is. Training recipes (distillation, sparsity, pruning, QAT)
need a PyTorch module: with the optional ``onnx2torch`` installed, the ordinary pipeline runs on the model source
``onnx2torch:FILE`` (``load_converted``), and the report names that source; without it they are refused, saying
why. As a teacher (``models.load_model``), an ``.onnx`` file is run by ONNX Runtime (``OnnxRuntimeModule``).

After that, the pipeline's own steps: per-target Q/DQ variants (the flavor rewrites of
``quant/onnx_export.py`` that apply to this file), golden.npz with ONNX Runtime's outputs of every file a target
builds from, each target's build, parity and budgets, and the bundle. Without ``--data`` the golden inputs are
generated from the file's input spec (``random:``, stated in the report and the manifest).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import re
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgekd.artifact import Artifact, IOSpec
from edgekd.backends import BACKENDS
from edgekd.backends.base import numerics_of
from edgekd.backends.onnxruntime import INT8_KERNEL_OPS
from edgekd.config import Recipe, Target, load_recipe, load_target, unique_targets
from edgekd.data import DataContext, DataSplits, layout_hint, load_data
from edgekd.errors import ConfigError, SourceError
from edgekd.onnx_qdq import ONNX_PTQ, ort_ptq, target_sources
from edgekd.onnxgraph import opset
from edgekd.preflight import check_onnx_file
from edgekd.progress import log

AS_IS = "as-is QDQ"
AS_IS_FLOAT = "as-is float"
ONNX2TORCH = "onnx2torch conversion, then the recipe's PyTorch passes"
#: the model source scheme of a float ONNX file converted to a trainable module (``onnx2torch:model.onnx``)
CONVERTED_SCHEME = "onnx2torch"
QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})
_WEIGHT_TYPES = frozenset({1, 2, 3, 10, 11, 16})  # TensorProto FLOAT, UINT8, INT8, FLOAT16, DOUBLE, BFLOAT16



# ---------------------------------------------------------------- reading the file


@dataclass(frozen=True)
class OnnxSource:
    """A user's ONNX file, read and classified."""

    path: Path
    model: Any  # onnx.ModelProto (external data loaded)
    inputs: tuple[IOSpec, ...]
    outputs: tuple[IOSpec, ...]
    opset: int
    quant_nodes: int  # QuantizeLinear/DequantizeLinear/integer-kernel nodes

    @property
    def quantized(self) -> bool:
        return self.quant_nodes > 0

    @property
    def params(self) -> int:
        return sum(int(np.prod(t.dims)) for t in self.model.graph.initializer)


def is_onnx_file(source: str | Path) -> bool:
    """True when a model source is a plain path to an ONNX file (``model.onnx`` or ``file:model.onnx``)."""
    if not isinstance(source, (str, Path)):
        return False  # an nn.Module object from the Python API
    text = str(source)
    text = text[len("file:"):] if text.startswith("file:") else text
    scheme, colon, _ = text.partition(":")
    return text.lower().endswith(".onnx") and not (colon and len(scheme) > 1 and "/" not in scheme)


def _file_of(source: str | Path) -> Path:
    text = str(source)
    return Path(text[len("file:"):] if text.startswith("file:") else text)


def read_source(source: str | Path) -> OnnxSource:
    """Read a user's ONNX file (``onnx_files.read_onnx``: a bad file says what it really is) and classify it."""
    import onnx

    from edgekd.export import _io_specs
    from edgekd.onnx_files import read_onnx

    path = _file_of(source)
    model = read_onnx(path, error=SourceError, what="an ONNX model file")
    try:
        onnx.checker.check_model(model, full_check=False)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SourceError(f"is not a valid ONNX model: {first}", where=str(path),
                          hint="export it again; `python -m onnx.checker` or `edgekd inspect` show the same") from None
    inputs, outputs = _io_specs(model)
    quant = sum(1 for n in model.graph.node if n.op_type in QDQ_OPS or n.op_type in INT8_KERNEL_OPS)
    return OnnxSource(path, model, inputs, outputs, opset(model), quant)


def check_io(src: OnnxSource) -> None:
    """edgekd's golden files, parity and `edgekd check` carry one float input and one output per model."""
    names = lambda specs: ", ".join(f"{s.name} {list(s.shape)}" for s in specs)  # noqa: E731
    if len(src.inputs) != 1 or len(src.outputs) != 1:
        raise SourceError(f"the model has {len(src.inputs)} input(s) ({names(src.inputs)}) and {len(src.outputs)} "
                          f"output(s) ({names(src.outputs)}); edgekd builds ONNX models with one input and one output",
                          where=str(src.path), hint="cut the graph to one input and one output (onnx.utils.extract_model), "
                          "or concatenate the heads into one output before exporting")
    spec = src.inputs[0]
    if not spec.dtype.startswith("float"):
        raise SourceError(f"input {spec.name!r} is {spec.dtype}; edgekd's data sources feed float32 samples",
                          where=str(src.path), hint="export the model with a float input (the preprocessing inside)")


def sample_shape(spec: IOSpec) -> tuple[int | None, ...]:
    """The input's dims after the batch (None where dynamic)."""
    return tuple(d if isinstance(d, int) else None for d in spec.shape[1:])


# ---------------------------------------------------------------- which path runs


def _training_passes(recipe: Recipe) -> list[str]:
    return [p.name for p in recipe.passes if p.name != "quantize" or getattr(p.config, "mode", "ptq") != "ptq"]


def converter_available() -> bool:
    """onnx2torch (the optional ``edgekd[onnx]`` extra) converts a float ONNX graph to a trainable module."""
    return importlib.util.find_spec("onnx2torch") is not None


def handles(model: str | Path, data: str | None = None) -> bool:
    """Whether ``compress`` of ``model`` runs here (an ONNX file) or in the ordinary pipeline (any other model).
    Only an ONNX file may come without ``data`` (its golden inputs are generated from the input spec)."""
    if is_onnx_file(model):
        return True
    if data is None:
        raise ConfigError("--data is required for this model", where="--data",
                          hint="pass a data source (builtin:digits, npz:PATH, imagefolder:DIR, random:3x224x224 ...); "
                               "only an .onnx model may come without data")
    return False


def choose_path(src: OnnxSource, recipe: Recipe) -> str:
    """AS_IS, AS_IS_FLOAT or ONNX_PTQ; every recipe that cannot run on this file is refused before anything runs."""
    where = recipe.source or f"recipe {recipe.name}"
    if src.quantized:
        if recipe.passes:
            raise ConfigError(
                f"{src.path.name} is already quantized ({src.quant_nodes} Q/DQ or integer-kernel nodes) but recipe "
                f"{recipe.name!r} has passes ({', '.join(p.name for p in recipe.passes)}); edgekd builds a quantized "
                "ONNX file as it is", where=where,
                hint="use --recipe fp32 (no passes) to build this file as it is, or pass the float ONNX file it was "
                     "quantized from to run the recipe")
        return AS_IS
    training = _training_passes(recipe)
    if training and converter_available():
        return ONNX2TORCH
    if training:
        raise ConfigError(
            f"recipe {recipe.name!r} trains the model ({', '.join(training)}), which needs a PyTorch module; "
            f"{src.path.name} is an ONNX graph and onnx2torch (the converter) is not installed", where=where,
            hint="pip install 'edgekd[onnx]' (onnx2torch) to convert the graph, use --recipe ptq (ONNX-level INT8 "
                 "PTQ, no training), or pass the PyTorch model (.pt / py: factory) the file was exported from")
    if not recipe.passes:
        return AS_IS_FLOAT
    config = recipe.passes[0].config
    if len(recipe.passes) != 1 or getattr(config, "weight_bits", 8) != 8:
        raise ConfigError(f"ONNX-level PTQ writes 8-bit weights; recipe {recipe.name!r} asks for "
                          f"{getattr(config, 'weight_bits', '?')}-bit", where=where,
                          hint="use weight_bits = 8 (--set quantize.weight_bits=8) or the ptq recipe")
    return ONNX_PTQ


def _check_quantized_targets(targets: list[Target]) -> None:
    """An integer-only backend (the FPGA) cannot build a float file with no quantize pass."""
    for target in targets:
        if getattr(BACKENDS.get(target.backend), "requires_quantized", False):
            raise ConfigError(f"target {target.name} ({target.backend}) needs a quantized model, but the file is "
                              "float and the recipe has no quantize pass", where=target.source,
                              hint="use --recipe ptq (ONNX-level INT8 PTQ) or pass a QDQ file")


# ---------------------------------------------------------------- data


def golden_data(src: OnnxSource, data: str | None, eval_data: str | None, seed: int, n_golden: int,
                needs_calibration: bool) -> tuple[DataSplits, str]:
    """The splits every step uses, and where the golden inputs come from (a sentence for report and manifest)."""
    from edgekd.pipeline import with_eval_set

    shape = sample_shape(src.inputs[0])
    if data is None:
        if needs_calibration:
            raise ConfigError("ONNX-level PTQ calibrates on --data, and none was given", where="--data",
                              hint="pass representative samples (npz:PATH, imagefolder:DIR ...); random:"
                                   + "x".join(str(d or "?") for d in shape) + " runs, but its ranges mean nothing")
        if any(d is None for d in shape):
            raise ConfigError(f"input {src.inputs[0].name!r} has dynamic dimensions {list(src.inputs[0].shape)} "
                              "besides the batch: golden inputs cannot be generated from it", where=str(src.path),
                              hint="pass --data with samples of the size to build for")
        random = f"random:{'x'.join(map(str, shape))}?n={2 * n_golden}&seed={seed}"
        splits = load_data(random, DataContext(seed=seed))
        how = (f"generated from the input spec {src.inputs[0].name} {list(src.inputs[0].shape)} ({random}: "
               "standard-normal noise, no --data given): parity only, no accuracy")
    else:
        splits = load_data(data, DataContext(input_shape=tuple(d for d in shape if d is not None), seed=seed))
        how = f"the first test samples of --data {data}"
    if eval_data:
        splits = with_eval_set(splits, eval_data, seed)
    fits = len(splits.input_shape) == len(shape) and all(d is None or d == s for d, s in zip(shape, splits.input_shape))
    if not fits:
        expected = tuple(d if d is not None else 0 for d in shape)
        raise SourceError(f"data samples have shape {splits.input_shape} but {src.path.name} takes "
                          f"{list(src.inputs[0].shape)} ({src.inputs[0].name})", where=data or "--data",
                          hint=layout_hint(splits.input_shape, expected) or "use samples of the model's input shape")
    batch = src.inputs[0].shape[0] if src.inputs[0].shape else None
    if isinstance(batch, int) and batch > 1:  # a fixed batch: every run is whole batches of it
        keep = len(splits.x_test) // batch * batch
        if keep == 0:
            raise SourceError(f"the data's test split has {len(splits.x_test)} samples, fewer than the file's fixed "
                              f"batch of {batch}", where=data or "--data",
                              hint="pass more data, or export the model with a dynamic batch axis")
        splits = dataclasses.replace(splits, x_test=splits.x_test[:keep],
                                     y_test=None if splits.y_test is None else splits.y_test[:keep])
    return splits, how


def fixed_batch_multiple(n: int, spec: IOSpec) -> int:
    """``n`` samples rounded down to whole batches of a fixed batch dimension (at least one batch)."""
    batch = spec.shape[0] if spec.shape else None
    return max(batch, n // batch * batch) if isinstance(batch, int) and batch > 1 else n


def _fixed_batch_profiling(targets: list[Target], spec: IOSpec) -> tuple[list[Target], list[str]]:
    """A file with a fixed batch is timed at that batch: each target's [profiling] batch_size follows it."""
    batch = spec.shape[0] if spec.shape else None
    if not isinstance(batch, int) or all(t.profiling.batch_size == batch for t in targets):
        return targets, []
    changed = [dataclasses.replace(t, profiling=dataclasses.replace(t.profiling, batch_size=batch)) for t in targets]
    return changed, [f"{spec.name} has a fixed batch of {batch}: every target's latency is measured at batch {batch}"]


def fix_dims(model: Any, spec: IOSpec, sample: tuple[int, ...]) -> list[str]:
    """Fix the input's dynamic dimensions after the batch to the data's; the batch axis stays as it is."""
    fixed = []
    value = next(v for v in model.graph.input if v.name == spec.name)
    for i, dim in enumerate(value.type.tensor_type.shape.dim[1:]):
        if not dim.HasField("dim_value"):
            fixed.append(f"{spec.name} dim {i + 1} ({dim.dim_param or '?'}) = {sample[i]}")
            dim.Clear()
            dim.dim_value = int(sample[i])
    return fixed


# ---------------------------------------------------------------- a torch view of an ONNX file


class OnnxRuntimeModule(torch.nn.Module):
    """An ONNX file as a frozen, inference-only module: ``forward`` runs ONNX Runtime (no gradients). What
    ``models.load_model`` returns for a ``.onnx`` source when no converter is installed: a teacher for
    distillation, an evaluation reference."""

    def __init__(self, path: Path, initializers: Any = ()) -> None:
        super().__init__()
        self.path = Path(path)
        self._runner: Any = None
        # the file's weights as frozen parameters: what parameter counts and device lookups
        # (next(teacher.parameters()).device) read; forward never uses them
        from onnx import numpy_helper

        self.weights = torch.nn.ParameterList(
            torch.nn.Parameter(torch.from_numpy(numpy_helper.to_array(t).astype(np.float32)), requires_grad=False)
            for t in initializers if t.data_type in _WEIGHT_TYPES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from edgekd.backends.onnxruntime import OnnxRuntimeOptions, OnnxRuntimeRunner

        if self._runner is None:
            self._runner = OnnxRuntimeRunner(self.path, OnnxRuntimeOptions())
        name = self._runner.inputs[0].name
        out = self._runner.infer_unchecked({name: x.detach().cpu().float().numpy()})[0]
        return torch.from_numpy(np.asarray(out)).to(x.device)


def load_onnx_model(path: Path, source: str) -> Any:
    """``models.load_model`` for ``.onnx``: the file run by ONNX Runtime (frozen: a teacher, a reference)."""
    src = read_source(path)
    check_io(src)
    return _loaded(src, OnnxRuntimeModule(path, src.model.graph.initializer), source)


def load_converted(spec: Any) -> Any:
    """The ``onnx2torch:model.onnx`` model source: a float ONNX graph converted to a trainable module."""
    if not converter_available():
        raise SourceError("onnx2torch is not installed", where=spec.text, hint="pip install 'edgekd[onnx]'")
    src = read_source(spec.arg)
    check_io(src)
    if src.quantized:
        raise SourceError(f"{src.path.name} is already quantized ({src.quant_nodes} Q/DQ or integer-kernel nodes); "
                          "edgekd trains float models only", where=spec.text,
                          hint="pass the float ONNX file, or build this one as it is (--model FILE --recipe fp32)")
    log(f"{src.path.name}: converted to PyTorch by onnx2torch (the recipe's passes train the converted module)")
    return _loaded(src, convert_to_torch(src), spec.text)


def _loaded(src: OnnxSource, module: torch.nn.Module, source: str) -> Any:
    from edgekd.models import LoadedModel

    shape = sample_shape(src.inputs[0])
    out = src.outputs[0].shape
    classes = out[1] if len(out) == 2 and isinstance(out[1], int) else None
    static = all(d is not None for d in shape)
    return LoadedModel(module.eval(), src.path.stem, source, tuple(shape) if static else None, classes,
                       shape_required=static)


def convert_to_torch(src: OnnxSource) -> torch.nn.Module:
    """onnx2torch's conversion; an op it cannot convert is named."""
    from onnx2torch import convert

    try:
        return convert(src.model)
    except NotImplementedError as exc:
        found = re.search(r"operation_type='(\w+)', version=(\d+)", str(exc))
        what = f"op {found.group(1)} (opset {found.group(2)})" if found else str(exc).splitlines()[0]
        nodes = [n.name or "?" for n in src.model.graph.node if found and n.op_type == found.group(1)]
        raise SourceError(f"onnx2torch cannot convert {what}" + (f", e.g. node {nodes[0]}" if nodes else "")
                          + "; the recipe's training passes need the graph as a PyTorch module", where=str(src.path),
                          hint="use an ONNX-level recipe on this file (--recipe ptq or fp32), or train the PyTorch "
                               "model it was exported from") from None


# ---------------------------------------------------------------- compress


@dataclass
class OnnxRun:
    """What the ONNX flow decided, for the report and the manifest."""

    path: str
    golden_inputs: str
    fixed_dims: list[str] = field(default_factory=list)
    flavors: dict[str, Any] = field(default_factory=dict)
    loaded_file: Path = Path()  # the user's file with its dims fixed, self-contained (scratch space)

    def to_dict(self, src: OnnxSource) -> dict[str, Any]:
        return {"file": str(src.path), "path": self.path, "opset": src.opset, "quant_nodes": src.quant_nodes,
                "inputs": [s.to_dict() for s in src.inputs], "outputs": [s.to_dict() for s in src.outputs],
                "golden_inputs": self.golden_inputs,
                "dims": self.fixed_dims or ["batch axis as in the file; no other dynamic dimension"],
                "flavors": self.flavors}


def _quantize_groups(float_path: Path, groups: list[list[Target]], recipe: Recipe, splits: DataSplits,
                     src: OnnxSource, model_path: Path, variant_path: Callable[[str], Path]) -> tuple[list[Path], dict]:
    """One quantize_static run per numerics group; group 0 writes model.onnx."""
    files, sections = [], {}
    for gi, group in enumerate(groups):
        numerics = numerics_of(BACKENDS.get(group[0].backend), group[0])
        dest = model_path if gi == 0 else variant_path(f"model.ptq-{gi}.onnx")
        log(f"onnx-ptq (onnxruntime.quantization) for {', '.join(t.name for t in group)}")
        started = time.perf_counter()
        section = ort_ptq(float_path, dest, splits.x_train, src.inputs[0], recipe.passes[0].config, numerics,
                          where=str(src.path))
        section["seconds"] = round(time.perf_counter() - started, 3)
        section["targets"] = [t.name for t in group]
        sections["onnx-ptq" if gi == 0 else f"onnx-ptq@{','.join(t.name for t in group)}"] = section
        files.append(dest)
    return files, sections


def compress_onnx(model: str, *, data: str | None, recipe: str | Recipe, targets: list[str | Target] | None,
                  out: str | Path, options: Any, teacher: str | None = None, arch: str | None = None,
                  eval_data: str | None = None) -> dict[str, Any]:
    """``pipeline.compress`` for an ONNX file (see the module docstring); returns the report."""
    from edgekd import pipeline
    from edgekd.bundle import BundleWriter

    started = time.perf_counter()
    prof = recipe if isinstance(recipe, Recipe) else load_recipe(recipe)
    if arch:
        raise ConfigError("--arch applies to a .pt state_dict file; an ONNX file holds its architecture",
                          where="--arch", hint="leave out --arch")
    src = read_source(model)
    check_io(src)
    path = choose_path(src, prof)
    if path == ONNX2TORCH:  # the ordinary pipeline on the converted module; the report names the source so
        if data is None:
            raise ConfigError(f"recipe {prof.name!r} trains the model and needs --data", where="--data",
                              hint="pass the training data (npz:PATH, imagefolder:DIR, ...)")
        return pipeline.compress(f"{CONVERTED_SCHEME}:{src.path}", data=data, recipe=prof, targets=targets, out=out,
                                 teacher=teacher, options=options, eval_data=eval_data)
    with tempfile.TemporaryDirectory(prefix="edgekd-onnx-") as scratch:
        inputs, run = _prepare(src, path, prof, targets, data, eval_data, options, Path(scratch) / "loaded.onnx")
        sources_cfg = {"model": model, "teacher": teacher, "data": data, "arch": None, "teacher_arch": None,
                       "eval_data": eval_data}
        config = {"sources": sources_cfg, "recipe": prof.to_dict(), "seed": options.seed}
        report = pipeline._start_report(inputs, sources_cfg, eval_data)
        if teacher:
            report["notes"] = [f"--teacher {teacher} is not used: recipe {prof.name!r} does not distill"]
        with BundleWriter(Path(out)) as writer:
            sources, onnx_art = _write_models(src, run, inputs, writer, report)
            fp32 = _reference_sections(src, run, inputs.splits, report, options.eval_samples)
            splits = inputs.splits
            n_golden = fixed_batch_multiple(min(options.golden_samples, len(splits.x_test)), src.inputs[0])
            golden, references = pipeline._golden_and_references(writer, writer.model_path, sources, splits, n_golden,
                                                                 options.eval_samples, report)
            if splits.labelled:
                report["accuracy"]["onnx_reference"] = references[writer.model_path][2]
            report["targets"] = pipeline._build_all(inputs, sources, golden, references, fp32, writer, options)
            config["onnx_source"] = {k: report["onnx_source"][k] for k in ("path", "golden_inputs", "dims", "opset")}
            manifest = pipeline._manifest(inputs, onnx_art, onnx_art, report["targets"], fp32, config, n_golden,
                                          options.eval_samples)
            if data is None:
                manifest = dataclasses.replace(manifest, preprocessing={**manifest.preprocessing,
                                                                        "golden_inputs": run.golden_inputs})
            pipeline._write_plots(writer, report)
            report["duration_s"] = round(time.perf_counter() - started, 2)
            report["versions"] = dict(manifest.versions)
            writer.write_report(report, markdown=write_report_md)
            writer.finish(manifest)
    return report


def _prepare(src: OnnxSource, path: str, prof: Recipe, targets: list[str | Target] | None, data: str | None,
             eval_data: str | None, options: Any, loaded_file: Path) -> tuple[Any, OnnxRun]:
    """Targets, data, the file with its dims fixed (``loaded_file``, self-contained), every backend's preflight:
    everything that can refuse the run, before a bundle folder is opened."""
    import onnx

    from edgekd import pipeline
    from edgekd.export import finalize_onnx
    from edgekd.models import LoadedModel

    tgts = pipeline._check_targets(unique_targets([t if isinstance(t, Target) else load_target(t)
                                                  for t in (targets or ["cpu"])]), options.skip_unavailable)
    if path == AS_IS_FLOAT:
        _check_quantized_targets(tgts)
    splits, how = golden_data(src, data, eval_data, options.seed, options.golden_samples, path == ONNX_PTQ)
    run = OnnxRun(path, how, fix_dims(src.model, src.inputs[0], splits.input_shape), loaded_file=loaded_file)
    tgts, batch_note = _fixed_batch_profiling(tgts, src.inputs[0])
    run.fixed_dims += batch_note
    onnx.save(src.model, str(loaded_file), save_as_external_data=False)
    finalize_onnx(loaded_file)  # shape inference over the fixed dims, one self-contained file
    check_onnx_file(tgts, loaded_file)  # an op a backend cannot build: refused before quantizing
    # the pipeline's steps read the model's name and shape here (its parameters are counted from the file)
    loaded = LoadedModel(OnnxRuntimeModule(loaded_file), src.path.stem, str(src.path), splits.input_shape,
                         splits.num_classes)
    return pipeline.Inputs(prof, tgts, loaded, None, splits), run


def _write_models(src: OnnxSource, run: OnnxRun, inputs: Any, writer: Any, report: dict[str, Any]
                  ) -> tuple[dict[str, Path], Artifact]:
    """model.onnx (the file as it is, or group 0's PTQ), the other groups' and flavors' variants; returns the file
    each target builds from and model.onnx as an Artifact."""
    from edgekd import pipeline
    from edgekd.export import finalize_onnx

    loaded_file, tgts = run.loaded_file, inputs.targets
    groups = pipeline.target_groups(tgts) if run.path == ONNX_PTQ else [tgts]
    if run.path == ONNX_PTQ:
        group_files, report["passes"] = _quantize_groups(loaded_file, groups, inputs.recipe, inputs.splits, src,
                                                         writer.model_path, writer.variant_path)
    else:
        writer.model_path.write_bytes(loaded_file.read_bytes())
        group_files, report["passes"] = [writer.model_path], {}
    io_in, io_out = finalize_onnx(writer.model_path)
    sources, run.flavors = (target_sources(groups, group_files, writer) if run.path != AS_IS_FLOAT
                            else ({t.name: writer.model_path for t in tgts}, {}))
    report["onnx_source"] = run.to_dict(src)
    report["export"] = {"exporter": f"none ({run.path})", "opset": src.opset, "parity_vs_torch": None,
                        "size_mb": writer.model_path.stat().st_size / 1e6,
                        "variants": sorted({writer.relpath(p) for p in sources.values()})}
    history = (f"load:{src.path}", run.path if run.path != ONNX_PTQ else "onnx-ptq:onnxruntime.quantization")
    return sources, Artifact(kind="onnx", payload=writer.model_path, inputs=io_in, outputs=io_out, history=history)


def _reference_sections(src: OnnxSource, run: OnnxRun, splits: DataSplits, report: dict[str, Any],
                        eval_samples: int = 1000) -> dict[str, Any]:
    """The loaded file's accuracy (ONNX Runtime) as the one stage and the FP32 reference budgets are judged against
    (with ``eval_accuracy`` on the samples eval.npz keeps when it is capped)."""
    from edgekd.export import onnx_outputs_all
    from edgekd.pipeline import _metric_of, _metric_on, eval_indices

    outputs = onnx_outputs_all(run.loaded_file, splits.x_test) if splits.labelled else None
    accuracy = _metric_of(splits, outputs) if outputs is not None else None
    stage = "loaded (already quantized: no float model)" if run.path == AS_IS else "loaded (ONNX float, ONNX Runtime)"
    report["params"] = {"student_before": src.params}
    report["stages"] = [{"stage": stage, "accuracy": accuracy, "params": src.params}]
    fp32 = {"stage": stage, "accuracy": accuracy}
    idx = eval_indices(len(splits.x_test), eval_samples)
    if outputs is not None and len(idx) < len(splits.x_test):
        fp32["eval_accuracy"] = _metric_on(splits, outputs, idx)
    report["fp32_reference"] = {**fp32, "data": f"test split ({len(splits.x_test)} samples)",
                                "why": "the accuracy budget is a drop against the file as loaded"
                                + (" (quantized already: the drop is the runtime's own)" if run.path == AS_IS else "")}
    report["accuracy"] = {"student_before": accuracy, "fp32_reference": accuracy} if splits.labelled else {}
    return fp32


def write_report_md(report: Mapping[str, Any], path: Path) -> None:
    """The pipeline's report.md with an "ONNX source" section saying which path ran."""
    from edgekd.compress_report import write_report_md as pipeline_md

    pipeline_md(dict(report), path)
    run = report.get("onnx_source") or {}
    lines = ["", "## ONNX source", "", f"- file `{run.get('file')}`, opset {run.get('opset')}, "
             f"{run.get('quant_nodes')} Q/DQ or integer-kernel nodes",
             f"- path that ran: **{run.get('path')}**", f"- golden inputs: {run.get('golden_inputs')}",
             *[f"- dims: {d}" for d in run.get("dims", [])]]
    for name, info in (run.get("flavors") or {}).items():
        lines.append(f"- flavor {name}: {info['file']}; " + "; ".join(info["changes"] or ["nothing to change"]))
    lines += [f"- note: {n}" for n in report.get("notes", [])]
    path.write_text(path.read_text() + "\n".join(lines) + "\n")
