"""Python steps of the prepared TensorRT GPU check (``tools/gpu_check.sh``); run from the repository root.

Each sub-command is one step of the shell script (which wraps it in ``timeout``) and writes one JSON record;
``summary`` joins them into ``gpu_check.json`` and ``gpu_check.md``. ``--dry-run`` (before the sub-command)
parses the arguments, imports what the step needs and checks its inputs, without a GPU or TensorRT.

Engines are built with edgekd's own TensorRT backend (``edgekd.backends.tensorrt``), parity is edgekd's
``golden_parity`` check (``edgekd.hil``), checksums are ``edgekd.bundle.verify_bundle``, latency is
``edgekd profile`` (run by the shell script). What the backend does not offer lives here: copying a carried
bundle to a work folder and building its engine next to the ONNX (a bundle's checksums do not cover an
engine built on the device), wheel checks, the carry-size check, trtexec log parsing and the summary.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.abc
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
HERE = ROOT / "tools" / "gpu_check"
CARRY_LIMIT_MIB = 64
#: the TensorRT wheels the check installs when ``import tensorrt`` fails: (distribution, what it holds)
WHEELS = (("tensorrt_cu13", "the `tensorrt` module (a shim over tensorrt_bindings)"),
          ("tensorrt_cu13_bindings", "the Python bindings, tensorrt_bindings/tensorrt.so"),
          ("tensorrt_cu13_libs", "libnvinfer, the builder resources and the ONNX parser"))
#: bundle name -> `edgekd compress` arguments (made on the CPU machine by tools/gpu_check_prepare.sh)
_RESNET = ["--model", "py:tools/gpu_check/models.py:resnet18_narrow?width=32", "--data", "random:3x64x64?n=64"]
RECIPES: dict[str, list[str]] = {
    "digits-int8-kd": ["--model", "builtin:digits-student", "--teacher", "builtin:digits-teacher", "--data",
                       "builtin:digits", "--recipe", "int8-kd", "--target", "trt-h200"],
    "resnet18-fp16": [*_RESNET, "--recipe", "fp32", "--target", "trt-h200-fp16"],
    "resnet18-int8": [*_RESNET, "--recipe", "ptq", "--target", "trt-h200"],
    "resnet18-sparse24-int8": [*_RESNET, "--recipe", str(HERE / "recipes" / "sparse24-ptq.toml"),
                               "--target", "trt-h200-sparse"],
}
#: packages the GPU machine does not have: a dry run refuses their import, so a step that needs one fails here
ABSENT_ON_DEVICE = ("brevitas", "openvino", "torch_pruning", "nncf", "mlxtend", "tomli_w")


class _Refuse(importlib.abc.MetaPathFinder):
    """Imports of the packages the GPU machine lacks fail in a dry run as they will there."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> None:
        if fullname.partition(".")[0] in ABSENT_ON_DEVICE:
            raise ModuleNotFoundError(f"No module named {fullname!r} (not installed on the GPU machine)", name=fullname)


def write_json(path: Path | None, data: dict[str, Any]) -> None:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=2, default=str) + "\n")


def fail(message: str) -> int:
    print(f"gpu_check: FAILED: {message}", file=sys.stderr)
    return 1


def _error_text(exc: BaseException) -> str:
    from edgekd.errors import EdgekdError

    return str(exc) if isinstance(exc, EdgekdError) else f"{type(exc).__name__}: {exc}"


# ---------------------------------------------------------------- carried files


def _wheel_tags(name: str) -> tuple[str, str, str, str] | None:
    """(distribution, version, python tag, platform tag) of a wheel file name, or None."""
    m = re.fullmatch(r"([A-Za-z0-9_.]+)-([^-]+)(?:-\d[^-]*)?-([^-]+)-([^-]+)-([^-]+)\.whl", name)
    return None if m is None else (m[1].lower().replace(".", "_"), m[2], m[3], m[5])


