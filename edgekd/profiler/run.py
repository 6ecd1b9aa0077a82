"""``profile()``: resolve an artifact (bundle, .onnx, OpenVINO .xml, TensorRT .engine) and a target
into a runner, run the scenarios, collect the per-layer table and the environment, and return
one result document (schema in edgekd.profiler.report)."""

from __future__ import annotations

import dataclasses
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.backends import BACKENDS
from edgekd.backends.base import BuildResult, backend_for_file, call_build, latency_of, layer_table_of
from edgekd.bundle import REPORT_JSON, Bundle, is_bundle
from edgekd.config import ProfilingSettings, Target, load_target, target_from_mapping
from edgekd.errors import BackendUnavailable, ConfigError, EdgekdError
from edgekd.inputs import from_npz
from edgekd.profiler import env as envmod
from edgekd.profiler.measure import (
    MeasureSettings,
    batch_sweep,
    binding_overhead,
    describe_feeds,
    make_feeds,
    measure_latency,
    read_feeds,
    tile_feeds,
)
from edgekd.progress import log
from edgekd.typed import to_mapping


@dataclass
class Resolved:
    """An artifact ready to load: which target, which folder/file, and what the bundle knows."""

    kind: str
    path: Path
    target: Target
    target_dir: Path
    build: BuildResult | None
    model_file: Path | None
    sample: np.ndarray | None = None
    accuracy: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)


def _build_from_dict(data: dict[str, Any] | None) -> BuildResult | None:
    return BuildResult.from_dict(data) if data else None


def _files_size_mb(files: list[Path]) -> float | None:
    sizes = [p.stat().st_size for p in files if p.is_file()]
    return sum(sizes) / 1e6 if sizes else None


def model_size_mb(res: Resolved) -> float | None:
    if res.model_file is None:
        return None
    if res.build and res.build.files:
        return _files_size_mb([res.target_dir / f for f in res.build.files])
    f = res.model_file
    if f.suffix == ".xml":
        return _files_size_mb([f, f.with_suffix(".bin")])
    return _files_size_mb([f, *f.parent.glob(f.name + ".data"), *f.parent.glob(f.stem + ".onnx.data")])


def _check_backend(target: Target, where: str) -> Any:
    backend = BACKENDS.get(target.backend, where=where)
    status = backend.availability()
    if not status.available:
        raise BackendUnavailable(f"backend {target.backend!r} is {status}", where=where,
                                 hint="profile on the device that has this runtime, or pick another --target")
    return backend


def resolve(artifact: str | Path, target_spec: str | Target, build_dir: Path) -> Resolved:
    """Turn ARTIFACT + --target into something loadable; builds an .onnx for the target into ``build_dir``."""
    path = Path(artifact)
    if is_bundle(path):
        return _resolve_bundle(Bundle(path), target_spec, build_dir)
    if not path.exists():
        raise ConfigError("artifact not found", where=str(path), hint="pass a bundle folder, .onnx, .xml or .engine")
    # a built artifact (an OpenVINO .xml, a TensorRT .engine) belongs to the backend that declares its suffix
    backend_name = None if path.suffix.lower() == ".onnx" else backend_for_file(BACKENDS, path)
    if path.suffix.lower() != ".onnx" and backend_name is None:
        raise ConfigError(f"do not know how to profile a {path.suffix or 'folder'!r} artifact", where=str(path),
                          hint="pass a bundle folder (with manifest.json), a .onnx, or a file a backend loads as given "
                               "(an OpenVINO .xml, a TensorRT .engine)")
    kind = "onnx" if backend_name is None else BACKENDS.get(backend_name).artifact_kind
    target = target_spec if isinstance(target_spec, Target) else load_target(target_spec)
    if backend_name and target.backend != backend_name:
        raise ConfigError(f"a {path.suffix} file runs on the {backend_name!r} backend but target {target.name!r} uses "
                          f"{target.backend!r}", where="--target", hint=f"pick a target with backend = \"{backend_name}\"")
    if kind == "onnx":
        from edgekd.onnx_files import read_onnx

        read_onnx(path, error=ConfigError)  # a clear "what is this file" error before any backend sees it
        backend = _check_backend(target, target.source or target.name)
        log(f"building {path.name} for target {target.name} ({target.backend})")
        build = call_build(backend, path, target, build_dir, None)
        return Resolved(kind, path, target, build_dir, build, build_dir / build.artifact)
    backend = BACKENDS.get(target.backend)
    check = getattr(backend, "check_artifact", None)
    if callable(check):
        check(path)  # the backend says what is wrong with the file before its SDK does
    _check_backend(target, target.source or target.name)
    build = BuildResult(backend=target.backend, artifact=path.name, files=[], precision="?",
                        notes=["loaded as given: edgekd did not build this file"])
    return Resolved(kind, path, target, path.parent, build, path)


