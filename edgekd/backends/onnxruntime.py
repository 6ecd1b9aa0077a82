"""ONNX Runtime CPU backend.

The build step copies the ONNX file into the target folder and also saves ONNX Runtime's
optimized graph (``model.optimized.onnx``) so anyone can see which nodes became integer
kernels (QLinearConv, QGemm, ...). Importing this module does not import onnxruntime.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
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
    copy_onnx,
    layer_table,
    source_path,
)
from edgekd.backends.flavors import ORT
from edgekd.backends.ort_exact import EXACT_NOTE, SATURATING_NOTE, session_source
from edgekd.errors import BuildError

INT8_KERNEL_OPS = frozenset(
    {"QLinearConv", "QLinearMatMul", "QGemm", "QLinearAdd", "QLinearMul", "QLinearConcat",
     "QLinearGlobalAveragePool", "QLinearAveragePool", "QLinearSigmoid", "QLinearLeakyRelu",
     "QLinearSoftmax", "ConvInteger", "MatMulInteger", "MatMulIntegerToFloat", "DynamicQuantizeMatMul"}
)
#: compute ops that run in floating point after ORT's optimizations (ConvTranspose and the recurrent ops have no
#: QDQ integer kernel on the CPU provider)
FLOAT_COMPUTE_OPS = frozenset({"Conv", "FusedConv", "NchwcConv", "ConvTranspose", "Gemm", "FusedGemm", "MatMul",
                               "FusedMatMul", "LSTM", "GRU", "RNN"})

_LEVELS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED",
           "all": "ORT_ENABLE_ALL"}


@dataclass(frozen=True)
class OnnxRuntimeOptions:
    intra_op_threads: int = 2
    inter_op_threads: int = 1
    graph_optimization_level: Literal["disable", "basic", "extended", "all"] = "all"
    execution_mode: Literal["sequential", "parallel"] = "sequential"
    providers: tuple[str, ...] = ("CPUExecutionProvider",)
    enable_profiling: bool = False

    def __post_init__(self) -> None:
        if self.intra_op_threads < 0 or self.inter_op_threads < 0:
            raise ValueError("thread counts must be >= 0 (0 = let ONNX Runtime decide)")


def _ort_dtype(type_str: str) -> str:
    mapping = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
               "tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(int8)": "int8",
               "tensor(uint8)": "uint8", "tensor(bool)": "bool"}
    return mapping.get(type_str, type_str)


def session_options(options: OnnxRuntimeOptions, optimized_path: Path | None = None) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = options.intra_op_threads
    so.inter_op_num_threads = options.inter_op_threads
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, _LEVELS[options.graph_optimization_level])
    so.execution_mode = (ort.ExecutionMode.ORT_PARALLEL if options.execution_mode == "parallel"
                         else ort.ExecutionMode.ORT_SEQUENTIAL)
    so.enable_profiling = options.enable_profiling
    so.log_severity_level = 3
    if optimized_path is not None:
        so.optimized_model_filepath = str(optimized_path)
    return so


class OnnxRuntimeRunner:
    def __init__(self, model_path: Path, options: OnnxRuntimeOptions) -> None:
        import onnxruntime as ort

        self.model_path = model_path
        self.options = options
        try:
            source, self.exact_rewrites = session_source(model_path)
            self.session = ort.InferenceSession(
                source, sess_options=session_options(options), providers=list(options.providers)
            )
        except Exception as exc:  # ORT raises its own exception types
            raise BuildError(f"ONNX Runtime could not load the model: {exc}", where=str(model_path)) from exc
        self.inputs = tuple(
            IOSpec(i.name, tuple(d if isinstance(d, int) else None for d in i.shape), _ort_dtype(i.type))
            for i in self.session.get_inputs()
        )
        self.outputs = tuple(
            IOSpec(o.name, tuple(d if isinstance(d, int) else None for d in o.shape), _ort_dtype(o.type))
            for o in self.session.get_outputs()
        )
        self._output_names = [o.name for o in self.outputs]

    def infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        results = self.session.run(self._output_names, check_feeds(self.inputs, feeds))
        return dict(zip(self._output_names, results, strict=True))

    def infer_unchecked(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """Hot-loop variant for the profiler: no validation, positional outputs."""
        return self.session.run(self._output_names, feeds)

    def bound_call(self, feeds: Mapping[str, np.ndarray]) -> BoundCall:
        """IOBinding on pre-allocated OrtValues: ``session.run(names, feeds)`` converts every input and allocates
        every output on each call (tens of microseconds, the whole run of a small model); bound, a call is only
        ``run_with_iobinding``."""
        import onnxruntime as ort

        binding = self.session.io_binding()
        inputs = [ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(feeds[spec.name])) for spec in self.inputs]
        for spec, value in zip(self.inputs, inputs, strict=True):
            binding.bind_ortvalue_input(spec.name, value)
        # output shapes can depend on the inputs (dynamic batch or length): one plain run tells them
        shapes = self.session.run(self._output_names, feeds)
        outputs = [ort.OrtValue.ortvalue_from_shape_and_type(list(a.shape), a.dtype) for a in shapes]
        for name, value in zip(self._output_names, outputs, strict=True):
            binding.bind_ortvalue_output(name, value)
        run = self.session.run_with_iobinding
        return BoundCall(run=lambda: run(binding), outputs=lambda: [np.array(v.numpy()) for v in outputs],
                         path="onnxruntime IOBinding: session.run_with_iobinding on pre-allocated input and output "
                              "OrtValues", keep=(binding, inputs, outputs))

    def concurrent_calls(self, feeds: Mapping[str, np.ndarray], requests: int) -> ConcurrentCalls:
        """``requests`` pool threads calling ``session.run`` on the one session (thread-safe in ONNX Runtime); each
        run still uses the session's intra-op threads, so more requests than cores contend for them."""
        from concurrent.futures import ThreadPoolExecutor
        from concurrent.futures import wait as wait_all

        pool = ThreadPoolExecutor(max_workers=requests, thread_name_prefix="edgekd-ort")
        futures: list[Any] = []
        run, names = self.session.run, self._output_names

        def query(on_done: Callable[[], None]) -> None:
            run(names, feeds)
            on_done()

        def wait() -> None:
            done, _ = wait_all(futures)
            futures.clear()
            for f in done:
                f.result()  # a failed query raises here, not silently

        return ConcurrentCalls(submit=lambda on_done: futures.append(pool.submit(query, on_done)), wait=wait,
                               close=lambda: pool.shutdown(wait=True), requests=requests,
                               path=f"onnxruntime: {requests} threads calling session.run on one session")

    def describe(self) -> dict[str, Any]:
        import onnxruntime as ort

        return {
            "runtime": "onnxruntime",
            "version": ort.__version__,
            "providers": self.session.get_providers(),
            "intra_op_threads": self.options.intra_op_threads,
            **({"int8_weights": EXACT_NOTE} if self.exact_rewrites > 0 else {}),
            **({"int8_weights": SATURATING_NOTE} if self.exact_rewrites < 0 else {}),
        }