def check_wheels(folder: Path) -> tuple[list[str], list[str], int]:
    """(problems, wheel files found, total bytes) for the TensorRT wheels in ``folder``."""
    found: dict[str, list[tuple[str, str]]] = {}
    total = 0
    for path in sorted(folder.glob("*.whl")) if folder.is_dir() else []:
        tags = _wheel_tags(path.name)
        if tags is None:
            continue
        dist, version, py, plat = tags
        if not any(t in py.split(".") for t in ("cp312", "py3", "py2")) or not (plat == "any" or "x86_64" in plat):
            continue
        found.setdefault(dist, []).append((version, path.name))
        total += path.stat().st_size
    problems = []
    for dist, holds in WHEELS:
        if dist not in found:
            problems.append(f"{dist} wheel ({holds}) in {folder}")
        elif len(found[dist]) > 1:
            problems.append(f"one {dist} wheel, not {len(found[dist])}: {', '.join(n for _, n in found[dist])}")
    versions = {v for dist, _ in WHEELS for v, _ in found.get(dist, [])}
    if len(versions) > 1:
        problems.append(f"the TensorRT wheels must be one version, found {', '.join(sorted(versions))}")
    return problems, [n for dist, _ in WHEELS for _, n in found.get(dist, [])], total


def carried_mib(extra: list[Path]) -> float:
    """MiB that travel to the GPU machine: tracked and untracked-not-ignored files, plus ``extra`` folders."""
    listed = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-co", "--exclude-standard", "-z"],
                            capture_output=True, check=False).stdout.decode().split("\0")
    size = sum((ROOT / p).stat().st_size for p in listed if p and (ROOT / p).is_file())
    for folder in extra:
        size += sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else 0
    return size / 2**20


def cmd_wheels(args: argparse.Namespace) -> int:
    """Are the TensorRT wheels there (or is tensorrt importable already)? Sizes vs the carry limit."""
    try:
        import tensorrt

        print(f"tensorrt {tensorrt.__version__} is importable ({Path(tensorrt.__file__).parent}): no wheels needed")
        return 0
    except ImportError as exc:
        reason = str(exc)
    problems, files, total = check_wheels(Path(args.folder))
    for name in files:
        print(f"wheel: {name}")
    if files:
        print(f"wheels: {total / 2**20:.1f} MiB in {len(files)} file(s); the GPU machine's carry limit is "
              f"{CARRY_LIMIT_MIB} MiB for everything that travels"
              + (" -- OVER THE LIMIT: these wheels cannot be carried" if total / 2**20 > CARRY_LIMIT_MIB else ""))
    if problems:
        print(f"tensorrt is not importable here ({reason}) and the carried wheels are incomplete:")
        for p in problems:
            print(f"missing: {p}")
        print("  make them with tools/gpu_check_prepare.sh --wheels (tensorrt_cu13_libs is not on the PyPI mirror as a "
              "wheel), or run where tensorrt is installed")
        return 1
    return 0


def cmd_carry(args: argparse.Namespace) -> int:
    mib = carried_mib([Path(p) for p in args.extra])
    over = mib > CARRY_LIMIT_MIB
    print(f"carry: {mib:.1f} MiB of the {CARRY_LIMIT_MIB} MiB that may travel (repository files + "
          f"{', '.join(args.extra) or 'nothing else'})" + (" -- OVER THE LIMIT" if over else ""))
    return 1 if over else 0


# ---------------------------------------------------------------- bundles


def tensorrt_targets(manifest: dict[str, Any]) -> list[str]:
    return sorted(n for n, t in (manifest.get("targets") or {}).items() if t.get("backend") == "tensorrt")


def cmd_plan(args: argparse.Namespace) -> int:
    """Verify every bundle (edgekd's checksum verifier); list one `BUNDLE<TAB>TARGET<TAB>DIR` line per engine."""
    from edgekd.bundle import Bundle
    from edgekd.errors import EdgekdError

    root = Path(args.bundles)
    # hidden folders are a bundle writer's staging/backup folders (edgekd.bundle.BundleWriter), not bundles
    names = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")) if root.is_dir() else []
    expected = [n for n in args.expect.split(",") if n] if args.expect else list(RECIPES)
    bad, jobs = 0, []
    for name in [n for n in expected if n not in names]:
        print(f"missing: bundle {name} in {root} (make it with tools/gpu_check_prepare.sh --bundles)", file=sys.stderr)
        bad += 1
    for name in names:
        bundle = Bundle(root / name)
        try:
            problems = bundle.verify()
            targets = tensorrt_targets(bundle.manifest)
        except EdgekdError as exc:
            problems, targets = [_error_text(exc)], []
        if not problems and not targets:
            problems = ["manifest.json has no target with backend = \"tensorrt\""]
        for t in targets:
            onnx = engine_source(bundle.target(t))
            if not onnx.is_file():
                problems.append(f"{onnx.relative_to(bundle.path)}: missing (the ONNX the engine is built from)")
        if problems:
            bad += 1
            print(f"bundle {name}: FAILED: " + "; ".join(problems), file=sys.stderr)
            continue
        size = sum(p.stat().st_size for p in bundle.path.rglob("*") if p.is_file()) / 2**20
        print(f"bundle {name}: OK ({len(bundle.manifest['files'])} files verified, {size:.1f} MiB, "
              f"TensorRT target(s): {', '.join(targets)})", file=sys.stderr)
        jobs += [f"{name}\t{t}\t{bundle.target(t).rel_dir}\n" for t in targets]
    if args.list:
        Path(args.list).write_text("".join(jobs))
    else:
        sys.stdout.write("".join(jobs))
    return 1 if bad else 0