def _resolve_bundle(bundle: Bundle, target_spec: str | Target, build_dir: Path) -> Resolved:
    report = bundle.report()
    name = target_spec.name if isinstance(target_spec, Target) else str(target_spec)
    golden = bundle.golden() or {}
    golden_inputs = from_npz(golden, "input", "#")  # input, or input#<name> per input (edgekd.inputs)
    sample = golden_inputs[:1] if golden_inputs is not None else None
    if bundle.has_target(name) and not isinstance(target_spec, Target):
        entry = bundle.target(name)
        where = f"{bundle.where} targets.{name}"
        target = target_from_mapping(entry.target, where=where)
        rep = report.get("targets", {}).get(name, {})
        build = _build_from_dict(rep.get("build")) or BuildResult(backend=target.backend, artifact=entry.artifact,
                                                                  precision=entry.precision)
        # files the bundle stores once (a de-duplicated model.onnx) by their absolute path
        build = dataclasses.replace(build, artifact=entry.ref(build.artifact), files=[entry.ref(f) for f in build.files])
        _check_backend(target, where)
        accuracy = ({"value": rep["accuracy"], "metric": "top-1 accuracy (%)", "source": f"bundle {REPORT_JSON}"}
                    if rep.get("accuracy") is not None else None)
        return Resolved("bundle", bundle.path, target, entry.dir, build, entry.dir / build.artifact, sample, accuracy)
    # a target the bundle was not built for: build the bundle's reference ONNX for it here
    target = target_spec if isinstance(target_spec, Target) else load_target(target_spec)
    backend = _check_backend(target, target.source or target.name)
    model = bundle.model_path
    log(f"bundle has no target {target.name!r}: building {model.name} for it")
    build = call_build(backend, model, target, build_dir, golden_inputs)
    return Resolved("bundle", bundle.path, target, build_dir, build, build_dir / build.artifact, sample,
                    notes=[f"target {target.name} built from the bundle's {model.name} at profile time"])


def resolve_target_settings(artifact: str | Path, target_spec: str) -> ProfilingSettings:
    """The [profiling] settings that apply: the bundle's copy of the target when it has one."""
    if is_bundle(artifact):
        bundle = Bundle(artifact)
        if bundle.has_target(target_spec):
            return target_from_mapping(bundle.target(target_spec).target,
                                       where=f"{bundle.where} targets.{target_spec}").profiling
    return load_target(target_spec).profiling


# ------------------------------------------------------------------ options


@dataclass(frozen=True)
class ProfileOptions:
    measure: MeasureSettings = field(default_factory=MeasureSettings)
    batch_size: int | None = None  # None: the target's [profiling] batch_size
    batches: tuple[int, ...] = ()  # offline sweep; empty = skip offline
    layers: bool = True
    layer_runs: int = 20
    label: str | None = None
    command: str | None = None
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)  # --shape: dims for dynamic inputs (batch first)
    call_path: str = "bound"  # --call-path: the timed call (measure.CALL_PATHS)
    inputs: Path | None = None  # --inputs: the user's own feeds (.npz keyed by input name), instead of generated ones
    requests: tuple[int, ...] = ()  # --requests: offline with N queries in flight, per N (profiler/scenarios.py)
    server: Any = None  # --server-qps: scenarios.ServerSettings of a LoadGen Server run


