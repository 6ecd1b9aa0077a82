"""Hardware-in-the-loop checks: does this bundle, on the device at hand, still meet its target?

    report = run_checks("build/digits", CheckOptions(target="cpu", baseline=Path("baseline.json")))
    print(format_table(report)); write_junit(report, Path("hil.xml")); sys.exit(report.exit_code)

Checks, in order (each one passed / failed / skipped / error, with the reason):

- ``integrity``      every checksum in manifest.json verifies
- ``golden_parity``  golden.npz inputs through the target's artifact vs the reference outputs,
                     within the target's ``[parity]`` atol/rtol and top-1 agreement
- ``accuracy``       top-1 on eval.npz (or ``--data``, then against model.onnx on the same data, stated),
                     drop <= ``budgets.max_accuracy_drop`` (percentage points) against the FP32 reference the
                     build measured (manifest ``reference_metrics``; edgekd/budgets.py is the one judge)
- ``latency_p90``    single-stream p90 (edgekd.profiler) <= ``budgets.p90_ms``
- ``regression``     p50 (or p90) <= baseline x (1 + max_regression), baseline from a JSON profile
- ``size``           the target folder's files <= ``budgets.max_size_mb``
- ``fits``           the FPGA design fits its part (the build's resource estimate), unless ``budgets.must_fit = false``

A check with no budget (or no data / baseline) is *skipped* and says why; it never fails.
Torch-free unless ``--data`` names a source that needs edgekd.data (npz files do not).
"""

from __future__ import annotations

import dataclasses
import json
import platform
import socket
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np

from edgekd import inputs as model_inputs
from edgekd.budgets import judge_accuracy, judge_fit, judge_regression, p90_for_budget
from edgekd.bundle import MODEL, REPORT_JSON, Bundle, golden_key
from edgekd.errors import ConfigError, EdgekdError
from edgekd.parity import compare_outputs
from edgekd.registry import Registry
from edgekd.status import Status
from edgekd.tasks import TaskSpec, task_metric

#: the checks, in the order they run: HilSession methods registered with ``@HIL_CHECKS.register(name)``
HIL_CHECKS: Registry[Callable[[HilSession], CheckResult]] = Registry("check")
BASELINE_SCHEMA = "edgekd.profile/1"  # `--save-baseline` writes a profile result: one format for both gates


@dataclass(frozen=True)
class CheckOptions:
    """What ``edgekd check`` / the pytest plugin were asked to do."""

    target: str | None = None  # a target name in the bundle, or a target NAME|PATH whose budgets override
    baseline: Path | None = None  # JSON: a saved baseline, a bundle's report.json, or any {"latency": {...}}
    data: str | None = None  # labelled set instead of the bundle's eval.npz: PATH.npz, npz:PATH or an edgekd data source
    max_regression: float = 0.25  # allowed slow-down vs the baseline, as a fraction
    allow_other_host: bool = False  # judge against a baseline measured on another CPU model
    allow_other_model: bool = False  # judge against a baseline of another model file (sha256 differs)
    regression_metric: Literal["p50_ms", "p90_ms"] = "p50_ms"
    warmup: int | None = None  # override the target's [profiling]
    iterations: int | None = None
    #: --inputs: the user's own feeds (.npz keyed by input name) for golden_parity and latency instead of golden.npz
    inputs: Path | None = None

    def __post_init__(self) -> None:
        if self.max_regression < 0:
            raise ConfigError("max_regression must be >= 0 (a fraction: 0.25 = 25 % slower allowed)",
                              where="--max-regression")
        if self.warmup is not None and self.warmup < 0:
            raise ConfigError(f"warm-up calls must be >= 0, got {self.warmup}", where="--warmup")
        if self.iterations is not None and self.iterations < 10:
            raise ConfigError("need at least 10 iterations for a p90", where="--iterations")


@dataclass(frozen=True)
class CheckResult:
    name: str
    status: Status
    value: str = ""  # measured, formatted for people
    limit: str = ""  # what it was compared with
    reason: str = ""  # why it failed / was skipped; a short note when it passed
    seconds: float = 0.0
    data: dict[str, Any] = field(default_factory=dict)  # raw numbers for JSON / JUnit properties

    @property
    def ok(self) -> bool:
        return self.status in (Status.PASSED, Status.SKIPPED)


@dataclass(frozen=True)
class HilReport:
    bundle: str
    target: str
    backend: str
    device: str
    runtime: dict[str, Any]
    results: tuple[CheckResult, ...]
    started_at: str
    seconds: float
    baseline_doc: dict[str, Any] | None = None  # the latency measured, as a profile result (for --save-baseline)

    @property
    def passed(self) -> bool:
        return all(r.ok for r in self.results)

    @property
    def exit_code(self) -> int:
        return 0 if self.passed else 1

    def result(self, name: str) -> CheckResult:
        return next(r for r in self.results if r.name == name)

    def to_dict(self) -> dict[str, Any]:
        return {"schema": "edgekd.hil-report/1", "bundle": self.bundle, "target": self.target, "backend": self.backend,
                "device": self.device, "runtime": self.runtime, "passed": self.passed, "started_at": self.started_at,
                "seconds": round(self.seconds, 3),
                "checks": [{"name": r.name, "status": r.status, "value": r.value, "limit": r.limit, "reason": r.reason,
                            "seconds": round(r.seconds, 4), "data": r.data} for r in self.results]}


