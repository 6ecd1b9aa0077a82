"""The deploy twin: a plain torch module that reproduces a brevitas fake-quant model exactly and
exports to clean QDQ ONNX.

Why not brevitas's own QCDQ export: under torch 2.14 it goes through dynamo (FP32 weights,
initializers listed as inputs), and its Clip nodes between int8 weights and DequantizeLinear
make OpenVINO fall back to f32 convolutions (DESIGN.md). The twin instead holds

* weights as int8 tensors (int values brevitas computed) -> ``DequantizeLinear`` on an int8
  initializer with an explicit zero-point initializer (per-channel, axis 0);
* biases as int32 with scale = input scale x weight scale (brevitas ``Int32Bias``);
* every activation quantizer as ``QuantizeLinear -> DequantizeLinear`` with its scale and zero point,

all written by custom autograd functions whose ``symbolic`` emits exactly those nodes. Values are
the brevitas values, so parity is exact up to float rounding of ``x / scale``.

The same brevitas model gives one twin per *flavor* (how the runtime likes its Q/DQ; a
``QDQFlavor`` object its backend declares, see ``edgekd.backends.flavors``):

* ``ort`` / ``openvino``: activations stored as uint8 (the fast int8 path on x86). A signed
  symmetric int8 quantizer (zero point 0, [-128, 127]) is written as uint8 with zero point 128 --
  the same set of values, so this is exact;
* ``tensorrt``: signed int8, zero point 0 everywhere (an unsigned quantizer is an error: quantize
  with a TensorRT target so activations are symmetric);
* ``hls``: zero point 0 and power-of-two scales (checked; an error otherwise).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from edgekd.backends.base import QDQFlavor, is_power_of_two
from edgekd.backends.flavors import KNOWN_FLAVORS, REFERENCE_FLAVOR, flavor_named
from edgekd.errors import ExportError
from edgekd.inputs import args, call

FLAVORS = tuple(KNOWN_FLAVORS)  # the built-in flavor names (a plugin may bring its own QDQFlavor)
__all__ = ["FLAVORS", "ActQuant", "ActTwin", "FakeQuant", "WeightedTwin", "act_quant_of", "build_twin", "is_power_of_two", "storage"]
_ZP_DTYPES = {"uint8": torch.uint8, "int8": torch.int8}
#: the brevitas weighted layers (by their torch base class) the twin writes as DequantizeLinear -> Conv/ConvTranspose/Gemm
EXPORTABLE_WEIGHTED = (nn.Conv1d, nn.Conv2d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.Linear)


@dataclass(frozen=True)
class ActQuant:
    """One per-tensor activation quantizer as brevitas defines it."""

    scale: float
    zero_point: int
    bits: int
    signed: bool
    narrow: bool = False

    @property
    def qmin(self) -> int:
        return -(2 ** (self.bits - 1)) + int(self.narrow) if self.signed else 0

    @property
    def qmax(self) -> int:
        return 2 ** (self.bits - 1) - 1 if self.signed else 2**self.bits - 1 - int(self.narrow)


def storage(q: ActQuant, flavor: QDQFlavor | str, where: str) -> tuple[torch.dtype, int, int, int]:
    """(zero-point dtype, zero point, qmin, qmax) used to *store* ``q`` in the flavor's ONNX."""
    if q.bits != 8:
        raise ExportError(f"{q.bits}-bit activation quantizer cannot be written as 8-bit QuantizeLinear", where=where)
    if q.narrow:
        raise ExportError("narrow-range activation quantizer has no QuantizeLinear equivalent", where=where)
    dtype, zero_point, qmin, qmax = flavor_named(flavor).activation_storage(q.signed, q.zero_point, q.scale, where)
    return _ZP_DTYPES[dtype], zero_point, qmin, qmax


# ---------------------------------------------------------------- exportable autograd functions


class _QDQ(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, scale: torch.Tensor, zp: torch.Tensor, qmin: int, qmax: int) -> torch.Tensor:
        z = zp.to(torch.float32)
        return (torch.clamp(torch.round(x / scale) + z, qmin, qmax) - z) * scale

    @staticmethod
    def symbolic(g: Any, x: Any, scale: Any, zp: Any, qmin: int, qmax: int) -> Any:
        return g.op("DequantizeLinear", g.op("QuantizeLinear", x, scale, zp), scale, zp)


