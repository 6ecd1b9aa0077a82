"""TensorRT backend: ONNX -> serialized engine with the tensorrt Python API (10.x and 11.x).

What it does on a machine with an NVIDIA GPU and ``pip install 'edgekd[tensorrt]'``:
ONNX parser -> strongly typed network (explicit quantization from the Q/DQ nodes) -> builder config
(workspace limit, SPARSE_WEIGHTS for 2:4 models, an optimization profile for the dynamic batch,
timing cache file keyed by GPU name and TensorRT version) -> ``model.engine`` -> engine inspector
layer information (precision and tactic of every layer, so the report shows whether int8 and 2:4
sparse tactics were really picked).

What it does everywhere (``builds_without_sdk``): copies the ONNX file, lints it against TensorRT's
rules (``lint.json``) and writes ``build_engine.sh`` with the equivalent ``trtexec`` command, because
engines are tied to the GPU model and TensorRT version and are best built on the device itself.

TensorRT 11 removed weak typing (BuilderFlag.FP16/INT8): every network is strongly typed, so an
FP32 ONNX builds in fp32 there; ``precision = "fp16"`` needs TensorRT 10.x (or an fp16 ONNX made
with ModelOpt AutoCast) and fails with that hint otherwise. Importing this module imports neither
tensorrt nor cuda.
"""

from __future__ import annotations

import json
import re
import shlex
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from edgekd.artifact import IOSpec
from edgekd.backends.base import Availability, BackendBase, BuildResult, BuildSource, Numerics, check_feeds, copy_onnx, source_path
from edgekd.backends.flavors import TENSORRT
from edgekd.backends.tensorrt.lint import lint_tensorrt
from edgekd.backends.tensorrt.stamp import STAMP, check_stamp, write_stamp
from edgekd.bundle.layout import sha256_file
from edgekd.errors import BuildError


@dataclass(frozen=True)
class TensorRTOptions:
    """Target ``[options]`` for ``backend = "tensorrt"``."""

    # auto: int8 when the ONNX holds Q/DQ (explicit quantization), else float_precision; fp16: TensorRT 10.x weak typing
    precision: Literal["auto", "int8", "fp16", "fp32"] = "auto"
    # what "auto" builds for a float ONNX (no Q/DQ): Jetson targets say fp16 (their tensor cores run fp16, and
    # fp32 leaves most of the speed unused); on TensorRT 11 (no weak typing) "auto" falls back to fp32 with a note
    float_precision: Literal["fp32", "fp16"] = "fp32"
    sparse_weights: bool = False  # BuilderFlag.SPARSE_WEIGHTS: allow 2:4 sparse tactics
    workspace_mb: int = 1024  # MemoryPoolType.WORKSPACE limit
    min_batch: int = 1  # optimization profile for a dynamic batch dimension
    opt_batch: int = 1
    max_batch: int = 8
    builder_optimization_level: int = 3  # 0..5; higher = longer build, maybe faster engine
    timing_cache_dir: str = "~/.cache/edgekd/tensorrt"  # one file per GPU model and TensorRT version
    device_index: int = 0
    gpu: str = ""  # the GPU this target is meant for (documentation; written into build_engine.sh)
    lint: Literal["error", "warn"] = "error"  # lint errors stop the build ("warn": notes only)
    buffers: Literal["cuda-python", "torch"] = "cuda-python"  # how the runner allocates device memory

    def __post_init__(self) -> None:
        if not 1 <= self.min_batch <= self.opt_batch <= self.max_batch:
            raise ValueError("need 1 <= min_batch <= opt_batch <= max_batch")
        if self.workspace_mb < 1:
            raise ValueError("workspace_mb must be >= 1")
        if not 0 <= self.builder_optimization_level <= 5:
            raise ValueError("builder_optimization_level must be within 0..5")


def builds_fp16(options: TensorRTOptions, has_qdq: bool) -> bool:
    """Whether the build asks for fp16 kernels: precision = "fp16", or "auto" on a float ONNX when the target's
    float_precision is fp16 (a Q/DQ ONNX under "auto" keeps its explicit int8, strongly typed)."""
    if options.precision == "auto":
        return not has_qdq and options.float_precision == "fp16"
    return options.precision == "fp16"