class CheckFailed(Exception):
    """Raised inside a check to fail it with a reason (value/limit for the table)."""

    def __init__(self, reason: str, value: str = "", limit: str = "", **data: Any) -> None:
        super().__init__(reason)
        self.reason, self.value, self.limit, self.data = reason, value, limit, data


class CheckSkipped(Exception):
    def __init__(self, reason: str, value: str = "", **data: Any) -> None:
        super().__init__(reason)
        self.reason, self.value, self.data = reason, value, data


def _ms(v: float) -> str:
    return f"{v:.4g} ms"


def _is_path(text: str) -> bool:
    return text.endswith(".toml") or "/" in text or "\\" in text or Path(text).is_file()


def _label_free(task: TaskSpec | None) -> bool:
    return task is not None and task.metric == "reconstruction_error"


def _npz_labelled(path: Path, task: TaskSpec | None = None) -> tuple[np.ndarray, Any]:
    """x and y of a labelled file: 1-D class ids for a classifier bundle, the task's label shape otherwise."""
    from edgekd.runtime import load_npz

    if task is not None and not task.is_classification:
        arrays = load_npz(path) if path.is_file() else None
        if arrays is None:
            raise EdgekdError("labelled data file not found", where=str(path))
        for xk, yk in (("x", "y"), ("x_test", "y_test")):
            per_output = {k[len(yk) + 1:]: v for k, v in arrays.items() if k.startswith(yk + "_")}
            xs = model_inputs.from_npz(arrays, xk, "_", where=str(path))  # x, or x_<name> per input
            if xs is not None and yk not in arrays and len(task.outputs) > 1 and per_output:
                return xs, per_output
            if xs is not None and (yk in arrays or _label_free(task)):
                x, y = xs, arrays.get(yk)
                if y is not None and len(y) != len(x):
                    raise EdgekdError(f"'{yk}' has {len(y)} samples but '{xk}' has {len(x)}", where=str(path))
                return x, y
        raise EdgekdError(f"no x/y (or x_test/y_test) arrays in it; found {sorted(arrays)}", where=str(path),
                          hint="save with np.savez(path, x=inputs, y=labels)")

    if not path.is_file():
        raise EdgekdError("labelled data file not found", where=str(path))
    arrays = load_npz(path)
    for xk, yk in (("x", "y"), ("x_test", "y_test")):
        xs = model_inputs.from_npz(arrays, xk, "_", where=str(path))  # x, or x_<name> per input (edgekd.inputs)
        if isinstance(xs, model_inputs.ModelInputs) and yk in arrays:
            if arrays[yk].shape != (len(xs),):
                raise EdgekdError(f"'{yk}' must have shape ({len(xs)},) to match the inputs {', '.join(xs.names)}, "
                                  f"got {list(arrays[yk].shape)}", where=str(path), hint="one integer class id per sample")
            return xs, arrays[yk].astype(np.int64, copy=False)
        if xk in arrays and yk in arrays:
            x, y = arrays[xk], arrays[yk]
            if x.ndim < 2 or len(x) == 0:
                raise EdgekdError(f"'{xk}' must hold at least one sample, shape (N, ...); got {list(x.shape)}",
                                  where=str(path))
            if y.shape != (len(x),):
                raise EdgekdError(f"'{yk}' must have shape ({len(x)},) to match '{xk}', got {list(y.shape)}",
                                  where=str(path), hint="one integer class id per sample")
            if not np.issubdtype(x.dtype, np.number) or not (
                    np.issubdtype(y.dtype, np.integer)
                    or (np.issubdtype(y.dtype, np.floating) and np.all(np.isfinite(y)) and np.all(y == np.round(y)))):
                raise EdgekdError(f"'{yk}' must hold integer class ids (and '{xk}' numbers); got {y.dtype} / "
                                  f"{x.dtype}", where=str(path))
            x = x if np.issubdtype(x.dtype, np.signedinteger) else x.astype(np.float32, copy=False)
            return x, y.astype(np.int64, copy=False)
    raise EdgekdError(f"no x/y (or x_test/y_test) arrays in it; found {sorted(arrays)}", where=str(path),
                      hint="save with np.savez(path, x=inputs, y=labels)")


def read_baseline(path: Path, target: str, metric: str) -> tuple[float, dict[str, Any]]:
    """The baseline ``metric`` (ms) and the baseline document, read by the one baseline reader
    (edgekd.profiler.compare.load_baseline: a profile.json, a ``--save-baseline`` file -- the same format --,
    an older edgekd.hil-baseline/1 file or a bundle's report.json)."""
    from edgekd.profiler.compare import load_baseline

    doc = load_baseline(path, target=target)
    value = (doc.get("single_stream") or {}).get(metric)
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise EdgekdError(f"no {metric} in the baseline for target {target!r}", where=str(path),
                          hint="use a file written by `edgekd profile` or `edgekd check --save-baseline`")
    if not 0 < value < float("inf"):
        raise EdgekdError(f"baseline {metric} is {value}; a latency must be > 0", where=str(path),
                          hint="create one with `edgekd check BUNDLE --save-baseline PATH` on the device")
    return float(value), doc