def engine_source(entry: Any) -> Path:
    """The ONNX file the TensorRT backend copied into the target's folder (build_engine.sh builds from it)."""
    from edgekd.backends.tensorrt import SOURCE_COPY

    return entry.dir / SOURCE_COPY


def _target(bundle: Path, name: str) -> tuple[Any, Any]:
    from edgekd.bundle import Bundle
    from edgekd.config import target_from_mapping

    view = Bundle(bundle)
    if not view.has_target(name):
        raise SystemExit(fail(f"bundle {bundle} has no target {name!r}"))
    entry = view.target(name)
    return entry, target_from_mapping(entry.target, where=f"{view.where} targets.{name}")


def cmd_build(args: argparse.Namespace) -> int:
    """Copy the bundle to the work folder and build its TensorRT engine there with edgekd's backend."""
    from edgekd.backends.tensorrt import TensorRTBackend

    bundle, work = Path(args.bundle), Path(args.work)
    entry, target = _target(bundle, args.target)
    source = engine_source(entry)
    if not source.is_file():
        return fail(f"{source} is missing (the ONNX the engine is built from)")
    copy = work / bundle.name  # a dry run copies too: the later steps' dry runs read the copy, as the real ones do
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(bundle, copy)
    if args.dry_run:
        backend = TensorRTBackend()
        if not backend.availability().available:  # the backend's no-SDK build: its lint must pass as on the GPU
            try:
                result = backend.build(source, target, copy / entry.rel_dir)
            except Exception as exc:
                return fail(f"build {bundle.name}/{target.name}: {_error_text(exc)}")
            print(f"build: lint and trtexec script as the GPU build will see them: {result.notes[0]}; plan "
                  f"{result.details.get('plan')}")
        print(f"build: would build {source} for {target.name} ({target.options.precision}, sparse_weights="
              f"{target.options.sparse_weights}) into {copy / entry.rel_dir}")
        return 0
    # the timing cache goes to the work folder, not ~/.cache: the machine is bare and given back
    options = dataclasses.replace(target.options, timing_cache_dir=str(work / "timing-cache"))
    record: dict[str, Any] = {"bundle": bundle.name, "target": target.name, "onnx": str(source),
                              "options": dataclasses.asdict(options)}
    started = time.perf_counter()
    try:
        result = TensorRTBackend().build(source, dataclasses.replace(target, options=options), copy / entry.rel_dir)
    except Exception as exc:  # the SDK's and the backend's errors alike: recorded, then the step fails
        record.update(status="failed", error=_error_text(exc), seconds=time.perf_counter() - started)
        write_json(Path(args.json), record)
        return fail(f"build {bundle.name}/{target.name}: {record['error']}")
    engine = copy / entry.rel_dir / "model.engine"
    layers = copy / entry.rel_dir / "layers.json"
    record.update(status="built" if result.runnable and engine.is_file() else "failed", seconds=time.perf_counter() - started,
                  precision=result.precision, notes=result.notes, details=result.details,
                  engine=str(engine), engine_mb=engine.stat().st_size / 1e6 if engine.is_file() else None,
                  layers=json.loads(layers.read_text()) if layers.is_file() else [])
    write_json(Path(args.json), record)
    if record["status"] != "built":
        return fail(f"build {bundle.name}/{target.name}: no engine was built ({'; '.join(result.notes)})")
    print(f"built {engine} in {record['seconds']:.1f} s: precision {result.precision}, compute layers "
          f"{result.details.get('compute_precision')}, sparse {len(result.details.get('sparse_layers') or [])}")
    return 0


