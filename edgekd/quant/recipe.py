"""Which brevitas quantizers to use, and graph-mode / layerwise quantization of any torch model.

A :class:`QuantRecipe` is the small, frozen description of the numerics (bits, signedness,
power-of-two scales, calibration statistic). :func:`quantize_model` turns a float module into
a brevitas fake-quant module with it:

* ``graph`` mode (default): ``brevitas.graph.quantize`` on an FX trace. It quantizes conv and
  linear layers (per-channel symmetric weights, int32 bias), activations (ReLU/Sigmoid/...),
  residual adds (both inputs aligned to one scale), pooling (passes quantized values through)
  and requantizes layer outputs, so every Conv/Gemm sits between Q/DQ pairs.
* ``layerwise`` mode: ``brevitas.graph.layerwise_quantize`` for models that FX cannot trace;
  each conv/linear gets an input and an output quantizer of its own.
"""

from __future__ import annotations

import copy
import fnmatch
import warnings
from dataclasses import dataclass
from typing import Any, Literal

from torch import nn

from edgekd.errors import PassError

# Weighted layers edgekd's QDQ exporter can write (brevitas quantizes more, e.g. LSTM, but we could
# not export them exactly); anything else with weights is an error naming the layer, or stays float.
SUPPORTED_LAYERS = (nn.Conv1d, nn.Conv2d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.Linear)
UNSUPPORTED_WEIGHTED = (nn.Conv3d, nn.ConvTranspose3d, nn.MultiheadAttention, nn.RNN, nn.LSTM, nn.GRU)


@dataclass(frozen=True)
class QuantRecipe:
    weight_bits: int = 8
    act_bits: int = 8
    per_channel: bool = True
    symmetric_activations: bool = False  # True: signed int8 everywhere, zero point 0 (TensorRT)
    power_of_two: bool = False  # scales restricted to 2^k (FPGA fixed point)
    calibration: Literal["minmax", "percentile"] = "percentile"
    percentile: float = 99.99

    def describe(self) -> str:
        return f"W{self.weight_bits}A{self.act_bits}"


def _quantizers(recipe: QuantRecipe) -> dict[str, Any]:
    """brevitas quantizer classes for the recipe (``.let`` keeps brevitas's own definitions)."""
    from brevitas.core.function_wrapper.ops_ste import CeilSte
    from brevitas.inject.enum import RestrictValueType, StatsOp
    from brevitas.quant import Int8ActPerTensorFloat, Int8WeightPerChannelFloat, Int8WeightPerTensorFloat, Int32Bias, Uint8ActPerTensorFloat

    weight = Int8WeightPerChannelFloat if recipe.per_channel else Int8WeightPerTensorFloat
    weight = weight.let(bit_width=recipe.weight_bits)
    table = Int8WeightPerTensorFloat.let(bit_width=recipe.weight_bits)  # brevitas's embedding takes per-tensor only
    if recipe.calibration == "minmax":
        stats: dict[str, Any] = {"scaling_stats_op": StatsOp.MAX}
    else:
        stats = {"scaling_stats_op": StatsOp.PERCENTILE, "high_percentile_q": recipe.percentile}
    signed_act = Int8ActPerTensorFloat.let(bit_width=recipe.act_bits, **stats)
    unsigned_act = Uint8ActPerTensorFloat.let(bit_width=recipe.act_bits, **stats)
    if recipe.power_of_two:
        pot = {"restrict_scaling_type": RestrictValueType.POWER_OF_TWO, "restrict_value_float_to_int_impl": CeilSte}
        weight, table, signed_act, unsigned_act = (q.let(**pot) for q in (weight, table, signed_act, unsigned_act))
    if recipe.symmetric_activations:
        unsigned_act = signed_act
    return {"weight": weight, "table": table, "bias": Int32Bias, "signed": signed_act, "unsigned": unsigned_act}


