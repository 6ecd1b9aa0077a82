"""OpenVINO backend: ONNX -> IR (``model.xml`` + ``model.bin``) -> compiled model on CPU (or another device).

Facts this module is built around (measured on this AMX Xeon, see docs/backends.md):

* an FP32 model silently runs in BF16 on AMX CPUs unless ``INFERENCE_PRECISION_HINT=f32``; so the
  default here is ``precision = "f32"`` and every build reports the precision that really ran;
* Q/DQ ONNX models become FakeQuantize and then int8 kernels, but only when the weights feed their
  DequantizeLinear directly: a ``Clip`` on an int8 weight (brevitas QCDQ) makes OpenVINO decompress
  the weights and run f32 convolutions, so the build folds such no-op Clips away first;
* properties must be set before ``compile_model``; ``CACHE_DIR`` cuts the first-inference time.

The proof of precision is OpenVINO's own runtime graph (``get_runtime_model()``): every executed
layer's ``layerType``, ``runtimePrecision`` and ``primitiveType`` (e.g. ``brgconv_avx512_amx_I8``).
Importing this module does not import openvino.
"""

from __future__ import annotations

import functools
import os
import tempfile
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from edgekd.artifact import IOSpec
from edgekd.backends.base import (
    Availability,
    BackendBase,
    BoundCall,
    BuildResult,
    BuildSource,
    ConcurrentCalls,
    check_feeds,
    layer_table,
    source_path,
)
from edgekd.backends.flavors import OPENVINO
from edgekd.errors import BuildError, ConfigError

#: layer types that carry the model's arithmetic; their runtime precision is "the" precision
COMPUTE_LAYERS = frozenset({"Convolution", "GroupConvolution", "Deconvolution", "FullyConnected", "MatMul",
                            "GroupConvolutionBackpropData", "ConvolutionBackpropData", "FullyConnectedCompressed",
                            "RNNSeq", "RNNCell"})  # RNNSeq/RNNCell: LSTM/GRU/RNN (f32: no int8 recurrent kernel)
_PRECISION_NAMES = {"u8": "int8", "i8": "int8", "f32": "fp32", "bf16": "bf16", "f16": "fp16", "i32": "int32",
                    "u4": "int4", "i4": "int4"}


@dataclass(frozen=True)
class OpenVINOOptions:
    """Target ``[options]`` for ``backend = "openvino"``; each maps to one OpenVINO property."""

    device: str = "CPU"  # OpenVINO device name: CPU, GPU, NPU, AUTO:GPU,CPU ...
    hint: Literal["LATENCY", "THROUGHPUT", "CUMULATIVE_THROUGHPUT"] = "LATENCY"  # PERFORMANCE_HINT
    threads: int = 0  # INFERENCE_NUM_THREADS; 0 = OpenVINO decides
    streams: int | Literal["AUTO"] | None = None  # NUM_STREAMS; None = derived from the hint
    pinning: bool | None = None  # ENABLE_CPU_PINNING; None = OpenVINO default
    # f32 by default: on AMX CPUs OpenVINO's own default runs FP32 models in bf16.
    # "auto" = OpenVINO's default (the profiler may pick the fastest precision later).
    precision: Literal["f32", "bf16", "f16", "auto"] = "f32"
    cache_dir: str | None = None  # CACHE_DIR ("~" expands); None = no model cache
    #: the CACHE_DIR is pruned to this many MB (oldest blobs first) before each compile; 0 = no limit
    cache_max_mb: float = 1024.0
    sparse_weights_decompression_rate: float | None = None  # CPU_SPARSE_WEIGHTS_DECOMPRESSION_RATE (AMX int8 FC)
    batch: int | None = None  # reshape the IR to a fixed batch; None keeps the ONNX's (dynamic) batch
    fold_weight_clips: bool = True  # drop Clips on int8 weights that are already in range (brevitas QCDQ)

    def __post_init__(self) -> None:
        if self.threads < 0:
            raise ValueError("threads must be >= 0 (0 = let OpenVINO decide)")
        if isinstance(self.streams, int) and self.streams < 1:
            raise ValueError("streams must be >= 1 or \"AUTO\"")
        rate = self.sparse_weights_decompression_rate
        if rate is not None and not 0.0 <= rate <= 1.0:
            raise ValueError("sparse_weights_decompression_rate must be within [0, 1]")
        if self.batch is not None and self.batch < 1:
            raise ValueError("batch must be >= 1")
        if self.cache_max_mb < 0:
            raise ValueError("cache_max_mb must be >= 0 (0 = no limit)")

    def properties(self) -> dict[str, Any]:
        """The properties passed to ``compile_model`` (only those the target sets)."""
        props: dict[str, Any] = {"PERFORMANCE_HINT": self.hint}
        if self.threads:
            props["INFERENCE_NUM_THREADS"] = self.threads
        if self.streams is not None:
            props["NUM_STREAMS"] = self.streams if isinstance(self.streams, str) else int(self.streams)
        if self.pinning is not None:
            props["ENABLE_CPU_PINNING"] = self.pinning
        if self.precision != "auto":
            props["INFERENCE_PRECISION_HINT"] = self.precision
        if self.cache_dir:
            props["CACHE_DIR"] = str(Path(os.path.expanduser(self.cache_dir)))
        if self.sparse_weights_decompression_rate is not None:
            props["CPU_SPARSE_WEIGHTS_DECOMPRESSION_RATE"] = float(self.sparse_weights_decompression_rate)
        return props


