"""Backend and Runner protocols (after Polygraphy: one loader + one runner per backend).

A backend builds a source (an ONNX file today) into its own artifact inside ``out_dir`` and loads
that artifact back as a Runner. It also *declares* what it needs, and the rest of edgekd asks it
instead of testing its name: numerics (``Numerics``), the Q/DQ dialect of a quantized model
(``QDQFlavor``), the precisions ``precision = "auto"`` may choose from, how to read a per-layer
table, whether it builds without its SDK, whether it needs a quantized model. Backends import their SDK lazily, inside methods, so a
missing SDK shows up as ``availability()`` saying why, never as an import crash.
This module is torch-free: ``edgekd.runtime`` uses it.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

from edgekd.artifact import Artifact, IOSpec
from edgekd.errors import BuildError, ExportError


@dataclass(frozen=True)
class Availability:
    available: bool
    reason: str = ""

    def __str__(self) -> str:
        return "available" if self.available else f"unavailable: {self.reason}"


@dataclass(frozen=True)
class Numerics:
    """The quantization numerics a backend needs for one target: the quantize pass follows them and targets with
    different numerics get their own quantized model (``edgekd.pipeline.target_groups``)."""

    symmetric_activations: bool = False  # signed int8 activations with zero point 0 (TensorRT)
    power_of_two_scales: bool = False  # every scale 2^k: requantization is a shift (FPGA)
    weight_bits: tuple[int, ...] = (2, 3, 4, 5, 6, 7, 8)  # integer weight widths the runtime executes
    act_bits: tuple[int, ...] = (8,)

    def key(self) -> tuple[bool, bool]:
        """What makes two targets unable to share one quantized model; (False, False) sorts first."""
        return self.symmetric_activations, self.power_of_two_scales

    def check(self, weight_bits: int, act_bits: int) -> str | None:
        """Why ``weight_bits``/``act_bits`` cannot run here, or None when they can."""
        if weight_bits not in self.weight_bits:
            return f"int{weight_bits} weights are not supported (supported: {', '.join(map(str, self.weight_bits))})"
        if act_bits not in self.act_bits:
            return f"int{act_bits} activations are not supported (supported: {', '.join(map(str, self.act_bits))})"
        return None


ActivationStorage = Literal["uint8", "int8", "native"]


@dataclass(frozen=True)
class QDQFlavor:
    """How one runtime wants its Q/DQ ONNX written (the quantized exporter's dialect).

    ``activations``: ``uint8`` stores every activation quantizer as uint8 (a signed one shifted by 128, the same
    values: the fast x86 path of ONNX Runtime and OpenVINO); ``int8`` accepts only signed quantizers with zero
    point 0 (TensorRT); ``native`` stores signed as int8 and unsigned as uint8. ``rewrites`` name graph rewrites of
    ``edgekd.quant.onnx_export.REWRITES`` run after export; ``postprocess`` is a plugin's own one
    (``onnx.ModelProto -> None``, run last). Derive a new flavor from a known one with ``derive``.
    """

    name: str
    runtime: str  # who needs it, for messages: "TensorRT"
    activations: ActivationStorage = "uint8"
    zero_point_zero: bool = False  # every zero point, weights and activations, must be 0
    power_of_two_scales: bool = False
    rewrites: tuple[str, ...] = ()
    postprocess: Callable[[Any], None] | None = field(default=None, compare=False)
    hint: str = ""  # how to quantize so the model fits this flavor

    def __post_init__(self) -> None:
        if not self.name or not all(c.isalnum() or c in "-_" for c in self.name):
            raise ValueError(f"flavor name {self.name!r} must be letters, digits, '-' or '_' (it names a file)")
        if self.activations not in ("uint8", "int8", "native"):
            raise ValueError(f"flavor {self.name}: activations must be uint8, int8 or native, got {self.activations!r}")

    def __str__(self) -> str:
        return self.name

    def derive(self, name: str, **changes: Any) -> QDQFlavor:
        """A new flavor with this one's rules except ``changes`` (e.g. ``activations="int8"``)."""
        return dataclasses.replace(self, name=name, **changes)

    def activation_storage(self, signed: bool, zero_point: int, scale: float, where: str) -> tuple[str, int, int, int]:
        """(zero-point dtype name, zero point, qmin, qmax) that store an 8-bit activation quantizer in this flavor."""
        if self.activations == "int8" and (not signed or zero_point != 0):
            raise ExportError(f"{self.runtime} needs symmetric int8 activations (zero point 0) but this quantizer is "
                              f"{'unsigned' if not signed else 'asymmetric'}", where=where, hint=self.hint or None)
        if (self.zero_point_zero and zero_point != 0) or (self.power_of_two_scales and not is_power_of_two(scale)):
            raise ExportError(f"the {self.name} flavor needs {self._needs()} (scale {scale:.6g}, zero point {zero_point})",
                              where=where, hint=self.hint or None)
        if self.activations == "uint8":
            return ("uint8", zero_point + 128, 0, 255) if signed else ("uint8", zero_point, 0, 255)
        return ("int8", zero_point, -128, 127) if signed else ("uint8", zero_point, 0, 255)

    def check_weights(self, scale: np.ndarray, zero_point: np.ndarray, where: str) -> None:
        """Weight quantizers must follow the same zero-point and scale rules as activations."""
        if self.power_of_two_scales and not is_power_of_two(scale):
            raise ExportError(f"the {self.name} flavor needs power-of-two weight scales", where=where,
                              hint=self.hint or None)
        if (self.zero_point_zero or self.activations == "int8") and bool(np.any(zero_point != 0)):
            raise ExportError("symmetric weights (zero point 0) are required", where=where, hint=self.hint or None)

    def _needs(self) -> str:
        needs = ["power-of-two scales"] if self.power_of_two_scales else []
        return " and ".join([*needs, "zero point 0"] if self.zero_point_zero else needs)


def is_power_of_two(values: np.ndarray | float) -> bool:
    arr = np.atleast_1d(np.asarray(values, dtype=np.float64))
    exps = np.round(np.log2(np.where(arr > 0, arr, 1.0)))
    return bool(np.all(arr > 0) and np.allclose(arr, 2.0**exps, rtol=1e-6, atol=0))


@dataclass(frozen=True)
class Estimate:
    """A figure a backend computed instead of measuring (an FPGA's cycles x clock). Serialized as the
    ``estimates`` section of a build's details: ``label``, ``total.latency_us``, ``total.throughput_per_s``,
    ``fits``, and whatever else the backend adds (``facts``: per-layer ``layers``, ``clock_period_ns``, ...)."""

    label: str
    latency_us: float
    throughput_per_s: float | None = None
    fits: bool | None = None  # the design fits the device (None: not checked)
    facts: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Estimate:
        total = data.get("total") or {}
        return cls(str(data.get("label", "estimate")), float(total.get("latency_us", 0.0)),
                   total.get("throughput_per_s"), data.get("fits"), dict(data))

    def to_dict(self) -> dict[str, Any]:
        total = {**(self.facts.get("total") or {}), "latency_us": self.latency_us, "throughput_per_s": self.throughput_per_s}
        return {**self.facts, "label": self.label, "total": total, "fits": self.fits}


@dataclass(frozen=True)
class Agreement:
    """A backend's own build-time comparison of its artifact with a reference run on the golden inputs
    (HLS: the C simulation against ONNX Runtime). Serialized as the ``agreement`` section of the details."""

    ok: bool
    samples: int
    reference: str = ""
    facts: Mapping[str, Any] = field(default_factory=dict)  # the backend's own measures (max_lsb, top1_agree, ...)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Agreement:
        return cls(bool(data.get("ok")), int(data.get("samples", 0)), str(data.get("reference", "")), dict(data))

    def to_dict(self) -> dict[str, Any]:
        return {**self.facts, "ok": self.ok, "samples": self.samples, "reference": self.reference}


_TYPED_DETAILS = {"estimates", "agreement"}


@dataclass
class BuildResult:
    """What a backend produced for one target. Paths are relative to the target folder.

    ``estimate``/``agreement`` are the typed facts the pipeline and the profiler read; ``details`` holds the
    backend's own extra facts for people (optimized ops, lint stats), read by no other module. ``to_dict`` keeps
    the layout bundles have always had (estimates and agreement inside ``details``); ``from_dict`` reads it back.
    """

    backend: str
    artifact: str  # main file, e.g. "model.onnx", "model.xml", "model.engine"
    files: list[str] = field(default_factory=list)
    precision: str = "fp32"  # what the backend will execute: fp32, bf16, fp16, int8, mixed
    notes: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    runnable: bool = True  # False when the artifact cannot execute on this machine (e.g. TensorRT without GPU)
    estimate: Estimate | None = None  # set when latency is computed, not measured (then it is the latency reported)
    agreement: Agreement | None = None  # the backend's own build-time check against a reference, when it runs one

    def to_dict(self) -> dict[str, Any]:
        details = dict(self.details)
        if self.estimate is not None:
            details["estimates"] = self.estimate.to_dict()
        if self.agreement is not None:
            details["agreement"] = self.agreement.to_dict()
        return {
            "backend": self.backend,
            "artifact": self.artifact,
            "files": list(self.files),
            "precision": self.precision,
            "runnable": self.runnable,
            "notes": list(self.notes),
            "details": details,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BuildResult:
        """Read a ``to_dict()`` back, also from bundles written by older versions (unknown keys ignored)."""
        details = dict(data.get("details") or {})
        estimate, agreement = details.get("estimates"), details.get("agreement")
        return cls(backend=str(data["backend"]), artifact=str(data["artifact"]), files=list(data.get("files") or []),
                   precision=str(data.get("precision", "fp32")), notes=list(data.get("notes") or []),
                   details={k: v for k, v in details.items() if k not in _TYPED_DETAILS},
                   runnable=bool(data.get("runnable", True)),
                   estimate=Estimate.from_dict(estimate) if isinstance(estimate, Mapping) else None,
                   agreement=Agreement.from_dict(agreement) if isinstance(agreement, Mapping) else None)


@runtime_checkable
class Runner(Protocol):
    inputs: tuple[IOSpec, ...]
    outputs: tuple[IOSpec, ...]

    def infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run once; feeds and results are keyed by I/O name."""
        ...

    def describe(self) -> dict[str, Any]:
        """What actually runs: provider/device, precision, per-layer facts if known."""
        ...


@dataclass(frozen=True)
class BoundCall:
    """A runner's lowest-overhead call: inputs (and outputs, where the runtime allows) bound once, so each ``run()``
    is only the runtime's own infer call -- ONNX Runtime's ``run_with_iobinding`` on pre-allocated OrtValues, an
    OpenVINO InferRequest with its input tensors set once. Runners offer it as ``bound_call(feeds)`` (optional: a
    runner without one is timed on its plain call). ``keep`` holds the bound arrays alive as long as the call."""

    run: Callable[[], Any]  # the timed call: no arguments, no conversion of inputs or outputs
    outputs: Callable[[], list[np.ndarray]]  # the last run's outputs, positional (read outside the timed region)
    path: str  # what is bound, in words (reported as call_path_detail)
    runtime_latency_s: Callable[[], float] | None = None  # the runtime's own timing of the last run, when it keeps one
    keep: tuple[Any, ...] = ()


#: what ``build`` receives: a file (an ONNX model today) or an ``edgekd.artifact.Artifact``. A backend that consumes
#: another program form (a torch module, ExecuTorch-style) takes the Artifact and reads ``kind``/``payload``;
#: ``source_path`` gives file-based backends their path either way.
BuildSource = Path | str | Artifact


def source_path(source: BuildSource) -> Path:
    """The file behind a build source (an Artifact's ``path``); a clear error for an in-memory one."""
    if isinstance(source, (str, Path)):
        return Path(source)
    if not isinstance(source.payload, Path):
        raise BuildError(f"this backend builds from a file, got an in-memory {source.kind!r} artifact",
                         hint="export the model first (the pipeline passes the exported ONNX file)")
    return source.payload


class Backend(Protocol):
    """What every backend is. ``BackendBase`` gives the defaults of every declaration; subclass it."""

    name: str
    options_type: type
    qdq_flavor: QDQFlavor  # how this backend wants a quantized model's Q/DQ written
    builds_without_sdk: bool  # build() still writes a useful artifact when availability() is False
    requires_quantized: bool  # integer-only: a recipe without a quantize pass is refused up front
    latency: Literal["measured", "estimate"]  # estimate: a host run says nothing; BuildResult.estimate does
    artifact_suffixes: tuple[str, ...]  # files `edgekd profile` loads as given on this backend (".xml")
    artifact_kind: str  # what a file with one of those suffixes is, in profile documents ("openvino-ir")
    sdk_modules: tuple[str, ...]  # Python modules whose versions a report records ("openvino")
    artifact_may_be_shared: bool  # the artifact is a byte copy of its source ONNX, loaded by path (see BackendBase)

    def availability(self) -> Availability: ...

    def numerics(self, target: Any) -> Numerics: ...

    def auto_precisions(self, target: Any) -> tuple[str, ...]:
        """Precisions ``precision = "auto"`` profiles on this machine; () when the backend does not offer it."""
        ...

    def layer_table(self, model_file: Path, feeds: dict[str, np.ndarray], target: Any, runs: int,
                    build: BuildResult | None) -> dict[str, Any] | None:
        """The per-layer profile (``source``, ``runs``, ``rows``, ``precision_mix``), or None when unknown."""
        ...

    def build(self, source: BuildSource, target: Any, out_dir: Path, *, golden: np.ndarray | None = None) -> BuildResult:
        """Build ``source`` for ``target`` into ``out_dir``; ``golden``: the bundle's golden inputs (batch first)
        for a backend that checks its artifact at build time."""
        ...

    def load(self, target_dir: Path, target: Any, build: BuildResult | None = None) -> Runner: ...

    def check_artifact(self, path: Path) -> None:
        """Raise a clear ConfigError when ``path`` (one of ``artifact_suffixes``) is not a loadable artifact."""

    def preflight(self, float_onnx: Path, target: Any) -> list[str]:
        """Problems this target will have with the model, found on its *float* ONNX export before any training
        (an op the backend cannot build, a layer shape it refuses); [] = none known. The quantize pass's Q/DQ and
        folded BatchNorm/Dropout are not in that graph yet, so judge only what quantization does not change."""
        return []
        ...


class BackendBase:
    """The defaults of every declaration in ``Backend``: built-in backends and plugins subclass this and
    override what differs (see docs/plugins.md)."""

    name: str = ""
    options_type: type = object
    builds_without_sdk: bool = False
    requires_quantized: bool = False
    latency: Literal["measured", "estimate"] = "measured"
    artifact_suffixes: tuple[str, ...] = ()
    artifact_kind: str = "artifact"
    sdk_modules: tuple[str, ...] = ()
    #: files a documented device step adds to the target's folder after the bundle is written (TensorRT's
    #: build_engine.sh: the engine and its layer table): declared in the manifest, so integrity checks accept them
    #: unlisted; the backend verifies them by its own rule when it loads them (TensorRT refuses an engine built by
    #: another TensorRT version or for another GPU)
    device_outputs: tuple[str, ...] = ()
    #: the artifact is a copy of the ONNX file it was built from, and ``load`` opens it by path (ONNX Runtime): a
    #: bundle stores that file once and the manifest says where (``stored_as``); a backend whose folder must hold
    #: the file itself (TensorRT's build_engine.sh reads model.onnx beside it) keeps the default False
    artifact_may_be_shared: bool = False

    @property
    def qdq_flavor(self) -> QDQFlavor:
        from edgekd.backends.flavors import REFERENCE_FLAVOR

        return REFERENCE_FLAVOR

    def numerics(self, target: Any) -> Numerics:
        return Numerics()

    def auto_precisions(self, target: Any) -> tuple[str, ...]:
        return ()

    def layer_table(self, model_file: Path, feeds: dict[str, np.ndarray], target: Any, runs: int,
                    build: BuildResult | None) -> dict[str, Any] | None:
        return None

    def check_artifact(self, path: Path) -> None:
        """Raise a clear ConfigError when ``path`` (one of ``artifact_suffixes``) is not a loadable artifact."""

    def preflight(self, float_onnx: Path, target: Any) -> list[str]:
        """Problems this target will have with the model, found on its *float* ONNX export before any training
        (an op the backend cannot build, a layer shape it refuses); [] = none known. The quantize pass's Q/DQ and
        folded BatchNorm/Dropout are not in that graph yet, so judge only what quantization does not change."""
        return []


# ---------------------------------------------------------------- asking a backend (defaults of BackendBase for
# a plugin that does not subclass it)


def numerics_of(backend: Any, target: Any) -> Numerics:
    fn = getattr(backend, "numerics", None)
    numerics = fn(target) if callable(fn) else Numerics()
    if not isinstance(numerics, Numerics):
        raise TypeError(f"backend {backend.name!r}: numerics(target) must return edgekd.backends.base.Numerics")
    return numerics


def auto_precisions_of(backend: Any, target: Any) -> tuple[str, ...]:
    fn = getattr(backend, "auto_precisions", None)
    return tuple(fn(target)) if callable(fn) else ()


def layer_table_of(backend: Any, model_file: Path, feeds: dict[str, np.ndarray], target: Any, runs: int,
                   build: BuildResult | None) -> dict[str, Any] | None:
    fn = getattr(backend, "layer_table", None)
    return fn(model_file, feeds, target, runs, build) if callable(fn) else None


@dataclass
class ConcurrentCalls:
    """Several queries in flight on one loaded model (a runner's ``concurrent_calls(feeds, requests)``; optional):
    ``submit(on_done)`` starts one query on ``feeds`` and returns at once (or when a request frees up, once
    ``requests`` are in flight); ``on_done()`` runs when that query finished, on a runtime or pool thread;
    ``wait()`` blocks until every submitted query is done; ``close()`` frees the requests. What OpenVINO's
    AsyncInferQueue and an ONNX Runtime session run from a thread pool (its ``run`` is thread-safe) both are."""

    submit: Callable[[Callable[[], None]], None]
    wait: Callable[[], None]
    close: Callable[[], None]
    requests: int
    path: str  # in words, for the report


def concurrent_calls_of(runner: Any, feeds: Mapping[str, np.ndarray], requests: int) -> ConcurrentCalls | None:
    """The runner's ``ConcurrentCalls`` with ``requests`` in flight, or None for a runner that offers none."""
    fn = getattr(runner, "concurrent_calls", None)
    if not callable(fn):
        inner = getattr(runner, "runner", None)  # edgekd.runtime.BundleRunner wraps the backend's runner
        fn = getattr(inner, "concurrent_calls", None)
        if not callable(fn):
            return None
    return fn(feeds, requests)


def bound_call_of(runner: Any, feeds: Mapping[str, np.ndarray]) -> BoundCall | None:
    """The runner's bound call on ``feeds`` (``BoundCall``), or None for a runner that offers none (a wrapper such as
    ``edgekd.runtime.BundleRunner`` answers None when the runner it wraps has none)."""
    fn = getattr(runner, "bound_call", None)
    if not callable(fn):
        return None
    bound = fn(feeds)
    if bound is not None and not isinstance(bound, BoundCall):
        raise TypeError(f"{type(runner).__name__}.bound_call(feeds) must return edgekd.backends.base.BoundCall")
    return bound


def latency_of(backend: Any) -> str:
    """"measured" (time the runner) or "estimate" (the build's Estimate is the latency; a host run says nothing)."""
    return str(getattr(backend, "latency", "measured"))


def backend_for_file(backends: Any, path: Path) -> str | None:
    """The backend that loads ``path`` as given (by its suffix, from ``artifact_suffixes``), or None."""
    suffix = path.suffix.lower()
    for name in backends.names():
        if suffix in tuple(getattr(backends.get(name), "artifact_suffixes", ())):
            return name
    return None


def call_build(backend: Any, source: BuildSource, target: Any, out_dir: Path, golden: np.ndarray | None) -> BuildResult:
    """``backend.build`` with the golden inputs, also for a plugin whose build() predates the ``golden`` argument."""
    import inspect

    params = inspect.signature(backend.build).parameters
    if "golden" in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return backend.build(source, target, out_dir, golden=golden)
    return backend.build(source, target, out_dir)


def sdk_versions(backends: Any) -> dict[str, str]:
    """Versions of the SDK modules registered backends declare (``sdk_modules``) that import here."""
    import importlib
    import sys

    versions: dict[str, str] = {}
    for name in backends.names():
        if backends.unavailable_reason(name) is not None:
            continue  # a plugin that failed to load has no SDK to report (and must not stop the run)
        for module_name in getattr(backends.get(name), "sdk_modules", ()):
            module = sys.modules.get(module_name)
            if module is None:
                try:
                    module = importlib.import_module(module_name)
                except ImportError:
                    continue
            versions[module_name] = str(getattr(module, "__version__", "?"))
    return versions


def layer_table(rows: list[Any], source: str, runs: int) -> dict[str, Any]:
    """The per-layer table a backend's ``layer_table`` returns, from ``edgekd.profiler.layers.LayerRow`` rows."""
    from edgekd.profiler.layers import precision_mix

    return {"source": source, "runs": runs, "rows": [r.to_dict() for r in rows], "precision_mix": precision_mix(rows)}


def dtype_hint(given: np.dtype, wanted: str, preprocessing: Mapping[str, Any] | None = None) -> str:
    """How to convert an input of the wrong dtype; for integer images, the bundle's preprocessing spelled out."""
    if not (np.issubdtype(given, np.integer) and wanted.startswith("float")):
        return f"convert with x.astype(np.{wanted})"
    pre = preprocessing or {}
    steps = f"x.astype(np.{wanted})"
    if pre.get("scale") not in (None, 1, 1.0):
        steps += f" * {pre['scale']:.8g}"
    if pre.get("mean") is not None:
        steps = f"({steps} - mean) / std with mean={pre['mean']}, std={pre.get('std')}"
    # uint8 images: a bare astype keeps 0..255 where the model was trained on scaled values
    where = "" if preprocessing else " (manifest.json 'preprocessing' says which)"
    return f"apply the model's preprocessing{where}: {steps}; a bare astype keeps a range the model never saw"


def check_feeds(inputs: tuple[IOSpec, ...], feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Validate feed names, shapes and dtypes against the model's inputs; clear errors."""
    names = [spec.name for spec in inputs]
    unknown = [k for k in feeds if k not in names]
    missing = [n for n in names if n not in feeds]
    if unknown or missing:
        raise BuildError(
            f"feeds do not match the model inputs {names}: missing {missing}, unexpected {unknown}",
            hint="pass a dict keyed by the input names listed in manifest.json",
        )
    out = {}
    for spec in inputs:
        arr = np.asarray(feeds[spec.name])
        if str(arr.dtype) != spec.dtype:
            raise BuildError(
                f"input {spec.name!r} has dtype {arr.dtype}, the model expects {spec.dtype}",
                hint=dtype_hint(arr.dtype, spec.dtype),
            )
        if not spec.matches(tuple(arr.shape)):
            raise BuildError(
                f"input {spec.name!r} has shape {tuple(arr.shape)}, the model expects {tuple(spec.shape)}",
                hint="dynamic dimensions are shown as a name or None",
            )
        out[spec.name] = arr
    return out


def copy_onnx(source: Path, dest: Path) -> list[str]:
    """Copy an ONNX model into a target folder, external-data files included.

    Files from other tools often keep weights in a sidecar (``model.onnx.data``, torch's dynamo exporter does
    by default). The copy is made self-contained when it fits in one protobuf (< 2 GB); otherwise the weights go
    to ``<dest>.data`` beside it. Returns the file names written, relative to ``dest.parent``.
    """
    import onnx
    from onnx.external_data_helper import uses_external_data

    model = onnx.load(str(source), load_external_data=False)
    if not any(uses_external_data(t) for t in model.graph.initializer):
        shutil.copyfile(source, dest)
        return [dest.name]
    try:
        model = onnx.load(str(source))  # resolves the sidecar relative to the source file
    except Exception as exc:  # onnx raises plain exceptions for missing/short sidecars
        raise BuildError(f"cannot read the ONNX model's external data: {exc}", where=str(source),
                         hint="keep the .data file next to the .onnx file it belongs to") from exc
    if model.ByteSize() < 2**31 - 2**20:
        onnx.save(model, str(dest), save_as_external_data=False)
        return [dest.name]
    onnx.save(model, str(dest), save_as_external_data=True, location=dest.name + ".data")
    return [dest.name, dest.name + ".data"]
