"""``edgekd compare``: one bare ONNX file on several runtimes, output by output (``polygraphy run --onnxrt
--openvino``). Torch-free.

The reference target (the first ``--target``, or ``--reference``; ONNX Runtime ``cpu`` when none is given) and
every other target build the same file with their own backend (``backend.build`` / ``load``) and run the same
feeds: the user's (``--inputs``, ``profiler.measure.read_feeds``) or generated from the model's input spec
(``profiler.measure.make_feeds``: seeded random normal for float inputs, zeros for integer ones). Each output of
each candidate is judged by ``parity.compare_outputs`` with the candidate target's ``[parity]`` settings (or
``--atol`` / ``--rtol`` / ``--min-top1``) and that output's quantization step (``parity.quantized_output_steps``),
so a QDQ model gets the same rounding allowance as everywhere else in edgekd.
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.config import Target, load_target
from edgekd.errors import BackendUnavailable, ConfigError, EdgekdError
from edgekd.parity import ParityResult, compare_outputs, quantized_output_steps
from edgekd.status import Status

SCHEMA = "edgekd.compare/1"
#: the reference when neither --reference nor a --target is given: ONNX Runtime on the host CPU
DEFAULT_REFERENCE = "cpu"
GENERATED = "generated from the model's input spec: seeded random normal for float inputs, zeros for integer inputs"


@dataclass(frozen=True)
class Tolerances:
    """``--atol`` / ``--rtol`` / ``--min-top1`` / ``--output-steps``: None keeps the candidate target's [parity]."""

    atol: float | None = None
    rtol: float | None = None
    min_top1_agreement: float | None = None
    output_steps: float | None = None

    def applied_to(self, target: Target) -> Any:
        given = {k: v for k, v in dataclasses.asdict(self).items() if v is not None}
        return dataclasses.replace(target.parity, **given)

    def given(self) -> list[str]:
        return [k for k, v in dataclasses.asdict(self).items() if v is not None]


@dataclass(frozen=True)
class OutputComparison:
    name: str
    shape: tuple[int, ...]
    output_step: float
    result: ParityResult

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "output_step": self.output_step, **self.result.to_dict()}


@dataclass(frozen=True)
class TargetComparison:
    """One candidate target against the reference: every output judged, or the error that stopped it."""

    target: str
    backend: str
    precision: str = "?"
    tolerances: dict[str, float] = field(default_factory=dict)
    tolerance_source: str = ""
    outputs: tuple[OutputComparison, ...] = ()
    error: str | None = None
    runtime: dict[str, Any] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    @property
    def status(self) -> Status:
        if self.error is not None:
            return Status.ERROR
        return Status.PASSED if all(o.result.ok for o in self.outputs) else Status.FAILED

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target, "backend": self.backend, "precision": self.precision,
                "status": str(self.status), "tolerances": self.tolerances, "tolerance_source": self.tolerance_source,
                "error": self.error, "runtime": self.runtime, "notes": list(self.notes),
                "outputs": [o.to_dict() for o in self.outputs]}


@dataclass(frozen=True)
class CompareReport:
    model: str
    reference: str
    reference_backend: str
    inputs: dict[str, Any]
    comparisons: tuple[TargetComparison, ...]
    class_axes: dict[str, int | None]
    #: the feeds and every runtime's outputs (``--save-outputs``): ``input/<name>``, ``<target>/<output>``
    arrays: dict[str, np.ndarray] = field(default_factory=dict, repr=False, compare=False)

    @property
    def passed(self) -> bool:
        return all(c.status == Status.PASSED for c in self.comparisons)

    @property
    def exit_code(self) -> int:
        return 0 if self.passed else 1

    def to_dict(self) -> dict[str, Any]:
        return {"schema": SCHEMA, "model": self.model, "reference": {"target": self.reference,
                                                                     "backend": self.reference_backend},
                "inputs": self.inputs, "class_axes": self.class_axes, "passed": self.passed,
                "targets": [c.to_dict() for c in self.comparisons]}