# ---------------------------------------------------------------- device facts


def _cudart() -> Any:
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError:
        try:
            from cuda import cudart  # older cuda-python layout
        except ImportError:
            return None
    return cudart


def gpu_name(index: int = 0) -> str | None:
    """Name of CUDA device ``index`` (cuda-python, else torch.cuda), or None when no GPU is visible."""
    cudart = _cudart()
    if cudart is not None:
        err, count = cudart.cudaGetDeviceCount()
        if err != cudart.cudaError_t.cudaSuccess or count <= index:
            return None
        err, props = cudart.cudaGetDeviceProperties(index)
        if err != cudart.cudaError_t.cudaSuccess:
            return None
        name = props.name
        return (name.decode(errors="replace") if isinstance(name, bytes) else str(name)).rstrip("\x00")
    try:
        import torch
    except ImportError:
        return None
    if torch.cuda.is_available() and torch.cuda.device_count() > index:
        return torch.cuda.get_device_name(index)
    return None


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "unknown"


def timing_cache_path(cache_dir: str, gpu: str, trt_version: str) -> Path:
    """Timing caches are only valid for one GPU model and TensorRT version: both are in the file name."""
    return Path(cache_dir).expanduser() / f"timing-{_slug(gpu)}-trt{_slug(trt_version)}.cache"


# ---------------------------------------------------------------- trtexec script


def onnx_inputs(path: Path) -> tuple[IOSpec, ...]:
    """Graph inputs (not initializers) with their shapes; dynamic dims as their name or None."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    inits = {i.name for i in model.graph.initializer}
    specs = []
    for value in model.graph.input:
        if value.name in inits:
            continue
        t = value.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in t.shape.dim)
        specs.append(IOSpec(value.name, dims, onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name))
    return tuple(specs)


def _shape_arg(specs: tuple[IOSpec, ...], batch: int) -> str:
    return ",".join(f"{s.name}:" + "x".join(str(batch if not isinstance(d, int) else d) for d in s.shape)
                    for s in specs)


def trtexec_args(options: TensorRTOptions, inputs: tuple[IOSpec, ...], has_qdq: bool) -> list[str]:
    """The trtexec flags equivalent to :meth:`TensorRTBackend.build` (without the timing-cache file)."""
    args = ["--onnx=model.onnx", "--saveEngine=model.engine", f"--memPoolSize=workspace:{options.workspace_mb}M",
            f"--builderOptimizationLevel={options.builder_optimization_level}",
            "--profilingVerbosity=detailed", "--exportLayerInfo=layers.json"]
    if any(not isinstance(d, int) for s in inputs for d in s.shape):
        args += [f"--minShapes={_shape_arg(inputs, options.min_batch)}",
                 f"--optShapes={_shape_arg(inputs, options.opt_batch)}",
                 f"--maxShapes={_shape_arg(inputs, options.max_batch)}"]
    if builds_fp16(options, has_qdq):
        args += ["--fp16", *(["--int8"] if has_qdq else [])]
    else:
        args.append("--stronglyTyped")
    if options.sparse_weights:
        args.append("--sparsity=enable")
    return args


#: the backend's copy of its source ONNX in the target's folder (the artifact until build_engine.sh makes the engine)
SOURCE_COPY = "model.onnx"

_SCRIPT = """#!/usr/bin/env bash
# Build the TensorRT engine for target {target} on the device itself: engines are tied to the
# GPU model and the TensorRT version. Generated by edgekd {version}.
# Meant for: {gpu}. Precision plan: {plan}.
# Writes model.engine, layers.json (per-layer precision and tactic) and engine.json (the TensorRT version,
# GPU and model.onnx checksum the engine is for) next to this script.
set -euo pipefail
cd "$(dirname "$0")"
TRTEXEC="${{TRTEXEC:-trtexec}}"   # Jetson: /usr/src/tensorrt/bin/trtexec
command -v "$TRTEXEC" >/dev/null || {{ echo "trtexec not found; set TRTEXEC=/path/to/trtexec" >&2; exit 1; }}
GPU="$(nvidia-smi --query-gpu=name --format=csv,noheader -i {index} 2>/dev/null | head -n1 || true)"
[ -n "$GPU" ] || GPU="$(tr -d '\\0' </proc/device-tree/model 2>/dev/null || echo unknown-gpu)"
TRTV="$("$TRTEXEC" --help 2>&1 | grep -o 'TensorRT v[0-9]*' | head -n1 | tr -dc '0-9' || true)"
TRTV="${{TRTV:-0}}"
MAJOR=$(( TRTV >= 10000 ? TRTV / 10000 : TRTV / 1000 ))
{fp16_guard}CACHE_DIR="${{EDGEKD_TRT_CACHE:-{cache_dir}}}"
mkdir -p "$CACHE_DIR"
CACHE="$CACHE_DIR/timing-$(printf %s "$GPU" | tr -c 'A-Za-z0-9._-' '_')-trt$TRTV.cache"
"$TRTEXEC" \\
{args}
  --timingCacheFile="$CACHE" "$@"