def _maps(recipe: QuantRecipe, layerwise: bool) -> tuple[dict, dict, dict, tuple]:
    import brevitas.nn as qnn

    q = _quantizers(recipe)
    unsigned_acts: tuple = () if recipe.symmetric_activations else (nn.ReLU, nn.ReLU6, nn.Sigmoid, nn.Hardsigmoid)
    layer_kw: dict[str, Any] = {"weight_quant": q["weight"], "bias_quant": q["bias"],
                                "return_quant_tensor": not layerwise}
    if layerwise:
        layer_kw |= {"input_quant": q["signed"], "output_quant": q["signed"]}
    compute = {nn.AvgPool2d: None, nn.Conv1d: (qnn.QuantConv1d, layer_kw), nn.Conv2d: (qnn.QuantConv2d, layer_kw),
               nn.ConvTranspose1d: (qnn.QuantConvTranspose1d, layer_kw),
               nn.ConvTranspose2d: (qnn.QuantConvTranspose2d, layer_kw), nn.Linear: (qnn.QuantLinear, layer_kw),
               # int8 table, float output: a per-row scale is no activation quantizer the next layer could reuse
               nn.Embedding: (qnn.QuantEmbedding, {"weight_quant": q["table"], "return_quant_tensor": False})}
    acts = {
        nn.ReLU: (qnn.QuantReLU, {"act_quant": q["unsigned"], "return_quant_tensor": True}),
        nn.ReLU6: (qnn.QuantReLU, {"act_quant": q["unsigned"], "return_quant_tensor": True}),
        nn.Sigmoid: (qnn.QuantSigmoid, {"act_quant": q["unsigned"], "return_quant_tensor": True}),
    }
    identity = {"signed": (qnn.QuantIdentity, {"act_quant": q["signed"], "return_quant_tensor": True}),
                "unsigned": (qnn.QuantIdentity, {"act_quant": q["unsigned"], "return_quant_tensor": True})}
    return compute, acts, identity, unsigned_acts


def check_layers(model: nn.Module, exclude: tuple[str, ...], unsupported: str) -> list[str]:
    """Names of weighted layers edgekd cannot quantize; raises unless ``unsupported == "float"``."""
    from edgekd.quant.mha import decomposable

    bad = [(name, type(m).__name__) for name, m in model.named_modules()
           if isinstance(m, UNSUPPORTED_WEIGHTED) and not _excluded(name, exclude)
           and not (isinstance(m, nn.MultiheadAttention) and decomposable(m) is None)]
    if bad and unsupported == "error":
        first = bad[0]
        raise PassError(
            f"cannot quantize layer {first[0]!r} ({first[1]}): edgekd's QDQ export supports "
            f"{', '.join(t.__name__ for t in SUPPORTED_LAYERS)}, Embedding, MultiheadAttention, TransformerEncoder(Layer)"
            + (f" ({len(bad) - 1} more: {', '.join(n for n, _ in bad[1:4])}...)" if len(bad) > 1 else ""),
            where=f"layer {first[0]}",
            hint="add the layer to the quantize pass's exclude = [...] or set unsupported = \"float\" to keep it FP32",
        )
    return [n for n, _ in bad]


def _excluded(name: str, exclude: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatch(name, pat) for pat in exclude)