# ---------------------------------------------------------------- graph clean-up before conversion


def fold_weight_clips(model: Any) -> int:
    """Remove ``Clip`` nodes between an integer weight initializer and its DequantizeLinear when the
    stored weights already lie inside the clip range (brevitas narrow-range exports). Returns how many
    were removed; ``model`` (an onnx.ModelProto) is edited in place."""
    from edgekd.onnxgraph import OnnxGraph

    g = OnnxGraph(model)
    removed = []
    for node in g.nodes:
        if node.op_type != "Clip" or not node.input or g.initializer(node.input[0]) is None:
            continue
        weight = g.constant(node.input[0])
        if weight.dtype.kind not in "iu":
            continue
        users = g.consumers(node.output[0])
        if not users or any(u.op_type != "DequantizeLinear" for u in users):
            continue
        lo = g.constant(node.input[1]) if len(node.input) > 1 and node.input[1] else None
        hi = g.constant(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        if (lo is not None and weight.min() < lo) or (hi is not None and weight.max() > hi):
            continue  # the Clip really changes values: keep it
        g.replace_uses(node.output[0], node.input[0])
        removed.append(node)
    if not removed:
        return 0
    # bounds that only fed the removed Clips become dead initializers
    clip_inputs = {name for node in removed for name in node.input[1:]}
    g.rebuild(remove=removed)
    g.remove_initializers(name for name in clip_inputs if not g.consumers(name) and name not in g.outputs)
    return len(removed)


# ---------------------------------------------------------------- runtime graph = proof of precision


def _rt(info: Any, key: str) -> str:
    if key not in info:
        return ""
    value = info[key]
    return str(value.astype(str) if hasattr(value, "astype") else value)


def runtime_layers(compiled: Any) -> list[dict[str, str]]:
    """Every layer of the executable graph: name, layer type, runtime precision, kernel (primitive)."""
    layers = []
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        layer_type = _rt(info, "layerType")
        if layer_type in ("Const", "Input", "Output", "Parameter", "Result"):
            continue
        layers.append({"name": op.get_friendly_name(), "type": layer_type,
                       "precision": _rt(info, "runtimePrecision"), "kernel": _rt(info, "primitiveType"),
                       "original": _rt(info, "originalLayersNames")})
    return layers


def summarize_precision(layers: list[dict[str, str]]) -> tuple[str, dict[str, Any]]:
    """Overall precision of the compute layers (``int8``/``fp32``/``bf16``/``fp16``/``mixed``) plus counts."""
    compute = [layer for layer in layers if layer["type"] in COMPUTE_LAYERS]
    by_precision = Counter(_PRECISION_NAMES.get(layer["precision"], layer["precision"]) for layer in compute)
    kernels = Counter(layer["kernel"] for layer in compute)
    if not compute:
        overall = "fp32"
    elif len(by_precision) == 1:
        overall = next(iter(by_precision))
    else:
        overall = "mixed"
    return overall, {"compute_layers": len(compute), "compute_precision": dict(by_precision),
                     "compute_kernels": dict(kernels), "reorders": sum(1 for la in layers if la["type"] == "Reorder")}


def _ov_dtype(element_type: Any) -> str:
    name = element_type.to_dtype().name if hasattr(element_type, "to_dtype") else str(element_type)
    return name


def _dims(partial_shape: Any) -> tuple[int | None, ...]:
    return tuple(d.get_length() if d.is_static else None for d in partial_shape)


def _cache_blobs(cache: Path) -> dict[Path, os.stat_result]:
    return {p: p.stat() for p in cache.glob("*.blob") if p.is_file()} if cache.is_dir() else {}


def prune_compile_cache(cache: Path, max_mb: float) -> list[str]:
    """Delete the least recently written blobs of OpenVINO's model cache until it holds at most ``max_mb``
    (OpenVINO itself never evicts: every re-exported model adds a blob). Returns the removed file names."""
    if max_mb <= 0:
        return []
    blobs = sorted(_cache_blobs(cache).items(), key=lambda item: item[1].st_mtime)
    total, removed = sum(st.st_size for _, st in blobs), []
    for path, st in blobs:
        if total <= max_mb * 1e6:
            break
        path.unlink(missing_ok=True)
        total -= st.st_size
        removed.append(path.name)
    return removed


class OpenVINORunner:
    """One compiled model and one infer request (batch-1 latency style); ``describe()`` tells what runs."""

    def __init__(self, model_xml: Path, options: OpenVINOOptions) -> None:
        import openvino as ov

        self.options = options
        self.model_xml = model_xml
        core = ov.Core()
        cache = Path(os.path.expanduser(options.cache_dir)) if options.cache_dir else None
        before = _cache_blobs(cache) if cache else {}
        pruned = prune_compile_cache(cache, options.cache_max_mb) if cache else []
        try:
            model = core.read_model(str(model_xml))
            if options.batch is not None:
                model.reshape({p.get_any_name(): [options.batch, *list(p.get_partial_shape())[1:]]
                               for p in model.inputs})
            self.compiled = core.compile_model(model, options.device, options.properties())
        except Exception as exc:  # OpenVINO raises RuntimeError subclasses with its own text
            raise BuildError(f"OpenVINO could not compile the model for {options.device}: {exc}", where=str(model_xml),
                             hint="check the device name and properties in the target's [options]") from exc
        #: whether load time included compiling: a blob written now is a cache miss; none new with blobs there, a hit
        self.compile_cache: dict[str, Any] | None = None
        if cache is not None:
            after = _cache_blobs(cache)
            written = [p for p, st in after.items() if p not in before or st.st_mtime != before[p].st_mtime]
            self.compile_cache = {"dir": str(cache), "state": "cold: compiled, blob written" if written else
                                  "warm: loaded from the cache" if after else "cold: nothing cached",
                                  "blobs": len(after), "mb": round(sum(st.st_size for st in after.values()) / 1e6, 3),
                                  "max_mb": options.cache_max_mb, "pruned": pruned}
        self.request = self.compiled.create_infer_request()
        # share_inputs=True binds the caller's array to the request: keep the hot path on its own request so a
        # later call with another batch size on the checked path is not stuck with the first shape
        self._hot_request = self.compiled.create_infer_request()
        self.inputs = tuple(IOSpec(p.get_any_name(), _dims(p.get_partial_shape()), _ov_dtype(p.get_element_type()))
                            for p in self.compiled.inputs)
        self.outputs = tuple(IOSpec(p.get_any_name(), _dims(p.get_partial_shape()), _ov_dtype(p.get_element_type()))
                             for p in self.compiled.outputs)
        self._layers: list[dict[str, str]] | None = None

    def infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        result = self.request.infer(check_feeds(self.inputs, feeds))
        return {spec.name: np.array(result[i]) for i, spec in enumerate(self.outputs)}

    def infer_unchecked(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """Hot-loop variant for the profiler: no validation, inputs shared (not copied), positional outputs."""
        result = self._hot_request.infer(feeds, share_inputs=True)
        return [result[i] for i in range(len(self.outputs))]

    def bound_call(self, feeds: Mapping[str, np.ndarray]) -> BoundCall:
        """A request of its own with the input tensors set once (sharing the arrays' memory): each call is
        ``request.infer()`` with no inputs to convert and outputs left in the request's tensors
        (``share_outputs``). ``request.latency`` is OpenVINO's own timing of the call (what benchmark_app reports)."""
        import openvino as ov

        request = self.compiled.create_infer_request()
        arrays = [np.ascontiguousarray(feeds[spec.name]) for spec in self.inputs]
        for i, array in enumerate(arrays):
            request.set_input_tensor(i, ov.Tensor(array, shared_memory=True))
        count = len(self.outputs)
        return BoundCall(run=functools.partial(request.infer, share_outputs=True),
                         outputs=lambda: [np.array(request.get_output_tensor(i).data) for i in range(count)],
                         path="openvino InferRequest with input tensors set once (shared memory); "
                              "request.infer(share_outputs=True) without arguments",
                         runtime_latency_s=lambda: request.latency / 1e3, keep=(request, arrays))

    def concurrent_calls(self, feeds: Mapping[str, np.ndarray], requests: int) -> ConcurrentCalls:
        """OpenVINO's AsyncInferQueue with ``requests`` infer requests on the compiled model (as benchmark_app's
        async mode); the target's NUM_STREAMS / PERFORMANCE_HINT decide how many run at once."""
        import openvino as ov

        queue = ov.AsyncInferQueue(self.compiled, requests)
        queue.set_callback(lambda _request, on_done: on_done())
        arrays = {spec.name: np.ascontiguousarray(feeds[spec.name]) for spec in self.inputs}
        return ConcurrentCalls(submit=lambda on_done: queue.start_async(arrays, userdata=on_done), wait=queue.wait_all,
                               close=queue.wait_all, requests=requests,
                               path=f"openvino AsyncInferQueue, {requests} infer requests")

    def layers(self) -> list[dict[str, str]]:
        if self._layers is None:
            self._layers = runtime_layers(self.compiled)
        return self._layers

    def property(self, name: str) -> Any:
        try:
            return self.compiled.get_property(name)
        except Exception:  # not every device exposes every property; absent is a fact, not an error
            return None

    def describe(self) -> dict[str, Any]:
        import openvino as ov

        precision, summary = summarize_precision(self.layers())
        facts = {"runtime": "openvino", "version": ov.get_version(), "device": self.options.device,
                 "execution_devices": self.property("EXECUTION_DEVICES"), "precision": precision, **summary,
                 "layers": self.layers(), **({"compile_cache": self.compile_cache} if self.compile_cache else {})}
        for key in ("PERFORMANCE_HINT", "INFERENCE_PRECISION_HINT", "INFERENCE_NUM_THREADS", "NUM_STREAMS",
                    "ENABLE_CPU_PINNING", "OPTIMAL_NUMBER_OF_INFER_REQUESTS"):
            value = self.property(key)
            if hasattr(value, "get_type_name"):  # ov.Type (precision hint) -> "f32"
                value = value.get_type_name()
            facts[key.lower()] = value if isinstance(value, (int, float, bool, str)) or value is None else str(value)
        return facts


def float_precisions() -> tuple[str, ...]:
    """Float inference precisions OpenVINO's CPU plugin offers here, f32 first (OPTIMIZATION_CAPABILITIES)."""
    import openvino as ov

    caps = set(ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    return ("f32", *(["bf16"] if "BF16" in caps else []), *(["f16"] if "FP16" in caps else []))



#: the build note on a host whose OpenVINO int8 convolutions are not exact (see ``host_int8_exact``)
INEXACT_NOTE = ("this CPU has no VNNI: OpenVINO's int8 convolutions are not exact here (a one-layer probe of "
                "255 x 127 x 64 products missed the exact result), so parity with the reference can fall short; "
                "a CPU with AVX-512 VNNI, AVX-VNNI or AMX runs them exactly")


@functools.cache
def host_int8_exact() -> bool:
    """True when OpenVINO's CPU int8 convolution gives the exact integer result for worst-case operands.

    On x86 CPUs without VNNI, int8 dot products go through ``vpmaddubsw`` (int16 pair sums): oneDNN then either
    saturates or halves the weights; either way a 1x1 convolution of 64 channels of 255 x 127 misses its exact
    requantized value. Probed once per process on a QDQ model built here."""
    import openvino as ov
    from onnx import TensorProto, helper, numpy_helper

    cin, cout, sx, sw = 64, 4, 0.02, 0.01
    acc = 255 * 127 * cin  # exact int32 accumulator
    sy = acc * sx * sw / 200.25  # exact requantized output: 200 (a 0.1 % error changes it)
    inits = [numpy_helper.from_array(np.array(sx, np.float32), "sx"), numpy_helper.from_array(np.array(0, np.uint8), "zx"),
             numpy_helper.from_array(np.full((cout, cin, 1, 1), 127, np.int8), "wq"),
             numpy_helper.from_array(np.full(cout, sw, np.float32), "sw"), numpy_helper.from_array(np.zeros(cout, np.int8), "zw"),
             numpy_helper.from_array(np.array(sy, np.float32), "sy"), numpy_helper.from_array(np.array(0, np.uint8), "zy")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "sx", "zx"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "sx", "zx"], ["xd"]),
             helper.make_node("DequantizeLinear", ["wq", "sw", "zw"], ["wd"], axis=0),
             helper.make_node("Conv", ["xd", "wd"], ["y"]),
             helper.make_node("QuantizeLinear", ["y", "sy", "zy"], ["yq"]),
             helper.make_node("DequantizeLinear", ["yq", "sy", "zy"], ["out"])]
    graph = helper.make_graph(nodes, "vnni_probe", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, cin, 2, 2])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, cout, 2, 2])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = min(model.ir_version, 8)
    core = ov.Core()
    compiled = core.compile_model(core.read_model(model.SerializeToString(), b""), "CPU",
                                  {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": 1})
    got = compiled([np.full((1, cin, 2, 2), 255 * sx, np.float32)])[0]
    return bool(np.allclose(got, 200 * sy, rtol=1e-4))


class OpenVINOBackend(BackendBase):
    name = "openvino"
    options_type = OpenVINOOptions
    qdq_flavor = OPENVINO
    sdk_modules = ("openvino",)
    artifact_suffixes = (".xml",)
    artifact_kind = "openvino-ir"

    def check_artifact(self, path: Path) -> None:
        """An OpenVINO IR is two files: say which one is missing or wrong before OpenVINO's own message."""
        if not path.is_file():
            raise ConfigError("is not a file", where=str(path), hint="pass the IR's .xml file")
        with path.open("rb") as fh:
            head = fh.read(256).lstrip()
        if not head.startswith((b"<?xml", b"<net")):
            raise ConfigError("is not an OpenVINO IR .xml file (no XML <net> document)", where=str(path),
                              hint="pass the .xml written by openvino.save_model / ovc")
        weights = path.with_suffix(".bin")
        if not weights.is_file():
            raise ConfigError(f"the IR's weights file {weights.name} is missing", where=str(path),
                              hint="keep the .bin saved with the .xml next to it, under the same name")

    def auto_precisions(self, target: Any) -> tuple[str, ...]:
        """precision = "auto" profiles every float precision the device offers (bf16 often beats int8 on AMX)."""
        return float_precisions()

    def layer_table(self, model_file: Path, feeds: dict[str, np.ndarray], target: Any, runs: int,
                    build: BuildResult | None) -> dict[str, Any]:
        from edgekd.profiler.layers import ov_layers

        properties = dict(target.options.properties()) if hasattr(target.options, "properties") else None
        device = str(getattr(target.options, "device", "CPU"))
        rows = ov_layers(model_file, feeds, properties=properties, device=device, runs=runs)
        return layer_table(rows, "openvino perf counters" + ("" if properties is not None else " (default compile properties)"),
                           runs)

    def availability(self) -> Availability:
        try:
            import openvino as ov
        except ImportError as exc:
            return Availability(False, f"openvino is not installed ({exc}); pip install openvino")
        devices = ov.Core().available_devices
        if not devices:
            return Availability(False, "OpenVINO sees no device")
        return Availability(True)

    def build(self, source: BuildSource, target: Any, out_dir: Path, *, golden: np.ndarray | None = None) -> BuildResult:
        import onnx
        import openvino as ov

        onnx_path = source_path(source)
        options: OpenVINOOptions = target.options
        out_dir.mkdir(parents=True, exist_ok=True)
        notes: list[str] = []
        model_proto = onnx.load(str(onnx_path))
        folded = fold_weight_clips(model_proto) if options.fold_weight_clips else 0
        if folded:
            notes.append(f"folded {folded} no-op Clip(s) on int8 weights so OpenVINO keeps int8 kernels")
        try:
            with tempfile.TemporaryDirectory(prefix="edgekd-ov-") as tmp:
                source = onnx_path
                if folded:
                    source = Path(tmp) / "model.onnx"
                    onnx.save(model_proto, str(source))
                ov_model = ov.convert_model(str(source))
            # compress_to_fp16=False: the IR keeps FP32 weights, so parity is not lost on disk
            ov.save_model(ov_model, str(out_dir / "model.xml"), compress_to_fp16=False)
        except Exception as exc:
            raise BuildError(f"OpenVINO could not convert the ONNX model: {exc}", where=str(onnx_path),
                             hint="check the ONNX opset and operators; `edgekd lint` shows what the graph holds") from exc
        runner = OpenVINORunner(out_dir / "model.xml", options)
        facts = runner.describe()
        precision = facts["precision"]
        if options.precision == "f32" and precision == "bf16":
            notes.append("INFERENCE_PRECISION_HINT=f32 was set but the compute layers ran in bf16")
        if precision == "mixed":
            notes.append(f"compute layers run in several precisions: {facts['compute_precision']}")
        has_qdq = any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model_proto.graph.node)
        if has_qdq and facts["compute_precision"].get("int8", 0) == 0:
            notes.append("the ONNX model holds Q/DQ but no compute layer runs in int8 on OpenVINO")
        elif has_qdq and options.device.upper().startswith("CPU") and not host_int8_exact():
            notes.append(INEXACT_NOTE)
        details = {key: facts[key] for key in ("device", "execution_devices", "compute_layers", "compute_precision",
                                               "compute_kernels", "reorders", "inference_precision_hint",
                                               "performance_hint", "num_streams", "inference_num_threads")}
        details.update({"openvino": facts["version"], "properties": {k: str(v) for k, v in options.properties().items()},
                        "folded_weight_clips": folded, "layers": facts["layers"]})
        return BuildResult(backend=self.name, artifact="model.xml", files=["model.xml", "model.bin"],
                           precision=precision, notes=notes, details=details)

    def load(self, target_dir: Path, target: Any, build: BuildResult | None = None) -> OpenVINORunner:
        artifact = build.artifact if build else "model.xml"
        return OpenVINORunner(target_dir / artifact, target.options)
