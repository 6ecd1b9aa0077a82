"""``quantize``: brevitas PTQ or distillation-aware QAT (W8A8, W4A8), exported as QDQ that runs in INT8.

Steps: graph-mode brevitas quantization -> activation calibration (percentile or min-max) -> bias
correction -> accuracy against the budget on the held-out validation split (a significant drop only), with
per-layer sensitivity and the most sensitive layers
kept in higher precision until the budget is met -> (qat) fine-tuning with the teacher's loss, 2:4
masks re-applied after every step -> export check: ONNX Runtime's optimized graph must run every
quantized Conv/Gemm as an integer kernel (``int8_mac_fraction``) and match brevitas (parity).

The targets steer the numerics: each target's backend declares them (``Backend.numerics(target)``).
A target that needs symmetric activations (TensorRT, an HLS target with ``symmetric = true``) makes
them signed int8 with zero point 0; one that asks for power-of-two scales (an HLS target with
``power_of_two_scales``) restricts every scale to 2^k.
"""

from __future__ import annotations

import contextlib
import copy
import io
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

import edgekd.quant.onnx_export  # noqa: F401  (registers the "brevitas-qdq" exporter)
from edgekd.artifact import Artifact
from edgekd.backends.base import Numerics, numerics_of
from edgekd.backends.flavors import REFERENCE_FLAVOR
from edgekd.errors import PassError
from edgekd.export import check_single_output
from edgekd.inputs import args, call, is_multi, specs_of
from edgekd.passes import PassContext, register_pass
from edgekd.quant.calibrate import model_input
from edgekd.train import FinetuneConfig


@dataclass(frozen=True)
class QuantizeConfig:
    mode: Literal["ptq", "qat"] = "ptq"
    weight_bits: int = 8
    act_bits: int = 8
    granularity: Literal["per_channel", "per_tensor"] = "per_channel"  # weights; activations are per tensor
    quantizer: Literal["graph", "layerwise"] = "graph"  # layerwise: no FX tracing, Q/DQ around each layer
    attention_scores: Literal["int8", "float"] = "int8"  # layerwise: q and k of timm-style attention quantized
    calibration: Literal["minmax", "percentile"] = "percentile"
    percentile: float = 99.99
    calibration_samples: int = 512
    calibration_batch: int = 64
    bias_correction: bool = True
    symmetric_activations: bool | None = None  # None: True when a target's backend needs them (TensorRT, symmetric HLS)
    power_of_two: bool | None = None  # None: True when a target's backend asks for them (HLS power_of_two_scales)
    exclude: tuple[str, ...] = ()  # layer names / globs left in FP32
    unsupported: Literal["error", "float"] = "error"  # weighted layers the exporter cannot write
    sensitivity: Literal["off", "auto", "report"] = "auto"  # auto: only when the budget is missed
    accuracy_budget: float | None = None  # points; None: the smallest max_accuracy_drop of the targets
    max_kept_layers: int = 4
    eval_samples: int = 1000  # at most this many validation samples judge the budget and sensitivity
    progressive: bool = False  # qat: first half of the epochs with weight quantization only
    check_int8: bool = True  # export once and prove the integer kernels + parity
    finetune: FinetuneConfig | None = None

    def __post_init__(self) -> None:
        if self.weight_bits not in range(2, 9):
            raise ValueError(f"weight_bits must be 2..8 (8 and 4 are the tested settings), got {self.weight_bits}")
        if self.act_bits != 8:
            raise ValueError(f"act_bits must be 8 (integer kernels take 8-bit activations), got {self.act_bits}")
        if not 90.0 <= self.percentile <= 100.0:
            raise ValueError(f"percentile must be in [90, 100], got {self.percentile}")
        if self.mode == "qat" and self.finetune is None:
            raise ValueError('mode = "qat" needs a [passes.finetune] table (epochs, lr, loss, ...)')
        if self.calibration_samples < 1 or self.calibration_batch < 1 or self.eval_samples < 1:
            raise ValueError("calibration_samples, calibration_batch and eval_samples must be >= 1")


