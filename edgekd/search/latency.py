"""The search's cost model: measured latency on a target in the deployed precision, and the per-target table.

**Deployed precision.** ``int8`` is the QDQ ONNX edgekd ships for the target's backend: the float export, ONNX
Runtime's static PTQ with the numerics the backend declares (``onnx_qdq.ort_ptq``) and the backend's Q/DQ flavor
(``onnx_qdq.flavor_variant``), the same two functions the ONNX-source path runs. ``fp32`` is the plain export.
Either file is built through the target's backend (``call_build``) and timed by the profiler's single-stream loop
(``profiler.measure.measure_latency``): one judge for every latency in edgekd.

**The table** (``LatencyTable``) holds fused blocks keyed by a signature (``BlockKey``: conv / depthwise / linear,
channels, kernel, stride, padding, groups, input H x W, the BatchNorm and activation that follow it), each measured
as a small standalone model in the deployed precision: the median over interleaved short rounds
(``BlockSettings``). A model's prediction is the sum over its Conv/Linear layers (found with forward hooks) mapped
by the calibration ``a * sum + b`` fitted against whole-model p90s (``calibrate``). Missing entries are measured
when a prediction asks for them and persisted. The cache is one JSON file per target, precision, runtime version
and host (``cache_path``), written atomically.

FPGA targets estimate their latency at build time (``Backend.latency == "estimate"``): the table refuses them (the
search uses the HLS/RTL cycle estimate there).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import json
import math
import os
import random
import re
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edgekd.backends import BACKENDS
from edgekd.backends.base import call_build, latency_of, numerics_of
from edgekd.config import ExportSettings, Target, load_target
from edgekd.errors import BackendUnavailable, ConfigError, ExportError
from edgekd.profiler import stats
from edgekd.profiler.measure import MeasureSettings, make_feeds, measure_latency
from edgekd.progress import log

PRECISIONS = ("int8", "fp32")
SCHEMA = "edgekd.latency-table/1"
#: activations a block fuses after its Conv/Linear (and BatchNorm); any other module ends the block
ACTIVATIONS: dict[type, str] = {nn.ReLU: "relu", nn.ReLU6: "relu6", nn.SiLU: "silu", nn.Hardswish: "hardswish",
                                nn.GELU: "gelu", nn.Sigmoid: "sigmoid", nn.Hardsigmoid: "hardsigmoid",
                                nn.LeakyReLU: "leakyrelu", nn.Tanh: "tanh"}
_PASS_THROUGH = (nn.Identity, nn.Dropout)


# ---------------------------------------------------------------- targets and precisions


def resolve_target(target: Target | str) -> Target:
    """The target, checked: its backend measures latency (not an estimate) and runs here."""
    tgt = target if isinstance(target, Target) else load_target(target)
    backend = BACKENDS.get(tgt.backend, where=f"target {tgt.name}")
    if latency_of(backend) != "measured":
        raise ConfigError(f"target {tgt.name} ({tgt.backend}) estimates its latency at build time; it is not "
                          "supported by the latency table", where=f"--target {tgt.name}",
                          hint="use cycles from the HLS/RTL estimate (BuildResult.estimate) as the FPGA budget")
    available = backend.availability()
    if not available.available:
        raise BackendUnavailable(f"target {tgt.name}'s backend {tgt.backend} cannot run here: {available.reason}",
                                 where=f"--target {tgt.name}",
                                 hint="build the table on the device itself (edgekd lut build --target ...)")
    return tgt


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r}; the latency table measures {' or '.join(PRECISIONS)}",
                          where="--precision", hint="int8: the QDQ file edgekd ships for the target; fp32: the "
                          "plain export")
    return precision


def _timing_target(target: Target) -> Target:
    """The target as measured: a compiled-model cache only shortens compile time, and hundreds of block models
    would fill it, so it is off while measuring (the inference is the same)."""
    options = target.options
    if dataclasses.is_dataclass(options) and getattr(options, "cache_dir", None):
        return dataclasses.replace(target, options=dataclasses.replace(options, cache_dir=None))
    return target


def runtime_version(target: Target) -> str:
    """The versions of the SDK modules the target's backend declares (``sdk_modules``), e.g. onnxruntime-1.32.0."""
    import importlib

    backend = BACKENDS.get(target.backend)
    parts = []
    for name in getattr(backend, "sdk_modules", ()) or (target.backend,):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        parts.append(f"{name}-{getattr(module, '__version__', '?')}")
    return "+".join(parts) or target.backend