# the stamp edgekd checks before loading: an engine from another TensorRT, GPU or ONNX file is refused
SHA="$(sha256sum model.onnx | cut -d' ' -f1)"
printf '{{"tensorrt_code": %s, "gpu": "%s", "onnx_sha256": "%s", "built_by": "build_engine.sh"}}\n' \
  "$TRTV" "$(printf %s "$GPU" | tr -d '"\\\\')" "$SHA" > engine.json
"""

_FP16_GUARD = """if [ "$MAJOR" -ge 11 ]; then
  echo "TensorRT >= 11 has no --fp16 (strong typing only): convert the ONNX with ModelOpt AutoCast" >&2
  echo "  (python -m modelopt.onnx.autocast --onnx_path model.onnx) or use precision = \\"auto\\"" >&2
  exit 1
fi
"""

#: precision = "auto" with float_precision = "fp16": TensorRT 11 cannot, so the script builds fp32 there
_AUTO_FP16_GUARD = """PRECISION=--fp16
if [ "$MAJOR" -ge 11 ]; then
  echo "TensorRT >= 11 has no --fp16 (strong typing only): building fp32; for fp16 convert the ONNX with" >&2
  echo "  ModelOpt AutoCast (python -m modelopt.onnx.autocast --onnx_path model.onnx)" >&2
  PRECISION=--stronglyTyped
fi
"""


def write_build_script(path: Path, target_name: str, options: TensorRTOptions, inputs: tuple[IOSpec, ...],
                       has_qdq: bool, plan: str) -> None:
    from edgekd import __version__

    auto_fp16 = options.precision == "auto" and builds_fp16(options, has_qdq)
    args = "".join(f"  {'$PRECISION' if auto_fp16 and a == '--fp16' else shlex.quote(a)} \\\n"
                   for a in trtexec_args(options, inputs, has_qdq))
    guard = _AUTO_FP16_GUARD if auto_fp16 else _FP16_GUARD if options.precision == "fp16" else ""
    cache_dir = options.timing_cache_dir.replace("~", "$HOME", 1) if options.timing_cache_dir.startswith("~") \
        else options.timing_cache_dir
    path.write_text(_SCRIPT.format(target=target_name, version=__version__, gpu=options.gpu or "any NVIDIA GPU",
                                   plan=plan, index=options.device_index, cache_dir=cache_dir, args=args.rstrip("\n"),
                                   fp16_guard=guard))
    path.chmod(0o755)


# ---------------------------------------------------------------- engine inspector


_COMPUTE = re.compile(r"conv|gemm|matrixmultiply|fullyconnected|matmul", re.IGNORECASE)


def _io_precision(io: Mapping[str, Any]) -> str:
    text = " ".join(str(io.get(k, "")) for k in ("Format/Datatype", "DataType", "Format")).lower()
    for needle, name in (("int8", "int8"), ("fp8", "fp8"), ("half", "fp16"), ("fp16", "fp16"), ("bf16", "bf16"),
                         ("float", "fp32"), ("fp32", "fp32"), ("int32", "int32")):
        if needle in text:
            return name
    return "unknown"


def parse_layer_info(info: Mapping[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Engine inspector JSON (``LayerInformationFormat.JSON``, DETAILED verbosity; 10.x and 11.x schemas)
    -> per-layer facts and a summary: compute layers by input precision, and which picked sparse tactics."""
    layers = []
    for raw in info.get("Layers", []):
        if isinstance(raw, str):  # LAYER_NAMES_ONLY verbosity: names without facts
            layers.append({"name": raw, "type": "", "precision": "unknown", "tactic": "", "sparse": False})
            continue
        inputs = raw.get("Inputs", []) or []
        precisions = [_io_precision(io) for io in inputs if isinstance(io, Mapping)]
        tactic = str(raw.get("TacticName", "") or "")
        layers.append({"name": str(raw.get("Name", "")), "type": str(raw.get("LayerType", "")),
                       "precision": precisions[0] if precisions else "unknown", "tactic": tactic,
                       "sparse": "sparse" in tactic.lower()})
    compute = [la for la in layers if _COMPUTE.search(la["type"]) or _COMPUTE.search(la["tactic"])]
    by_precision = Counter(la["precision"] for la in compute)
    summary = {"layers": len(layers), "compute_layers": len(compute), "compute_precision": dict(by_precision),
               "sparse_layers": [la["name"] for la in compute if la["sparse"]]}
    return layers, summary