def _recipe(config: QuantizeConfig, ctx: PassContext) -> tuple[Any, dict[str, str]]:
    from edgekd.quant.recipe import QuantRecipe

    why: dict[str, str] = {}
    needs = _target_numerics(config, ctx)
    symmetric = config.symmetric_activations
    if symmetric is None:
        asking = [name for name, numerics in needs if numerics.symmetric_activations]
        symmetric = bool(asking)
        if symmetric:
            why["symmetric_activations"] = f"target(s) {', '.join(asking)} need symmetric int8"
    pot = config.power_of_two
    if pot is None:
        asking = [name for name, numerics in needs if numerics.power_of_two_scales]
        pot = bool(asking)
        if pot:
            why["power_of_two"] = f"target(s) {', '.join(asking)} ask for power-of-two scales"
    recipe = QuantRecipe(weight_bits=config.weight_bits, act_bits=config.act_bits,
                         per_channel=config.granularity == "per_channel", symmetric_activations=symmetric,
                         power_of_two=pot, calibration=config.calibration, percentile=config.percentile)
    return recipe, why


def _target_numerics(config: QuantizeConfig, ctx: PassContext) -> list[tuple[str, Numerics]]:
    """(target name, the Numerics its backend declares), after checking the bit widths fit every target."""
    from edgekd.backends import BACKENDS

    needs = [(t.name, numerics_of(BACKENDS.get(t.backend, where=t.source), t)) for t in ctx.targets]
    for name, numerics in needs:
        problem = numerics.check(config.weight_bits, config.act_bits)
        if problem:
            raise PassError(f"target {name} cannot run this quantization: {problem}", where="quantize",
                            hint="set weight_bits/act_bits to widths every target supports, or build that target "
                                 "from another profile")
    return needs


def _budget(config: QuantizeConfig, ctx: PassContext) -> tuple[float | None, str]:
    if config.accuracy_budget is not None:
        return config.accuracy_budget, "quantize accuracy_budget"
    budgets = [(t.budgets.max_accuracy_drop, t.name) for t in ctx.targets
               if t.budgets.max_accuracy_drop is not None]
    if not budgets:
        return None, "none"
    value, name = min(budgets)
    return value, f"target {name} max_accuracy_drop"


@dataclass(frozen=True)
class _Splits:
    """Calibration inputs (the training split) and where decisions are judged (``split`` says which data)."""

    x_cal: np.ndarray
    x_eval: np.ndarray
    y_eval: np.ndarray | None
    split: str
    note: str | None = None