def _threads(target: Target) -> dict[str, Any]:
    opts = to_mapping(target.options) if target.options is not None else {}
    return {k: v for k, v in opts.items() if "thread" in k or k in ("num_streams", "streams")}


def _layers(res: Resolved, backend: Any, feeds: dict[str, np.ndarray], runs: int) -> dict[str, Any] | None:
    if res.model_file is None:
        return None
    return layer_table_of(backend, res.model_file, feeds, res.target, runs, res.build)


def _labelled(value: Any, label: str) -> dict[str, Any] | None:
    if value is None:
        return None
    return {"label": label, **(value if isinstance(value, dict) else {"value": value})}


def fpga_block(build: BuildResult | None) -> dict[str, Any]:
    """Estimated targets (an FPGA): the analytical estimate and the build-time C-simulation check, kept apart and
    labelled (the BuildResult's ``estimate`` and ``agreement``)."""
    est = build.estimate if build is not None else None
    analytical = None
    if est is not None:
        facts = est.facts
        analytical = {"label": est.label, "part": facts.get("part"), "clock_period_ns": facts.get("clock_period_ns"),
                      "io_type": facts.get("io_type"), **est.to_dict()["total"], "fits": est.fits,
                      "over": facts.get("over"), "utilization": facts.get("utilization"),
                      "not_estimated": facts.get("not_estimated")}
    agreement = build.agreement if build is not None else None
    csim = {"label": "C simulation with g++ on the host: a functional check against ONNX Runtime; "
                     "its wall time is host CPU time, NOT FPGA latency",
            "compile_s": None, **(agreement.to_dict() if agreement is not None else {})}
    return {"analytical_estimate": analytical, "csim": csim}


def _profile_fpga(doc: dict[str, Any], runner: Any, backend: Any, feeds: dict[str, np.ndarray], cfg: MeasureSettings,
                  res: Resolved) -> None:
    # the C-sim binary runs as a subprocess per call: a few calls show its host cost, nothing more
    quick = MeasureSettings(warmup=1, iterations=max(1, min(cfg.iterations, 10)))
    sample = measure_latency(runner, feeds, settings=quick, description="C simulation (host)")
    ms = sample.times_ms
    doc["fpga"]["csim"].update({"host_wall_ms_p50": float(np.median(ms)), "host_wall_ms_min": float(ms.min()),
                                "host_runs": int(ms.size)})
    doc["layers"] = _layers(res, backend, feeds, 0)
    doc["notes"].append("FPGA target: no single-stream latency on this host; see fpga.analytical_estimate "
                        "(latency_us) and fpga.csim (functional check)")


def _sha256(path: Path | None) -> str | None:
    """Provenance for baselines: the hash of the model file the runtime loads (a folder or nothing: None)."""
    from edgekd.bundle import sha256_file

    return sha256_file(path) if path is not None and Path(path).is_file() else None