def quantize_model(model: nn.Module, recipe: QuantRecipe, *, mode: Literal["graph", "layerwise"] = "graph",
                   exclude: tuple[str, ...] = (), merge_bn: bool = True, attention_scores: bool = False,
                   integer_inputs: tuple[str, ...] = ()) -> nn.Module:
    """A brevitas fake-quant copy of ``model`` (the input is not modified). Not yet calibrated.

    ``integer_inputs``: forward() parameters that carry integers (token ids, masks; edgekd.inputs): they get no
    input quantizer, so they reach the graph as the integers they are.

    ``attention_scores`` (layerwise mode): timm-style attention blocks also quantize q and k, so q·kᵀ
    is an int8 MatMul (edgekd/quant/attention.py); blocks matched by ``exclude`` stay as they are."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # brevitas warns at import (fast_hadamard_transform missing)
        from brevitas.graph.quantize import layerwise_quantize, preprocess_for_quantize, quantize

    if recipe.act_bits != 8:
        raise PassError(f"act_bits={recipe.act_bits} is not supported", where="quantize act_bits",
                        hint="activations are 8-bit: the runtimes' integer kernels take 8-bit inputs")
    if not 2 <= recipe.weight_bits <= 8:
        raise PassError(f"weight_bits={recipe.weight_bits} is not supported", where="quantize weight_bits",
                        hint="use 8 or 4 (any of 2..8 works; weights are stored as int8 initializers)")
    from edgekd.quant.mha import decompose_attention

    model = copy.deepcopy(model).eval()
    compute, acts, identity, unsigned_acts = _maps(recipe, layerwise=(mode == "layerwise"))
    signed_identity, kwargs = identity["signed"]
    # float out (values on the int8 grid): brevitas has no QuantTensor @ QuantTensor
    make_quant = (lambda: signed_identity(**{**kwargs, "return_quant_tensor": False})) if attention_scores else None
    # graph mode: FX must not trace into brevitas modules; the q/k quantizers go in after brevitas's pass
    attention = decompose_attention(model, make_quant if mode == "layerwise" else None,
                                    skip=lambda name: _excluded(name, exclude))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # brevitas: fast_hadamard_transform missing, FX notes
        if mode == "layerwise":
            if make_quant is not None:
                from edgekd.quant.attention import quantize_attention_scores

                quantize_attention_scores(model, make_quant, skip=lambda name: _excluded(name, exclude))
            blacklist = [n for n, _ in model.named_modules() if n and _excluded(n, exclude)]
            return layerwise_quantize(model, compute_layer_map=compute, name_blacklist=blacklist)
        try:
            graph = preprocess_for_quantize(model, merge_bn=merge_bn, equalize_iters=0)
        except Exception as exc:  # FX tracing failures come in many types
            raise PassError(f"brevitas could not trace the model with torch.fx: {exc}", where="quantize quantizer",
                            hint='set quantizer = "layerwise" in the quantize pass (no tracing needed)') from exc
        called = {n.target for n in graph.graph.nodes if n.op == "call_module"}
        # brevitas has no name blacklist in graph mode: hide excluded layers it would quantize behind a type it ignores
        for name in sorted(n for n in called if _excluded(n, exclude)):
            module = graph.get_submodule(name)
            if type(module) in compute or type(module) in acts:
                _wrap_float(graph, name, module)
            else:  # a type brevitas leaves alone (LSTM, Conv3d, ...): it only must not receive QuantTensors
                module.register_forward_pre_hook(_float_inputs)
        quantized = quantize(graph, quant_identity_map=identity, compute_layer_map=compute, quant_act_map=acts,
                             unsigned_act_tuple=unsigned_acts)
        _drop_index_quantizers(quantized, integer_inputs)
        if make_quant is not None:
            for name in attention:
                for attr in ("q_quant", "k_quant"):
                    _replace_module(quantized, f"{name}.{attr}", make_quant())
        return quantized


def _drop_index_quantizers(graph: Any, integer_inputs: tuple[str, ...] = ()) -> None:
    """brevitas puts an input quantizer on every model input; one that only feeds embeddings quantizes token ids
    (integers, not activations), and one on an integer input (``integer_inputs``: a mask) would turn integers
    into a float QuantTensor: remove them."""
    for node in list(graph.graph.nodes):
        if node.op != "call_module" or type(graph.get_submodule(node.target)).__name__ != "QuantIdentity":
            continue
        src = node.args[0] if node.args else None
        users = list(node.users)
        if getattr(src, "op", None) == "placeholder" and users and (src.target in integer_inputs or all(
                u.op == "call_module" and type(graph.get_submodule(u.target)).__name__ == "QuantEmbedding"
                for u in users)):
            node.replace_all_uses_with(src)
            graph.graph.erase_node(node)
    graph.graph.lint()
    graph.recompile()


class FloatLayer(nn.Module):
    """Keeps a layer in floating point through brevitas's graph quantization (type not in its maps); quantized
    inputs reach it as their float values."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.inner(*_float_inputs(self, args), **{k: getattr(v, "value", v) for k, v in kwargs.items()})


def _float_inputs(_module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(getattr(a, "value", a) for a in args)


def _wrap_float(graph: nn.Module, name: str, module: nn.Module) -> None:
    _replace_module(graph, name, FloatLayer(module))


def _replace_module(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, attr, new)


def quant_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Name -> brevitas weighted layer (QuantConv*/QuantLinear) in definition order."""
    from brevitas.nn.quant_layer import QuantWeightBiasInputOutputLayer

    return {n: m for n, m in model.named_modules() if isinstance(m, QuantWeightBiasInputOutputLayer)}