def host_fingerprint(target: Target) -> dict[str, Any]:
    """What makes a table from another machine or other target options wrong: CPU model, ISA flags, usable CPUs,
    the target's options (threads, streams, ...)."""
    from edgekd.profiler.env import cpu_info

    cpu = cpu_info()
    options = dataclasses.asdict(target.options) if dataclasses.is_dataclass(target.options) else {}
    options.pop("cache_dir", None)
    facts = {"cpu_model": cpu.get("model"), "flags": cpu.get("flags"), "cpus": cpu.get("affinity_cpus")
             or cpu.get("logical_cpus"), "options": options, "batch": target.profiling.batch_size,
             "call_path": "bound"}  # tables timed on the plain call (before the bound one) are other numbers
    digest = hashlib.sha256(json.dumps(facts, sort_keys=True, default=str).encode()).hexdigest()[:10]
    return {**facts, "hash": digest}


# ---------------------------------------------------------------- one model, deployed and timed


@dataclass
class Measured:
    """A whole-model measurement on the target, in the deployed precision."""

    p50_ms: float
    p90_ms: float
    p90_ci_ms: tuple[float, float]
    iterations: int
    precision: str  # asked for: int8 / fp32
    build_precision: str = ""  # what the backend says runs (int8, mixed, fp32, ...)
    onnx: str | None = None  # the deployed file, when a workdir keeps it

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "p90_ci_ms": list(self.p90_ci_ms)}


def float_layer_patterns(layers: Sequence[str]) -> tuple[str, ...]:
    """ONNX node-name patterns of the PyTorch layers ``layers``: the TorchScript exporter names a layer's nodes
    by its module path, ``features.0`` -> ``/features/features.0/Conv``."""
    return tuple(f"*/{name}/*" for name in layers)


def deployed_onnx(model: nn.Module, example: torch.Tensor, target: Target, precision: str, workdir: Path, *,
                  float_layers: Sequence[str] = ()) -> Path:
    """The ONNX file the target would get: the float export (fp32), or its ORT static PTQ with the backend's
    numerics and Q/DQ flavor (int8), ``float_layers`` (module names) left in float as the quantize pass's
    ``exclude`` leaves them."""
    import onnx

    from edgekd.artifact import IOSpec
    from edgekd.backends.flavors import REFERENCE_FLAVOR, flavor_of
    from edgekd.export import finalize_onnx, torch_export
    from edgekd.onnx_qdq import flavor_variant, ort_ptq

    workdir.mkdir(parents=True, exist_ok=True)
    float_path = workdir / "float.onnx"
    model = model.eval()
    try:
        with torch.no_grad():
            torch_export(model, float_path, example, ExportSettings(dynamic_batch=False), REFERENCE_FLAVOR)
    except Exception as exc:  # torch.onnx raises many types
        raise ExportError(f"cannot export the model to ONNX for timing: {type(exc).__name__}: {exc}",
                          where="latency table") from None
    if precision == "int8":
        from edgekd.quant.onnx_export import _remove_identities

        # the TorchScript exporter routes shared biases through Identity nodes; ORT's QDQ Conv fusion then
        # finds no constant bias and keeps the Conv in float (measured: 16 of resnet18's 20 convs)
        proto = onnx.load(str(float_path))
        _remove_identities(proto)
        onnx.save(proto, str(float_path))
    inputs, _ = finalize_onnx(float_path)
    if precision == "fp32":
        return float_path
    backend = BACKENDS.get(target.backend)
    rng = np.random.default_rng(0)
    # the calibration values set the scales, which do not change the kernels' speed: a few seeded samples
    calib = rng.standard_normal((8, *example.shape[1:])).astype(np.float32)
    spec = IOSpec(inputs[0].name, tuple(example.shape), "float32")
    qdq = workdir / "qdq.onnx"
    settings = dataclasses.replace(_ptq_settings(), exclude=float_layer_patterns(float_layers))
    info = ort_ptq(float_path, qdq, calib, spec, settings, numerics_of(backend, target), where="latency table")
    missing = [n for n in float_layers if not any(fnmatch.fnmatchcase(e, f"*/{n}/*") for e in info["excluded"])]
    if missing:
        raise ExportError(f"layers {missing} have no node in the exported ONNX graph, so they cannot be kept in float "
                          "for timing", where="latency table", hint="name Conv/Linear modules (model.named_modules())")
    variant, _ = flavor_variant(onnx.load(str(qdq)), flavor_of(backend))
    out = workdir / f"model.{flavor_of(backend).name}.onnx"
    onnx.save(variant, str(out))
    return out