def class_axes(output_shapes: Mapping[str, tuple[int, ...]],
               given: Mapping[str, int | None] | None = None) -> dict[str, int | None]:
    """Each output's class axis: ``--class-axis NAME=AXIS|none`` where given, else axis 1 when the output has one
    of at least two entries (logits N x C, N x C x H x W: edgekd's default everywhere without a task), else None
    (a continuous output: no argmax judged).

    >>> class_axes({"logits": (2, 10), "score": (2, 1), "vec": (2,)}, {"vec": None})
    {'logits': 1, 'score': None, 'vec': None}
    """
    given = dict(given or {})
    unknown = sorted(set(given) - set(output_shapes))
    if unknown:
        raise ConfigError(f"--class-axis names output(s) {', '.join(map(repr, unknown))} the model does not have",
                          where="--class-axis", hint=f"the model's outputs: {', '.join(output_shapes)}")
    axes: dict[str, int | None] = {}
    for name, shape in output_shapes.items():
        if name in given:
            axis = given[name]
            if axis is not None and not 0 < axis < len(shape):
                raise ConfigError(f"output {name!r} has shape {list(shape)}: no class axis {axis} (batch is axis 0)",
                                  where="--class-axis", hint=f"an axis 1..{len(shape) - 1}, or {name}=none")
            axes[name] = axis
        else:
            axes[name] = 1 if len(shape) >= 2 and shape[1] >= 2 else None
    return axes


def _load_target(spec: str | Target) -> Target:
    return spec if isinstance(spec, Target) else load_target(spec)


def _available(target: Target) -> Any:
    from edgekd.backends import BACKENDS

    where = target.source or target.name
    backend = BACKENDS.get(target.backend, where=where)
    status = backend.availability()
    if not status.available:
        raise BackendUnavailable(f"target {target.name!r}: backend {target.backend!r} is {status}", where=where,
                                 hint="compare on the machine that has this runtime, or drop that --target")
    return backend


def _run(backend: Any, model: Path, target: Target, out_dir: Path, feeds: Mapping[str, np.ndarray] | None
         ) -> tuple[Any, Any]:
    """Build ``model`` for ``target`` into ``out_dir`` and load it: (build result, runner)."""
    from edgekd.backends.base import call_build

    build = call_build(backend, model, target, out_dir, None)
    if not build.runnable:
        raise EdgekdError(f"the {target.backend} artifact cannot run on this machine: {'; '.join(build.notes)}",
                          where=target.name)
    return build, backend.load(out_dir, target, build)


def _outputs_by_name(runner: Any, result: Mapping[str, np.ndarray], names: Sequence[str]) -> dict[str, np.ndarray]:
    """A runner's outputs keyed by the reference's output names: by name, else by position (a runtime that
    renames outputs keeps the graph's order)."""
    if all(n in result for n in names):
        return {n: np.asarray(result[n]) for n in names}
    values = list(result.values())
    if len(values) != len(names):
        raise EdgekdError(f"the runtime returns {len(values)} output(s) ({', '.join(result)}), the reference "
                          f"{len(names)} ({', '.join(names)})")
    return {n: np.asarray(v) for n, v in zip(names, values, strict=True)}


def compare_runtimes(model: str | Path, targets: Sequence[str | Target], *, reference: str | Target | None = None,
                     inputs: str | Path | None = None, tolerances: Tolerances | None = None,
                     class_axis: Mapping[str, int | None] | None = None, batch: int = 1, seed: int = 0,
                     shapes: Mapping[str, Sequence[int]] | None = None, out_dir: Path | None = None) -> CompareReport:
    """Run ``model`` on the reference and on every other target with the same feeds; judge every output.

    ``targets``: the first is the reference unless ``reference`` is given (then every target is a candidate); a
    target equal to the reference is not compared with itself. Unknown targets, a bad file, unavailable runtimes
    and inputs that do not fit the model raise (usage errors, before anything is built); a target whose build or
    run fails is reported with status ``error``."""
    from edgekd.onnx_files import read_onnx
    from edgekd.profiler.measure import describe_feeds, make_feeds, read_feeds

    path = Path(model)
    read_onnx(path, error=ConfigError)  # what a bad file really is, before any runtime sees it
    tol = tolerances or Tolerances()
    specs = list(targets)
    if reference is None:
        reference = specs.pop(0) if specs else DEFAULT_REFERENCE
    ref_target = _load_target(reference)
    candidates = [t for t in (_load_target(s) for s in specs) if t.name != ref_target.name or t.source != ref_target.source]
    if not candidates:
        raise ConfigError("nothing to compare: give at least one --target besides the reference "
                          f"({ref_target.name})", where="--target",
                          hint="e.g. --target cpu --target openvino-cpu (the first is the reference)")
    ref_backend = _available(ref_target)
    cand_backends = [_available(t) for t in candidates]  # every runtime checked before anything is built
    with tempfile.TemporaryDirectory(prefix="edgekd-compare-") as tmp:
        root = Path(out_dir) if out_dir is not None else Path(tmp)
        _, ref_runner = _run(ref_backend, path, ref_target, root / f"reference-{ref_target.name}", None)
        if inputs is not None:
            feeds = read_feeds(inputs, ref_runner.inputs)
            fed = describe_feeds(feeds, f"--inputs {Path(inputs).name}")
        else:
            feeds = make_feeds(ref_runner.inputs, batch, seed=seed, shapes=shapes)
            fed = {**describe_feeds(feeds, GENERATED), "seed": seed}
        reference_out = ref_runner.infer(feeds)
        names = [o.name for o in ref_runner.outputs]
        ref_out = {n: np.asarray(reference_out[n]) for n in names}
        axes = class_axes({n: tuple(v.shape) for n, v in ref_out.items()}, class_axis)
        steps = quantized_output_steps(path)
        arrays = {**{f"input/{k}": v for k, v in feeds.items()}, **{f"{ref_target.name}/{k}": v for k, v in ref_out.items()}}
        comparisons = [_compare_one(backend, path, target, root / target.name, feeds, ref_out, axes, steps, tol, arrays)
                       for target, backend in zip(candidates, cand_backends, strict=True)]
    return CompareReport(str(path), ref_target.name, ref_target.backend, fed, tuple(comparisons), axes, arrays)


