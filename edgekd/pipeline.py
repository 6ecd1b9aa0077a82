"""compress(): load -> passes -> export -> build -> compare -> measure -> bundle. A straight line."""

from __future__ import annotations

import dataclasses
import platform
import shutil
import sys
import tempfile
import time
import weakref
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgekd import __version__, onnx_source
from edgekd import inputs as model_inputs
from edgekd.artifact import Artifact
from edgekd.backends import BACKENDS
from edgekd.backends.base import auto_precisions_of, call_build, numerics_of, sdk_versions
from edgekd.backends.flavors import REFERENCE_FLAVOR, flavor_of
from edgekd.budgets import Verdict, judge_target, p90_for_budget
from edgekd.bundle import EVAL, PLOTS, BundleManifest, BundleWriter, ManifestTarget, golden_key, reference_key
from edgekd.compress_report import write_report_md, write_training_plot
from edgekd.config import PassSpec, Recipe, Target, load_recipe, load_target, unique_targets
from edgekd.data import DataContext, DataSplits, carve_validation, is_class_ids, layout_hint, load_data, splits_from_dict, validate
from edgekd.errors import BackendUnavailable, BuildError, EdgekdError
from edgekd.export import export_onnx, onnx_outputs_all, torch_outputs_all
from edgekd.models import LoadedModel, check_fits_data, load_model, source_label
from edgekd.parity import compare_outputs, quantized_output_step
from edgekd.passes import PASSES, PassContext
from edgekd.preflight import check_before_training
from edgekd.profiler.measure import MeasureSettings, measure_latency
from edgekd.progress import log
from edgekd.status import Status
from edgekd.tasks import TaskSpec, resolve, subset, task_metric


@dataclass
class CompressOptions:
    seed: int = 0
    golden_samples: int = 32
    #: at most this many test samples go into eval.npz (``--eval-samples``; the report says when it caps)
    eval_samples: int = 1000
    #: weights.pt (the compressed student's state_dict) in the bundle; False for a deploy-only bundle (``--no-weights``)
    weights: bool = True
    skip_unavailable: bool = False
    measure: bool = True
    nproc: int = 1
    extra: dict[str, Any] = field(default_factory=dict)
    #: a multi-input model's input names in forward() order (default: its forward signature's; edgekd.inputs)
    input_names: tuple[str, ...] | None = None


def accuracy(outputs: np.ndarray | dict[str, np.ndarray], labels: Any, task: TaskSpec | None = None,
             x: np.ndarray | None = None) -> float | None:
    """The task metric of a model's outputs (an array for one output, or a dict by name; top-1 % for
    classifiers; see edgekd.tasks.task_metric). Without a task: top-1 of N x C logits, as before tasks existed."""
    if task is None:
        if isinstance(outputs, dict):
            outputs = next(iter(outputs.values()))
        if labels is None or outputs.ndim != 2:
            return None
        return float((outputs.argmax(1) == labels).mean() * 100)
    if not isinstance(outputs, dict):
        outputs = {task.single.name: outputs}
    return task_metric(task, outputs, labels, x)


def eval_indices(n_test: int, cap: int) -> np.ndarray:
    """The test samples eval.npz keeps: all of them up to ``cap``, else ``cap`` evenly spaced ones (a test split
    sorted by class still gives every class)."""
    if cap < 1:
        raise EdgekdError(f"eval_samples {cap}: eval.npz needs at least 1 sample", where="--eval-samples")
    if n_test <= cap:
        return np.arange(n_test)
    return np.linspace(0, n_test - 1, cap).round().astype(np.int64)


def _metric_on(data: DataSplits, outputs: dict[str, np.ndarray], idx: np.ndarray) -> float | None:
    """The task metric on the test samples ``idx`` (what eval.npz holds)."""
    return accuracy({k: v[idx] for k, v in outputs.items()}, subset(data.y_test, idx), data.task, data.x_test[idx]) \
        if _scored(data) else None


def output_names(data: DataSplits) -> tuple[str, ...]:
    return tuple(o.name for o in data.task.outputs) if data.task is not None else ("logits",)


def _metric_of(data: DataSplits, outputs: np.ndarray | dict[str, np.ndarray]) -> float | None:
    """The data's task metric on test-split ``outputs`` (None when the metric needs labels the data lacks)."""
    return accuracy(outputs, data.y_test, data.task, data.x_test) if _scored(data) else None


def _scored(data: DataSplits) -> bool:
    """Whether the test split can be scored: labelled, or a task whose metric needs no labels (reconstruction)."""
    return data.labelled or (data.task is not None and data.task.metric == "reconstruction_error")


def runtime_versions() -> dict[str, str]:
    versions = {"edgekd": __version__, "python": platform.python_version(), "torch": torch.__version__}
    for mod in ("onnx", "brevitas", "torch_pruning"):
        module = sys.modules.get(mod)
        if module is None:
            try:
                module = __import__(mod)
            except ImportError:
                continue
        versions[mod] = str(getattr(module, "__version__", "?"))
    return {**versions, **sdk_versions(BACKENDS)}


def run_batched_all(runner: Any, x: np.ndarray, batch: int = 256) -> dict[str, np.ndarray]:
    """Every output of the runner on ``x``, by name, in chunks (fixed-batch artifacts one batch at a time)."""
    return model_inputs.run_batched(runner.infer, runner.inputs, x, [o.name for o in runner.outputs], batch)