def _ptq_settings() -> Any:
    """The quantize pass's settings ``ort_ptq`` reads: per-channel weights, min-max on the few samples."""
    from edgekd.passes.quantize import QuantizeConfig

    return QuantizeConfig(calibration="minmax", calibration_samples=8, calibration_batch=1, bias_correction=False,
                          sensitivity="off")


def _build(onnx_path: Path, target: Target, out_dir: Path) -> tuple[Any, Any]:
    """(runner, BuildResult) of ``onnx_path`` built by the target's backend."""
    backend = BACKENDS.get(target.backend)
    tgt = _timing_target(target)
    build = call_build(backend, onnx_path, tgt, out_dir, None)
    return backend.load(out_dir, tgt, build), build


def _feeds(runner: Any, example: torch.Tensor) -> dict[str, np.ndarray]:
    sample = example.detach().cpu().float().numpy()
    return make_feeds(runner.inputs, batch=int(sample.shape[0]), sample=sample)


@dataclass
class Deployed:
    """One model built for a target in the deployed precision, ready to time (``measure``)."""

    runner: Any
    build: Any  # BuildResult
    feeds: dict[str, np.ndarray]
    onnx: Path
    precision: str

    def times_ms(self, settings: MeasureSettings, description: str = "timing") -> np.ndarray:
        """One single-stream run (``measure_latency``): every query's time in ms."""
        return measure_latency(self.runner, self.feeds, settings=settings, description=description).times_ms

    def measured(self, ms: np.ndarray) -> Measured:
        """The summary of pooled query times (p50, p90 and its bootstrap CI)."""
        ms = np.asarray(ms, dtype=np.float64)
        if ms.size >= 2:
            ci = stats.bootstrap_ci(ms, 90, n_boot=500)
            low, high = ci.low, ci.high
        else:
            low = high = float(ms[0])
        return Measured(float(np.median(ms)), float(np.percentile(ms, 90)), (low, high), int(ms.size),
                        self.precision, self.build.precision, str(self.onnx))


def deploy(model: nn.Module, example: torch.Tensor, target: Target | str, precision: str, workdir: Path, *,
           float_layers: Sequence[str] = ()) -> Deployed:
    """Export ``model`` in the deployed ``precision`` into ``workdir`` and build it with the target's backend."""
    tgt = resolve_target(target)
    check_precision(precision)
    path = deployed_onnx(model, example, tgt, precision, Path(workdir), float_layers=float_layers)
    runner, build = _build(path, tgt, Path(workdir) / "built")
    return Deployed(runner, build, _feeds(runner, example), path, precision)


def measure_model(model: nn.Module, example: torch.Tensor, target: Target | str, *, precision: str = "int8",
                  settings: MeasureSettings | None = None, workdir: Path | None = None) -> Measured:
    """Export ``model`` in the deployed ``precision``, build it for ``target`` and time it (single-stream,
    the target's ``[profiling]`` warm-up and iterations unless ``settings``). ``workdir`` keeps the files
    (``Measured.onnx`` names the deployed file then)."""
    tgt = resolve_target(target)
    check_precision(precision)
    cfg = settings or MeasureSettings(warmup=tgt.profiling.warmup, iterations=tgt.profiling.iterations,
                                      duration_s=tgt.profiling.duration_s)
    with tempfile.TemporaryDirectory(prefix="edgekd-lat-") as scratch:
        deployed = deploy(model, example, tgt, precision, Path(workdir) if workdir is not None else Path(scratch))
        result = deployed.measured(deployed.times_ms(cfg, f"timing on {tgt.name}"))
        del deployed
    if workdir is None:
        result.onnx = None
    return result