def overall_precision(summary: Mapping[str, Any]) -> str:
    counts = summary.get("compute_precision", {})
    if not counts:
        return "fp32"
    return next(iter(counts)) if len(counts) == 1 else "mixed"


# ---------------------------------------------------------------- runner


class _CudaPythonMemory:
    """Device buffers and a stream through cuda-python's runtime API."""

    def __init__(self) -> None:
        self.rt = _cudart()
        if self.rt is None:
            raise BuildError("cuda-python is not installed", hint="pip install 'edgekd[tensorrt]' or set buffers = \"torch\"")
        self.stream = self._ok(self.rt.cudaStreamCreate())[0]
        self._buffers: dict[str, tuple[int, int]] = {}

    def _ok(self, result: Any) -> tuple[Any, ...]:
        err, *rest = result if isinstance(result, tuple) else (result,)
        if err != self.rt.cudaError_t.cudaSuccess:
            raise BuildError(f"CUDA call failed: {err}")
        return tuple(rest)

    def buffer(self, name: str, nbytes: int) -> int:
        ptr, size = self._buffers.get(name, (0, 0))
        if size < nbytes:
            if ptr:
                self._ok(self.rt.cudaFree(ptr))
            ptr = int(self._ok(self.rt.cudaMalloc(max(nbytes, 1)))[0])
            self._buffers[name] = (ptr, nbytes)
        return ptr

    def upload(self, name: str, arr: np.ndarray) -> int:
        ptr = self.buffer(name, arr.nbytes)
        self._ok(self.rt.cudaMemcpyAsync(ptr, arr.ctypes.data, arr.nbytes,
                                         self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice, self.stream))
        return ptr

    def download(self, name: str, out: np.ndarray) -> None:
        self._ok(self.rt.cudaMemcpyAsync(out.ctypes.data, self._buffers[name][0], out.nbytes,
                                         self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost, self.stream))

    def handle(self) -> int:
        return int(self.stream)

    def synchronize(self) -> None:
        self._ok(self.rt.cudaStreamSynchronize(self.stream))