def cmd_parity(args: argparse.Namespace) -> int:
    """edgekd's golden_parity check on the work copy, whose target folder now holds model.engine."""
    from edgekd.hil import CheckOptions, HilSession

    bundle = Path(args.bundle)
    session = HilSession(bundle, CheckOptions(target=args.target))
    if args.dry_run:
        golden = session.golden()
        key = session.manifest["targets"][session.target_name].get("golden_reference", "reference")
        missing = [k for k in ("input", key) if k not in golden]
        if missing:
            return fail(f"{bundle}/golden.npz has no {', '.join(missing)} array")
        print(f"parity: would run golden_parity on {bundle} --target {args.target}: {len(golden['input'])} golden "
              f"inputs, reference {key!r}, tolerances {session.target.parity}")
        return 0
    result = session.run("golden_parity")
    runtime = session.runtime_info()
    record = {"bundle": bundle.name, "target": args.target, "status": result.status, "value": result.value,
              "limit": result.limit, "reason": result.reason, "seconds": result.seconds, "data": result.data,
              "runtime": {k: v for k, v in runtime.items() if k != "layers"}}
    write_json(Path(args.json), record)
    print(f"parity {bundle.name}/{args.target}: {result.status}: "
          + (f"{result.value} (limit {result.limit}) " if result.value else "") + result.reason)
    return 0 if result.status == "passed" else 1


def cmd_cli_args(args: argparse.Namespace) -> int:
    """Dry run of an `edgekd ...` command line: edgekd's own parser must accept it, its modules must import."""
    from edgekd.cli import build_parser

    parsed = build_parser().parse_args(args.argv)
    if parsed.command == "profile":
        import edgekd.profiler.report
        import edgekd.profiler.run  # noqa: F401  (what `edgekd profile` imports when it runs)
    print(f"edgekd {parsed.command}: arguments parse")
    return 0


_TRTEXEC_LINE = re.compile(r"(Latency|GPU Compute Time|Throughput): (.*)")


def parse_trtexec(text: str) -> dict[str, Any]:
    """trtexec's performance summary: `Latency: min = 0.1 ms, ..., median = ..., percentile(90%) = ...`."""
    out: dict[str, Any] = {}
    for kind, rest in _TRTEXEC_LINE.findall(text):
        key = kind.lower().replace(" ", "_")
        if kind == "Throughput":
            m = re.match(r"([\d.]+)", rest.strip())
            out[key] = float(m[1]) if m else None
            continue
        out[key] = {k.replace("percentile(", "p").replace("%)", ""): float(v)
                    for k, v in re.findall(r"([\w()%]+) = ([\d.eE+-]+) ms", rest)}
    return out


def cmd_trtexec_log(args: argparse.Namespace) -> int:
    text = Path(args.log).read_text(errors="replace") if Path(args.log).is_file() else ""
    record = {"bundle": args.bundle, "log": args.log, **parse_trtexec(text)}
    write_json(Path(args.json), record)
    return 0 if "latency" in record else fail(f"no latency summary in trtexec's output {args.log}")


def cmd_make_bundle(args: argparse.Namespace) -> int:
    """`edgekd compress` for one of RECIPES (on the CPU machine, before the GPU run)."""
    from edgekd.cli import main

    if args.name not in RECIPES:
        return fail(f"unknown bundle {args.name!r}; one of: {', '.join(RECIPES)}")
    os.environ.setdefault("EDGEKD_TARGETS_PATH", str(HERE / "targets"))
    return main(["compress", *RECIPES[args.name], "--no-measure", "--out", str(Path(args.bundles) / args.name)])


def cmd_recipes(args: argparse.Namespace) -> int:
    for name, argv in RECIPES.items():
        print(name if not args.verbose else f"{name}: edgekd compress {' '.join(argv)}")
    return 0


# ---------------------------------------------------------------- environment and summary


def _output(argv: list[str], timeout: float = 30) -> str | None:
    if shutil.which(argv[0]) is None:
        return None
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (proc.stdout + proc.stderr).strip()
    return text if proc.returncode == 0 or argv[-1] == "--help" else None  # trtexec --help may exit non-zero


