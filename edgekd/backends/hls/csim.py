"""C simulation on the host: compile the generated project with g++ and run its testbench.

Nothing here touches an FPGA: the binary is the same C++ that Vitis HLS would synthesize,
executed on the CPU. Timings of this binary are host timings, never FPGA latency.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.errors import BackendUnavailable, BuildError

BINARY = "build/csim"
TB_INPUTS = "tb_data/inputs.bin"
TB_EXPECTED = "tb_data/expected.bin"


def find_compiler(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise BackendUnavailable(f"C++ compiler {name!r} not found", hint="install g++ (apt-get install g++) or set options.cxx")
    return path


def compile_project(project: Path, cxx: str = "g++", flags: tuple[str, ...] = ("-O2",), requant: str | None = None,
                    output: str = BINARY, timeout_s: float = 300) -> tuple[Path, float]:
    """g++ the testbench + top function into ``project/output``; returns (binary, seconds)."""
    binary = project / output
    binary.parent.mkdir(parents=True, exist_ok=True)
    cmd = [find_compiler(cxx), *flags, "-std=c++14", "-ffp-contract=off", "-Ifirmware", "-o", str(binary.relative_to(project)),
           "testbench.cpp", "firmware/edgekd_top.cpp"]
    if requant is not None:
        cmd.insert(2, f"-DEDGEKD_REQUANT_FLOAT={1 if requant == 'float32' else 0}")
    started = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=project, capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        raise BuildError(f"g++ did not finish in {timeout_s:.0f} s", where=str(project),
                         hint="raise options.compile_timeout_s, or the reuse factor to shrink the unrolled code") from None
    if proc.returncode != 0:
        raise BuildError(f"g++ failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}", where=str(project),
                         hint=f"command: {' '.join(cmd)}")
    return binary, time.perf_counter() - started


def run_check(project: Path, binary: Path, tolerance_lsb: int = 1, timeout_s: float = 300) -> dict[str, Any]:
    """Run the testbench's ``check`` mode on tb_data/ and return its JSON summary."""
    proc = subprocess.run([str(binary.resolve()), "check", TB_INPUTS, TB_EXPECTED, str(tolerance_lsb)], cwd=project,
                          capture_output=True, text=True, timeout=timeout_s, check=False)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode not in (0, 1) or not lines:
        raise BuildError(f"C simulation crashed (exit {proc.returncode}): {proc.stderr[-2000:]}", where=str(binary))
    return json.loads(lines[-1])


def run_binary(binary: Path, x: np.ndarray, n_out: int, timeout_s: float = 300) -> tuple[np.ndarray, np.ndarray]:
    """Run the testbench's ``run`` mode: float32 inputs in, (dequantized float32, raw int) outputs back."""
    with tempfile.TemporaryDirectory(prefix="edgekd-csim-") as tmp:
        tmp_path = Path(tmp)
        np.ascontiguousarray(x, dtype="<f4").tofile(tmp_path / "in.bin")
        proc = subprocess.run([str(binary.resolve()), "run", "in.bin", "out.bin", "out_int.bin"], cwd=tmp_path,
                              capture_output=True, text=True, timeout=timeout_s, check=False)
        if proc.returncode != 0:
            raise BuildError(f"C simulation failed (exit {proc.returncode}): {proc.stderr[-2000:]}", where=str(binary))
        y = np.fromfile(tmp_path / "out.bin", dtype="<f4").reshape(len(x), n_out)
        q = np.fromfile(tmp_path / "out_int.bin", dtype="<i4").reshape(len(x), n_out)
    return y, q