def _check_targets(targets: list[Target], skip_unavailable: bool) -> list[Target]:
    usable = []
    for target in targets:
        backend = BACKENDS.get(target.backend, where=target.source)
        status = backend.availability()
        # Backends that can emit an artifact without their SDK (TensorRT: a build script) say so.
        if status.available or getattr(backend, "builds_without_sdk", False):
            usable.append(target)
        elif skip_unavailable:
            log(f"skipping target {target.name}: {status}")
        else:
            raise BackendUnavailable(f"backend {target.backend!r} is {status}", where=target.source,
                                     hint="install its extra, pick another --target, or pass --skip-unavailable")
    return usable


@dataclass
class Stages:
    """Each stage's accuracy on the test split, and the FP32 reference the accuracy budget is judged against:
    the model as it was before the first compressing pass (after distillation; the loaded model if none)."""

    data: DataSplits
    rows: list[dict[str, Any]] = field(default_factory=list)
    reference: dict[str, Any] | None = None
    #: the test samples eval.npz keeps when it is capped: each row also gets ``eval_accuracy`` on them, so
    #: `edgekd check` compares a target with the FP32 model on the same samples
    eval_idx: np.ndarray | None = None
    #: id(module) -> (weak reference, accuracy) of the latest recorded state, so the report's before/after
    #: numbers reuse the stage evaluations instead of running the test split again
    _measured: dict[int, tuple[Any, float | None]] = field(default_factory=dict)

    def record(self, stage: str, module: torch.nn.Module) -> None:
        outputs = torch_outputs_all(module, self.data.x_test, output_names(self.data)) if _scored(self.data) else None
        acc = _metric_of(self.data, outputs) if outputs is not None else None
        self._measured[id(module)] = (weakref.ref(module), acc)
        row = {"stage": stage, "accuracy": acc, "params": sum(p.numel() for p in module.parameters())}
        if outputs is not None and self.eval_idx is not None and len(self.eval_idx) < len(self.data.x_test):
            row["eval_accuracy"] = _metric_on(self.data, outputs, self.eval_idx)
        self.rows.append(row)

    def accuracy_of(self, module: torch.nn.Module) -> float | None:
        """The recorded accuracy of ``module`` (evaluated now if it was never recorded)."""
        ref, acc = self._measured.get(id(module), (None, None))
        if ref is not None and ref() is module:
            return acc
        return _metric_of(self.data, torch_outputs_all(module, self.data.x_test, output_names(self.data))) \
            if _scored(self.data) else None

    def before_pass(self, compresses: bool) -> None:
        if compresses and self.reference is None and self.rows:
            self.reference = dict(self.rows[-1])

    def fp32(self) -> dict[str, Any]:
        return self.reference or dict(self.rows[-1])


def _run_passes(student: Artifact, specs: tuple[PassSpec, ...], ctx: PassContext, label: str = "",
                stages: Stages | None = None) -> Artifact:
    current = student
    for i, spec in enumerate(specs):
        info = PASSES.get(spec.name)
        if stages is not None:
            stages.before_pass(info.compresses)
        log(f"[{i + 1}/{len(specs)}] pass {spec.name}{label}")
        started = time.perf_counter()
        current = info.fn(current, spec.config, ctx)
        ctx.report.setdefault(spec.name, {})["seconds"] = round(time.perf_counter() - started, 3)
        if stages is not None and current.kind == "torch":
            stages.record(f"after {spec.name}{label}", current.payload)
    return current


def _run_per_numerics_group(shared: Artifact, specs: tuple[PassSpec, ...], ctx: PassContext,
                            targets: list[Target], stages: Stages | None = None) -> tuple[list[list[Target]], list[Artifact]]:
    """Run the target-dependent passes (and every pass after them) once per numerics group."""
    if not specs:
        return [targets], [shared]
    groups = target_groups(targets)
    models = []
    for gi, group in enumerate(groups):
        gctx = dataclasses.replace(ctx, targets=tuple(group), report={})
        names = ", ".join(t.name for t in group)
        models.append(_run_passes(shared, specs, gctx, "" if len(groups) == 1 else f" for {names}", stages))
        suffix = "" if gi == 0 else "@" + names.replace(" ", "")
        for name, section in gctx.report.items():
            ctx.report[name + suffix] = section
    return groups, models


def _export_sources(groups: list[list[Target]], models: list[Artifact], model_onnx: Path, writer: BundleWriter,
                    data: DataSplits, prof: Recipe) -> dict[str, Path]:
    """The ONNX file each target builds from: model.onnx, or a per-runtime / per-numerics variant."""
    sources: dict[str, Path] = {}
    made: dict[tuple[int, str], Path] = {}
    for gi, (group, model) in enumerate(zip(groups, models, strict=True)):
        for target in group:
            flavor = flavor_of(BACKENDS.get(target.backend))
            if gi == 0 and (flavor == REFERENCE_FLAVOR or not model.meta.get("flavored_export")):
                sources[target.name] = model_onnx
                continue
            if (gi, flavor.name) not in made:
                name = f"model.{flavor.name}.onnx"
                if any(p.name == name for p in made.values()):
                    name = f"model.{flavor.name}-{gi}.onnx"
                made[(gi, flavor.name)] = export_onnx(model, writer.variant_path(name), example=data.x_test,
                                                      settings=prof.export, flavor=flavor).path
            sources[target.name] = made[(gi, flavor.name)]
    return sources