def _splits(ctx: PassContext, config: QuantizeConfig) -> _Splits:
    """Calibrate on the training split; judge the budget and sensitivity on the held-out validation split (at most
    ``eval_samples`` of it). Data too small for one falls back to the tail of the training split, said in a note."""
    data = ctx.data
    if data is None or getattr(data, "x_train", None) is None or not len(data.x_train):
        raise PassError("quantization needs calibration data", where="quantize",
                        hint="pass --data (random:CxHxW works for latency-only runs)")
    x, y = data.x_train, data.y_train
    x_val = getattr(data, "x_val", None)
    if x_val is not None and len(x_val):
        y_val = getattr(data, "y_val", None)
        n = min(config.eval_samples, len(x_val))
        return _Splits(x, x_val[:n], y_val[:n] if y_val is not None else None,
                       f"validation split ({n} of {len(x_val)} held-out samples, never trained on)")
    n_eval = min(config.eval_samples, max(1, len(x) // 4))
    reason = (getattr(data, "validation", None) or {}).get("reason", "the data has no validation split")
    note = (f"no held-out validation split ({reason}): the budget and sensitivity are judged on the last {n_eval} "
            "training samples, which training passes have seen")
    return _Splits(x[: max(1, len(x) - n_eval)], x[-n_eval:], y[-n_eval:] if y is not None else None,
                   f"tail of the training split ({n_eval} samples; no validation split)", note)


def _higher_precision(float_model: nn.Module, example: torch.Tensor, exclude: tuple[str, ...],
                      unsupported: dict[str, str | None],
                      kept: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], float | None]:
    """Every layer that does not run at the recipe's weight bit width: excluded, unsupported (name -> why, None:
    the exporter cannot write its type), or kept by the sensitivity pass; each with its precision, why, and MACs.
    Returns (rows, their share of the weighted MACs)."""
    import fnmatch

    from edgekd.quant.sensitivity import torch_layer_macs

    macs = torch_layer_macs(float_model, example)
    rows: list[dict[str, Any]] = []
    for name, why in unsupported.items():  # a kept module's MACs include its children's (attention's out_proj)
        inside = [v for k, v in macs.items() if k == name or k.startswith(name + ".")]
        why = why or f"the QDQ exporter cannot write a {type(float_model.get_submodule(name)).__name__} (unsupported = \"float\")"
        rows.append({"layer": name, "precision": "FP32", "why": why, "macs": sum(inside) if inside else None})
    for name in macs:
        if any(name == u or name.startswith(u + ".") for u in unsupported):
            continue
        pattern = next((pat for pat in exclude if fnmatch.fnmatch(name, pat)), None)
        if pattern is not None:
            rows.append({"layer": name, "precision": "FP32", "why": f"exclude = [\"{pattern}\"] in the recipe",
                         "macs": macs[name]})
    listed = {r["layer"] for r in rows}
    rows += [{"layer": k["layer"], "precision": k["precision"], "why": k["why"], "macs": macs.get(k["layer"])}
             for k in kept if k["layer"] not in listed]
    total = sum(macs.values())
    share = sum(r["macs"] or 0 for r in rows) / total if total else None
    return rows, share


class _Progressive:
    """QAT hook: weights-only fake quantization for the first half of the epochs, then everything."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.manager: Any = None

    def before_epoch(self, model: nn.Module, epoch: int, epochs: int) -> None:
        from brevitas.graph.calibrate import quantization_status_manager

        if epoch == 0 and epochs > 1:
            self.manager = quantization_status_manager(self.model, disable_act_quant=True, disable_bias_quant=True,
                                                       is_training=True)
            self.manager.__enter__()
        elif self.manager is not None and epoch >= epochs // 2:
            self.manager.__exit__(None, None, None)
            self.manager = None
            model.train()

    def after_train(self, model: nn.Module) -> None:
        if self.manager is not None:
            self.manager.__exit__(None, None, None)
            self.manager = None


def _qat(model: nn.Module, artifact: Artifact, config: QuantizeConfig, ctx: PassContext,
         label: str) -> dict[str, Any]:
    from edgekd.passes.sparsity import check_masks, mask_hook
    from edgekd.train import fine_tune

    assert config.finetune is not None
    hooks: list[object] = []
    sparsity = artifact.meta.get("sparsity")
    if sparsity:
        hooks.append(mask_hook(model, sparsity))
    if config.progressive:
        hooks.append(_Progressive(model))
    result = fine_tune(model, ctx.teacher, ctx.data, config.finetune, hooks=hooks, description=f"KD-QAT {label}")
    model.eval()
    info: dict[str, Any] = {"steps": result.steps, "seconds": round(result.seconds, 2),
                            "final_accuracy": result.final_accuracy, "best_accuracy": result.best_accuracy,
                            "teacher": ctx.teacher is not None, "loss": config.finetune.loss,
                            "progressive": config.progressive, "history": result.history,
                            "kept": result.extra.get("kept")}
    if sparsity:
        broken = check_masks(model, sparsity.get("masks", sparsity))
        if broken:
            raise PassError(f"2:4 masks broken after QAT in {', '.join(broken)}", where="quantize qat",
                            hint="a hook re-applies masks after each optimizer step; report this as a bug")
        info["masks_kept"] = True
    return info


def _int_weight_sparsity(model: nn.Module, sparsity: dict[str, Any]) -> dict[str, Any]:
    """2:4 check on the *integer* weights that get exported (a zero must stay an int8 zero)."""
    from edgekd.quant.recipe import quant_layers

    masks = sparsity.get("masks", {})
    layers = quant_layers(model)
    held = []
    for name, mask in masks.items():
        layer = layers.get(name)
        if layer is None or not layer.weight_quant.is_quant_enabled:
            continue
        with torch.no_grad():
            ints = layer.quant_weight().int()
        held.append(bool((ints[~mask] == 0).all()))
    return {"layers": len(held), "all_masks_hold_in_int8": all(held) if held else None}


def _first_divergence(model: nn.Module, twin: nn.Module, x: torch.Tensor, tol: float) -> str | None:
    """Name of the first module (in brevitas's execution order) whose output differs between brevitas and its
    deploy twin by more than ``tol``."""
    seen: dict[str, list[Any]] = {"brevitas": [], "twin": []}
    handles = []
    for key, root in (("brevitas", model), ("twin", twin)):
        for name, module in root.named_modules():
            if name:
                def hook(_m: nn.Module, _i: Any, out: Any, name: str = name, key: str = key) -> None:
                    value = getattr(out, "value", out)
                    if isinstance(value, torch.Tensor):
                        seen[key].append((name, value.detach().clone()))
                handles.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            call(model, x)
            call(twin, x)
    finally:
        for h in handles:
            h.remove()
    twin_out = dict(seen["twin"])
    for name, value in seen["brevitas"]:
        other = twin_out.get(name)
        if other is not None and other.shape == value.shape and float((other - value).abs().max()) > tol:
            return name
    return None


def _check_unsigned_inputs(model: nn.Module, x: torch.Tensor) -> None:
    """An unsigned quantizer with no ReLU in front that receives negative values clips them to 0 (seen after
    brevitas's concat alignment: the signed model input concatenated with a ReLU branch is given the branch's
    unsigned quantizer): a PassError naming it, not a silently clipped model."""
    from brevitas.proxy.runtime_quant import ActQuantProxyFromInjectorBase

    lows: dict[str, float] = {}
    proxies: dict[str, Any] = {}
    handles = []
    for name, proxy in model.named_modules():
        if not isinstance(proxy, ActQuantProxyFromInjectorBase) or not proxy.is_quant_enabled or proxy.is_signed:
            continue
        fused = getattr(proxy, "fused_activation_quant_proxy", None)
        act = getattr(fused, "activation_impl", None)
        if act is not None and not isinstance(act, nn.Identity):
            continue  # a ReLU/Sigmoid in front: negative inputs are expected

        def hook(_mod: nn.Module, args: Any, name: str = name) -> None:
            value = getattr(args[0], "value", args[0]) if args else None
            if isinstance(value, torch.Tensor) and value.numel():
                lows[name] = min(float(value.min()), lows.get(name, 0.0))
        proxies[name] = proxy
        handles.append(proxy.register_forward_pre_hook(hook))
    try:
        with torch.no_grad():
            call(model, x)
    finally:
        for h in handles:
            h.remove()
    with torch.no_grad():
        clipped = [(name, low) for name, low in lows.items() if low < -2 * float(proxies[name].scale())]
    if clipped:
        name, low = clipped[0]
        layer = name.removesuffix(".act_quant").removesuffix(".input_quant").removesuffix(".output_quant")
        raise PassError(f"the INT8 export does not reproduce the brevitas model as calibrated: quantizer {layer} is "
                        f"unsigned (brevitas's concat alignment) but its input goes down to {low:.4g}, which int8 "
                        "clips to 0", where=f"quantize layer {layer}",
                        hint='set quantizer = "layerwise" in the quantize pass (every layer gets its own input quantizer)')


def check_twin(model: nn.Module, x_eval: np.ndarray) -> dict[str, Any]:
    """Compare the deploy twin (what gets exported) with the brevitas model on up to 32 eval samples.

    They differ when brevitas runs a quantizer differently from what it declares (seen after brevitas's
    concat alignment: a model input quantizer marked unsigned but run signed, and Fire-module ReLU
    quantizers that brevitas does not apply at all); the export follows the declared quantizer. A
    difference above 5 % of the output range (the input-sign case: the export clipped every negative
    input) is a PassError naming the first differing layer; a smaller one is reported
    (``twin_vs_brevitas``: max |error| and that layer), since the export is the faithful one there."""
    from edgekd.quant.qdq import build_twin
    from edgekd.quant.recipe import quant_layers
    from edgekd.quant.sensitivity import outputs

    x = x_eval[:32]
    _check_unsigned_inputs(model, model_input(x))
    twin = build_twin(model, model_input(x[:1]), REFERENCE_FLAVOR)
    ref, got = outputs(model, x), outputs(twin, x)
    err = float(np.abs(ref - got).max()) if ref.size else 0.0
    span = float(ref.max() - ref.min()) if ref.size else 0.0
    result: dict[str, Any] = {"max_abs_error": err, "samples": len(x), "first_differing": None}
    if err <= 1e-4 * span + 1e-6:
        return result
    layer = _first_divergence(model, twin, model_input(x), 1e-6)
    result["first_differing"] = layer
    if err > 0.05 * span + 1e-6:
        hint = 'set quantizer = "layerwise" in the quantize pass (every layer gets its own input quantizer)'
        if layer in quant_layers(model):
            hint += f', or exclude = ["{layer}"] to keep that layer FP32'
        raise PassError(f"the INT8 export does not reproduce the brevitas model (max |error| {err:.4g}, "
                        f"{100 * err / max(span, 1e-12):.1f} % of the output range, on {len(x)} eval samples; "
                        f"first differing layer or quantizer: {layer or 'unknown'})",
                        where=f"quantize layer {layer}" if layer else "quantize", hint=hint)
    return result


def export_check(model: nn.Module, x_eval: np.ndarray, workdir: Path | None) -> dict[str, Any]:
    """Export the reference (ONNX Runtime) flavor once: integer-kernel MAC fraction and brevitas-vs-ORT parity."""
    from edgekd.config import ExportSettings
    from edgekd.export import compare_outputs, onnx_outputs
    from edgekd.quant.int8 import int8_mac_report
    from edgekd.quant.onnx_export import brevitas_qdq_export
    from edgekd.quant.sensitivity import outputs

    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        path = Path(tmp) / "quantized.ort.onnx"
        example = model_input(x_eval[:1])
        # static batch: every shape is inferable, so every layer's MACs are counted
        brevitas_qdq_export(model, path, example, ExportSettings(dynamic_batch=False), REFERENCE_FLAVOR)
        macs = int8_mac_report(path)
        parity = compare_outputs(outputs(model, x_eval), onnx_outputs(path, x_eval))
    return {"int8_mac_fraction": macs["int8_mac_fraction"], "macs_total": macs["macs_total"],
            "macs_int8": macs["macs_int8"], "float_layers": macs["float_layers"],
            "layers_with_unknown_macs": macs["layers_with_unknown_macs"],
            "ort_optimized_ops": macs["optimized_ops"], "parity_vs_brevitas": parity.to_dict()}


def _failing_node(model: nn.Module, example: torch.Tensor) -> tuple[str | None, str | None]:
    """(the FX node of a graph-mode brevitas model whose forward raises, the module to keep FP32 for it: the node's
    own module, or the module whose quantized output the failing op cannot take); (None, None) when not found."""
    from brevitas.backport.fx.graph_module import GraphModule
    from brevitas.backport.fx.interpreter import Interpreter

    if not isinstance(model, GraphModule):
        return None, None
    failed: list[tuple[str, str | None]] = []

    class Finder(Interpreter):
        def run_node(self, n: Any) -> Any:
            try:
                return super().run_node(n)
            except Exception:
                if not failed:
                    target = n.target if isinstance(n.target, str) else getattr(n.target, "__name__", str(n.target))
                    source = n if n.op == "call_module" else next(
                        (a for a in n.args if getattr(a, "op", None) == "call_module"), None)
                    failed.append((f"{n.name} ({n.op} {target})", source.target if source is not None else None))
                raise

    try:
        with torch.no_grad():
            Finder(model).run(*args(example))
    except Exception:
        pass
    return failed[0] if failed else (None, None)


class _DoesNotRun(PassError):
    """The fake-quant model raises; ``layer`` is the innermost layer of the float model that was running."""

    def __init__(self, message: str, *, where: str, hint: str, layer: str | None) -> None:
        super().__init__(message, where=where, hint=hint)
        self.layer = layer


def _failing_layer(model: nn.Module, example: torch.Tensor, names: set[str]) -> str | None:
    """The innermost module named in ``names`` (the float model's layer names) that raises on ``example``."""
    stack: list[str] = []
    failed: list[str] = []
    handles = []
    for name, module in model.named_modules():
        if name in names:
            handles.append(module.register_forward_pre_hook(lambda _m, _i, name=name: stack.append(name)))
            handles.append(module.register_forward_hook(lambda _m, _i, _o: stack.pop()))
    try:
        with torch.no_grad():
            call(model, example)
    except Exception:
        failed = stack[-1:]
    finally:
        for h in handles:
            h.remove()
    return failed[0] if failed else None


def _check_runs(model: nn.Module, example: torch.Tensor, mode: str, names: set[str] | None = None) -> None:
    """One forward of the fake-quant model (QuantTensors flowing): an op brevitas's QuantTensor does not
    support (e.g. ``chunk`` in ShuffleNet) is a PassError naming the node, not a traceback mid-calibration."""
    try:
        # FX's GraphModule prints its generated-code traceback to stderr before re-raising: the PassError says it
        with torch.no_grad(), contextlib.redirect_stderr(io.StringIO()):
            call(model.eval(), example)
    except Exception as exc:
        node, layer = _failing_node(model, example) if mode == "graph" else (None, None)
        layer = layer if layer in (names or set()) else _failing_layer(model, example, names or set())
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise _DoesNotRun(f"the {mode}-mode brevitas model does not run: {type(exc).__name__}: {first}",
                          where=f"quantize node {node}" if node else f"quantize layer {layer}" if layer else "quantize",
                          hint='set unsupported = "float" in the quantize pass (keeps the layer FP32) or quantizer = '
                               '"layerwise" (only Conv/Linear layers get quantized, every other op sees float tensors)'
                               if mode == "graph" else 'set unsupported = "float" in the quantize pass, or exclude the '
                               'layer named above (exclude = [...])', layer=layer) from exc


@dataclass
class _Fallback:
    """What ``unsupported = "float"`` changed to get a model that runs: layers kept FP32 (name -> why) and the
    quantizer mode finally used."""

    mode: str
    layers: dict[str, str]
    notes: list[str]


def _runnable(make: Any, example: torch.Tensor, config: QuantizeConfig, fallback: _Fallback,
              names: set[str]) -> nn.Module:
    """``make(mode, float_layers)`` -> a brevitas model that runs on ``example``. With ``unsupported = "float"`` a
    layer that breaks it is kept FP32 and the model rebuilt; an op that is no layer (graph mode) or a model FX cannot
    trace switches to layerwise mode. Otherwise the first failure is the error."""
    for _ in range(len(names) + 2):
        try:
            model = make(fallback.mode, tuple(fallback.layers))
            _check_runs(model, example, fallback.mode, names)
            return model
        except PassError as exc:
            if config.unsupported != "float":
                raise
            layer = getattr(exc, "layer", None)
            first = str(exc).splitlines()[0]
            if layer is not None and layer not in fallback.layers:
                fallback.layers[layer] = (f"brevitas cannot run it, or the op its output feeds, quantized ({first}; "
                                          'unsupported = "float")')
            elif fallback.mode == "graph":
                fallback.mode = "layerwise"
                fallback.notes.append(f"graph-mode quantization failed ({first}); unsupported = \"float\" switched "
                                      "to layerwise mode: only Conv/Linear/Embedding layers are quantized")
            else:
                raise
    raise PassError("no runnable quantized model after keeping every failing layer FP32", where="quantize",
                    hint="exclude the layers named in the quantize report's notes, or report the model")


def quantizable_problem(module: nn.Module, config: QuantizeConfig, targets: tuple[Any, ...], x: Any) -> str | None:
    """Why the quantize pass would fail on ``module`` once it got there (a layer or op brevitas cannot run
    quantized, with ``unsupported = "error"``; bit widths a target cannot run), asked before any training;
    None when it would build. Structural only: training changes weights and widths, not which ops run."""
    from edgekd.quant.recipe import check_layers, quantize_model

    float_model = copy.deepcopy(module).eval()
    try:
        recipe, _ = _recipe(config, PassContext(targets=targets))
        exclude = (*config.exclude, *check_layers(float_model, config.exclude, config.unsupported))

        def make(mode: str, failing: tuple[str, ...]) -> nn.Module:
            return quantize_model(float_model, recipe, mode=mode, exclude=(*exclude, *failing),
                                  attention_scores=config.attention_scores == "int8", integer_inputs=_integer_inputs(x))

        _runnable(make, model_input(x[:2]), config, _Fallback(config.quantizer, {}, []),
                  {n for n, _ in float_model.named_modules() if n})
    except PassError as exc:
        return f"quantize: {exc.message}" + (f" (at {exc.where})" if exc.where else "") + (
            f"; {exc.hint}" if exc.hint else "")
    return None


def _integer_inputs(x: Any) -> tuple[str, ...]:
    """Inputs that get no input quantizer: integer ones (token ids, masks) of a multi-input batch (edgekd.inputs)."""
    return tuple(s.name for s in specs_of(x) if s.dtype == "int64") if is_multi(x) else ()


def _judge_and_keep(model: nn.Module, ev: Any, config: QuantizeConfig, budget: float | None,
                    build: Any, report: dict[str, Any]) -> nn.Module:
    """Score PTQ on the evaluation split, decide whether the budget is missed (``judge_drop``: over the budget and
    significant), and run the sensitivity analysis / keep layers in higher precision as configured."""
    from edgekd.quant.recipe import quant_layers
    from edgekd.quant.sensitivity import judge_drop, keep_sensitive, layer_sensitivity, outputs, score

    ptq = score(outputs(model, ev.x), ev)
    report["eval"]["ptq"] = ptq
    verdict = judge_drop(ptq, budget) if budget is not None else None
    missed = bool(verdict and verdict["missed"])
    if verdict is not None:
        report["budget"]["decision"] = verdict
        if verdict["min_detectable_drop"] > max(budget or 0.0, 0.0) and budget is not None and budget >= 0:
            report["notes"].append(f"the evaluation split ({verdict['samples']} samples) resolves drops of "
                                   f"{verdict['min_detectable_drop']:.2f} points or more; a smaller drop over the "
                                   f"{budget:.2f}-point budget is not acted on (not significant)")
    if config.sensitivity == "report" or (config.sensitivity == "auto" and missed):
        ranking = layer_sensitivity(model, ev, quant_layers(model))
        report["sensitivity"] = ranking
        if missed:
            model, kept, after = keep_sensitive(model, ev, ranking, budget=float(budget or 0.0),
                                                max_layers=config.max_kept_layers, weight_bits=config.weight_bits,
                                                requantize=build)
            report["kept_higher_precision"] = kept
            report["eval"]["after_keep"] = after
            report["budget"]["met_after_ptq"] = after["drop"] <= float(budget or 0.0)
            report["budget"]["decision_after_keep"] = judge_drop(after, float(budget or 0.0))
    elif budget is not None:
        report["kept_higher_precision"] = []
        report["budget"]["met_after_ptq"] = ptq["drop"] <= budget
    return model


@register_pass("quantize", QuantizeConfig, target_dependent=True, not_after=("quantize",))
def quantize(artifact: Artifact, config: QuantizeConfig, ctx: PassContext) -> Artifact:
    """brevitas PTQ / KD-QAT (W8A8, W4A8) with calibration, bias correction and sensitivity analysis."""
    from edgekd.quant.calibrate import calibrate, correct_bias
    from edgekd.quant.recipe import check_layers, quant_layers, quantize_model
    from edgekd.quant.sensitivity import EvalSet, outputs, score

    if artifact.kind != "torch":
        raise PassError(f"quantize needs a torch model, got a {artifact.kind!r} artifact", where="quantize",
                        hint="put quantize before export in the profile")
    if artifact.meta.get("quantized"):
        raise PassError("the model is already quantized", where="quantize", hint="use one quantize pass per profile")
    float_model: nn.Module = artifact.payload
    float_model.eval()
    data = _splits(ctx, config)
    x_cal, x_eval = data.x_cal, data.x_eval
    check_single_output(float_model, model_input(x_eval[:1]),
                        error=PassError, where="quantize")
    recipe, why = _recipe(config, ctx)
    label = recipe.describe()
    left_float = check_layers(float_model, config.exclude, config.unsupported)
    exclude = (*config.exclude, *left_float)
    torch.manual_seed(ctx.seed)
    fallback = _Fallback(config.quantizer, {}, [])
    names = {n for n, _ in float_model.named_modules() if n}
    # calibrate float inputs only: integer inputs (token ids, masks) get no input quantizer (edgekd.inputs)
    integer_inputs = _integer_inputs(x_cal)

    def build(extra_float: tuple[str, ...] = ()) -> nn.Module:
        def make(mode: str, failing: tuple[str, ...]) -> nn.Module:
            return quantize_model(float_model, recipe, mode=mode, exclude=(*exclude, *failing, *extra_float),
                                  attention_scores=config.attention_scores == "int8", integer_inputs=integer_inputs)

        model = _runnable(make, model_input(x_cal[:2]), config, fallback, names)
        calibrate(model, x_cal, samples=config.calibration_samples, batch=config.calibration_batch)
        if config.bias_correction:
            try:
                correct_bias(model, x_cal, samples=config.calibration_samples, batch=config.calibration_batch)
            except RuntimeError as exc:  # brevitas averages over dim 1 (conv) / the last dim (linear)
                raise PassError(f"brevitas bias correction failed: {str(exc).splitlines()[0]}",
                                where="quantize bias_correction",
                                hint="set bias_correction = false in the quantize pass; it fails on layers whose "
                                     "channels are not where brevitas expects them (e.g. a Linear applied to a "
                                     "channels-last 4-D tensor, as in ConvNeXt blocks)") from exc
        return model.eval()

    model = build()
    layers = quant_layers(model)
    if not layers:
        raise PassError("no Conv/Linear layer was quantized", where="quantize",
                        hint="check exclude = [...]; edgekd quantizes Conv1d, Conv2d and Linear")
    ev = EvalSet(x_eval, data.y_eval, outputs(float_model, x_eval), getattr(ctx.data, "task", None))
    budget, budget_source = _budget(config, ctx)
    notes = [data.note] if data.note else []
    notes += fallback.notes
    if data.note:
        print(f"edgekd: warning: quantize: {data.note}", file=sys.stderr)
    if len(x_cal) < config.calibration_samples:
        notes.append(f"calibrated on {len(x_cal)} samples, fewer than calibration_samples = "
                     f"{config.calibration_samples}: the data has no more; ranges may be too narrow")
        print(f"edgekd: warning: quantize: {notes[-1]}", file=sys.stderr)
    report: dict[str, Any] = {
        "mode": config.mode, "scheme": label, "weights": f"int{config.weight_bits} {config.granularity} symmetric",
        "activations": "int8 per-tensor " + ("symmetric (zero point 0)" if recipe.symmetric_activations
                                             else "unsigned after ReLU/Sigmoid, signed elsewhere (zero point 0)"),
        "power_of_two_scales": recipe.power_of_two, "calibration": config.calibration,
        "percentile": config.percentile if config.calibration == "percentile" else None,
        "calibration_samples": min(config.calibration_samples, len(x_cal)), "bias_correction": config.bias_correction,
        "decisions": why, "quantized_layers": len(layers), "float_layers_requested": list(exclude),
        "quantizer": fallback.mode,
        "eval": {"samples": len(x_eval), "split": data.split, "fp32_accuracy": ev.reference_accuracy},
        "budget": {"points": budget, "source": budget_source}, "notes": notes,
    }
    model = _judge_and_keep(model, ev, config, budget, build, report)
    report["higher_precision"], report["higher_precision_mac_fraction"] = _higher_precision(
        float_model, model_input(x_eval[:1]), tuple(config.exclude),
        {**dict.fromkeys(left_float, None), **fallback.layers}, report.get("kept_higher_precision", []))
    if config.mode == "qat":
        report["qat"] = _qat(model, artifact, config, ctx, label)
        report["eval"]["qat"] = score(outputs(model, x_eval), ev)
    if artifact.meta.get("sparsity"):
        report["sparsity_2to4"] = _int_weight_sparsity(model, artifact.meta["sparsity"])
    report["twin_vs_brevitas"] = check_twin(model, x_eval)
    if config.check_int8:
        report.update(export_check(model, x_eval, ctx.workdir))
    ctx.report["quantize"] = report
    summary = {k: report[k] for k in ("mode", "scheme", "weights", "activations", "power_of_two_scales")}
    summary["kept_higher_precision"] = [k["layer"] for k in report.get("kept_higher_precision", [])]
    summary["int8_mac_fraction"] = report.get("int8_mac_fraction")
    return artifact.evolve(f"quantize:{config.mode}:{label}", payload=model,
                           meta={"exporter": "brevitas-qdq", "flavored_export": True, "quantized": summary})