class _TorchMemory:
    """Device buffers and a stream through torch.cuda (for hosts that already have CUDA torch)."""

    def __init__(self, device_index: int) -> None:
        import torch

        if not torch.cuda.is_available():
            raise BuildError("torch has no CUDA device", hint="set buffers = \"cuda-python\" in the target")
        self.torch = torch
        self.device = torch.device("cuda", device_index)
        self.stream = torch.cuda.Stream(self.device)
        self._buffers: dict[str, Any] = {}

    def buffer(self, name: str, nbytes: int) -> int:
        buf = self._buffers.get(name)
        if buf is None or buf.numel() < nbytes:
            buf = self.torch.empty(max(nbytes, 1), dtype=self.torch.uint8, device=self.device)
            self._buffers[name] = buf
        return int(buf.data_ptr())

    def upload(self, name: str, arr: np.ndarray) -> int:
        ptr = self.buffer(name, arr.nbytes)
        src = self.torch.from_numpy(arr.view(np.uint8).reshape(-1))
        with self.torch.cuda.stream(self.stream):
            self._buffers[name][: arr.nbytes].copy_(src, non_blocking=False)
        return ptr

    def download(self, name: str, out: np.ndarray) -> None:
        with self.torch.cuda.stream(self.stream):
            host = self._buffers[name][: out.nbytes].cpu()
        out.reshape(-1).view(np.uint8)[:] = host.numpy()

    def handle(self) -> int:
        return int(self.stream.cuda_stream)

    def synchronize(self) -> None:
        self.stream.synchronize()