def numerics_key(target: Target) -> tuple[bool, bool]:
    """The quantization numerics a target's backend asks for: (symmetric int8 activations, power-of-two scales)."""
    return numerics_of(BACKENDS.get(target.backend, where=target.source), target).key()


def target_groups(targets: list[Target]) -> list[list[Target]]:
    """Targets that can share one quantized model. Each backend declares its numerics (ONNX Runtime and OpenVINO
    run asymmetric uint8 activations fastest, TensorRT needs symmetric int8, an FPGA may want power-of-two
    scales): one set of numerics cannot serve them all, so target-dependent passes run once per group. The
    unconstrained group comes first: it produces model.onnx."""
    groups: dict[tuple[bool, bool], list[Target]] = {}
    for target in targets:
        groups.setdefault(numerics_key(target), []).append(target)
    return [groups[key] for key in sorted(groups)]


@dataclass(frozen=True)
class References:
    """What a target is compared with: ONNX Runtime on the file it was built from (parity, ``onnx_accuracy``)
    and the uncompressed FP32 model (the accuracy budget, ``fp32_accuracy``)."""

    golden: dict[str, np.ndarray]  # golden outputs by output name
    onnx_accuracy: float | None
    fp32_accuracy: float | None
    fp32_stage: str = ""
    #: the task (its metric's name, direction and unit; None: top-1 %)
    task: TaskSpec | None = None


def _build_target(target: Target, source: Path, staging: Path, golden_input: np.ndarray, refs: References,
                  data: DataSplits, options: CompressOptions) -> dict[str, Any]:
    backend = BACKENDS.get(target.backend)
    out_dir = staging / target.name
    auto = None
    # a backend that offers precisions to profile (OpenVINO's floats on a CPU) chooses here; one that offers none
    # (TensorRT: precision = "auto" means "let the builder choose") handles "auto" itself
    if getattr(target.options, "precision", None) == "auto" and auto_precisions_of(backend, target):
        target, auto = _choose_precision(target, source, staging, data, refs.fp32_accuracy)
    log(f"building target {target.name} ({target.backend})")
    build = call_build(backend, source, target, out_dir, golden_input)
    entry: dict[str, Any] = {"backend": target.backend, "device": target.device, "build": build.to_dict(),
                             "size_mb": sum(p.stat().st_size for p in out_dir.rglob("*") if p.is_file()) / 1e6}
    if auto is not None:
        entry["auto_precision"] = auto
    if not build.runnable:
        entry["status"] = Status.NOT_RUN
        if refs.onnx_accuracy is not None:  # no engine ran: the best accuracy we have is ORT on the file it builds from
            entry["variant_accuracy"] = {"accuracy": refs.onnx_accuracy, "runtime": f"ONNX Runtime on {source.name}",
                                         "why": f"no {target.backend} engine ran here"}
        return entry
    runner = backend.load(out_dir, target, build)
    entry["runtime"] = runner.describe()
    step = quantized_output_step(source)
    parity, per_output = _parity(refs.golden, run_batched_all(runner, golden_input), target, step, data)
    entry["parity"] = parity.to_dict() | ({"outputs": per_output} if len(per_output) > 1 else {})
    entry["parity_ok"] = parity.ok
    entry["output_step"] = step
    if _scored(data):
        entry["accuracy"] = _metric_of(data, run_batched_all(runner, data.x_test))
        drop = data.task.drop if data.task is not None else (lambda ref, v: ref - v)
        if refs.fp32_accuracy is not None and entry["accuracy"] is not None:
            entry["accuracy_drop"] = drop(refs.fp32_accuracy, entry["accuracy"])  # the budget: against FP32
        if refs.onnx_accuracy is not None and entry["accuracy"] is not None:
            entry["accuracy_drop_vs_onnx"] = drop(refs.onnx_accuracy, entry["accuracy"])  # the runtime's own share
    estimate = build.estimate
    if estimate is not None:
        # FPGA: timing the C model on the host says nothing about the device; report the labelled estimate
        entry["latency"] = {"source": "estimate", "label": estimate.label, "p50_ms": estimate.latency_us / 1e3,
                            "p90_ms": estimate.latency_us / 1e3, "throughput_per_s": estimate.throughput_per_s}
        entry["fits_part"] = estimate.fits
        entry["fit_detail"] = _fit_detail(estimate.facts)
    elif options.measure:
        batch = target.profiling.batch_size
        feeds = model_inputs.feeds(model_inputs.repeat_first(golden_input, batch), [s.name for s in runner.inputs])
        prof = target.profiling
        sample = measure_latency(runner, feeds, description=f"profiling {target.name}",
                                 settings=MeasureSettings(warmup=prof.warmup, iterations=prof.iterations,
                                                          duration_s=prof.duration_s))
        entry["latency"] = sample.summary()
    verdicts = check_budgets(target, entry, refs)
    entry["budgets"] = {name: v.to_dict() for name, v in verdicts.items()}
    entry["reasons"] = [f"parity: {f}" for f in parity.failures] + [v.reason for v in verdicts.values() if not v.ok]
    entry["notes"] = [v.reason for v in verdicts.values() if v.ok and v.reason]
    entry["status"] = Status.FAILED if entry["reasons"] else Status.PASSED
    return entry