def measure_forms(model: nn.Module, example: torch.Tensor, target: Target | str,
                  forms: dict[str, Sequence[str]], *, rounds: int = 5, settings: MeasureSettings | None = None,
                  seed: int = 0) -> dict[str, Measured]:
    """Time several deployed INT8 forms of one model side by side: ``forms`` maps a label to the layers that form
    keeps in float (``()`` = all INT8). Every form is built first, then timed in ``rounds`` shuffled rounds of
    the target's iterations split evenly, so a slow spell of a shared host hits every form alike; each form's
    queries are pooled."""
    tgt = resolve_target(target)
    cfg = settings or MeasureSettings(warmup=tgt.profiling.warmup, iterations=tgt.profiling.iterations,
                                      duration_s=tgt.profiling.duration_s)
    per_round = dataclasses.replace(cfg, iterations=max(cfg.iterations // rounds, 16), duration_s=cfg.duration_s / rounds)
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory(prefix="edgekd-forms-") as scratch:
        built = {label: deploy(model, example, tgt, "int8", Path(scratch) / f"f{i}", float_layers=layers)
                 for i, (label, layers) in enumerate(forms.items())}
        times: dict[str, list[np.ndarray]] = {label: [] for label in forms}
        for r in range(rounds):
            order = list(forms)
            rng.shuffle(order)
            for label in order:
                times[label].append(built[label].times_ms(per_round, f"timing {label} on {tgt.name}, round {r + 1}"))
        result = {label: built[label].measured(np.concatenate(times[label])) for label in forms}
        for m in result.values():
            m.onnx = None
        del built
    return result


# ---------------------------------------------------------------- blocks


@dataclass(frozen=True)
class BlockKey:
    """One fused block: a Conv2d (``conv``; ``depthwise`` when groups == in == out) or Linear, with the BatchNorm
    and activation that follow it in the forward pass, at one input size (``h`` x ``w``; a Linear's tokens in h)."""

    kind: str
    cin: int
    cout: int
    kernel: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1
    h: int = 1
    w: int = 1
    bn: bool = False
    act: str = "none"
    batch: int = 1

    @property
    def id(self) -> str:
        if self.kind == "linear":
            return f"linear-{self.cin}x{self.cout}-t{self.h}-{self.act}-b{self.batch}"
        pair = lambda t: f"{t[0]}" if t[0] == t[1] else f"{t[0]}x{t[1]}"  # noqa: E731
        return (f"{self.kind}-{self.cin}x{self.cout}-k{pair(self.kernel)}s{pair(self.stride)}p{pair(self.padding)}"
                f"d{pair(self.dilation)}g{self.groups}-{self.h}x{self.w}{'-bn' if self.bn else ''}-{self.act}"
                f"-b{self.batch}")

    @property
    def macs(self) -> int:
        if self.kind == "linear":
            return self.batch * self.h * self.cin * self.cout
        oh = (self.h + 2 * self.padding[0] - self.dilation[0] * (self.kernel[0] - 1) - 1) // self.stride[0] + 1
        ow = (self.w + 2 * self.padding[1] - self.dilation[1] * (self.kernel[1] - 1) - 1) // self.stride[1] + 1
        return self.batch * oh * ow * self.cout * (self.cin // self.groups) * self.kernel[0] * self.kernel[1]

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BlockKey:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})

    def module(self) -> tuple[nn.Module, torch.Tensor]:
        """The standalone block and an input for it (seeded)."""
        gen = torch.Generator().manual_seed(0)
        layers: list[nn.Module]
        if self.kind == "linear":
            layers = [nn.Linear(self.cin, self.cout)]
            x = torch.randn(self.batch, self.cin, generator=gen) if self.h == 1 else torch.randn(
                self.batch, self.h, self.cin, generator=gen)
        else:
            layers = [nn.Conv2d(self.cin, self.cout, self.kernel, self.stride, self.padding, self.dilation, self.groups,
                                bias=not self.bn)]
            if self.bn:
                layers.append(nn.BatchNorm2d(self.cout))
            x = torch.randn(self.batch, self.cin, self.h, self.w, generator=gen)
        if self.act != "none":
            layers.append(next(t for t, n in ACTIVATIONS.items() if n == self.act)())
        torch.manual_seed(0)
        block = nn.Sequential(*layers).eval()
        for m in block.modules():  # non-trivial BN statistics, so export folds a real affine
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
        return block, x


def model_blocks(model: nn.Module, example: torch.Tensor) -> list[BlockKey]:
    """The fused blocks of ``model`` in forward order: each Conv2d/Linear call with its input shape, and the
    BatchNorm and activation modules called right after it (forward hooks on every leaf module)."""
    calls: list[tuple[nn.Module, tuple[int, ...]]] = []
    hooks = []
    for m in model.modules():
        if not list(m.children()):
            hooks.append(m.register_forward_hook(
                lambda mod, inp, out: calls.append((mod, tuple(inp[0].shape) if inp and torch.is_tensor(inp[0])
                                                    else ()))))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(example)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    blocks = []
    for i, (mod, shape) in enumerate(calls):
        if not isinstance(mod, (nn.Conv2d, nn.Linear)) or not shape:
            continue
        j, bn, act = i + 1, False, "none"
        while j < len(calls) and isinstance(calls[j][0], _PASS_THROUGH):
            j += 1
        if j < len(calls) and isinstance(calls[j][0], nn.BatchNorm2d) and isinstance(mod, nn.Conv2d):
            bn, j = True, j + 1
        if j < len(calls) and type(calls[j][0]) in ACTIVATIONS:
            act = ACTIVATIONS[type(calls[j][0])]
        if isinstance(mod, nn.Linear):
            tokens = int(np.prod(shape[1:-1])) if len(shape) > 2 else 1
            blocks.append(BlockKey("linear", mod.in_features, mod.out_features, h=tokens, act=act, batch=shape[0]))
            continue
        kind = "depthwise" if mod.groups > 1 and mod.groups == mod.in_channels == mod.out_channels else "conv"
        pad = mod.padding if isinstance(mod.padding, tuple) else (0, 0)  # "same"/"valid" strings: timed as 0
        blocks.append(BlockKey(kind, mod.in_channels, mod.out_channels, tuple(mod.kernel_size), tuple(mod.stride),
                               tuple(pad), tuple(mod.dilation), mod.groups, shape[2], shape[3], bn, act, shape[0]))
    return blocks


@dataclass(frozen=True)
class BlockSettings:
    """How one block is timed: ``rounds`` interleaved rounds over every block being measured (a shuffled order
    each round), each a short single-stream run of ``iterations`` queries after ``warmup``; the entry is the median
    of the round medians."""

    rounds: int = 5
    warmup: int = 5
    iterations: int = 20

    def to_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


def measure_blocks(keys: Sequence[BlockKey], target: Target, precision: str,
                   settings: BlockSettings | None = None) -> dict[str, dict[str, Any]]:
    """Each block built standalone in the deployed precision and timed in interleaved rounds;
    returns id -> entry (``p50_ms`` = median of the round medians, the rounds, ``macs``)."""
    cfg = settings or BlockSettings()
    unique = list({k.id: k for k in keys}.values())
    if not unique:
        return {}
    rounds: dict[str, list[float]] = {k.id: [] for k in unique}
    with tempfile.TemporaryDirectory(prefix="edgekd-lut-") as scratch:
        built = {}
        for n, key in enumerate(unique):
            block, x = key.module()
            built[key.id] = deploy(block, x, target, precision, Path(scratch) / str(n))
        order = list(built)
        rng = random.Random(0)
        timing = MeasureSettings(warmup=cfg.warmup, iterations=cfg.iterations)
        for _ in range(cfg.rounds):
            rng.shuffle(order)  # interleaved: a slow spell of the shared host hits every block alike
            for key_id in order:
                rounds[key_id].append(float(np.median(built[key_id].times_ms(timing, "block"))))
        built.clear()
    return {k.id: {"key": k.to_dict(), "p50_ms": float(np.median(rounds[k.id])),
                   "rounds_ms": [round(v, 5) for v in rounds[k.id]], "macs": k.macs} for k in unique}


# ---------------------------------------------------------------- granule


def sweep_keys(widths: Iterable[int], *, cin: int = 64, hw: int = 28) -> list[BlockKey]:
    """The granule sweep's blocks: a 3x3 conv (+BN+ReLU) from ``cin`` channels at ``hw`` x ``hw``, one per width."""
    return [BlockKey("conv", cin, w, (3, 3), (1, 1), (1, 1), (1, 1), 1, hw, hw, True, "relu") for w in widths]


def detect_granule(target: Target | str, *, precision: str = "int8", widths: Sequence[int] | None = None,
                   cin: int = 64, hw: int = 28, settings: BlockSettings | None = None) -> dict[str, Any]:
    """Sweep one 3x3 conv's output width on the target (interleaved rounds, medians) and read the step pattern
    (``lut_granule.choose_granule``). Returns ``granule``, the ``sweep`` (width, median ms, rounds) and why."""
    from edgekd.search.lut_granule import choose_granule

    tgt = resolve_target(target)
    check_precision(precision)
    widths = list(widths or range(8, 129, 4))
    keys = sweep_keys(widths, cin=cin, hw=hw)
    entries = measure_blocks(keys, tgt, precision, settings or BlockSettings(rounds=7, warmup=5, iterations=15))
    times = {k.cout: entries[k.id]["p50_ms"] for k in keys}
    rounds = {k.cout: entries[k.id]["rounds_ms"] for k in keys}
    verdict = choose_granule(times, rounds)
    sweep = [{"width": k.cout, "p50_ms": entries[k.id]["p50_ms"], "rounds_ms": entries[k.id]["rounds_ms"]}
             for k in keys]
    return {**verdict, "sweep": sweep, "layer": f"conv 3x3 {cin}->W at {hw}x{hw}, BN+ReLU, batch 1",
            "entries": entries}


# ---------------------------------------------------------------- the table


def default_cache_dir() -> Path:
    """``$EDGEKD_CACHE_DIR/latency`` when set, else ``.edgekd-cache/latency`` in the working directory."""
    root = os.environ.get("EDGEKD_CACHE_DIR")
    return (Path(root) if root else Path.cwd() / ".edgekd-cache").absolute() / "latency"


def cache_path(target: Target, precision: str, cache_dir: Path | None = None) -> Path:
    """``<cache_dir>/<target>-<precision>-<runtime version>-<host hash>.json``."""
    version = re.sub(r"[^A-Za-z0-9.+-]+", "_", runtime_version(target))
    return (cache_dir or default_cache_dir()) / f"{target.name}-{precision}-{version}-{host_fingerprint(target)['hash']}.json"


@dataclass
class LatencyTable:
    """Measured block latencies for one target and precision (see the module docstring)."""

    target: str
    precision: str
    granule: int
    runtime_version: str
    entries: dict[str, dict[str, Any]] = field(default_factory=dict)
    calibration: dict[str, Any] | None = None
    host: dict[str, Any] = field(default_factory=dict)
    granule_detail: dict[str, Any] = field(default_factory=dict)
    settings: BlockSettings = field(default_factory=BlockSettings)
    path: Path | None = None
    measured_now: int = 0  # entries this process measured (0 on a cache hit)
    _target: Target | None = field(default=None, repr=False)

    # -------------------------------------------------------- predictions

    def target_object(self) -> Target:
        if self._target is None:
            self._target = resolve_target(self.target)
        return self._target

    def ensure(self, keys: Iterable[BlockKey]) -> int:
        """Measure the blocks not in the table yet (interleaved, one batch) and persist; returns how many."""
        missing = [k for k in {k.id: k for k in keys}.values() if k.id not in self.entries]
        if not missing:
            return 0
        started = time.perf_counter()
        self.entries.update(measure_blocks(missing, self.target_object(), self.precision, self.settings))
        self.measured_now += len(missing)
        log(f"latency table {self.target}/{self.precision}: measured {len(missing)} block(s) in "
            f"{time.perf_counter() - started:.1f} s")
        self.save()
        return len(missing)

    def blocks(self, model: nn.Module, example: torch.Tensor) -> list[tuple[BlockKey, float]]:
        """Each block of ``model`` with its table entry (ms), measuring missing entries first."""
        keys = model_blocks(model, example)
        self.ensure(keys)
        return [(k, float(self.entries[k.id]["p50_ms"])) for k in keys]

    def raw_ms(self, model: nn.Module, example: torch.Tensor) -> float:
        """The sum of the model's block entries (no calibration)."""
        return float(sum(ms for _, ms in self.blocks(model, example)))

    def predict_ms(self, model: nn.Module, example: torch.Tensor) -> float:
        """Predicted p90 (ms): ``a * sum + b`` with the calibration, the plain sum before one is fitted."""
        raw = self.raw_ms(model, example)
        cal = self.calibration
        return float(cal["a"] * raw + cal["b"]) if cal else raw

    def calibrate(self, models: Sequence[nn.Module], example: torch.Tensor, *,
                  settings: MeasureSettings | None = None) -> dict[str, Any]:
        """Fit ``measured p90 = a * sum + b`` over whole models (``measure_model``, ~10 of them); persists it."""
        if len(models) < 2:
            raise ConfigError(f"calibration needs at least 2 whole models, got {len(models)}",
                              where="latency table calibrate", hint="pass ~10 models of different sizes")
        raws = np.array([self.raw_ms(m, example) for m in models])
        measured = [measure_model(m, example, self.target_object(), precision=self.precision, settings=settings)
                    for m in models]
        p90 = np.array([m.p90_ms for m in measured])
        a, b = fit_affine(raws, p90)
        pred = a * raws + b
        err = np.abs(pred - p90) / p90
        self.calibration = {"a": a, "b": b, "models": len(models), "median_abs_pct_error": float(np.median(err) * 100),
                            "max_abs_pct_error": float(np.max(err) * 100),
                            "points": [{"sum_ms": float(r), "p90_ms": float(m.p90_ms), "p50_ms": float(m.p50_ms),
                                        "predicted_ms": float(p)} for r, m, p in zip(raws, measured, pred, strict=True)]}
        self.save()
        return self.calibration

    # -------------------------------------------------------- storage

    def to_dict(self) -> dict[str, Any]:
        return {"schema": SCHEMA, "target": self.target, "precision": self.precision, "granule": self.granule,
                "runtime_version": self.runtime_version, "host": self.host, "granule_detail": self.granule_detail,
                "block_settings": self.settings.to_dict(), "calibration": self.calibration,
                "entries": dict(sorted(self.entries.items()))}

    @classmethod
    def from_dict(cls, data: dict[str, Any], path: Path | None = None) -> LatencyTable:
        if data.get("schema") != SCHEMA:
            raise ConfigError(f"not a latency table (schema {data.get('schema')!r}, expected {SCHEMA})",
                              where=str(path) if path else None, hint="build one with edgekd lut build")
        return cls(data["target"], data["precision"], int(data["granule"]), data["runtime_version"],
                   dict(data.get("entries") or {}), data.get("calibration"), dict(data.get("host") or {}),
                   dict(data.get("granule_detail") or {}), BlockSettings(**(data.get("block_settings") or {})), path)

    def save(self, path: Path | None = None) -> Path | None:
        """Write the JSON atomically (a temp file in the same folder, then rename); no path = not persisted."""
        dest = path or self.path
        if dest is None:
            return None
        write_json_atomic(dest, self.to_dict())
        return dest


def _jsonable(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    return str(value)  # paths, enums: their text


def write_json_atomic(dest: Path, data: dict[str, Any]) -> None:
    """JSON written to a temp file in the same folder, then renamed over ``dest``."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", dir=dest.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=1, default=_jsonable)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def fit_affine(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Least-squares ``y = a x + b``; when the points cannot fix a positive slope (one size, or noise), the
    ratio fit ``y = a x`` (a = median y / x) instead."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if len(x) >= 3 and np.ptp(x) > 0.05 * np.mean(x):
        a, b = np.polyfit(x, y, 1)
        if a > 0 and math.isfinite(a) and math.isfinite(b):
            return float(a), float(b)
    return float(np.median(y / np.maximum(x, 1e-12))), 0.0


def load_or_build(target: Target | str, *, precision: str = "int8", cache_dir: Path | None = None,
                  granule: int | None = None, settings: BlockSettings | None = None) -> LatencyTable:
    """The table for ``target`` in ``precision`` from the cache (one file per target, runtime version, precision
    and host), or a new one: its granule detected by measurement (``detect_granule``) unless ``granule`` is given;
    the sweep's blocks become its first entries. Entries are added as predictions ask for them."""
    tgt = resolve_target(target)
    check_precision(precision)
    path = cache_path(tgt, precision, cache_dir)
    if path.is_file():
        try:
            table = LatencyTable.from_dict(json.loads(path.read_text()), path)
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            log(f"latency table {path} is unreadable ({type(exc).__name__}: {exc}); building it again")
        else:
            table._target = tgt
            if granule is not None and granule != table.granule:
                table.granule, table.granule_detail = granule, {"given": granule}
                table.save()
            return table
    table = LatencyTable(tgt.name, precision, granule or 1, runtime_version(tgt), host=host_fingerprint(tgt),
                         settings=settings or BlockSettings(), path=path, _target=tgt)
    if granule is None:
        detail = detect_granule(tgt, precision=precision)
        table.entries.update(detail.pop("entries"))
        table.measured_now += len(table.entries)
        table.granule, table.granule_detail = int(detail["granule"]), detail
    else:
        table.granule_detail = {"given": granule}
    table.save()
    return table