def _dist_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def cmd_env(args: argparse.Namespace) -> int:
    """What this machine has; the real run stops here unless tensorrt imports and a CUDA GPU is visible."""
    import platform

    from edgekd.backends.tensorrt import gpu_name

    info: dict[str, Any] = {"python": sys.version.split()[0], "executable": sys.executable, "machine": platform.machine(),
                            "nvidia_smi": _output(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,compute_cap",
                                                   "--format=csv,noheader"]),
                            "trtexec": shutil.which("trtexec"), "tensorrt": None,
                            "edgekd_commit": _output(["git", "-C", str(ROOT), "rev-parse", "HEAD"])}
    info |= {name: _dist_version(name) for name in ("numpy", "onnx", "onnxruntime", "torch", "cuda-bindings")}
    try:
        import tensorrt

        info |= {"tensorrt": tensorrt.__version__, "tensorrt_path": str(Path(tensorrt.__file__).parent)}
    except Exception as exc:  # ImportError, or OSError from a library that does not load
        info["tensorrt_error"] = _error_text(exc)
    info["gpu"] = gpu_name(0)
    if info["trtexec"]:
        found = re.search(r"TensorRT v(\d+)", _output(["trtexec", "--help"]) or "")
        info["trtexec_version"] = found[1] if found else None
    write_json(Path(args.json), info)
    print(f"python {info['python']} ({info['machine']}), GPU {info['gpu']}, nvidia-smi: {info['nvidia_smi']}, "
          f"tensorrt {info['tensorrt']}, torch {info['torch']}, cuda-bindings {info['cuda-bindings']}, "
          f"trtexec {info['trtexec']}")
    if args.dry_run:
        return 0
    if info["tensorrt"] is None:
        return fail(f"tensorrt does not import: {info.get('tensorrt_error')}")
    if info["gpu"] is None:
        return fail("no CUDA GPU is visible (cuda-python / torch.cuda found none)")
    return 0