def _parity(golden: dict[str, np.ndarray], cand: dict[str, np.ndarray], target: Target, step: float,
            data: DataSplits) -> tuple[Any, dict[str, Any]]:
    """Parity of every output against ONNX Runtime on the same file, each with its own class axis (argmax along
    it; none for a continuous output). Returns the first output's result with every output's failures (named when
    there are several), and each output's result by name."""
    specs = data.task.outputs if data.task is not None else ()
    axes = {o.name: o.class_axis for o in specs}
    if len(cand) != len(golden):
        return compare_outputs(np.zeros(len(golden)), np.zeros(len(cand)), target.parity), {}
    results = {}
    # paired by position: the artifact's outputs are the graph's, in the order the export wrote them
    for k, ((name, ref), got) in enumerate(zip(golden.items(), cand.values(), strict=True)):
        # the output step is the model's first output's (quantized_output_step); others get none
        results[name] = compare_outputs(ref, got, target.parity, output_step=step if k == 0 else 0.0,
                                        class_axis=axes.get(name, 1))
    first = next(iter(results.values()))
    if len(results) > 1:
        failures = tuple(f"output {n}: {f}" for n, r in results.items() for f in r.failures)
        first = dataclasses.replace(first, failures=failures)
    return first, {n: r.to_dict() for n, r in results.items()}


def _build_or_fail(target: Target, source: Path, staging: Path, golden_input: np.ndarray, refs: References,
                   data: DataSplits, options: CompressOptions) -> dict[str, Any]:
    """One target's build; an edgekd error fails that target (with its reason) and the others still ship."""
    try:
        return _build_target(target, source, staging, golden_input, refs, data, options)
    except (BuildError, EdgekdError) as exc:
        if isinstance(exc, BackendUnavailable):
            raise
        shutil.rmtree(staging / target.name, ignore_errors=True)  # a half-built folder is not shipped
        log(f"target {target.name} failed to build: {exc.message}")
        return {"backend": target.backend, "device": target.device, "status": Status.FAILED,
                "reasons": [f"build: {exc.message}" + (f" ({exc.where})" if exc.where else "")
                            + (f"; {exc.hint}" if exc.hint else "")]}


def _choose_precision(target: Target, onnx_path: Path, staging: Path, data: DataSplits,
                      reference_acc: float | None) -> tuple[Target, dict[str, Any]]:
    """precision = "auto": profile every precision the target supports on this device and build the fastest
    one inside the accuracy budget. The whole table and the reason go into the report and the bundle."""
    from edgekd.profiler.auto import auto_precision, write_auto
    from edgekd.profiler.measure import MeasureSettings
    from edgekd.profiler.run import ProfileOptions

    eval_data = (data.x_test, data.y_test) if data.labelled and (data.task is None or data.task.is_classification) else None
    out_dir = staging / "profile" / f"auto-{target.name}"
    settings = MeasureSettings(warmup=target.profiling.warmup, iterations=target.profiling.iterations,
                               duration_s=target.profiling.duration_s)
    result = auto_precision(onnx_path, target, out_dir, ProfileOptions(measure=settings, layers=False),
                            eval_data=eval_data, reference_acc=reference_acc)
    write_auto(result, out_dir, plots=False)
    if result.winner is None:
        raise BuildError(f"precision auto: {result.reason}", where=target.source,
                         hint="relax budgets.max_accuracy_drop or choose a precision explicitly")
    chosen = next(c for c in result.candidates if c.label == result.winner)
    log(f"precision auto for {target.name}: {result.winner} ({result.reason})")
    options = dataclasses.replace(target.options, precision=chosen.requested)
    summary = {"winner": result.winner, "precision": chosen.requested, "reason": result.reason,
               "candidates": [{k: v for k, v in c.row().items() if k != "out_dir"} for c in result.candidates],
               "details": f"profile/auto-{target.name}/auto.md"}
    return dataclasses.replace(target, options=options), summary


def check_budgets(target: Target, entry: dict[str, Any], refs: References | None = None) -> dict[str, Verdict]:
    """The target's budgets judged by edgekd.budgets (the one judge; `edgekd check` asks it too)."""
    lat = entry.get("latency") or {}
    fits, detail = entry.get("fits_part"), entry.get("fit_detail", "")
    p90, how = p90_for_budget(lat) if lat else (None, "")
    return judge_target(target.budgets, p90_ms=p90, p90_how=how,
                        size_mb=entry.get("size_mb"), accuracy=entry.get("accuracy"),
                        reference_accuracy=refs.fp32_accuracy if refs else None,
                        reference_label=f"FP32 reference ({refs.fp32_stage})" if refs else "FP32 reference",
                        fits=fits, fit_detail=detail, task=refs.task if refs else None)


def _fit_detail(facts: dict[str, Any]) -> str:
    total, part = facts.get("total") or {}, facts.get("part_resources") or {}
    over = facts.get("over") or []
    return ", ".join(f"{k} {total.get(k)} of {part.get(k)}" for k in over) or ""


