"""Output parity between a reference and a candidate run. Torch-free (the runtime and HIL checks use it).

One rule everywhere (compress, ``edgekd check``, the pytest plugin): a candidate passes when every
element is within ``atol + rtol * |reference| + output_steps * step`` and top-1 agreement is at least
``min_top1_agreement``. ``step`` is the quantization step of a quantized output (0 for a float output): two INT8
runtimes may round an accumulator differently by one step, and that reaches the output. The rule applied is the
rule shown: ``tolerance_rule`` spells it, with its numbers, for every report and check line.

A rounding tie is not a disagreement: two INT8 runtimes may each round an element ``output_steps`` steps apart,
so where the reference's top class leads the candidate's top class by at most twice that (``2 x output_steps x
step``), the flip is rounding and the judged top-1 agreement counts it as agreeing (``near_tie_flips`` says how many;
``top1_agreement`` stays the raw share). A float output (step 0) has no such allowance, and a flip across a wider
lead fails top-1 even when every element is within atol/rtol. A weakly trained int8 model has many rounding ties,
and OpenVINO requantizes in its own order (measured: 10 of 320 digits samples flipped on a Zen 4, all ties).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class ParityResult:
    samples: int
    max_abs_error: float
    mean_abs_error: float
    top1_agreement: float
    failures: tuple[str, ...] = field(default=())
    rule: str = ""  # the tolerance applied, in words and numbers ("" when nothing was judged)
    #: the axis top-1 agreement was taken along (None: a continuous output, no argmax judged)
    class_axis: int | None = 1
    #: positions whose argmax differs only between classes the reference ties within two runtimes' rounding
    near_tie_flips: int = 0

    @property
    def ok(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict[str, Any]:
        return {"samples": self.samples, "max_abs_error": self.max_abs_error, "mean_abs_error": self.mean_abs_error,
                "top1_agreement": self.top1_agreement if self.class_axis is not None else None,
                "class_axis": self.class_axis, "near_tie_flips": self.near_tie_flips, "ok": self.ok, "failures": list(self.failures),
                **({"rule": self.rule} if self.rule else {})}


def tolerance_rule(tolerances: Any, output_step: float = 0.0) -> str:
    """The parity rule as applied, e.g. ``|err| <= 0.0001 + 0.001*|ref| + 2 x 0.0039 (output step), top-1 >= 99%``.

    >>> from types import SimpleNamespace as T
    >>> print(tolerance_rule(T(atol=1e-4, rtol=1e-3, output_steps=2.0, min_top1_agreement=0.99), 0.0039))
    ... # doctest: +NORMALIZE_WHITESPACE
    |err| <= atol 0.0001 + rtol 0.001 x |ref| + 2 x 0.0039 (output step) = 0.0079 + 0.001 x |ref|, top-1 >= 99%
    (flips across a lead <= 0.0156 are rounding ties)
    """
    steps = getattr(tolerances, "output_steps", 1.0) * output_step
    rule = f"|err| <= atol {tolerances.atol:g} + rtol {tolerances.rtol:g} x |ref|"
    if steps:
        rule += (f" + {steps / output_step:g} x {output_step:.4g} (output step) = {tolerances.atol + steps:.4g} + "
                 f"{tolerances.rtol:g} x |ref|")
    tie = f" (flips across a lead <= {2 * steps:.4g} are rounding ties)" if steps else ""
    return rule + f", top-1 >= {tolerances.min_top1_agreement * 100:g}%{tie}"


def compare_outputs(reference: np.ndarray, candidate: np.ndarray, tolerances: Any = None,
                    output_step: float = 0.0, class_axis: int | None = 1) -> ParityResult:
    """Compare two output batches; with ``tolerances`` (a ParitySettings) also judge them.

    ``output_step``: the quantization step of a quantized output (see ``quantized_output_step``). Two INT8
    runtimes may round accumulators differently, so ``tolerances.output_steps`` such steps are allowed on top of
    atol/rtol. ``class_axis``: the axis holding the classes of a logits output (1 for N x C and N x C x H x W);
    top-1 agreement is the argmax along it at every position (per pixel, per token), never over a flattened
    output. None: a continuous output (regression, reconstruction) is judged elementwise only.

    >>> r = compare_outputs(np.array([[1.0, 0.0]]), np.array([[0.9, 0.0]]))
    >>> round(r.max_abs_error, 3), r.top1_agreement, r.ok
    (0.1, 1.0, True)
    """
    if candidate.shape != reference.shape:
        return ParityResult(len(reference), float("inf"), float("inf"), 0.0,
                            (f"output shape {candidate.shape} != reference {reference.shape}",))
    ref = reference.reshape(len(reference), -1).astype(np.float64)
    cand = candidate.reshape(len(candidate), -1).astype(np.float64)
    err = np.abs(ref - cand)
    top1 = _agreement(reference, candidate, class_axis)
    failures: list[str] = []
    rule = ""
    ties = 0
    if tolerances is not None:
        rule = tolerance_rule(tolerances, output_step)
        steps = getattr(tolerances, "output_steps", 1.0) * output_step
        excess = err - (tolerances.atol + tolerances.rtol * np.abs(ref) + steps * 1.001)
        if (excess > 0).any():
            worst = np.unravel_index(int(np.argmax(excess)), excess.shape)
            failures.append(
                f"{int((excess > 0).any(axis=1).sum())}/{len(ref)} samples outside {rule.partition(', top-1')[0]} "
                f"(worst: sample {worst[0]} output {worst[1]}: {cand[worst]:.6g} vs reference {ref[worst]:.6g}, "
                f"|err| {err[worst]:.3g})")
        judged, ties = _judged_agreement(reference, candidate, 2 * steps * 1.001, class_axis)
        if class_axis is not None and judged < tolerances.min_top1_agreement:
            failures.append(f"top-1 agreement {judged * 100:.1f}% < {tolerances.min_top1_agreement * 100:g}%"
                            + (f" ({ties} rounding-tie flip(s) counted as agreeing)" if ties else ""))
    if class_axis is None:
        rule = rule.partition(", top-1")[0] + " (a continuous output: no argmax)" if rule else rule
    return ParityResult(len(ref), float(err.max()), float(err.mean()), top1, tuple(failures), rule, class_axis,
                        ties)


def _judged_agreement(reference: np.ndarray, candidate: np.ndarray, tie_lead: float,
                      class_axis: int | None) -> tuple[float, int]:
    """Top-1 agreement counting rounding-tie flips as agreeing, and the number of such flips.

    A flip is a rounding tie when the reference's top class leads the candidate's top class by at most ``tie_lead``.

    >>> ref = np.array([[1.0, 0.99, 0.0], [1.0, 0.0, 0.5]])
    >>> _judged_agreement(ref, np.array([[0.98, 0.995, 0.0], [0.4, 0.0, 0.6]]), 0.02, 1)
    (0.5, 1)
    """
    if class_axis is None or reference.ndim < 2 or not 0 < class_axis < reference.ndim \
            or reference.shape[class_axis] < 2:
        return 1.0, 0
    ref_top = np.expand_dims(reference.argmax(class_axis), class_axis)
    cand_top = np.expand_dims(candidate.argmax(class_axis), class_axis)
    flipped = (ref_top != cand_top).squeeze(class_axis)
    lead = (np.take_along_axis(reference, ref_top, class_axis)
            - np.take_along_axis(reference, cand_top, class_axis)).squeeze(class_axis)
    tie = flipped & (lead <= tie_lead)
    return float(1.0 - (flipped & ~tie).mean()), int(tie.sum())


def _agreement(reference: np.ndarray, candidate: np.ndarray, class_axis: int | None) -> float:
    """Share of positions whose argmax along ``class_axis`` agrees (1.0 without a class axis or a single class)."""
    if class_axis is None or reference.ndim < 2 or not 0 < class_axis < reference.ndim \
            or reference.shape[class_axis] < 2:
        return 1.0
    return float((reference.argmax(class_axis) == candidate.argmax(class_axis)).mean())


def quantized_output_step(model_path: Any) -> float:
    """The dequantization step of the model's first output when a DequantizeLinear produces it, else 0.

    >>> quantized_output_step("no-such-file.onnx")
    0.0
    """
    steps = quantized_output_steps(model_path)
    return next(iter(steps.values()), 0.0)


def quantized_output_steps(model_path: Any) -> dict[str, float]:
    """Each graph output's dequantization step (0 for a float output), by output name, in graph order; {} when
    the file does not exist. ``edgekd compare`` judges every output of a bare ONNX file with its own step."""
    from pathlib import Path

    path = Path(model_path)
    if not path.is_file():
        return {}
    import onnx

    from edgekd.onnxgraph import OnnxGraph

    model = onnx.load(str(path), load_external_data=False)
    g = OnnxGraph(model)
    steps: dict[str, float] = {}
    for output in model.graph.output:
        producer = g.producer(output.name)
        scale = g.constant(producer.input[1]) if producer is not None and producer.op_type == "DequantizeLinear" \
            else None
        steps[output.name] = float(np.max(scale)) if scale is not None else 0.0
    return steps