def _per_tensor_as_scalar(scale: torch.Tensor, zp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One scale for the whole tensor is a 0-d scale in ONNX: a 1-element 1-D scale with ``axis=0`` declares
    per-channel quantization over one channel, which ONNX Runtime, OpenVINO and TensorRT refuse."""
    if scale.numel() == 1 and scale.dim() > 0:
        return scale.reshape(()), zp.reshape(()) if zp.numel() == 1 else zp
    return scale, zp


class _DQ(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, q: torch.Tensor, scale: torch.Tensor, zp: torch.Tensor, axis: int) -> torch.Tensor:
        if scale.dim() == 1:
            shape = [1] * q.dim()
            shape[axis] = -1
            scale, zp = scale.view(shape), zp.view(shape)
        return (q.to(torch.float32) - zp.to(torch.float32)) * scale

    @staticmethod
    def symbolic(g: Any, q: Any, scale: Any, zp: Any, axis: int) -> Any:
        return g.op("DequantizeLinear", q, scale, zp, axis_i=axis)


class FakeQuant(nn.Module):
    """Quantize-dequantize with fixed parameters; exports as QuantizeLinear -> DequantizeLinear."""

    def __init__(self, scale: float, zp_dtype: torch.dtype, zero_point: int, qmin: int, qmax: int) -> None:
        super().__init__()
        self.register_buffer("scale", torch.tensor(scale, dtype=torch.float32))
        self.register_buffer("zero_point", torch.tensor(zero_point, dtype=zp_dtype))
        self.qmin, self.qmax = qmin, qmax

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _QDQ.apply(x, self.scale, self.zero_point, self.qmin, self.qmax)


class ActTwin(nn.Module):
    """brevitas QuantIdentity/QuantReLU/...: the activation function, then its quantizer."""

    def __init__(self, act: nn.Module, quant: FakeQuant | None) -> None:
        super().__init__()
        self.act = act
        self.quant = quant

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(x)
        return self.quant(x) if self.quant is not None else x


_CONV_FUNCTIONS = {"conv1d": F.conv1d, "conv2d": F.conv2d, "conv_transpose1d": F.conv_transpose1d,
                   "conv_transpose2d": F.conv_transpose2d}


def weight_channel_axis(layer: nn.Module) -> int:
    """The weight axis that holds the output channels: 1 for a transposed conv ((Cin, Cout/groups, k...)), else 0."""
    return 1 if isinstance(layer, (nn.ConvTranspose1d, nn.ConvTranspose2d)) else 0


class WeightedTwin(nn.Module):
    """brevitas QuantConv1d/2d / QuantConvTranspose1d/2d / QuantLinear with int8 weights and int32 bias held as
    integers."""

    def __init__(self, layer: nn.Module, weight: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | torch.Tensor,
                 bias: tuple[torch.Tensor, torch.Tensor] | torch.Tensor | None, input_quant: FakeQuant | None,
                 output_quant: FakeQuant | None) -> None:
        super().__init__()
        transposed = isinstance(layer, (nn.ConvTranspose1d, nn.ConvTranspose2d))
        self.axis = weight_channel_axis(layer)
        self.kind = "linear" if isinstance(layer, nn.Linear) else (
            f"conv{'_transpose' if transposed else ''}{layer.weight.dim() - 2}d")
        if self.kind != "linear":
            if getattr(layer, "padding_mode", "zeros") != "zeros":
                raise ExportError(f"padding_mode={layer.padding_mode!r} is not supported", where=type(layer).__name__)
            self.conv_args: tuple[Any, ...] = ((layer.stride, layer.padding, layer.output_padding, layer.groups,
                                                layer.dilation) if transposed
                                               else (layer.stride, layer.padding, layer.dilation, layer.groups))
        if isinstance(weight, tuple):
            w_int, w_scale, w_zp = (weight[0], *_per_tensor_as_scalar(weight[1], weight[2]))
            self.register_buffer("w_int", w_int)
            self.register_buffer("w_scale", w_scale)
            self.register_buffer("w_zp", w_zp)
            self.w_float: nn.Parameter | None = None
        else:
            self.w_float = nn.Parameter(weight.detach().clone(), requires_grad=False)
        self.b_float: nn.Parameter | None = None
        self.has_bias_int = isinstance(bias, tuple)
        if isinstance(bias, tuple):
            b_scale = bias[1].reshape(()) if bias[1].numel() == 1 else bias[1]  # as _per_tensor_as_scalar
            self.register_buffer("b_int", bias[0])
            self.register_buffer("b_scale", b_scale)
            self.register_buffer("b_zp", torch.zeros((), dtype=bias[0].dtype) if b_scale.dim() == 0
                                 else torch.zeros_like(bias[0]))
        elif bias is not None:
            self.b_float = nn.Parameter(bias.detach().clone(), requires_grad=False)
        self.input_quant = input_quant
        self.output_quant = output_quant

    def weight(self) -> torch.Tensor:
        if self.w_float is not None:
            return self.w_float
        return _DQ.apply(self.w_int, self.w_scale, self.w_zp, self.axis)

    def bias(self) -> torch.Tensor | None:
        if self.has_bias_int:
            return _DQ.apply(self.b_int, self.b_scale, self.b_zp, 0)
        return self.b_float

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_quant is not None:
            x = self.input_quant(x)
        if self.kind == "linear":
            y = F.linear(x, self.weight(), self.bias())
        else:
            y = _CONV_FUNCTIONS[self.kind](x, self.weight(), self.bias(), *self.conv_args)
        return self.output_quant(y) if self.output_quant is not None else y


class EmbeddingTwin(nn.Module):
    """brevitas QuantEmbedding: the table held as int8 with its scales; exports as DequantizeLinear -> Gather."""

    def __init__(self, layer: nn.Module, weight: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | torch.Tensor) -> None:
        super().__init__()
        if layer.max_norm is not None:
            raise ExportError("an Embedding with max_norm renormalizes its table at run time: not exportable as int8",
                              where=type(layer).__name__, hint="exclude it (exclude = [...]) to keep it FP32")
        self.padding_idx = layer.padding_idx
        if isinstance(weight, tuple):
            self.register_buffer("w_int", weight[0])
            self.register_buffer("w_scale", weight[1])
            self.register_buffer("w_zp", weight[2])
            self.w_float: nn.Parameter | None = None
        else:
            self.w_float = nn.Parameter(weight.detach().clone(), requires_grad=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        table = self.w_float if self.w_float is not None else _DQ.apply(self.w_int, self.w_scale, self.w_zp, 0)
        return F.embedding(ids, table, self.padding_idx)


# ---------------------------------------------------------------- reading the brevitas model


def act_quant_of(proxy: Any) -> ActQuant | None:
    """The ActQuant of a brevitas activation proxy, or None when it does not quantize."""
    proxy = getattr(proxy, "act_quant", proxy)  # a shared QuantIdentity used as a layer's output_quant
    if proxy is None or not proxy.is_quant_enabled:
        return None
    with torch.no_grad():
        scale = proxy.scale()
        zp = proxy.zero_point()
        bits = proxy.bit_width()
    if scale is None or scale.numel() != 1:
        raise ExportError("only per-tensor activation quantizers can be exported", where=str(type(proxy).__name__))
    return ActQuant(float(scale), round(float(zp)), round(float(bits)), bool(proxy.is_signed),
                    bool(proxy.is_narrow_range))


def _fake_quant(q: ActQuant | None, flavor: QDQFlavor, where: str) -> FakeQuant | None:
    if q is None:
        return None
    dtype, zp, qmin, qmax = storage(q, flavor, where)
    return FakeQuant(q.scale, dtype, zp, qmin, qmax)


def _weight_of(layer: nn.Module, flavor: QDQFlavor, where: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | torch.Tensor:
    if not layer.weight_quant.is_quant_enabled:
        return layer.weight.detach()
    with torch.no_grad():
        qw = layer.quant_weight()
    ints = qw.int().to(torch.int8)
    scale = qw.scale.detach().to(torch.float32).reshape(-1)
    zp = torch.round(qw.zero_point.detach()).to(torch.int8).reshape(-1).expand_as(scale).contiguous()
    if scale.numel() == 1:
        scale, zp = scale.reshape(()), zp.reshape(())
    flavor.check_weights(scale.numpy(), zp.numpy(), where)
    return ints, scale, zp


def _capture_bias(model: nn.Module, example: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Run once and record every quantized bias (int32 values, per-channel scale)."""
    from brevitas.nn.quant_layer import QuantWeightBiasInputOutputLayer

    found: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    hooks = []
    for name, module in model.named_modules():
        if isinstance(module, QuantWeightBiasInputOutputLayer) and module.bias is not None:
            def hook(mod: nn.Module, args: Any, out: Any, name: str = name) -> None:
                if hasattr(out, "int") and getattr(out, "scale", None) is not None:
                    found[name] = (out.int().to(torch.int32).reshape(-1),
                                   out.scale.detach().to(torch.float32).reshape(-1))
            hooks.append(module.bias_quant.register_forward_hook(hook))
    try:
        with torch.no_grad():
            call(model.eval(), example)
    finally:
        for h in hooks:
            h.remove()
    return found


def _quant_outputs(graph_module: Any, example: torch.Tensor) -> dict[str, ActQuant]:
    """Nodes that are not brevitas layers but pass an 8-bit QuantTensor on (max-pool, flatten, ...)."""
    from brevitas.backport.fx.interpreter import Interpreter
    from brevitas.quant_tensor import QuantTensor

    found: dict[str, ActQuant] = {}

    class Recorder(Interpreter):
        def run_node(self, n: Any) -> Any:
            out = super().run_node(n)
            if (isinstance(out, QuantTensor) and n.op != "placeholder" and not _is_brevitas(self.module, n)
                    and any(_takes_quant_tensor(self.module, user) for user in n.users)):
                bits = round(float(out.bit_width))
                if bits <= 8 and out.scale.numel() == 1:
                    found[n.name] = ActQuant(float(out.scale), round(float(out.zero_point)), bits,
                                             bool(out.signed))
            return out

    with torch.no_grad():
        Recorder(graph_module).run(*args(example))
    return found


def _takes_quant_tensor(root: nn.Module, node: Any) -> bool:
    """A weighted brevitas layer that uses its input's quantization as is (no input quantizer)."""
    if node.op != "call_module":
        return False
    module = root.get_submodule(node.target)
    return hasattr(module, "weight_quant") and not module.input_quant.is_quant_enabled


def _is_brevitas(root: nn.Module, node: Any) -> bool:
    if node.op != "call_module":
        return False
    return type(root.get_submodule(node.target)).__module__.startswith("brevitas.")


def _replace(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, attr, new)


def _brevitas_modules(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    from brevitas.nn.quant_layer import QuantNonLinearActLayer, QuantWeightBiasInputOutputLayer

    # remove_duplicate=False: brevitas shares one QuantIdentity between a residual add and the
    # output_quant of the layers feeding it; every path that reaches it must be replaced
    replaced: list[str] = []
    for name, module in list(model.named_modules(remove_duplicate=False)):
        if any(name.startswith(prefix + ".") for prefix in replaced):
            continue  # inside a layer that is already replaced as a whole
        if isinstance(module, (QuantWeightBiasInputOutputLayer, QuantNonLinearActLayer)) or (
            type(module).__name__ in ("QuantIdentity", "QuantEmbedding")
        ):
            replaced.append(name)
            yield name, module


def build_twin(model: nn.Module, example: torch.Tensor, flavor: QDQFlavor | str = REFERENCE_FLAVOR) -> nn.Module:
    """The deploy twin of a brevitas model for ``flavor`` (an object or a built-in name; see module docstring)."""
    from brevitas.backport.fx.graph_module import GraphModule
    from brevitas.nn.quant_layer import QuantWeightBiasInputOutputLayer

    flavor = flavor_named(flavor)
    model.eval()
    biases = _capture_bias(model, example)
    passthrough = _quant_outputs(model, example) if isinstance(model, GraphModule) else {}
    twin = copy.deepcopy(model)
    for name, module in _brevitas_modules(model):
        where = f"layer {name}"
        if type(module).__name__ == "QuantEmbedding":
            new: nn.Module = EmbeddingTwin(module, _weight_of(module, flavor, where))
        elif isinstance(module, QuantWeightBiasInputOutputLayer):
            if not isinstance(module, EXPORTABLE_WEIGHTED):
                raise ExportError(f"cannot export brevitas layer {type(module).__name__}", where=where,
                                  hint="exclude it from quantization (quantize pass: exclude = [...])")
            bias: Any = biases.get(name)
            if bias is None and module.bias is not None:
                if module.bias_quant.is_quant_enabled:
                    raise ExportError("quantized bias could not be captured (input not quantized?)", where=where)
                bias = module.bias.detach()
            new = WeightedTwin(module, _weight_of(module, flavor, where), bias,
                                          _fake_quant(act_quant_of(module.input_quant), flavor, where + " input"),
                                          _fake_quant(act_quant_of(module.output_quant), flavor, where + " output"))
        else:
            proxy = module.act_quant
            act = proxy.fused_activation_quant_proxy.activation_impl if proxy.fused_activation_quant_proxy else None
            act = copy.deepcopy(act) if act is not None else nn.Identity()
            new = ActTwin(act, _fake_quant(act_quant_of(proxy), flavor, where))
            if module.input_quant.is_quant_enabled:
                raise ExportError("activation layers with their own input quantizer are not supported", where=where)
        if name:
            _replace(twin, name, new)
        else:
            return new
    if passthrough:
        graph = twin.graph
        for node in list(graph.nodes):
            q = passthrough.get(node.name)
            if q is None:
                continue
            # re-emit the (unchanged) quantizer after max-pool/flatten/... so every Conv/Gemm input
            # is a DequantizeLinear and runtimes fuse the node unit
            target = f"_edgekd_requant_{node.name}"
            twin.add_module(target, _fake_quant(q, flavor, f"node {node.name}"))
            with graph.inserting_after(node):
                new_node = graph.call_module(target, (node,))
            node.replace_all_uses_with(new_node, delete_user_cb=lambda user, nn_=new_node: user is not nn_)
        graph.lint()
        twin.recompile()
    for p in twin.parameters():
        p.requires_grad_(False)
    return twin.eval()