def with_eval_set(splits: DataSplits, source: str, seed: int) -> DataSplits:
    """``--eval-data SRC``: a labelled set (any data source; its test split) that every stage and target is
    evaluated on, e.g. beside data-free ``--data synthetic:bn``. Training and calibration keep ``--data``."""
    ev = load_data(source, DataContext(seed=seed))
    if not ev.labelled:
        raise EdgekdError("the evaluation data has no labels", where=f"--eval-data {source}",
                          hint="pass a labelled source (npz with x and y, imagefolder:DIR, builtin:digits ...)")
    if ev.input_shape != splits.input_shape:
        raise EdgekdError(f"evaluation samples have shape {ev.input_shape} but the training data's are "
                          f"{splits.input_shape}", where=f"--eval-data {source}",
                          hint=layout_hint(ev.input_shape, splits.input_shape) or "use samples of the same shape")
    return dataclasses.replace(splits, x_test=ev.x_test, y_test=ev.y_test,
                               num_classes=ev.num_classes or splits.num_classes, labels=ev.labels or splits.labels)


@dataclass
class Inputs:
    """What a run starts from, loaded and checked against each other before anything is trained."""

    recipe: Recipe
    targets: list[Target]
    student: LoadedModel
    teacher: LoadedModel | None
    splits: DataSplits


def resolve_task(task: str | None, recipe: Recipe, student: LoadedModel, teacher: LoadedModel | None,
                 splits: DataSplits) -> TaskSpec:
    """The task (``--task`` over the recipe's ``[task]``), checked against the model's outputs, the teacher's and the
    labels before any training; each mismatch names the output."""
    from edgekd.train.task_losses import probe_outputs

    declared = dict(recipe.task or {})
    if task:
        declared["name"] = task
    where = f"--task {task}" if task else (f"{recipe.source} [task]" if recipe.task else "task")
    probe = model_inputs.to_torch(splits.x_test[:2])
    shapes = probe_outputs(student.module, probe, declared.get("name"))
    spec = resolve(declared or None, output_shapes=shapes, labels=splits.y_train, input_dtype=splits.input_specs[0].dtype,
                   where=where)
    if teacher is not None:
        t_shapes = dict(zip([o.name for o in spec.outputs], [s for _, s in probe_outputs(teacher.module, probe, spec.name)]))
        for out, (_, shape) in zip(spec.outputs, shapes, strict=True):
            if out.kd != "none" and t_shapes.get(out.name) != shape:
                raise EdgekdError(f"output {out.name!r}: the student gives {'x'.join(map(str, shape))} but the teacher "
                                  f"{'x'.join(map(str, t_shapes.get(out.name) or ()))}; {out.kd} KD compares them "
                                  "element by element", where=where,
                                  hint=f"use a teacher with the same output shape, or set [task.outputs.{out.name}] kd = 'none'")
    structural = [p.name for p in recipe.passes if PASSES.get(p.name).compresses]
    if len(spec.outputs) > 1 and structural:
        raise EdgekdError(f"task {spec.name}: the model has {len(spec.outputs)} outputs "
                          f"({', '.join(o.name for o in spec.outputs)}); distillation, export, every backend, parity "
                          f"and bundles take several outputs, but the {', '.join(structural)} pass(es) of recipe "
                          f"{recipe.name!r} take one output today", where=where,
                          hint="use the kd or fp32 recipe for a multi-output model; nothing was trained")
    log(f"task: {spec.name} (metric {spec.metric}, {'higher' if spec.higher_is_better else 'lower'} is better; "
        f"{spec.origin})")
    return spec


def _load_inputs(model: Any, data: Any, recipe: str | Recipe, targets: list[str | Target] | None, teacher: Any,
                 arch: str | None, teacher_arch: str | None, eval_data: str | None, options: CompressOptions,
                 task: str | None = None) -> Inputs:
    """Load recipe, targets, models and data, and refuse every combination that cannot work (before training)."""
    prof = recipe if isinstance(recipe, Recipe) else load_recipe(recipe)
    tgts = unique_targets([t if isinstance(t, Target) else load_target(t) for t in (targets or ["cpu"])])
    tgts = _check_targets(tgts, options.skip_unavailable)
    quantizing = any(spec.name == "quantize" for spec in prof.passes)
    for target in tgts:
        if getattr(BACKENDS.get(target.backend), "requires_quantized", False) and not quantizing:
            raise EdgekdError(f"target {target.name} ({target.backend}) needs a quantized model, but recipe "
                              f"{prof.name!r} has no quantize pass", where=target.source,
                              hint="use an INT8 recipe such as int8-kd, int8-ptq or ptq")
    torch.manual_seed(options.seed)
    student_src = load_model(model, arch=arch)
    teacher_src = load_model(teacher, arch=teacher_arch) if teacher else None
    if isinstance(data, dict):  # the Python API: {"x": array or {input: array}, "y": labels}
        data = splits_from_dict(data, "data", "data")
    if isinstance(data, DataSplits):  # the Python API: arrays the caller already holds
        splits = carve_validation(validate(data, where="data"))
        data = f"data ({data.name})"
    else:
        splits = load_data(data, DataContext(teacher=teacher_src.module if teacher_src else None,
                                             input_shape=student_src.input_shape, seed=options.seed))
    if eval_data:
        splits = with_eval_set(splits, eval_data, options.seed)
    splits = _in_model_order(splits, student_src, teacher_src, options.input_names, data)
    for role, src in (("model", student_src), ("teacher", teacher_src)):
        if model_inputs.is_multi(splits.x_train):
            break  # per-input shapes: the dry run below says which input does not fit
        if src is not None and src.shape_required and src.input_shape and tuple(src.input_shape) != splits.input_shape:
            raise EdgekdError(f"data samples have shape {splits.input_shape} but {role} {src.name} expects "
                              f"{tuple(src.input_shape)}", where=data,
                              hint=layout_hint(splits.input_shape, tuple(src.input_shape))
                              or "use data of the model's input size (e.g. builtin:digits for digits-* models)")
    check_fits_data(student_src, teacher_src, splits.x_test, splits.num_classes if is_class_ids(splits.y_test) else None,
                    data)
    splits.task = resolve_task(task, prof, student_src, teacher_src, splits)
    check_before_training(prof, tgts, student_src.module, splits.x_test)
    return Inputs(prof, tgts, student_src, teacher_src, splits)