def _read(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _steps(path: Path) -> list[dict[str, Any]]:
    rows = []
    for line in path.read_text().splitlines() if path.is_file() else []:
        name, status, rc, seconds, command = [*line.split("\t", 4), "", "", "", ""][:5]
        rows.append({"name": name, "status": status, "rc": int(rc) if rc.lstrip("-").isdigit() else None,
                     "seconds": float(seconds or 0), "command": command})
    return rows


def _result(folder: Path) -> dict[str, Any]:
    bundle, _, target = folder.name.partition("__")
    build = _read(folder / "build.json") or {}
    details = build.get("details") or {}
    parity = _read(folder / "parity.json") or {}
    profile = _read(folder / "profile" / "profile.json") or {}
    single = {k: v for k, v in (profile.get("single_stream") or {}).items() if k != "times_ms"}
    return {"bundle": bundle, "target": target,
            "build": {k: build.get(k) for k in ("status", "error", "seconds", "precision", "engine_mb", "notes")}
            | {k: details.get(k) for k in ("plan", "tensorrt", "gpu", "compute_precision", "compute_layers", "sparse_layers",
                                           "precision_source")},
            "layers": build.get("layers") or [],
            "parity": {k: parity.get(k) for k in ("status", "value", "limit", "reason")} if parity else None,
            "latency": {"source": "edgekd profile (single-stream, H2D+D2H copies included)", **single,
                        "offline": (profile.get("offline") or {}).get("points")} if single else None,
            "trtexec": _read(folder / "trtexec.json")}


def _cell_latency(r: dict[str, Any]) -> str:
    lat = r["latency"] or {}
    return f"{lat['p50_ms']:.3f} / {lat['p90_ms']:.3f}" if "p50_ms" in lat else "-"


def _cell_trtexec(r: dict[str, Any]) -> str:
    lat = (r["trtexec"] or {}).get("latency") or {}
    return f"{lat['median']:.3f} / {lat.get('p90', float('nan')):.3f}" if "median" in lat else "-"


def markdown(doc: dict[str, Any]) -> str:
    env = doc["environment"]
    machine = (f"GPU {env.get('gpu')} (nvidia-smi: {env.get('nvidia_smi')}), TensorRT {env.get('tensorrt')}, "
               f"torch {env.get('torch')}, python {env.get('python')}" if env else "machine not recorded (the run "
               "stopped before its env step)")
    lines = [f"TensorRT GPU check, {doc['created_at']}: {machine}.", "",
             "| bundle | target | engine precision (compute layers) | sparse tactics | golden parity | "
             "edgekd p50 / p90 ms | trtexec median / p90 ms | build s |", "|---|---|---|---|---|---|---|---|"]
    for r in doc["results"].values():
        b = r["build"]
        mix = ", ".join(f"{k} {v}" for k, v in (b.get("compute_precision") or {}).items())
        built = b.get("status") == "built"
        engine = f"{b.get('precision')} ({mix})" if built else "not built"
        sparse = f"{len(b.get('sparse_layers') or [])} of {b.get('compute_layers')}" if built else "-"
        par = r["parity"] or {}
        parity = f"{par.get('status', '-')} {par.get('value') or ''}".strip()
        lines.append(f"| {r['bundle']} | {r['target']} | {engine} | {sparse} | {parity} | {_cell_latency(r)} | "
                     f"{_cell_trtexec(r)} | {(b.get('seconds') or 0):.1f} |")
    lines += ["", "Failures: " + ("; ".join(doc["failures"]) if doc["failures"] else "none"), ""]
    return "\n".join(lines)


def cmd_summary(args: argparse.Namespace) -> int:
    """gpu_check.json (everything, with per-layer tables) and gpu_check.md (one table) into --out."""
    from datetime import UTC, datetime

    work, out = Path(args.work), Path(args.out)
    if args.dry_run:
        print(f"summary: would join {work}/results/* into {out}/gpu_check.json and gpu_check.md")
        return 0
    steps = _steps(work / "steps.tsv")
    results = {d.name: _result(d) for d in sorted((work / "results").glob("*__*")) if d.is_dir()}
    failures = [f"step {s['name']}: {s['status']}" + (f" (exit {s['rc']})" if s["rc"] else "")
                for s in steps if s["status"] != "ok"]
    doc = {"schema": "edgekd.gpu-check/1", "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
           "environment": _read(work / "env.json") or {}, "steps": steps, "results": results, "failures": failures,
           "ok": not failures and bool(results) and all(
               r["build"]["status"] == "built" and (r["parity"] or {}).get("status") == "passed" for r in results.values())}
    write_json(out / "gpu_check.json", doc)
    text = markdown(doc)
    (out / "gpu_check.md").write_text(text)
    print(text)
    return 0 if doc["ok"] else 1


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tools/gpu_check.py", description=__doc__.split("\n")[0])
    p.add_argument("--dry-run", action="store_true", help="parse, import and check inputs only (no GPU)")
    sub = p.add_subparsers(dest="step", required=True)
    s = sub.add_parser("wheels", help="TensorRT importable, or its wheels in FOLDER")
    s.add_argument("folder")
    s.set_defaults(run=cmd_wheels)
    s = sub.add_parser("carry", help="size of what travels to the GPU machine")
    s.add_argument("extra", nargs="*", help="ignored folders that are carried too")
    s.set_defaults(run=cmd_carry)
    s = sub.add_parser("plan", help="verify bundles; print BUNDLE<TAB>TARGET per engine")
    s.add_argument("bundles")
    s.add_argument("--expect", help="comma-separated bundle names that must be there [the four RECIPES]")
    s.add_argument("--list", help="write BUNDLE<TAB>TARGET<TAB>TARGET_DIR lines here [stdout]")
    s.set_defaults(run=cmd_plan)
    for name, fn in (("build", cmd_build), ("parity", cmd_parity)):
        s = sub.add_parser(name)
        s.add_argument("bundle")
        s.add_argument("--target", required=True)
        s.add_argument("--json", required=True, help="record to write")
        if name == "build":
            s.add_argument("--work", required=True, help="folder for the bundle copy and the timing cache")
        s.set_defaults(run=fn)
    s = sub.add_parser("cli-args", help="check an edgekd command line with edgekd's own parser")
    s.add_argument("argv", nargs=argparse.REMAINDER)
    s.set_defaults(run=cmd_cli_args)
    s = sub.add_parser("trtexec-log")
    s.add_argument("log")
    s.add_argument("--bundle", required=True)
    s.add_argument("--json", required=True)
    s.set_defaults(run=cmd_trtexec_log)
    s = sub.add_parser("make-bundle", help="build one carried bundle with edgekd compress (CPU machine)")
    s.add_argument("name")
    s.add_argument("--bundles", default=str(HERE / "bundles"))
    s.set_defaults(run=cmd_make_bundle)
    s = sub.add_parser("recipes")
    s.add_argument("-v", "--verbose", action="store_true")
    s.set_defaults(run=cmd_recipes)
    s = sub.add_parser("env", help="GPU, driver, CUDA, TensorRT, trtexec on this machine")
    s.add_argument("--json", required=True)
    s.set_defaults(run=cmd_env)
    s = sub.add_parser("summary", help="join the step records into gpu_check.json and gpu_check.md")
    s.add_argument("work")
    s.add_argument("--out", required=True)
    s.set_defaults(run=cmd_summary)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.dry_run:
        sys.meta_path.insert(0, _Refuse())
    return int(args.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
