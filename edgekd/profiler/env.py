"""Environment capture: every latency number carries what produced it.

CPU model and the ISA flags that decide which kernels a runtime can pick (AVX-512, VNNI,
AMX), cores/threads, OS, and the versions of the runtimes involved. Reading /proc/cpuinfo
is Linux-only; elsewhere the CPU fields fall back to ``platform`` and say so.
"""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path
from typing import Any

#: flags that explain kernel choices (int8 VNNI/AMX paths, bf16, fp16)
KEY_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx_vnni", "avx512_bf16",
             "avx512_fp16", "amx_tile", "amx_int8", "amx_bf16", "amx_fp16", "asimd", "asimddp", "sve")

_VERSION_MODULES = ("numpy", "torch", "onnx", "onnxruntime", "openvino", "tensorrt", "brevitas", "torch_pruning")


def parse_cpuinfo(text: str) -> dict[str, Any]:
    """CPU model, logical CPU count and ISA flags from /proc/cpuinfo text.

    >>> info = parse_cpuinfo("processor : 0\\nmodel name : Xeon\\nflags : fpu avx2 avx512f amx_int8\\n")
    >>> info["model"], info["features"]["avx512"], info["features"]["amx"], info["features"]["vnni"]
    ('Xeon', True, True, False)
    """
    model = None
    flags: set[str] = set()
    logical = 0
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key == "processor":
            logical += 1
        elif key in ("model name", "hardware", "cpu model") and model is None:
            model = value.strip()
        elif key in ("flags", "features") and not flags:
            flags = set(value.split())
    features = {
        "avx2": "avx2" in flags,
        "avx512": "avx512f" in flags,
        "vnni": bool(flags & {"avx512_vnni", "avx_vnni"}),
        "bf16": bool(flags & {"avx512_bf16", "amx_bf16"}),
        "fp16": bool(flags & {"avx512_fp16", "amx_fp16"}),
        "amx": bool(flags & {"amx_tile", "amx_int8", "amx_bf16"}),
        "amx_int8": "amx_int8" in flags,
        "amx_bf16": "amx_bf16" in flags,
    }
    return {"model": model, "logical_cpus": logical or None, "flags": sorted(flags & set(KEY_FLAGS)),
            "features": features}


def cpu_info() -> dict[str, Any]:
    path = Path("/proc/cpuinfo")
    if path.is_file():
        info = parse_cpuinfo(path.read_text(errors="replace"))
        info["source"] = "/proc/cpuinfo"
    else:
        info = {"model": platform.processor() or None, "logical_cpus": os.cpu_count(), "flags": [], "features": {},
                "source": "platform (no /proc/cpuinfo: ISA flags unknown)"}
    try:
        import psutil

        info["physical_cores"] = psutil.cpu_count(logical=False)
        freq = psutil.cpu_freq()
        info["max_mhz"] = round(freq.max, 1) if freq and freq.max else None
    except Exception:  # psutil may lack sensors in containers; the rest still stands
        info.setdefault("physical_cores", None)
    info["logical_cpus"] = info.get("logical_cpus") or os.cpu_count()
    try:
        info["affinity_cpus"] = len(os.sched_getaffinity(0))
    except AttributeError:  # not on macOS/Windows
        info["affinity_cpus"] = None
    return info


def versions() -> dict[str, str]:
    """Versions of python and the runtimes importable here (never imports anything new that is absent)."""
    from importlib import metadata

    from edgekd import __version__

    out = {"edgekd": __version__, "python": platform.python_version()}
    for mod in _VERSION_MODULES:
        module = sys.modules.get(mod)
        if module is not None and hasattr(module, "__version__"):
            out[mod] = str(module.__version__)
            continue
        dist = {"torch_pruning": "torch-pruning"}.get(mod, mod)
        try:
            out[mod] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return out


def gpu_info() -> list[dict[str, Any]]:
    """NVIDIA GPUs via nvidia-smi when present (TensorRT targets); empty list otherwise."""
    import shutil
    import subprocess

    smi = shutil.which("nvidia-smi")
    if not smi:
        return []
    try:
        out = subprocess.run([smi, "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10, check=True).stdout
    except (subprocess.SubprocessError, OSError):
        return []
    gpus = []
    for line in out.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 3:
            gpus.append({"name": parts[0], "driver": parts[1], "memory": parts[2]})
    return gpus


def capture(threads: dict[str, Any] | None = None) -> dict[str, Any]:
    """The environment block of a profile result."""
    return {
        "cpu": cpu_info(),
        "gpus": gpu_info(),
        "os": {"system": platform.system(), "release": platform.release(), "machine": platform.machine(),
               "libc": "-".join(platform.libc_ver()) or None},
        "hostname": platform.node(),
        "python": sys.version.split()[0],
        "versions": versions(),
        "threads": threads or {},
        "env_vars": {k: os.environ[k] for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                                 "CUDA_VISIBLE_DEVICES") if k in os.environ},
    }