def _in_model_order(splits: DataSplits, student: LoadedModel, teacher: LoadedModel | None,
                    names: tuple[str, ...] | None, where: str) -> DataSplits:
    """Each split's inputs in the order the model's forward() takes them (edgekd.inputs.order_for); a data set that
    does not name the model's inputs (or one array for a multi-input model) is refused here, before training."""
    for role, src in (("teacher", teacher), ("model", student)):
        if src is None:
            continue
        for split in ("x_train", "x_test", "x_val"):
            x = getattr(splits, split)
            if x is not None:
                ordered = model_inputs.order_for(src.module, x, f"{role} {src.name}", where, names)
                if role == "model":
                    setattr(splits, split, ordered)
    return splits


def _start_report(inputs: Inputs, sources: dict[str, Any], eval_data: str | None) -> dict[str, Any]:
    splits, teacher_src, student_src = inputs.splits, inputs.teacher, inputs.student
    report: dict[str, Any] = {
        "schema": "edgekd.report/1", "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "edgekd_version": __version__,
        "sources": {**{k: sources[k] for k in ("model", "teacher", "data")}, "recipe": inputs.recipe.name,
                    "targets": [t.name for t in inputs.targets]},
        "recipe": inputs.recipe.to_dict(),  # as resolved: the file plus any --set overrides
        "data": {"name": splits.name, "train": len(splits.x_train), "test": len(splits.x_test),
                 "validation": splits.validation, "input_shape": _shape_record(splits.input_shape),
                 **({"inputs": [s.to_dict() for s in splits.input_specs]} if model_inputs.is_multi(splits.x_test) else {}),
                 "labelled": splits.labelled,
                 **({"eval_data": eval_data, "note": f"every stage and target is evaluated on {eval_data}'s test "
                     f"split ({len(splits.x_test)} samples); --data {sources['data']} is used for training and "
                     "calibration"} if eval_data else {})},
        "accuracy": {}, "params": {"student_before": sum(p.numel() for p in student_src.module.parameters())},
    }
    if teacher_src is not None:
        report["params"]["teacher"] = sum(p.numel() for p in teacher_src.module.parameters())
    if _scored(splits):
        if teacher_src is not None:
            report["accuracy"]["teacher"] = _metric_of(splits, torch_outputs_all(teacher_src.module, splits.x_test,
                                                                                   output_names(splits)))
        report["accuracy"]["student_before"] = None  # the "loaded" stage fills it (one evaluation, not two)
    return report


def _shape_record(shape: Any) -> Any:
    return {k: list(v) for k, v in shape.items()} if isinstance(shape, dict) else list(shape)


def _compress_model(inputs: Inputs, model: str, scratch: Path, options: CompressOptions,
                    report: dict[str, Any]) -> tuple[list[list[Target]], list[Artifact], dict[str, Any]]:
    """The recipe's passes (target-dependent ones once per numerics group); returns the groups, one compressed
    model per group, and the FP32 reference stage."""
    splits, prof, tgts = inputs.splits, inputs.recipe, inputs.targets
    artifact = Artifact(kind="torch", payload=inputs.student.module, history=(f"load:{model}",),
                        meta={"source": model, "name": inputs.student.name, "output_names": list(output_names(splits))})
    ctx = PassContext(teacher=inputs.teacher.module if inputs.teacher else None, data=splits, targets=tuple(tgts),
                      seed=options.seed, workdir=scratch, nproc=options.nproc)
    split = next((i for i, spec in enumerate(prof.passes) if PASSES.get(spec.name).target_dependent), len(prof.passes))
    stages = Stages(splits, eval_idx=eval_indices(len(splits.x_test), options.eval_samples))
    stages.record("loaded", inputs.student.module)
    if _scored(splits):
        report["accuracy"]["student_before"] = stages.rows[0]["accuracy"]
    shared = _run_passes(artifact, prof.passes[:split], ctx, stages=stages)
    groups, group_models = _run_per_numerics_group(shared, prof.passes[split:], ctx, tgts, stages)
    fp32 = stages.fp32()
    report["stages"] = stages.rows
    report["fp32_reference"] = {**fp32, "data": f"test split ({len(splits.x_test)} samples)",
                                "why": "the accuracy budget is a drop against the model before the first "
                                       "compressing pass (sparsity, pruning, quantization)"}
    report["passes"] = ctx.report
    module = group_models[0].payload
    report["params"]["student_after"] = sum(p.numel() for p in module.parameters())
    if _scored(splits):
        report["accuracy"]["student_after"] = stages.accuracy_of(module)
    return groups, group_models, fp32