class TensorRTRunner:
    """Deserialized engine + one execution context; inputs copied to the GPU, run on a CUDA stream."""

    def __init__(self, engine_path: Path, options: TensorRTOptions) -> None:
        import tensorrt as trt

        if not engine_path.is_file():
            raise BuildError("no TensorRT engine in the bundle", where=str(engine_path),
                             hint="run build_engine.sh on the device (or `edgekd build` there) to create model.engine")
        self.stamp = check_stamp(engine_path.parent, onnx_sha256=sha256_file(engine_path.parent / SOURCE_COPY),
                                 tensorrt_version=trt.__version__, gpu=gpu_name(options.device_index))
        self.trt = trt
        self.options = options
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        self.engine = self.runtime.deserialize_cuda_engine(engine_path.read_bytes())
        if self.engine is None:
            raise BuildError("TensorRT could not deserialize the engine (other GPU model or TensorRT version?)",
                             where=str(engine_path), hint="rebuild the engine on this device with build_engine.sh")
        self.context = self.engine.create_execution_context()
        self.memory: Any = _TorchMemory(options.device_index) if options.buffers == "torch" else _CudaPythonMemory()
        ins, outs = [], []
        for i in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(i)
            dims = tuple(int(d) if d >= 0 else None for d in self.engine.get_tensor_shape(name))
            spec = IOSpec(name, dims, np.dtype(trt.nptype(self.engine.get_tensor_dtype(name))).name)
            (ins if self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT else outs).append(spec)
        self.inputs, self.outputs = tuple(ins), tuple(outs)

    def _run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        for spec in self.inputs:
            arr = np.ascontiguousarray(feeds[spec.name])
            self.context.set_input_shape(spec.name, arr.shape)
            self.context.set_tensor_address(spec.name, self.memory.upload(spec.name, arr))
        results = []
        for spec in self.outputs:
            out = np.empty(tuple(self.context.get_tensor_shape(spec.name)), dtype=spec.dtype)
            self.context.set_tensor_address(spec.name, self.memory.buffer(spec.name, out.nbytes))
            results.append((spec.name, out))
        if not self.context.execute_async_v3(self.memory.handle()):
            raise BuildError("TensorRT execution failed (execute_async_v3 returned False)")
        for name, out in results:
            self.memory.download(name, out)
        self.memory.synchronize()
        return [out for _, out in results]

    def infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        outs = self._run(check_feeds(self.inputs, feeds))
        return {spec.name: out for spec, out in zip(self.outputs, outs, strict=True)}

    def infer_unchecked(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """Hot-loop variant for the profiler: no validation, positional outputs (includes H2D/D2H copies)."""
        return self._run(feeds)

    def describe(self) -> dict[str, Any]:
        inspector = self.engine.create_engine_inspector()
        layers, summary = parse_layer_info(json.loads(
            inspector.get_engine_information(self.trt.LayerInformationFormat.JSON)))
        return {"runtime": "tensorrt", "version": self.trt.__version__, "gpu": gpu_name(self.options.device_index),
                "engine_stamp": self.stamp.to_dict(),
                "buffers": self.options.buffers, "precision": overall_precision(summary), **summary, "layers": layers}


# ---------------------------------------------------------------- backend


class TensorRTBackend(BackendBase):
    name = "tensorrt"
    options_type = TensorRTOptions
    qdq_flavor = TENSORRT
    sdk_modules = ("tensorrt",)
    artifact_suffixes = (".engine", ".plan")
    artifact_kind = "tensorrt-engine"
    #: written by build_engine.sh (trtexec) on the device; engine.json is the stamp the runner checks
    device_outputs = ("model.engine", "layers.json", STAMP)
    #: the pipeline calls build() without the SDK: it still writes the ONNX, lint report and trtexec script
    builds_without_sdk = True
    #: `edgekd lint` and build() check ONNX files against TensorRT's rules with this (torch- and tensorrt-free)
    linter = staticmethod(lint_tensorrt)

    def numerics(self, target: Any) -> Numerics:
        """Explicit quantization: signed int8 activations with zero point 0 (TensorRT has no uint8 Q/DQ)."""
        return Numerics(symmetric_activations=True)

    def availability(self) -> Availability:
        try:
            import tensorrt as trt
        except ImportError as exc:
            return Availability(False, f"tensorrt is not installed ({exc}); pip install 'edgekd[tensorrt]' "
                                       "on a machine with an NVIDIA GPU")
        if gpu_name() is None:
            return Availability(False, f"tensorrt {trt.__version__} is installed but no CUDA GPU is visible")
        return Availability(True)

    def build(self, source: BuildSource, target: Any, out_dir: Path, *, golden: np.ndarray | None = None) -> BuildResult:
        from edgekd.lint import write_report

        onnx_path = source_path(source)
        options: TensorRTOptions = target.options
        out_dir.mkdir(parents=True, exist_ok=True)
        dest = out_dir / SOURCE_COPY
        onnx_files = copy_onnx(onnx_path, dest)
        report = lint_tensorrt(dest, sparse_weights=options.sparse_weights,
                               require_int8=options.precision == "int8", name=SOURCE_COPY)
        write_report(report, out_dir / "lint.json")
        notes = [f"lint: {report.count('error')} error(s), {report.count('warning')} warning(s) (lint.json)"]
        if not report.ok and options.lint == "error":
            raise BuildError("the ONNX model breaks TensorRT's rules:\n" + report.to_text(), where=str(onnx_path),
                             hint="export the TensorRT variant (symmetric int8 Q/DQ), or set lint = \"warn\" in the target")
        has_qdq = report.stats.get("quantize_linear", 0) + report.stats.get("dequantize_linear", 0) > 0
        plan = self._plan(options, has_qdq)
        inputs = onnx_inputs(dest)
        write_build_script(out_dir / "build_engine.sh", target.name, options, inputs, has_qdq, plan)
        files = [*onnx_files, "lint.json", "build_engine.sh"]
        details: dict[str, Any] = {"plan": plan, "lint": {k: report.stats[k] for k in
                                                          ("opset", "quantized_layers", "weighted_layers")},
                                   "trtexec": "trtexec " + " ".join(trtexec_args(options, inputs, has_qdq))}
        status = self.availability()
        if not status.available:
            expected = "fp16" if builds_fp16(options, has_qdq) else report.stats.get("expected_precision", "fp32")
            notes.append(f"engine not built here ({status.reason}); run build_engine.sh on the device")
            details["precision_source"] = "expected from the ONNX graph (engine not built)"
            return BuildResult(backend=self.name, artifact=SOURCE_COPY, files=files, precision=expected, notes=notes,
                               details=details, runnable=False)
        engine_facts = self._build_engine(dest, out_dir, options, has_qdq)
        layers, summary = engine_facts.pop("layers"), engine_facts.pop("summary")
        (out_dir / "layers.json").write_text(json.dumps(layers, indent=1) + "\n")
        if options.sparse_weights and not summary["sparse_layers"]:
            notes.append("SPARSE_WEIGHTS was on but TensorRT picked no sparse tactic (dense kernels were faster)")
        details.update(engine_facts, **summary, precision_source="engine inspector")
        return BuildResult(backend=self.name, artifact="model.engine",
                           files=[*files, "model.engine", "layers.json", STAMP],
                           precision=overall_precision(summary), notes=notes, details=details)

    @staticmethod
    def _plan(options: TensorRTOptions, has_qdq: bool) -> str:
        if builds_fp16(options, has_qdq):
            auto = " (precision auto on a float model: float_precision = fp16)" if options.precision == "auto" else ""
            return "fp16 weak typing (TensorRT 10.x)" + auto + (" + int8 from Q/DQ" if has_qdq else "")
        if has_qdq:
            return "int8 explicit quantization from Q/DQ, strongly typed"
        return "fp32, strongly typed"

    def _build_engine(self, onnx_path: Path, out_dir: Path, options: TensorRTOptions, has_qdq: bool) -> dict[str, Any]:
        import tensorrt as trt

        major = int(trt.__version__.split(".")[0])
        if options.precision == "fp16" and major >= 11:
            raise BuildError(f"TensorRT {trt.__version__} has no FP16 builder flag (strong typing only)",
                             hint="convert the ONNX with ModelOpt AutoCast to fp16, or set precision = \"auto\"")
        fp16 = builds_fp16(options, has_qdq) and major < 11  # "auto" on TensorRT 11: fp32, strongly typed
        logger = trt.Logger(trt.Logger.WARNING)
        builder = trt.Builder(logger)
        flags = 0
        if not fp16 and major < 11:  # 11.x: always strongly typed, the flag is implied
            flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
        network = builder.create_network(flags)
        parser = trt.OnnxParser(network, logger)
        if not parser.parse_from_file(str(onnx_path)):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise BuildError(f"TensorRT's ONNX parser rejected the model: {errors}", where=str(onnx_path),
                             hint="run `edgekd lint` on the file; see lint.json")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_mb << 20)
        config.builder_optimization_level = options.builder_optimization_level
        config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
        if fp16:
            config.set_flag(trt.BuilderFlag.FP16)
            if has_qdq:
                config.set_flag(trt.BuilderFlag.INT8)
        if options.sparse_weights:
            config.set_flag(trt.BuilderFlag.SPARSE_WEIGHTS)
        profile = None
        for i in range(network.num_inputs):
            tensor = network.get_input(i)
            shape = tuple(tensor.shape)
            if all(d >= 0 for d in shape):
                continue
            if any(d < 0 for d in shape[1:]):
                raise BuildError(f"input {tensor.name!r} has dynamic dimensions other than the batch: {shape}",
                                 hint="export with fixed spatial sizes")
            profile = profile or builder.create_optimization_profile()
            rest = shape[1:]
            profile.set_shape(tensor.name, (options.min_batch, *rest), (options.opt_batch, *rest),
                              (options.max_batch, *rest))
        if profile is not None:
            config.add_optimization_profile(profile)
        gpu = gpu_name(options.device_index) or "unknown-gpu"
        cache_file = timing_cache_path(options.timing_cache_dir, gpu, trt.__version__)
        cache = config.create_timing_cache(cache_file.read_bytes() if cache_file.is_file() else b"")
        config.set_timing_cache(cache, ignore_mismatch=False)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise BuildError("TensorRT could not build the engine", where=str(onnx_path),
                             hint="see TensorRT's log above; a larger workspace_mb may help")
        with open(out_dir / "model.engine", "wb") as fh:
            fh.write(serialized)
        write_stamp(out_dir, tensorrt_version=trt.__version__, gpu=gpu, onnx_sha256=sha256_file(onnx_path),
                    built_by="edgekd")
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        with open(cache_file, "wb") as fh:
            fh.write(config.get_timing_cache().serialize())
        engine = trt.Runtime(logger).deserialize_cuda_engine(bytes(serialized))
        info = json.loads(engine.create_engine_inspector().get_engine_information(trt.LayerInformationFormat.JSON))
        layers, summary = parse_layer_info(info)
        return {"tensorrt": trt.__version__, "gpu": gpu, "timing_cache": str(cache_file), "layers": layers,
                "summary": summary}

    def load(self, target_dir: Path, target: Any, build: BuildResult | None = None) -> TensorRTRunner:
        return TensorRTRunner(target_dir / "model.engine", target.options)