def optimized_op_histogram(model_path: Path, options: OnnxRuntimeOptions) -> Counter[str]:
    """Op types of the graph ONNX Runtime actually executes (after its fusions)."""
    import tempfile

    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        opt_path = Path(tmp) / "optimized.onnx"
        ort.InferenceSession(str(model_path), sess_options=session_options(options, opt_path),
                             providers=["CPUExecutionProvider"])
        model = onnx.load(str(opt_path), load_external_data=False)
    return Counter(node.op_type for node in model.graph.node)


class OnnxRuntimeBackend(BackendBase):
    name = "onnxruntime"
    options_type = OnnxRuntimeOptions
    qdq_flavor = ORT  # uint8 activations (the fast x86 path); numerics: the defaults (asymmetric allowed)
    sdk_modules = ("onnxruntime",)
    artifact_may_be_shared = True  # its model.onnx is a byte copy of the source, opened by path

    def availability(self) -> Availability:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            return Availability(False, f"onnxruntime is not installed ({exc}); pip install onnxruntime")
        if "CPUExecutionProvider" not in ort.get_available_providers():
            return Availability(False, "onnxruntime has no CPUExecutionProvider")
        return Availability(True)

    def build(self, source: BuildSource, target: Any, out_dir: Path, *, golden: np.ndarray | None = None) -> BuildResult:
        options: OnnxRuntimeOptions = target.options
        out_dir.mkdir(parents=True, exist_ok=True)
        dest = out_dir / "model.onnx"
        files = copy_onnx(source_path(source), dest)
        ops = optimized_op_histogram(dest, options)
        int8_ops = {op: n for op, n in ops.items() if op in INT8_KERNEL_OPS}
        float_compute = {op: n for op, n in ops.items() if op in FLOAT_COMPUTE_OPS}
        if int8_ops and not float_compute:
            precision = "int8"
        elif int8_ops:
            precision = "mixed"
        else:
            precision = "fp32"
        notes = []
        rewrites = session_source(dest)[1] if int8_ops else 0
        if rewrites:
            notes.append(EXACT_NOTE if rewrites > 0 else SATURATING_NOTE)
        if int8_ops and float_compute:
            notes.append(f"some compute ops still run in float after ORT optimization: {dict(float_compute)}")
        return BuildResult(
            backend=self.name,
            artifact="model.onnx",
            files=files,
            precision=precision,
            notes=notes,
            details={"optimized_ops": dict(sorted(ops.items())), "int8_kernels": int8_ops},
        )

    def layer_table(self, model_file: Path, feeds: dict[str, np.ndarray], target: Any, runs: int,
                    build: BuildResult | None) -> dict[str, Any]:
        from edgekd.profiler.layers import ort_layers

        rows = ort_layers(model_file, feeds, options=target.options, runs=runs)
        return layer_table(rows, "onnxruntime profiling trace", runs)

    def load(self, target_dir: Path, target: Any, build: BuildResult | None = None) -> OnnxRuntimeRunner:
        artifact = build.artifact if build else "model.onnx"
        return OnnxRuntimeRunner(target_dir / artifact, target.options)