def _golden_and_references(writer: BundleWriter, model_onnx: Path, sources: dict[str, Path], splits: DataSplits,
                           n_golden: int, eval_samples: int = 1000, report: dict[str, Any] | None = None,
                           ) -> tuple[dict[str, np.ndarray], dict[Path, tuple[str, np.ndarray, float | None]]]:
    """golden.npz (inputs, labels, ONNX Runtime's outputs of every file a target builds from) and eval.npz (at most
    ``eval_samples`` test samples; ``report["data"]["eval_set"]`` says how many of how many)."""
    golden = model_inputs.to_npz(splits.x_test[:n_golden], "input", "#")  # input, or input#<name> per input
    if splits.y_test is not None:
        if isinstance(splits.y_test, dict):
            golden |= {f"labels#{k}": v[:n_golden] for k, v in splits.y_test.items()}
        else:
            golden["labels"] = splits.y_test[:n_golden]
    references: dict[Path, tuple[str, np.ndarray, float | None]] = {}
    for path in dict.fromkeys([model_onnx, *sources.values()]):
        # each target is compared with ONNX Runtime running the very file it was built from
        outputs = onnx_outputs_all(path, splits.x_test)
        key = reference_key(writer.relpath(path))
        for k, (name, values) in enumerate(outputs.items()):  # the first output keeps the plain key
            golden[golden_key(key, name, k)] = values[:n_golden]
        references[path] = (key, outputs, _metric_of(splits, outputs))
    writer.write_golden(golden)
    if _scored(splits):
        # the evaluation set travels with the bundle so `edgekd check` can test the task metric on-device; capped
        # (a whole ImageNet-sized test split made bundles of hundreds of MB)
        idx = eval_indices(len(splits.x_test), eval_samples)
        writer.write_eval(model_inputs.to_npz(splits.x_test[idx], "x", "_"), subset(splits.y_test, idx))  # x_<name>
        capped = len(idx) < len(splits.x_test)
        info = {"file": EVAL, "samples": len(idx), "test_samples": len(splits.x_test), "cap": eval_samples,
                "capped": capped}
        if capped:
            info["note"] = (f"{EVAL} holds {len(idx)} of the {len(splits.x_test)} test samples (evenly spaced; "
                            f"--eval-samples {eval_samples}); `edgekd check` judges accuracy on them against the FP32 "
                            "reference on the same samples; the report's accuracies use the whole test split")
            log(info["note"])
        if report is not None:
            report.setdefault("data", {})["eval_set"] = info
    return golden, references


def _build_all(inputs: Inputs, sources: dict[str, Path], golden: dict[str, np.ndarray],
               references: dict[Path, tuple[str, np.ndarray, float | None]], fp32: dict[str, Any],
               writer: BundleWriter, options: CompressOptions) -> dict[str, dict[str, Any]]:
    entries = {}
    for target in inputs.targets:
        key, _, ref_acc = references[sources[target.name]]
        names = output_names(inputs.splits)
        refs = References({n: golden[golden_key(key, n, k)] for k, n in enumerate(names)}, ref_acc, fp32["accuracy"],
                          fp32["stage"], inputs.splits.task)
        golden_input = inputs.splits.x_test[: len(golden[golden_key(key, names[0], 0)])]
        entry = _build_or_fail(target, sources[target.name], writer.staging, golden_input, refs, inputs.splits,
                               options)
        entry["source"] = writer.relpath(sources[target.name])
        entry["golden_reference"] = key
        entry["device_outputs"] = list(getattr(BACKENDS.get(target.backend), "device_outputs", ()))
        build = entry.get("build") or {}
        # an artifact that is a byte copy of the file it was built from is stored once (size_mb still counts it)
        if getattr(BACKENDS.get(target.backend), "artifact_may_be_shared", False) and build.get("files") == [build.get("artifact")]:
            stored = writer.share(target.name, build["artifact"], sources[target.name])
            if stored is not None:
                entry["stored_as"] = {build["artifact"]: stored}
        entries[target.name] = entry
    if not any("build" in e for e in entries.values()):
        raise BuildError("no target could be built: " + "; ".join(
            f"{name}: {' '.join(e['reasons'])}" for name, e in entries.items()),
            hint="see each reason; fix the model or the targets and run again")
    return entries


def _write_weights(writer: BundleWriter, compressed: Artifact) -> dict[str, Any]:
    """weights.pt: the state_dict of the compressed student model.onnx was exported from, tensors only, so that
    ``torch.load(path, weights_only=True)`` reads it. Serialized in memory: torch names the archive's folder after
    the file, and an in-memory buffer gives the same bytes for the same tensors (the manifest checksums it)."""
    import io

    state = {k: v.detach().cpu() for k, v in compressed.payload.state_dict().items() if isinstance(v, torch.Tensor)}
    buffer = io.BytesIO()
    torch.save(state, buffer)
    path = writer.write_weights(buffer.getvalue())
    return {"file": writer.relpath(path), "tensors": len(state), "parameters": sum(v.numel() for v in state.values()),
            "history": list(compressed.history),
            "load": f"module.load_state_dict(torch.load('{writer.relpath(path)}', weights_only=True)) on the model "
                    "after the same structural passes (pruned layers have the pruned shapes)"}


def _write_plots(writer: BundleWriter, report: dict[str, Any]) -> None:
    """plots/training.png (loss and validation metric per epoch, the metric per stage and per target), linked
    from report.md; plots are listed, not checksummed (bundle.layout.UNHASHED_PREFIXES)."""
    path = write_training_plot(report, writer.staging / PLOTS / "training.png")
    if path is not None:
        report["plots"] = {**(report.get("plots") or {}), "training": writer.relpath(path)}