def profile(artifact: str | Path, target: str | Target, out_dir: Path, options: ProfileOptions | None = None, *,
            on_runner: Callable[[Any], None] | None = None) -> dict[str, Any]:
    """Profile ``artifact`` on ``target``; returns the result document (not yet written).
    ``on_runner`` sees the loaded runner after timing (auto-precision uses it to measure accuracy)."""
    opts = options or ProfileOptions()
    out_dir.mkdir(parents=True, exist_ok=True)
    res = resolve(artifact, target, out_dir / "build")
    backend = BACKENDS.get(res.target.backend)
    batch = opts.batch_size or res.target.profiling.batch_size
    doc: dict[str, Any] = {
        "schema": "edgekd.profile/1",
        "created_at": "",
        "command": opts.command or f"edgekd profile {shlex.quote(str(artifact))} --target {res.target.name}",
        "label": opts.label or res.target.name,
        "artifact": {"path": str(res.path), "kind": res.kind, "file": str(res.model_file) if res.model_file else None,
                     "size_mb": model_size_mb(res), "sha256": _sha256(res.model_file)},
        "target": {**res.target.to_dict(), "source": res.target.source},
        "build": res.build.to_dict() if res.build else None,
        "runtime": None,
        "environment": envmod.capture(_threads(res.target)),
        "settings": {**to_mapping(opts.measure), "batch_size": batch, "batches": list(opts.batches),
                     "layer_runs": opts.layer_runs if opts.layers else 0, "call_path": opts.call_path},
        "load_s": None, "single_stream": None, "offline": None, "layers": None,
        "fpga": fpga_block(res.build) if latency_of(backend) == "estimate" else None,
        "accuracy": res.accuracy,
        "inputs": None,
        "notes": list(res.notes),
    }
    if res.build is not None and not res.build.runnable:
        doc["notes"].append("artifact is not runnable on this machine: no latency measured")
        return _stamp(doc)
    t0 = time.perf_counter()
    try:
        runner = backend.load(res.target_dir, res.target, res.build)
    except EdgekdError:
        raise
    except Exception as exc:  # SDK errors: say which file and target
        raise EdgekdError(f"{res.target.backend} could not load the artifact: {exc}", where=str(res.model_file)) from exc
    doc["load_s"] = time.perf_counter() - t0
    doc["runtime"] = runner.describe()
    given = None
    if opts.inputs is not None:
        # the user's own inputs, batch as stored unless --batch asks for another (their rows cycled)
        given = read_feeds(opts.inputs, runner.inputs)
        feeds = tile_feeds(given, opts.batch_size) if opts.batch_size else given
        doc["settings"]["batch_size"] = batch = int(next(iter(feeds.values())).shape[0])
        doc["inputs"] = describe_feeds(feeds, f"--inputs {opts.inputs.name}")
    else:
        feeds = make_feeds(runner.inputs, batch, res.sample, shapes=opts.shapes)
        doc["inputs"] = describe_feeds(feeds, "golden.npz (first sample repeated)" if res.sample is not None else
                                       "generated: seeded random normal for float inputs (seed 0), zeros for integer")
    if latency_of(backend) == "estimate":
        _profile_fpga(doc, runner, backend, feeds, opts.measure, res)
        return _stamp(doc)
    sample = measure_latency(runner, feeds, settings=opts.measure, description=f"profiling {doc['label']}",
                             call_path=opts.call_path)
    # what the Python binding adds per call (plain - bound), measured apart so the reported latency does not hide it
    binding = binding_overhead(runner, feeds)
    doc["single_stream"] = {**sample.summary(),
                            "binding_overhead_us": binding["binding_overhead_us"] if binding else None,
                            "binding": binding, "times_ms": [round(float(x), 6) for x in sample.times_ms]}
    if binding is None:
        doc["notes"].append("the runner has no bound call path: latency is the plain call's and binding_overhead_us "
                            "is not measured")
    if opts.batches:
        doc["offline"] = {"points": batch_sweep(runner, runner.inputs, opts.batches, _short(opts.measure), res.sample,
                                                  shapes=opts.shapes, call_path=opts.call_path, given=given)}
    if opts.requests:
        from edgekd.profiler.scenarios import offline_concurrent

        queries = max(opts.measure.iterations, 64)
        doc["concurrent"] = [offline_concurrent(runner, feeds, n, max(queries, 4 * n)) for n in opts.requests]
    if opts.server is not None:
        from edgekd.profiler.scenarios import server

        doc["server"] = server(runner, feeds, opts.server)
    if opts.layers:
        doc["layers"] = _layers(res, backend, feeds, opts.layer_runs)
    if on_runner is not None:
        on_runner(runner)
    return _stamp(doc)


def _short(cfg: MeasureSettings) -> MeasureSettings:
    # each batch point needs fewer queries than the latency run: throughput is a median, not a tail
    return MeasureSettings(warmup=max(2, cfg.warmup // 4), iterations=max(8, cfg.iterations // 4),
                           duration_s=cfg.duration_s / 4, idle_gap_ms=cfg.idle_gap_ms)


def _stamp(doc: dict[str, Any]) -> dict[str, Any]:
    doc["created_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    return doc