class HilSession:
    """One bundle + one target on this machine. Cheap to create (reads the manifest); the runner and
    the latency measurement are made on first use and shared by the checks that need them."""

    def __init__(self, bundle: str | Path, options: CheckOptions | None = None) -> None:
        self.bundle = Path(bundle)
        self.options = options or CheckOptions()
        self.reader = Bundle(self.bundle)
        self.manifest = self.reader.manifest
        self.where = self.reader.where
        self.target_name, self.override = self._resolve_target(self.options.target)
        self.backend: str = self.reader.target(self.target_name).backend
        self._runner: Any = None
        self._runner_error: EdgekdError | None = None
        self._latency: dict[str, Any] | None = None
        self._times_ms: list[float] = []
        self._feeds: dict[str, np.ndarray] | None = None

    # ------------------------------------------------------------ set-up

    def _resolve_target(self, arg: str | None) -> tuple[str, Any]:
        """(the bundle's target to run, an override Target or None). An override file is merged over the
        target stored in the manifest, so a file with only ``[budgets] p90_ms = 5`` tightens one budget."""
        from edgekd.runtime import select_target

        names = sorted(self.manifest.get("targets") or {})
        import tomllib

        from edgekd.config import available, resolve_file, target_from_mapping

        if arg is None or (not _is_path(arg) and (arg in names or arg not in available("targets"))):
            return select_target(self.manifest, arg, where=self.where), None

        path = resolve_file("targets", arg)
        try:
            raw = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"invalid TOML: {exc}", where=str(path)) from None
        name = str(raw.get("name") or path.stem)
        if name not in names:
            backend = raw.get("backend")
            same = [n for n in names if backend is None or self.manifest["targets"][n]["backend"] == backend]
            if len(same) != 1:
                if not _is_path(arg):
                    raise ConfigError(f"the bundle was not built for target {arg!r}; it has: {', '.join(names)}",
                                      where=self.where, hint=f"check one of those, or rebuild with --target {arg}")
                raise ConfigError(f"target {name!r} matches no single target in the bundle ({', '.join(names)})",
                                  where=str(path), hint='set name = "<bundle target>" in the file')
            name = same[0]
        stored = self.reader.target(name).target
        if raw.get("backend", stored["backend"]) != stored["backend"]:
            raise ConfigError(f"the file's backend {raw['backend']!r} differs from {stored['backend']!r}, which the "
                              f"bundle's {name!r} was built for", where=str(path))
        merged = {**stored, **{k: ({**stored.get(k, {}), **v} if isinstance(v, dict) else v) for k, v in raw.items()},
                  "name": name}
        return name, target_from_mapping(merged, where=str(path))

    @property
    def target(self) -> Any:
        """The Target whose budgets/tolerances apply: the override file, else the one stored in the manifest."""
        if self.override is not None:
            return self.override
        if self._runner is not None:
            return self._runner.target
        from edgekd.config import target_from_mapping

        return target_from_mapping(self.reader.target(self.target_name).target,
                                   where=f"{self.where} targets.{self.target_name}")

    @property
    def runner(self) -> Any:
        if self._runner is None and self._runner_error is None:
            from edgekd.runtime import load

            try:  # integrity is its own check: load without verifying so every other check still reports
                self._runner = load(self.bundle, self.target_name, verify=False, target_override=self.override)
            except EdgekdError as exc:
                self._runner_error = exc
        if self._runner_error is not None:
            raise self._runner_error
        return self._runner

    def golden(self) -> dict[str, np.ndarray]:
        from edgekd.bundle import load_npz

        path = self.reader.golden_path
        if path is None:
            raise CheckSkipped("the bundle has no golden.npz")
        return load_npz(path)

    def golden_input(self, golden: dict[str, np.ndarray]) -> Any:
        """golden.npz's inputs: ``input``, or ``input#<name>`` per input of a multi-input model (edgekd.inputs)."""
        x = model_inputs.from_npz(golden, "input", "#", where=str(self.reader.golden_path))
        if x is None:
            raise EdgekdError(f"golden.npz has no input array (found: {', '.join(sorted(golden)) or 'none'})",
                              where=str(self.reader.golden_path), hint="the bundle was modified; rebuild or re-copy it")
        return x

    def user_feeds(self) -> dict[str, np.ndarray] | None:
        """``--inputs``: the user's feeds, checked against the artifact's inputs (a mismatch is a usage error)."""
        if self.options.inputs is None:
            return None
        if self._feeds is None:
            from edgekd.profiler.measure import read_feeds

            self._feeds = read_feeds(self.options.inputs, self.runner.inputs)
        return self._feeds

    def check_inputs(self) -> None:
        """Read ``--inputs`` before any check: a file that does not fit the model is a usage error (exit 2), not a
        failed check. An artifact that does not load is left to the checks to report."""
        try:
            _ = self.runner
        except EdgekdError:
            return
        self.user_feeds()

    def _measure_settings(self, prof: Any) -> Any:
        from edgekd.profiler.measure import MeasureSettings

        return MeasureSettings(warmup=self.options.warmup or prof.warmup,
                               iterations=self.options.iterations or prof.iterations, duration_s=prof.duration_s)

    def latency(self) -> dict[str, Any]:
        if self._latency is None and self.options.inputs is not None:
            from edgekd.profiler.measure import measure_latency

            prof = self.target.profiling
            sample = measure_latency(self.runner, self.user_feeds() or {}, settings=self._measure_settings(prof),
                                     description=f"profiling {self.target_name} on {self.options.inputs.name}")
            self._latency = sample.summary()
            self._times_ms = [float(t) for t in sample.times_ms]
        if self._latency is None:
            from edgekd.profiler.measure import measure_latency

            prof = self.target.profiling
            golden = self.golden()
            spec = self.runner.inputs[0]
            batch = prof.batch_size
            if isinstance(spec.shape[0], int):
                batch = spec.shape[0]
            x = model_inputs.repeat_first(self.golden_input(golden), batch)
            feeds = model_inputs.feeds(x, [s.name for s in self.runner.inputs])
            sample = measure_latency(self.runner, feeds, settings=self._measure_settings(prof),
                                     description=f"profiling {self.target_name}")
            self._latency = sample.summary()
            self._times_ms = [float(t) for t in sample.times_ms]
        return self._latency

    def measured_doc(self) -> dict[str, Any]:
        """The latency measured now as a profile result (edgekd.profile/1, single-stream only) with its provenance:
        environment (host, CPU, versions) and the sha256 of the file the runtime loaded."""
        from edgekd.bundle import sha256_file
        from edgekd.profiler import env as envmod

        lat = self.latency()
        entry = self.reader.target(self.target_name)
        model = entry.artifact_path
        return {"schema": BASELINE_SCHEMA, "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "command": "edgekd check --save-baseline", "label": self.target_name,
                "artifact": {"path": str(self.bundle), "kind": "bundle", "file": str(model),
                             "size_mb": model.stat().st_size / 1e6 if model.is_file() else None,
                             "sha256": sha256_file(model) if model.is_file() else None,
                             "source_sha256": self.reader.file_digest(self.manifest["model"]["file"])},
                "target": {"name": self.target_name, "backend": self.backend}, "build": None,
                "runtime": self.runtime_info(), "environment": envmod.capture(), "load_s": None,
                "settings": {"warmup": lat.get("warmup_calls"), "iterations": lat.get("iterations"),
                             "batch_size": lat.get("batch_size")},
                "single_stream": {**lat, "times_ms": self._times_ms}, "offline": None, "layers": None, "fpga": None,
                "accuracy": None}

    # ------------------------------------------------------------ checks

    @HIL_CHECKS.register("integrity")
    def check_integrity(self) -> CheckResult:
        problems = self.reader.verify(target=self.target_name)  # other targets' folders may be left off the device
        n = len(self.manifest.get("files", {})) - sum(not (self.bundle / f).is_file()
                                                      for f in self.reader.other_targets_files(self.target_name))
        if problems:
            raise CheckFailed("; ".join(problems[:3]) + (f" (+{len(problems) - 3} more)" if len(problems) > 3 else ""),
                              value=f"{len(problems)} problem(s)", limit="all checksums match", problems=problems)
        return self._pass("integrity", value=f"{n} files verified", limit="all checksums match")

    @HIL_CHECKS.register("golden_parity")
    def check_golden_parity(self) -> CheckResult:
        if self.options.inputs is not None:
            return self._parity_on_user_inputs()
        golden = self.golden()
        # a target built from a runtime-specific ONNX variant is compared with ORT running that same variant
        key = self.reader.target(self.target_name).golden_reference
        golden_in = self.golden_input(golden)
        if key not in golden:
            raise EdgekdError(f"golden.npz has no {key!r} array "
                              f"(found: {', '.join(sorted(golden)) or 'none'})", where=str(self.reader.golden_path),
                              hint="the bundle was modified; rebuild or re-copy it")
        task = self.task()
        names = [o.name for o in task.outputs] if task else [self.runner.outputs[0].name]
        cand_all = self.runner.predict_all(golden_in)
        par = self.target.parity
        step = self.reader.target(self.target_name).output_step
        results = []
        for k, name in enumerate(names):
            ref_key = golden_key(key, name, k)
            if ref_key not in golden or name not in cand_all:
                raise EdgekdError(f"golden.npz or the artifact has no output {name!r} ({ref_key})",
                                  where=str(self.reader.golden_path), hint="the bundle was modified; rebuild it")
            axis = task.outputs[k].class_axis if task else 1
            results.append((name, compare_outputs(golden[ref_key], cand_all[name], par,
                                                  output_step=step if k == 0 else 0.0, class_axis=axis)))
        result = results[0][1]
        if len(results) > 1:
            result = dataclasses.replace(result, failures=tuple(f"output {n}: {f}" for n, r in results for f in r.failures))
        data = {**result.to_dict(), "atol": par.atol, "rtol": par.rtol, "min_top1_agreement": par.min_top1_agreement,
                "output_steps": par.output_steps, "output_step": step,
                **({"outputs": {n: r.to_dict() for n, r in results}} if len(results) > 1 else {})}
        value = f"max|err| {result.max_abs_error:.3g}" + (f", top-1 {result.top1_agreement * 100:.1f}%"
                                                          if result.class_axis is not None else "")
        limit = result.rule  # the rule applied, output-step allowance included, is the rule shown
        if not result.ok:
            raise CheckFailed("; ".join(result.failures), value=value, limit=limit, **data)
        return self._pass("golden_parity", value=value, limit=limit, **data)

    def _parity_on_user_inputs(self) -> CheckResult:
        """``--inputs``: the target's artifact vs ONNX Runtime on the ONNX file it was built from, on the user's
        feeds, each output along its task class axis, with the same [parity] rule as on golden.npz."""
        from edgekd.backends.onnxruntime import OnnxRuntimeOptions, OnnxRuntimeRunner
        from edgekd.parity import quantized_output_steps

        feeds = self.user_feeds() or {}
        entry = self.reader.target(self.target_name)
        source = self.bundle / entry.source
        reference = OnnxRuntimeRunner(source, OnnxRuntimeOptions()).infer(feeds)
        got = self.runner.infer(feeds)
        task = self.task()
        axes = {o.name: o.class_axis for o in task.outputs} if task else {}
        steps = quantized_output_steps(source)
        par = self.target.parity
        results = {name: compare_outputs(ref, np.asarray(got[name]), par, output_step=steps.get(name, 0.0),
                                         class_axis=axes.get(name, 1))
                   for name, ref in reference.items() if name in got}
        first = next(iter(results.values()))
        result = dataclasses.replace(first, failures=tuple(
            f"output {n}: {f}" if len(results) > 1 else f for n, r in results.items() for f in r.failures))
        data = {**result.to_dict(), "atol": par.atol, "rtol": par.rtol, "min_top1_agreement": par.min_top1_agreement,
                "output_steps": par.output_steps, "inputs": str(self.options.inputs),
                "reference": f"{entry.source} on ONNX Runtime", "outputs": {n: r.to_dict() for n, r in results.items()}}
        value = f"max|err| {max(r.max_abs_error for r in results.values()):.3g} on {self.options.inputs.name}"
        if not result.ok:
            raise CheckFailed("; ".join(result.failures), value=value, limit=result.rule, **data)
        return self._pass("golden_parity", value=value, limit=result.rule, **data)

    def task(self) -> TaskSpec | None:
        """The bundle's task (None: a classifier bundle from before tasks, judged by top-1)."""
        record = self.manifest.get("task")
        return TaskSpec.from_dict(record) if record else None

    def _metric(self, out: dict[str, np.ndarray], x: np.ndarray, y: Any) -> float | None:
        """The bundle's task metric on every output (by name); top-1 of the first output for an older bundle."""
        task = self.task()
        if task is None:
            first = next(iter(out.values()))
            return float((first.reshape(len(x), -1).argmax(1) == y).mean() * 100)
        return task_metric(task, dict(zip([o.name for o in task.outputs], out.values(), strict=False)), y, x)

    def _labelled(self) -> tuple[np.ndarray, Any, str]:
        data = self.options.data
        task = self.task()
        if data:
            text = data[4:] if data.startswith("npz:") else data
            if text.endswith(".npz"):
                x, y = _npz_labelled(Path(text), task)
                return x, y, text
            from edgekd.data import load_data  # other sources need edgekd's data side (and torch)

            splits = load_data(data)
            if not splits.labelled and not _label_free(task):
                raise CheckSkipped(f"--data {data} has no labels")
            return splits.x_test, splits.y_test, data
        path = self.reader.eval_path
        if path is None:
            raise CheckSkipped("no labelled data: the bundle has no eval.npz and no --data was given")
        x, y = _npz_labelled(path, task)
        return x, y, path.relative_to(self.bundle).as_posix()

    def _reference_accuracy(self, x: np.ndarray, y: np.ndarray, from_bundle: bool) -> tuple[float | None, str]:
        """Reference = the bundle's model.onnx on ONNX Runtime (the same reference the pipeline used)."""
        try:
            from edgekd.backends.onnxruntime import OnnxRuntimeOptions, OnnxRuntimeRunner

            ref = OnnxRuntimeRunner(self.reader.model_path, OnnxRuntimeOptions())
            out = model_inputs.run_batched(ref.infer_unchecked, ref.inputs, x, [o.name for o in ref.outputs])
            return self._metric(out, x, y), f"{MODEL} on ONNX Runtime"
        except ImportError:
            pass
        if from_bundle:  # no ONNX Runtime on this device: use the build machine's number
            acc = (self.reader.report().get("accuracy") or {}).get("onnx_reference")
            if isinstance(acc, (int, float)):
                return float(acc), f"{REPORT_JSON} accuracy.onnx_reference"
        return None, f"no reference: onnxruntime is not installed and {REPORT_JSON} has no onnx_reference"

    def _accuracy_reference(self, x: np.ndarray, y: np.ndarray) -> tuple[float | None, str]:
        """The FP32 reference the build judged against (manifest ``reference_metrics``), on the bundle's own
        eval set; with ``--data`` only the compressed model.onnx can be run here, and the label says so."""
        fp32 = (self.manifest.get("reference_metrics") or {}).get("fp32") or {}
        if self.options.data is None and isinstance(fp32.get("accuracy"), (int, float)):
            return float(fp32["accuracy"]), f"FP32 reference ({fp32.get('stage')}, measured at build time on eval.npz)"
        ref, label = self._reference_accuracy(x, y, from_bundle=self.options.data is None)
        if fp32:
            label += ("; the FP32 reference was measured on the bundle's eval.npz only, so against --data the drop "
                      "is the runtime's own and excludes compression loss")
        return ref, label

    @HIL_CHECKS.register("accuracy")
    def check_accuracy(self) -> CheckResult:
        x, y, source = self._labelled()
        task = self.task()
        acc = self._metric(self.runner.predict_all(x), x, y)
        if acc is None:
            raise CheckSkipped(f"the {task.metric if task else 'top-1'} metric needs labels that {source} lacks")
        ref, ref_source = self._accuracy_reference(x, y)
        budget = self.target.budgets.max_accuracy_drop
        metric = task.metric if task else "top1"
        unit = task.unit if task else "%"
        drop = (task.drop(ref, acc) if task else ref - acc) if ref is not None else None
        data = {"accuracy": acc, "metric": metric, "reference_accuracy": ref, "samples": len(x), "data": source,
                "reference": ref_source, "max_accuracy_drop": budget}
        value = f"{metric} {acc:.4g}{unit} (n={len(x)})" + (f", drop {drop:+.4g}" if drop is not None else "")
        if budget is None:
            raise CheckSkipped("the target sets no budgets.max_accuracy_drop", value=value, **data)
        if ref is None:
            raise CheckSkipped(ref_source, value=value, **data)
        limit = f"drop <= {budget:g}{' pp' if unit == '%' else ' ' + unit if unit else ''} vs {ref:.4g}{unit}"
        verdict = judge_accuracy(acc, ref, budget, reference_label=ref_source.partition(";")[0], task=task)
        if not verdict.ok:
            raise CheckFailed(f"{verdict.reason} on {source}", value=value, limit=limit, **data)
        return self._pass("accuracy", value=value, limit=limit, **data)

    @HIL_CHECKS.register("fits")
    def check_fits(self) -> CheckResult:
        entry = self.manifest["targets"][self.target_name]
        fits = entry.get("fits")
        if fits is None:
            raise CheckSkipped("no resource estimate in the bundle for this target (only FPGA backends make one)")
        detail = str(entry.get("fit_detail") or "")
        verdict = judge_fit(bool(fits), self.target.budgets.must_fit, detail)
        value, limit = ("fits" if fits else f"does not fit ({detail})"), "fits the part" if self.target.budgets.must_fit \
            else "advisory (must_fit = false)"
        if not verdict.ok:
            raise CheckFailed(verdict.reason, value=value, limit=limit, fits=bool(fits), detail=detail)
        return self._pass("fits", value=value, limit=limit, fits=bool(fits), detail=detail)

    @HIL_CHECKS.register("latency_p90")
    def check_latency_p90(self) -> CheckResult:
        lat = self.latency()
        p90, how = p90_for_budget(lat)  # the same p90 compress and `edgekd profile --check-budget` judge
        p90 = float(p90 if p90 is not None else lat["p90_ms"])
        budget = self.target.budgets.p90_ms
        data = {k: lat[k] for k in ("p50_ms", "p90_ms", "p99_ms", "iterations", "batch_size") if k in lat}
        data["p90_judged_ms"], data["p90_judged"] = p90, how
        value = f"p90 {_ms(p90)} (p50 {_ms(lat['p50_ms'])}, n={lat['iterations']})"
        if budget is None:
            raise CheckSkipped("the target sets no budgets.p90_ms", value=value, **data)
        limit = f"p90 <= {_ms(budget)}"
        if p90 > budget:
            raise CheckFailed(f"p90 latency {_ms(p90)} ({how}) exceeds the budget of {_ms(budget)} "
                              f"(batch {lat['batch_size']}, {lat['iterations']} queries)", value=value, limit=limit, **data)
        return self._pass("latency_p90", value=value, limit=limit, **data)

    @HIL_CHECKS.register("regression")
    def check_regression(self) -> CheckResult:
        if self.options.baseline is None:
            raise CheckSkipped("no baseline given (--baseline PROFILE.json)")
        from edgekd.profiler.compare import check_origin, compare

        metric, opts = self.options.regression_metric, self.options
        base, base_doc = read_baseline(opts.baseline, self.target_name, metric)
        now_doc = self.measured_doc()
        notes = check_origin(base_doc, now_doc, where=str(opts.baseline), allow_other_host=opts.allow_other_host,
                             allow_other_model=opts.allow_other_model)
        row = compare(base_doc, now_doc, metrics=(metric[:-3],)).metrics[0]  # the judge: edgekd.budgets.judge_regression
        verdict = judge_regression(row.metric, base, row.new_ms, row.ratio.low, row.ratio.high, opts.max_regression)
        data = {"metric": metric, "value_ms": row.new_ms, "baseline_ms": base, "ratio": row.ratio.estimate,
                "ratio_ci": row.ratio.to_dict(), "max_regression": opts.max_regression, "baseline": str(opts.baseline),
                "notes": notes}
        value = f"{metric[:-3]} {_ms(row.new_ms)} = {row.ratio.estimate:.2f}x baseline " \
                f"(CI {row.ratio.low:.2f}-{row.ratio.high:.2f})"
        limit = f"CI low <= {1 + opts.max_regression:.2f}x ({base:.3f} ms +{opts.max_regression * 100:g}%)"
        if not verdict.ok:
            raise CheckFailed(f"{metric[:-3]} {_ms(row.new_ms)} is {row.ratio.estimate:.2f}x the baseline {_ms(base)}: "
                              f"{verdict.reason}" + "".join(f"; {n}" for n in notes), value=value, limit=limit, **data)
        return self._pass("regression", value=value, limit=limit, **data)

    @HIL_CHECKS.register("size")
    def check_size(self) -> CheckResult:
        entry = self.manifest["targets"][self.target_name]
        size_mb = self.reader.target(self.target_name).size_bytes() / 1e6  # a shared model.onnx counts
        budget = self.target.budgets.max_size_mb
        value = f"{size_mb:.3f} MB"
        if budget is None:
            raise CheckSkipped("the target sets no budgets.max_size_mb", value=value, size_mb=size_mb)
        limit = f"<= {budget:g} MB"
        if size_mb > budget:
            raise CheckFailed(f"{entry['dir']}/ holds {size_mb:.3f} MB, over the {budget:g} MB budget",
                              value=value, limit=limit, size_mb=size_mb)
        return self._pass("size", value=value, limit=limit, size_mb=size_mb)

    @staticmethod
    def _pass(name: str, value: str, limit: str, **data: Any) -> CheckResult:
        return CheckResult(name, Status.PASSED, value=value, limit=limit, data=data)

    # ------------------------------------------------------------ running

    def run(self, name: str) -> CheckResult:
        """Run one check; never raises for a check that fails -- the result says so."""
        check = HIL_CHECKS.get(name)  # an unknown name is a ConfigError naming the known checks
        started = time.perf_counter()
        try:
            result = check(self)
        except CheckFailed as exc:
            result = CheckResult(name, Status.FAILED, exc.value, exc.limit, exc.reason, data=exc.data)
        except CheckSkipped as exc:
            result = CheckResult(name, Status.SKIPPED, exc.value, "", exc.reason, data=exc.data)
        except EdgekdError as exc:
            result = CheckResult(name, Status.ERROR, reason=str(exc).replace("\n  ", " "))
        except Exception as exc:  # a damaged bundle or a runtime failure: this check errs, the others still run
            result = CheckResult(name, Status.ERROR, reason=f"{type(exc).__name__}: {exc}")
        return CheckResult(result.name, result.status, result.value, result.limit, result.reason,
                           time.perf_counter() - started, result.data)

    def runtime_info(self) -> dict[str, Any]:
        try:
            return self.runner.describe()
        except EdgekdError as exc:
            return {"error": str(exc)}

    def report(self, results: list[CheckResult], started_at: str, seconds: float) -> HilReport:
        return HilReport(bundle=str(self.bundle), target=self.target_name, backend=self.backend,
                         device=str(self.target.device), runtime=self.runtime_info(), results=tuple(results),
                         started_at=started_at, seconds=seconds,
                         baseline_doc=self.measured_doc() if self._latency is not None else None)


