"""FPGA HLS backend: QDQ ONNX -> integer layer IR -> Vitis HLS C++ project, C-simulated with g++.

``build`` writes ``firmware/`` (top function with HLS pragmas, layer library, weights as
headers), ``testbench.cpp``, ``build_prj.tcl`` and a README into the target folder, compiles
the testbench with g++ and runs it on the golden inputs against ONNX Runtime's INT8 execution
of the same QDQ model. ``load`` gives a runner that executes that C-simulation binary: it is
the FPGA's arithmetic on the host CPU, never FPGA timing. Resources and latency are analytical
estimates (``estimate.py``), labelled as such.
"""

from __future__ import annotations

import json
import platform
import shutil
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

META = "edgekd_hls.json"
DESCRIPTION = "C simulation on the host (not FPGA timing)"


@dataclass(frozen=True)
class PartResources:
    """The part's resources, from its data sheet (used only to flag designs that cannot fit)."""

    dsp: int = 0
    bram_18k: int = 0
    lut: int = 0
    ff: int = 0


@dataclass(frozen=True)
class HLSOptions:
    part: str = "xczu7ev-ffvc1156-2-e"
    clock_period_ns: float = 5.0
    reuse_factor: int = 1  # cycles each multiplier is reused (1 = fully parallel)
    layer_reuse: dict[str, int] = field(default_factory=dict)  # per layer (ONNX node or C++ layer name) -> R
    io_type: Literal["io_parallel", "io_stream"] = "io_parallel"
    accum_bits: int = 32
    requant: Literal["fixed_point", "float32"] = "fixed_point"
    # read by the quantization pass: constrain scales to powers of two and zero points to 0
    power_of_two_scales: bool = False
    symmetric: bool = False
    resources: PartResources = field(default_factory=PartResources)
    dsp_per_multiplier: float = 1.0
    cxx: str = "g++"
    cxxflags: tuple[str, ...] = ("-O2",)
    tolerance_lsb: int = 1
    timeout_s: float = 300.0

    def __post_init__(self) -> None:
        if self.reuse_factor < 1 or any(r < 1 for r in self.layer_reuse.values()):
            raise ValueError("reuse factors must be >= 1 (1 = fully parallel)")
        if not 16 <= self.accum_bits <= 64:
            raise ValueError(f"accum_bits must be in 16..64, got {self.accum_bits}")
        if self.clock_period_ns <= 0:
            raise ValueError("clock_period_ns must be > 0")
        if self.tolerance_lsb < 0:
            raise ValueError("tolerance_lsb must be >= 0")


def _reference_int8(onnx_path: Path, x: np.ndarray) -> np.ndarray:
    """ONNX Runtime's execution of the same QDQ model (its int8 kernels where it fuses them)."""
    from edgekd.export import onnx_outputs

    return onnx_outputs(onnx_path, x).astype(np.float32)


def _check_accumulators(graph: Any, accum_bits: int) -> None:
    from edgekd.backends.hls import ir

    limit = 2 ** (accum_bits - 1) - 1
    for layer in graph.layers:
        if not isinstance(layer, (ir.Conv, ir.Dense, ir.ConvTranspose)):
            continue
        x = graph.tensors[layer.inputs[0]]
        lo, hi = ir.INT_RANGES[x.dtype]
        xmax = max(abs(lo - x.zero_point), abs(hi - x.zero_point))
        w = np.abs(layer.weights.reshape(layer.weights.shape[0], -1).astype(np.int64))
        worst = int((w.sum(1) * xmax + np.abs(layer.bias.astype(np.int64))).max())
        if worst > limit:
            raise BuildError(f"worst-case accumulator {worst} does not fit {accum_bits} bits", where=f"layer {layer.name}",
                             hint=f"set accum_bits >= {worst.bit_length() + 1} in the target's [options]")


def _apply_reuse(graph: Any, options: HLSOptions, where: str) -> None:
    from edgekd.backends.hls.frontend import c_name

    wanted = {c_name(k): (k, r) for k, r in options.layer_reuse.items()}
    names = {layer.name for layer in graph.layers}
    unknown = [k for c, (k, _) in wanted.items() if c not in names]
    if unknown:
        raise BuildError(f"layer_reuse names unknown layers: {', '.join(unknown)}", where=f"{where} [options.layer_reuse]",
                         hint=f"layers: {', '.join(sorted(names))}")
    for layer in graph.layers:
        layer.reuse = wanted.get(layer.name, (None, options.reuse_factor))[1]