def _manifest(inputs: Inputs, onnx_art: Artifact, compressed: Artifact, entries: dict[str, dict[str, Any]],
              fp32: dict[str, Any], config: dict[str, Any], n_golden: int, eval_samples: int = 1000) -> BundleManifest:
    splits = inputs.splits
    return BundleManifest(
        name=inputs.student.name, edgekd_version=__version__, inputs=[s.to_dict() for s in onnx_art.inputs],
        outputs=[s.to_dict() for s in onnx_art.outputs], preprocessing=splits.preprocessing,
        labels=list(splits.labels), num_classes=splits.num_classes, golden_samples=n_golden,
        eval_samples=min(len(splits.x_test), eval_samples) if splits.labelled else None,
        history=list(compressed.history),
        targets={t.name: ManifestTarget.of(t, entries[t.name]) for t in inputs.targets if "build" in entries[t.name]},
        versions=runtime_versions(), config=config,
        # measured on the samples eval.npz holds (``eval_accuracy`` when it is capped), as `edgekd check` measures
        reference_metrics={"fp32": {"accuracy": fp32.get("eval_accuracy", fp32["accuracy"]), "stage": fp32["stage"],
                                    "data": EVAL, "samples": min(len(splits.x_test), eval_samples)}}
        if _scored(splits) else None,
        failed_targets={name: e["reasons"] for name, e in entries.items() if "build" not in e} or None,
        task=splits.task.to_dict() if splits.task is not None else None,
    )


def compress(model: str | torch.nn.Module, *, data: str | DataSplits | dict[str, Any] | None = None, recipe: str | Recipe = "fp32",
             targets: list[str | Target] | None = None, teacher: str | torch.nn.Module | None = None,
             out: str | Path = "out", arch: str | None = None,
             options: CompressOptions | None = None, teacher_arch: str | None = None,
             profile: str | Recipe | None = None, eval_data: str | None = None, task: str | None = None) -> dict[str, Any]:
    """Compress ``model`` with ``recipe``, build every target, and write a bundle to ``out``.

    ``task``: a task preset (``segmentation``, ``keypoints`` ... see edgekd.tasks) over the recipe's ``[task]``;
    default: classification when the model has one N x C output and the labels are class ids.
    Returns the report (also written to ``out/report.json``). ``profile`` is the deprecated name of ``recipe``.
    """
    if profile is not None:
        import warnings

        warnings.warn("compress(profile=...) is deprecated; use recipe=...", DeprecationWarning, stacklevel=2)
        recipe = profile
    options = options or CompressOptions()
    if onnx_source.handles(model, data):  # an ONNX file: built as it is or quantized by ONNX Runtime
        return onnx_source.compress_onnx(model, data=data, recipe=recipe, targets=targets, out=out, options=options,
                                         teacher=teacher, arch=arch, eval_data=eval_data)
    started = time.perf_counter()
    inputs = _load_inputs(model, data, recipe, targets, teacher, arch, teacher_arch, eval_data, options, task)
    model, teacher = source_label(model), source_label(teacher)
    data = data if isinstance(data, str) else f"<{type(data).__name__} object: {inputs.splits.name}>"
    config = {"sources": {"model": model, "teacher": teacher, "data": data, "arch": arch, "teacher_arch": teacher_arch,
                          "eval_data": eval_data}, "recipe": inputs.recipe.to_dict(), "seed": options.seed,
              **({"task": task} if task else {})}
    report = _start_report(inputs, config["sources"], eval_data)
    report["task"] = inputs.splits.task.to_dict()
    splits = inputs.splits
    with tempfile.TemporaryDirectory(prefix="edgekd-") as scratch, BundleWriter(Path(out)) as writer:
        groups, group_models, fp32 = _compress_model(inputs, model, Path(scratch), options, report)
        compressed = group_models[0]
        onnx_art = export_onnx(compressed, writer.model_path, example=splits.x_test, settings=inputs.recipe.export,
                               flavor=REFERENCE_FLAVOR, parity_inputs=splits.x_test)
        sources = _export_sources(groups, group_models, onnx_art.path, writer, splits, inputs.recipe)
        if options.weights:
            report["weights"] = _write_weights(writer, compressed)
        report["export"] = {**{k: onnx_art.meta[k] for k in ("exporter", "opset") if k in onnx_art.meta},
                            "parity_vs_torch": onnx_art.meta.get("parity_vs_torch"),
                            "size_mb": onnx_art.path.stat().st_size / 1e6,
                            "variants": sorted({writer.relpath(p) for p in sources.values()})}
        n_golden = min(options.golden_samples, len(splits.x_test))
        golden, references = _golden_and_references(writer, onnx_art.path, sources, splits, n_golden,
                                                    options.eval_samples, report)
        if _scored(splits):
            report["accuracy"]["onnx_reference"] = references[onnx_art.path][2]
            report["accuracy"]["fp32_reference"] = fp32["accuracy"]
        report["targets"] = _build_all(inputs, sources, golden, references, fp32, writer, options)
        manifest = _manifest(inputs, onnx_art, compressed, report["targets"], fp32, config, n_golden,
                             options.eval_samples)
        _write_plots(writer, report)
        report["duration_s"] = round(time.perf_counter() - started, 2)
        report["versions"] = dict(manifest.versions)
        writer.write_report(report, markdown=write_report_md)
        writer.finish(manifest)
    return report
