"""Per-layer quantization sensitivity, and keeping the most sensitive layers in higher precision.

Sensitivity of layer L = the metric when *only L* is quantized: its weights at the recipe's bit width
and its input activations with the scale calibration gave them; every other quantizer is off. The
metric is the accuracy drop in percentage points against the FP32 model when labels exist, otherwise
the top-1 disagreement with FP32 (also in points); the mean |logit error| is reported beside it.

Every decision here ("is the budget missed?", "keep another layer?") goes through ``judge_drop``: the drop
must exceed the budget *and* be significant (one-sided exact test at ``ALPHA``), so one flipped sample on
a small evaluation set never keeps a layer in higher precision (rule in docs/quantization.md).

"Higher precision" for a kept layer: 8-bit weights when the recipe has fewer bits (W4A8 -> that layer
W8A8, still an int8 kernel), or floating point for a W8A8 model (the layer is excluded and the model
re-quantized and re-calibrated, so the layer runs in FP32 between dequantized activations).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from edgekd.inputs import call, to_torch
from edgekd.progress import task


@dataclass
class EvalSet:
    """Where sensitivity is measured: inputs, optional labels, and FP32 reference logits."""

    x: np.ndarray
    y: Any
    reference: np.ndarray
    #: the task (edgekd.tasks.TaskSpec); None or a classifier: top-1 and McNemar, else the task metric
    task: Any = None

    @property
    def by_metric(self) -> bool:
        return self.task is not None and not self.task.is_classification

    @property
    def reference_accuracy(self) -> float | None:
        if self.by_metric:
            return _metric(self.task, self.reference, self.y, self.x)
        return None if self.y is None else float((self.reference.argmax(1) == self.y).mean() * 100)


def _metric(task: Any, out: np.ndarray, y: Any, x: np.ndarray) -> float | None:
    from edgekd.tasks import task_metric

    return task_metric(task, {task.single.name: out}, y, x)


def outputs(model: nn.Module, x: np.ndarray, batch: int = 256) -> np.ndarray:
    model.eval()
    outs = []
    with torch.no_grad():
        for i in range(0, len(x), batch):
            out = call(model, to_torch(x[i : i + batch]))
            outs.append(getattr(out, "value", out).float().numpy())
    return np.concatenate(outs)


#: paired bootstrap resamples behind a task metric's standard error (seeded: decisions are reproducible)
BOOTSTRAP = 64


def metric_score(out: np.ndarray, ev: EvalSet) -> dict[str, Any]:
    """A non-classification task: drop of the task metric against FP32 in its unit and direction (worse > 0), and
    its paired-bootstrap standard error over samples (``drop_se``) for ``judge_drop``. Without the labels the metric
    needs, the mean |error| against FP32 outputs relative to their mean magnitude stands in (in %), and says so."""
    from edgekd.tasks import subset

    task = ev.task
    result: dict[str, Any] = {"samples": len(out), "metric": task.metric,
                              "mean_abs_error": float(np.abs(out - ev.reference).mean())}
    value, ref = _metric(task, out, ev.y, ev.x), ev.reference_accuracy
    if value is None or ref is None:
        scale = float(np.abs(ev.reference).mean()) or 1.0
        per = np.abs(out - ev.reference).reshape(len(out), -1).mean(1) / scale * 100
        rng = np.random.default_rng(0)
        boot = [per[rng.integers(0, len(per), len(per))].mean() for _ in range(BOOTSTRAP)]
        return result | {"metric": "relative |error| vs FP32 (no labels)", "drop": float(per.mean()),
                         "drop_se": float(np.std(boot))}
    rng = np.random.default_rng(0)
    drops = []
    for _ in range(BOOTSTRAP):
        idx = rng.integers(0, len(out), len(out))
        y_i = subset(ev.y, idx)
        v, r = _metric(task, out[idx], y_i, ev.x[idx]), _metric(task, ev.reference[idx], y_i, ev.x[idx])
        drops.append(task.drop(r, v))
    return result | {"accuracy": value, "drop": task.drop(ref, value), "drop_se": float(np.std(drops))}


def score(out: np.ndarray, ev: EvalSet) -> dict[str, Any]:
    """drop (points, higher = worse), accuracy (if labelled), agreement with FP32, mean |error|, and the sample
    counts the significance test needs: ``lost``/``gained`` (FP32 right and quantized wrong / the reverse) when
    labelled, ``disagree`` (top-1 differs from FP32) when not. A task other than classification is scored by its
    metric (``metric_score``), never by an argmax over its outputs."""
    if ev.by_metric:
        return metric_score(out, ev)
    pred, ref = out.argmax(1), ev.reference.argmax(1)
    agree = float((pred == ref).mean() * 100)
    result: dict[str, Any] = {"samples": len(pred), "agreement": agree,
                              "mean_abs_error": float(np.abs(out - ev.reference).mean())}
    if ev.y is not None:
        right, right_fp32 = pred == ev.y, ref == ev.y
        acc = float(right.mean() * 100)
        result |= {"accuracy": acc, "drop": float(ev.reference_accuracy or 0.0) - acc,
                   "lost": int((right_fp32 & ~right).sum()), "gained": int((~right_fp32 & right).sum())}
    else:
        result |= {"drop": 100.0 - agree, "disagree": int((pred != ref).sum())}
    return result


#: one-sided significance level of every budget decision
ALPHA = 0.05


def judge_drop(result: dict[str, Any], budget: float) -> dict[str, Any]:
    """Is ``budget`` (points) missed by ``result`` (a ``score``)? Missed = the drop exceeds the budget *and* a
    one-sided exact test says it is not noise (p < ``ALPHA``):

    - labelled: exact McNemar on the samples FP32 and the quantized model disagree on correctness
      (H0: losing and gaining a sample are equally likely), i.e. the drop is real;
    - unlabelled: exact binomial test of the disagreement count (H0: disagreement rate <= budget).

    A negative budget (asking to beat FP32) is missed whenever the drop exceeds it: no test can protect that.
    ``min_detectable_drop`` is the smallest drop (points) that can be significant on this many samples."""
    from scipy.stats import binom

    n = max(int(result["samples"]), 1)
    if "drop_se" in result:  # a task metric: one-sided z-test on the paired-bootstrap standard error
        from scipy.stats import norm

        se = max(float(result["drop_se"]), 1e-12)
        p = float(norm.sf((result["drop"] - budget) / se))
        missed = result["drop"] > budget and (budget < 0 or p < ALPHA)
        return {"missed": bool(missed), "drop": result["drop"], "budget": budget, "p_value": p, "alpha": ALPHA,
                "test": f"one-sided z-test, paired bootstrap ({BOOTSTRAP} resamples) of the {result['metric']} drop",
                "samples": n, "min_detectable_drop": budget + float(norm.isf(ALPHA)) * se}
    if "lost" in result:
        lost, gained = int(result["lost"]), int(result["gained"])
        p = float(binom.sf(lost - 1, lost + gained, 0.5)) if lost + gained else 1.0
        test = "exact McNemar, one-sided (FP32-right/quantized-wrong vs the reverse)"
        detectable = int(np.ceil(np.log(ALPHA) / np.log(0.5)))  # that many lost samples and none gained
    else:
        rate = max(budget, 0.0) / 100
        k = int(result["disagree"])
        p = float(binom.sf(k - 1, n, rate)) if rate > 0 else float(k == 0)
        test = f"exact binomial, one-sided (disagreement rate <= {rate:.4g})"
        detectable = int(binom.isf(ALPHA, n, rate)) + 1 if rate > 0 else 1
    missed = result["drop"] > budget and (budget < 0 or p < ALPHA)
    return {"missed": bool(missed), "drop": result["drop"], "budget": budget, "p_value": p, "alpha": ALPHA,
            "test": test, "samples": n, "min_detectable_drop": 100.0 * detectable / n}


def torch_layer_macs(model: nn.Module, example: torch.Tensor) -> dict[str, int]:
    """MACs per sample of every weighted layer (Conv/Linear and other modules with a >= 2-D weight, recurrent
    layers, attention's in-projection), from one forward: output positions x weight elements per output channel
    (input positions for a transposed conv; steps x gate weights for LSTM/GRU/RNN)."""
    macs: dict[str, int] = {}
    hooks = []
    for name, module in model.named_modules():
        weight = getattr(module, "weight", getattr(module, "in_proj_weight", None))
        if not name or not (isinstance(module, nn.RNNBase) or (isinstance(weight, torch.Tensor) and weight.dim() >= 2)):
            continue

        def hook(mod: nn.Module, inp: Any, out: Any, name: str = name) -> None:
            value = getattr(out[0] if isinstance(out, tuple) else out, "value", out[0] if isinstance(out, tuple) else out)
            x = getattr(inp[0], "value", inp[0]) if inp else None
            if isinstance(value, torch.Tensor) and value.dim() >= 1:
                macs[name] = macs.get(name, 0) + _module_macs(mod, x, value)
        hooks.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            call(model.eval(), example[:1])
    finally:
        for h in hooks:
            h.remove()
    return macs


def _module_macs(mod: nn.Module, x: Any, out: torch.Tensor) -> int:
    if isinstance(mod, nn.RNNBase):
        steps = x.shape[1 if mod.batch_first and x.dim() == 3 else 0] if isinstance(x, torch.Tensor) else 1
        return int(steps) * sum(p.numel() for n, p in mod.named_parameters() if n.startswith("weight_"))
    if isinstance(mod, nn.MultiheadAttention):  # q/k/v projections (out_proj is a Linear of its own)
        return int(out[:1].numel() // mod.embed_dim * mod.in_proj_weight.numel())
    w = mod.weight
    if isinstance(mod, (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)) and isinstance(x, torch.Tensor):
        return int(x[:1].numel() // w.shape[0] * w.numel())
    return int(out[:1].numel() // w.shape[0] * w.numel())


def _input_quant(model: nn.Module, layers: dict[str, nn.Module], x: torch.Tensor) -> dict[str, tuple]:
    """(scale, zero point, qmin, qmax) of every layer's quantized input, from one fully quantized run."""
    from brevitas.quant_tensor import QuantTensor

    from edgekd.quant.qdq import act_quant_of

    found: dict[str, tuple] = {}
    hooks = []
    for name, layer in layers.items():
        def pre(mod: nn.Module, args: Any, name: str = name) -> None:
            inp = args[0]
            q = None
            if isinstance(inp, QuantTensor):
                from edgekd.quant.qdq import ActQuant

                q = ActQuant(float(inp.scale), round(float(inp.zero_point)), round(float(inp.bit_width)),
                             bool(inp.signed))
            elif mod.input_quant.is_quant_enabled:
                q = act_quant_of(mod.input_quant)
            if q is not None:
                found[name] = (q.scale, q.zero_point, q.qmin, q.qmax)
        hooks.append(layer.register_forward_pre_hook(pre))
    try:
        with torch.no_grad():
            call(model.eval(), x)
    finally:
        for h in hooks:
            h.remove()
    return found


def layer_sensitivity(model: nn.Module, ev: EvalSet, layers: dict[str, nn.Module]) -> list[dict[str, Any]]:
    """One row per layer: the score with only that layer quantized. Sorted most sensitive first."""
    from brevitas.graph.calibrate import quantization_status_manager

    inputs = _input_quant(model, layers, to_torch(ev.x[:2]))
    rows = []
    with task("layer sensitivity", len(layers)) as bar:
        for name, layer in layers.items():
            q = inputs.get(name)

            def fake_quant(mod: nn.Module, args: Any, q: tuple | None = q) -> Any:
                if q is None:
                    return None
                s, zp, lo, hi = q
                x = getattr(args[0], "value", args[0])
                return ((torch.clamp(torch.round(x / s) + zp, lo, hi) - zp) * s,)

            handle = layer.register_forward_pre_hook(fake_quant)
            try:
                with quantization_status_manager(model, disable_act_quant=True, disable_weight_quant=True,
                                                 disable_bias_quant=True, is_training=False):
                    layer.weight_quant.disable_quant = False
                    out = outputs(model, ev.x)
                    layer.weight_quant.disable_quant = True  # the manager restores the saved state
            finally:
                handle.remove()
            macs_weight = int(layer.weight.numel())
            rows.append({"layer": name, "type": type(layer).__name__.replace("Quant", ""), "params": macs_weight,
                         "input_quantized": q is not None, **score(out, ev)})
            bar.advance()
    return sorted(rows, key=lambda r: (-r["drop"], -r["mean_abs_error"]))


def set_weight_bits(layer: nn.Module, bits: int) -> None:
    """Change a brevitas layer's weight bit width in place (weight scales come from the weights)."""
    proxy = layer.weight_quant
    proxy.quant_injector = proxy.quant_injector.let(bit_width=bits)
    proxy.init_tensor_quant()


def keep_sensitive(model: nn.Module, ev: EvalSet, ranking: list[dict[str, Any]], *, budget: float,
                   max_layers: int, weight_bits: int,
                   requantize: Callable[[tuple[str, ...]], nn.Module]) -> tuple[nn.Module, list[dict[str, Any]], dict]:
    """Greedily raise the precision of the most sensitive layers until the budget is no longer missed
    (``judge_drop``: a drop still over the budget but not significant stops the loop too).

    ``requantize(float_layers)`` rebuilds and calibrates the model with those layers left in float
    (only used for 8-bit recipes). A layer is kept only if keeping it lowers the drop (or, at an equal
    drop, the mean |logit error|); one that does not
    is put back (listed in ``final["tried_without_gain"]``), so a noisy evaluation (a few unlabelled
    samples with near-tied logits) cannot leave layers in higher precision for nothing. At most
    ``2 * max_layers`` layers are tried. Returns (model, kept rows, final score).
    """
    current = score(outputs(model, ev.x), ev)
    kept: list[dict[str, Any]] = []
    tried: list[dict[str, Any]] = []
    float_layers: tuple[str, ...] = ()
    for row in ranking:
        if not judge_drop(current, budget)["missed"] or len(kept) >= max_layers or len(kept) + len(tried) >= 2 * max_layers:
            break
        before = current["drop"]
        if weight_bits < 8:
            layer = model.get_submodule(row["layer"])
            set_weight_bits(layer, 8)
            candidate, candidate_float, precision = model, float_layers, "W8"
        else:
            candidate_float = (*float_layers, row["layer"])
            candidate, precision = requantize(candidate_float), "FP32"
        result = score(outputs(candidate, ev.x), ev)
        gain = result["drop"] < before or (result["drop"] == before
                                            and result["mean_abs_error"] < current["mean_abs_error"])
        if not gain:
            if weight_bits < 8:
                set_weight_bits(layer, weight_bits)  # put it back
            tried.append({"layer": row["layer"], "precision": precision, "drop_before": before,
                          "drop_with_it": result["drop"], "why": "keeping it did not lower the drop or the logit error; put back"})
            continue
        model, float_layers, current = candidate, candidate_float, result
        kept.append({"layer": row["layer"], "precision": precision, "sensitivity_drop": row["drop"],
                     "drop_before": before, "drop_after": current["drop"],
                     "why": f"drop {before:.2f} > budget {budget:.2f} points (significant); most sensitive layer left"})
    if tried:
        current = {**current, "tried_without_gain": tried}
    return model, kept, current