class HLSRunner:
    """Runs the C-simulation binary: float32 inputs in, dequantized float32 outputs back."""

    def __init__(self, project: Path, meta: dict[str, Any], binary: Path) -> None:
        self.project = project
        self.meta = meta
        self.binary = binary
        self.inputs = (IOSpec(meta["input"]["name"], (None, *meta["input"]["shape"]), "float32"),)
        self.outputs = (IOSpec(meta["output"]["name"], (None, *meta["output"]["shape"]), "float32"),)
        self._n_out = int(np.prod(meta["output"]["shape"]))

    def infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = check_feeds(self.inputs, feeds)[self.inputs[0].name]
        return {self.outputs[0].name: self.infer_unchecked({self.inputs[0].name: x})[0]}

    def infer_unchecked(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        from edgekd.backends.hls.csim import run_binary

        x = next(iter(feeds.values()))
        y, _ = run_binary(self.binary, x, self._n_out)
        return [y.reshape(len(x), *self.outputs[0].shape[1:])]

    def infer_int(self, x: np.ndarray) -> np.ndarray:
        """The integer outputs (int8 codes, or int32 accumulators for a float output)."""
        from edgekd.backends.hls.csim import run_binary

        return run_binary(self.binary, x, self._n_out)[1].reshape(len(x), *self.outputs[0].shape[1:])

    def describe(self) -> dict[str, Any]:
        return {"runtime": "hls-csim", "description": DESCRIPTION, "binary": str(self.binary),
                "requant": self.meta["requant"], "part": self.meta["part"],
                "compiler": self.meta.get("compiler"), "host": platform.machine(),
                "note": "latency measured on this runner is the host CPU running the C model, not the FPGA; "
                        "see the estimates for FPGA cycles"}


def _estimate_graph(graph: Any, options: HLSOptions) -> dict[str, Any]:
    from edgekd.backends.hls.estimate import Resources, estimate

    return estimate(graph, clock_period_ns=options.clock_period_ns, io_type=options.io_type, requant=options.requant,
                    part=options.part, resources=Resources(**asdict(options.resources)),
                    dsp_per_multiplier=options.dsp_per_multiplier)


class HLSBackend(BackendBase):
    name = "hls"
    options_type = HLSOptions
    qdq_flavor = HLS
    #: integer-only hardware: the pipeline refuses a profile without a quantize pass before any training
    requires_quantized = True
    #: timing the C model on the host says nothing about the FPGA: the build's analytical estimate is the latency
    latency = "estimate"

    def preflight(self, float_onnx: Path, target: Any) -> list[str]:
        """Ops the HLS front end has no C++ for, named with their nodes (the float graph's ops that quantization
        removes or folds are not counted)."""
        import onnx

        from edgekd.backends.hls.frontend import SUPPORTED_OPS, input_count_problems

        folded_by_quantization = {"BatchNormalization", "Dropout"}
        unsupported: dict[str, list[str]] = {}
        model = onnx.load(str(float_onnx), load_external_data=False)
        several = input_count_problems(model, "HLS")
        if several:
            return several
        for node in model.graph.node:
            if node.op_type not in SUPPORTED_OPS and node.op_type not in folded_by_quantization:
                unsupported.setdefault(node.op_type, []).append(node.name or "?")
        return [f"op {op} ({len(names)}x, e.g. node {names[0]}) has no HLS implementation; supported: "
                f"{', '.join(sorted(SUPPORTED_OPS - {'Constant', 'Identity'}))}" for op, names in sorted(unsupported.items())]

    def availability(self) -> Availability:
        if shutil.which("g++") is None:
            return Availability(False, "g++ is not installed (needed for C simulation); apt-get install g++")
        try:
            import onnx  # noqa: F401
        except ImportError as exc:
            return Availability(False, f"onnx is not installed ({exc})")
        return Availability(True)

    def numerics(self, target: Any) -> Numerics:
        """What the target's [options] ask of the quantize pass (zero point 0; scales 2^k so requant is a shift)."""
        options = target.options
        return Numerics(symmetric_activations=bool(getattr(options, "symmetric", False)),
                        power_of_two_scales=bool(getattr(options, "power_of_two_scales", False)))

    def build(self, source: BuildSource, target: Any, out_dir: Path, *, golden: np.ndarray | None = None) -> BuildResult:
        """Generate, compile and C-simulate. ``golden``: inputs (batch first) the C simulation is compared on
        against ONNX Runtime; without them the project is compiled but not checked."""
        from edgekd.backends.hls import csim
        from edgekd.backends.hls.codegen import CodegenSettings, write_project
        from edgekd.backends.hls.estimate import format_table
        from edgekd.backends.hls.frontend import load_graph

        onnx_path = source_path(source)
        options: HLSOptions = target.options if isinstance(target.options, HLSOptions) else HLSOptions()
        where = str(getattr(target, "source", None) or getattr(target, "name", "target"))
        # everything that can fail on the model is checked before a file is written
        graph = load_graph(onnx_path)
        _apply_reuse(graph, options, where)
        _check_accumulators(graph, options.accum_bits)
        notes = [DESCRIPTION + ": outputs are the generated C++ run by g++ on the CPU",
                 "resources and latency are analytical ESTIMATES (no Vitis HLS synthesis was run)"]
        if graph.softmax is not None:
            notes.append("the final Softmax runs on the host in float32 (firmware/io.h, as ORT's QLinearSoftmax when "
                         "it is quantized); the top function ends at the logits' integer codes")
        if golden is not None and tuple(np.shape(golden)[1:]) != tuple(graph.input_float_shape):
            raise BuildError(f"golden inputs have shape {list(np.shape(golden)[1:])}, the model wants "
                             f"{list(graph.input_float_shape)}", where=str(out_dir),
                             hint="pass inputs of the model's shape (batch first)")
        out_dir.mkdir(parents=True, exist_ok=True)
        settings = CodegenSettings(options.part, options.clock_period_ns, options.io_type, options.accum_bits, options.requant)
        files = write_project(graph, settings, out_dir)
        est = _estimate_graph(graph, options)
        binary, compile_s = csim.compile_project(out_dir, options.cxx, options.cxxflags, timeout_s=options.timeout_s)
        meta = {"input": {"name": graph.input_name, "shape": list(graph.input_float_shape)},
                "output": {"name": graph.output_name, "shape": list(graph.output.shape)},
                "requant": options.requant, "part": options.part, "io_type": options.io_type,
                "compiler": f"{options.cxx} {' '.join(options.cxxflags)}", "binary": csim.BINARY,
                "host_softmax": graph.softmax is not None,
                "layers": [{"name": la.name, "kind": la.kind, "output": list(graph.tensors[la.output].shape),
                            "reuse": la.reuse} for la in graph.layers]}
        details: dict[str, Any] = {"compile_s": round(compile_s, 2), "requant": options.requant, "layers": len(graph.layers)}
        agreement = None
        if golden is None:
            notes.append("no golden inputs were passed: C simulation was compiled but not compared with ONNX Runtime")
        else:
            x = np.ascontiguousarray(golden, dtype=np.float32)
            agreement = self._check(onnx_path, out_dir, binary, x, options, details["compile_s"])
            files += [csim.TB_INPUTS, csim.TB_EXPECTED]
            if not agreement.ok:
                # recorded, not raised: the pipeline's parity check and `edgekd check` decide what fails
                facts = agreement.facts
                notes.append(f"C simulation DISAGREES with ONNX Runtime beyond {options.tolerance_lsb} LSB: max "
                             f"{facts['max_lsb']} LSB, top-1 {facts['top1_agree']}/{agreement.samples}; "
                             "requant = \"float32\" follows ORT's rounding exactly")
        (out_dir / "estimates.json").write_text(json.dumps(est, indent=2) + "\n")
        (out_dir / META).write_text(json.dumps(meta, indent=2) + "\n")
        (out_dir / "README.md").write_text(_readme(graph, options, est, agreement.to_dict() if agreement else None,
                                                   format_table(est)))
        files += ["estimates.json", META, "README.md", csim.BINARY]
        return BuildResult(backend=self.name, artifact=csim.BINARY, files=sorted(set(files)), precision="int8",
                           notes=notes, details=details, runnable=True, estimate=Estimate.from_dict(est),
                           agreement=agreement)

    def estimate(self, source: BuildSource, target: Any) -> Estimate:
        """The build's latency/resource estimate alone (no C++ written or compiled): what ``edgekd search`` costs
        each FPGA candidate with. The same formulas as ``build``."""
        from edgekd.backends.hls.frontend import load_graph

        options: HLSOptions = target.options if isinstance(target.options, HLSOptions) else HLSOptions()
        graph = load_graph(source_path(source))
        _apply_reuse(graph, options, str(getattr(target, "source", None) or getattr(target, "name", "target")))
        _check_accumulators(graph, options.accum_bits)
        return Estimate.from_dict(_estimate_graph(graph, options))

    @staticmethod
    def _check(onnx_path: Path, out_dir: Path, binary: Path, x: np.ndarray, options: HLSOptions,
               compile_s: float) -> Agreement:
        """Run the C simulation on ``x`` against ONNX Runtime's execution of the same QDQ model."""
        from edgekd.backends.hls import csim

        reference = _reference_int8(onnx_path, x)
        (out_dir / "tb_data").mkdir(exist_ok=True)
        x.astype("<f4").tofile(out_dir / csim.TB_INPUTS)
        reference.reshape(len(x), -1).astype("<f4").tofile(out_dir / csim.TB_EXPECTED)
        result = csim.run_check(out_dir, binary, options.tolerance_lsb, options.timeout_s)
        result["reference"] = "ONNX Runtime CPU executing the same QDQ ONNX (int8 kernels where it fuses them)"
        result["compile_s"] = compile_s
        return Agreement.from_dict(result)

    def layer_table(self, model_file: Path, feeds: dict[str, np.ndarray], target: Any, runs: int,
                    build: BuildResult | None) -> dict[str, Any] | None:
        """The estimate's cycles per layer (x clock period): analytical, not measured."""
        from edgekd.profiler.layers import LayerRow

        est = build.estimate.facts if build is not None and build.estimate is not None else {}
        clock = est.get("clock_period_ns")
        if not est.get("layers") or not clock:
            return None
        total = sum(la["cycles"] for la in est["layers"]) or 1
        rows = [LayerRow(la["layer"], la["kind"], f"HLS estimate, reuse {la.get('reuse_factor')}", "int8",
                         la["cycles"] * clock / 1e6, la["cycles"] / total, 1) for la in est["layers"]]
        rows.sort(key=lambda r: r.time_ms, reverse=True)
        return layer_table(rows, "analytical HLS estimate (cycles x clock period; not measured)", 0)

    def load(self, target_dir: Path, target: Any, build: BuildResult | None = None) -> HLSRunner:
        from edgekd.backends.hls import csim

        meta_path = target_dir / META
        if not meta_path.is_file():
            raise BuildError("not an edgekd HLS project (edgekd_hls.json is missing)", where=str(target_dir),
                             hint="build it with the hls backend first")
        meta = json.loads(meta_path.read_text())
        binary = target_dir / meta["binary"]
        if not binary.is_file():  # e.g. a bundle copied to another machine: rebuild from the sources
            options: HLSOptions = target.options if target is not None and isinstance(target.options, HLSOptions) else HLSOptions()
            binary, _ = csim.compile_project(target_dir, options.cxx, options.cxxflags, timeout_s=options.timeout_s)
        return HLSRunner(target_dir, meta, binary)


def _host_steps(graph: Any) -> str:
    if graph.softmax is None:
        return ""
    return ("\nThe final Softmax is not in the top function: `dequantize_output` in `firmware/io.h` computes it on the host "
            "in float32 (as ONNX Runtime's QLinearSoftmax when the graph quantizes it).\n")


def _readme(graph: Any, options: HLSOptions, est: dict[str, Any], agreement: dict[str, Any] | None, table: str) -> str:
    if agreement:
        agree = (f"{agreement['samples']} golden samples, {agreement['elements']} output elements: "
                 f"{agreement['exact']} identical to ONNX Runtime's INT8 output, max difference {agreement['max_lsb']} LSB, "
                 f"top-1 identical on {agreement['top1_agree']}/{agreement['samples']} (requant = {agreement['requant']}).")
    else:
        agree = "not run: no golden inputs were available at build time."
    return f"""# HLS project: {graph.name}

Generated by edgekd from a QDQ ONNX model. Plain C++14 with fixed-width integers: the same sources
compile with g++ (C simulation, done at build time) and with Vitis HLS (synthesis, not run here).

| | |
|---|---|
| part | `{options.part}` |
| clock | {options.clock_period_ns:g} ns |
| io type | {options.io_type} |
| reuse factor | {options.reuse_factor} (per layer: {dict(options.layer_reuse) or "none"}) |
| accumulator | {options.accum_bits} bits |
| requantization | {options.requant} (`-DEDGEKD_REQUANT_FLOAT=0/1` switches) |

## Files

- `firmware/edgekd_top.cpp` -- top function `edgekd_top(input, output)`: one sample, integer in/out, HLS pragmas
- `firmware/edgekd_nnet.h` -- layer library (conv, transposed conv, dense, pooling, add, concat, gather, resize,
  activation tables, requantization)
- `firmware/parameters.h` -- one config struct per layer; `firmware/weights/*.h` -- weights, biases, multipliers
- `firmware/io.h` -- float <-> integer conversion at the boundary (as ONNX Runtime's Quantize/DequantizeLinear)
- `testbench.cpp`, `tb_data/` -- golden inputs and ONNX Runtime's outputs; `build/csim` -- the g++ binary
- `build_prj.tcl` -- Vitis HLS: `vitis_hls -f build_prj.tcl -tclargs csim=1 synth=1 cosim=1 export=1`

## C simulation (host CPU, not FPGA timing)

    g++ -O2 -std=c++14 -ffp-contract=off -Ifirmware -o build/csim testbench.cpp firmware/edgekd_top.cpp
    ./build/csim check tb_data/inputs.bin tb_data/expected.bin 1

Agreement with ONNX Runtime: {agree}
{_host_steps(graph)}
## Estimates (analytical, not synthesis)

{table}
"""