def _compare_one(backend: Any, model: Path, target: Target, out_dir: Path, feeds: Mapping[str, np.ndarray],
                 ref_out: Mapping[str, np.ndarray], axes: Mapping[str, int | None], steps: Mapping[str, float],
                 tol: Tolerances, arrays: dict[str, np.ndarray]) -> TargetComparison:
    par = tol.applied_to(target)
    source = (f"{', '.join('--' + k.replace('_', '-') for k in tol.given())} given; the rest from the target's "
              "[parity]") if tol.given() else f"target {target.name}'s [parity]"
    base = TargetComparison(target.name, target.backend, tolerances=dataclasses.asdict(par), tolerance_source=source)
    try:
        build, runner = _run(backend, model, target, out_dir, feeds)
        got = _outputs_by_name(runner, runner.infer(feeds), list(ref_out))
    except EdgekdError as exc:
        return dataclasses.replace(base, error=str(exc))
    except Exception as exc:  # an SDK error at build or run: this target fails, the others still report
        return dataclasses.replace(base, error=f"{type(exc).__name__}: {exc}")
    arrays.update({f"{target.name}/{k}": v for k, v in got.items()})
    outputs = tuple(OutputComparison(name, tuple(ref.shape), steps.get(name, 0.0),
                                     compare_outputs(ref, got[name], par, output_step=steps.get(name, 0.0),
                                                     class_axis=axes[name]))
                    for name, ref in ref_out.items())
    return dataclasses.replace(base, precision=build.precision, outputs=outputs, runtime=_describe(runner),
                               notes=tuple(build.notes))


def _describe(runner: Any) -> dict[str, Any]:
    try:
        facts = runner.describe()
    except Exception:  # describing is a courtesy: a runner that cannot still compared
        return {}
    return {k: v for k, v in facts.items() if not isinstance(v, (list, dict)) or k == "providers"}


def format_table(report: CompareReport) -> str:
    """The console table: one row per target and output, then the rule applied and each failure."""
    rows = []
    for c in report.comparisons:
        if c.error is not None:
            rows.append([c.target, "-", "-", "-", "-", "ERROR"])
            continue
        for o in c.outputs:
            r = o.result
            top1 = f"{r.top1_agreement * 100:.1f}%" if r.class_axis is not None else "n/a"
            rows.append([c.target, o.name, f"{r.max_abs_error:.3g}", f"{r.mean_abs_error:.3g}", top1,
                         "passed" if r.ok else "FAILED"])
    shapes = ", ".join(f"{k} {v['shape']} {v['dtype']}" for k, v in report.inputs["inputs"].items())
    lines = [f"edgekd compare {report.model}: reference {report.reference} ({report.reference_backend})",
             f"inputs: {report.inputs['source']}" + (f" (seed {report.inputs['seed']})" if "seed" in report.inputs
                                                    else "") + f"; {shapes}", "",
             *_table(["target", "output", "max |err|", "mean |err|", "top-1 agree", "verdict"], rows), ""]
    for c in report.comparisons:
        if c.error is not None:
            lines.append(f"{c.target}: error: {c.error}")
            continue
        lines.append(f"{c.target} ({c.backend}, {c.precision}; tolerances from {c.tolerance_source}):")
        for o in c.outputs:
            lines.append(f"  {o.name}: {o.result.rule}")
            lines += [f"    FAILED: {f}" for f in o.result.failures]
    lines.append("")
    lines.append("passed: every output of every target within its tolerance" if report.passed else
                 "FAILED: " + ", ".join(c.target for c in report.comparisons if c.status != Status.PASSED))
    return "\n".join(lines)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(header[i]), *(len(row[i]) for row in rows)) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    return [line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)]