CHECKS = tuple(HIL_CHECKS.names(sort=False))


def run_checks(bundle: str | Path, options: CheckOptions | None = None,
               checks: tuple[str, ...] = CHECKS) -> HilReport:
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    t0 = time.perf_counter()
    session = HilSession(bundle, options)
    session.check_inputs()
    results = [session.run(name) for name in checks]
    return session.report(results, started_at, time.perf_counter() - t0)


# ---------------------------------------------------------------- outputs


def format_table(report: HilReport) -> str:
    """Plain text (CI logs have no colours): one line per check, failures' reasons in full below."""
    header = ["check", "status", "measured", "limit"]
    rows = [[r.name, r.status.upper() if r.status in (Status.FAILED, Status.ERROR) else r.status, r.value, r.limit]
            for r in report.results]
    widths = [max(len(header[i]), *(len(row[i]) for row in rows)) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()

    rt = report.runtime
    runtime = ", ".join(f"{k}={v}" for k, v in rt.items() if k in ("runtime", "version", "device", "providers", "error"))
    out = [f"edgekd check: {report.bundle}  target {report.target} ({report.backend}, {report.device})"]
    if runtime:
        out.append(f"runtime: {runtime}")
    out += [line(header), line(["-" * w for w in widths])]
    out += [line(row) for row in rows]
    notes = [r for r in report.results if r.reason]
    if notes:
        out.append("")
        out += [f"{r.name}: {r.status}: {r.reason}" for r in notes]
    n_fail = sum(r.status in (Status.FAILED, Status.ERROR) for r in report.results)
    n_skip = sum(r.status == Status.SKIPPED for r in report.results)
    out += ["", f"RESULT: {'PASSED' if report.passed else 'FAILED'} ({len(report.results) - n_fail - n_skip} passed, "
            f"{n_fail} failed, {n_skip} skipped) in {report.seconds:.2f} s"]
    return "\n".join(out)


def junit_xml(reports: list[HilReport]) -> ET.ElementTree:
    """JUnit XML as GitHub Actions / GitLab / Jenkins read it: one testsuite per target, one testcase per check."""
    root = ET.Element("testsuites", name="edgekd-hil")
    totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for rep in reports:
        counts = {"tests": len(rep.results), "failures": sum(r.status == Status.FAILED for r in rep.results),
                  "errors": sum(r.status == Status.ERROR for r in rep.results),
                  "skipped": sum(r.status == Status.SKIPPED for r in rep.results)}
        suite = ET.SubElement(root, "testsuite", name=f"edgekd.hil.{rep.target}", timestamp=rep.started_at,
                              hostname=socket.gethostname(), time=f"{rep.seconds:.3f}",
                              **{k: str(v) for k, v in counts.items()})
        props = ET.SubElement(suite, "properties")
        for key, val in (("bundle", rep.bundle), ("backend", rep.backend), ("device", rep.device),
                         ("machine", platform.machine()), ("runtime", json.dumps(rep.runtime, default=str))):
            ET.SubElement(props, "property", name=key, value=str(val))
        for r in rep.results:
            case = ET.SubElement(suite, "testcase", classname=f"edgekd.hil.{rep.target}", name=r.name,
                                 time=f"{r.seconds:.4f}")
            text = f"measured: {r.value}\nlimit: {r.limit}\n{r.reason}".strip()
            if r.status == Status.FAILED:
                ET.SubElement(case, "failure", message=r.reason, type="edgekd.BudgetFailed").text = text
            elif r.status == Status.ERROR:
                ET.SubElement(case, "error", message=r.reason, type="edgekd.CheckError").text = text
            elif r.status == Status.SKIPPED:
                ET.SubElement(case, "skipped", message=r.reason)
            ET.SubElement(case, "system-out").text = text
        for k in totals:
            totals[k] += counts[k]
    for k, v in totals.items():
        if k != "skipped":  # the Jenkins/Surefire schema has no `skipped` on <testsuites> (each suite has it)
            root.set(k, str(v))
    ET.indent(root)
    return ET.ElementTree(root)


def write_junit_error(path: Path, message: str, *, bundle: str) -> Path:
    """A JUnit file for a run that could not start (bad bundle, bad option): one erroring test case, so the CI
    system shows why instead of "no test report found"."""
    root = ET.Element("testsuites", name="edgekd-hil", tests="1", failures="0", errors="1")
    suite = ET.SubElement(root, "testsuite", name="edgekd.hil", tests="1", failures="0", errors="1", skipped="0",
                          hostname=socket.gethostname(), time="0")
    props = ET.SubElement(suite, "properties")
    ET.SubElement(props, "property", name="bundle", value=bundle)
    case = ET.SubElement(suite, "testcase", classname="edgekd.hil", name="edgekd check", time="0")
    ET.SubElement(case, "error", message=message.splitlines()[0], type="edgekd.UsageError").text = message
    ET.indent(root)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)
    return path


def write_junit(reports: HilReport | list[HilReport], path: Path) -> Path:
    reports = [reports] if isinstance(reports, HilReport) else reports
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    junit_xml(reports).write(path, encoding="utf-8", xml_declaration=True)
    return path


def baseline_dict(report: HilReport) -> dict[str, Any]:
    """What ``--save-baseline`` stores: the latency measured now as a profile result (edgekd.profile/1, the format
    ``edgekd profile`` writes) with its provenance. Refused when the bundle failed its integrity check."""
    integrity = next((r for r in report.results if r.name == "integrity"), None)
    if integrity is not None and integrity.status != Status.PASSED:
        raise EdgekdError("the bundle failed its integrity check, so its latency is not saved as a baseline",
                          where=report.bundle, hint="fix or rebuild the bundle first")
    if report.baseline_doc is None or "p90_ms" not in report.baseline_doc["single_stream"]:
        raise EdgekdError("no latency was measured, so there is nothing to save as a baseline",
                          hint="fix the errors above first")
    return report.baseline_doc
