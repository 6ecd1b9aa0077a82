"""The RTL build's report: measured numbers (simulation, yosys, nextpnr) beside the engine's analytical model,
the fit check against the part, and the project README."""

from __future__ import annotations

from typing import Any

from edgekd.backends.base import Agreement
from edgekd.backends.rtl.codegen import EnginePlan

BRAM_BITS = {"ice40": 4096}  # one SB_RAM40_4K; Xilinx: 18-kbit blocks
XILINX_BRAM_BITS = 18 * 1024


def analytical(plan: EnginePlan, family: str) -> dict[str, Any]:
    """What the engine's structure predicts before any tool runs: cycles from the layer table, DSP = lanes,
    memory bits (weight ROM words x lane width, activation buffers, channel table)."""
    weight_bits = len(plan.weight_words) * 8 * plan.lanes
    act_bits = 8 * sum(plan.buffer_depth)
    chan_bits = len(plan.channel_words) * (plan.acc_bits + 6 + plan.mult_bits)
    block = BRAM_BITS.get(family, XILINX_BRAM_BITS)
    return {"cycles": plan.cycles(), "dsp": plan.lanes, "weight_rom_bits": weight_bits, "activation_bits": act_bits,
            "channel_table_bits": chan_bits, "bram_lower_bound": -(-(weight_bits + act_bits + chan_bits) // block)}


def _fit_checks(options: Any, measured: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """used <= available per resource (from nextpnr when it ran, else yosys), and fmax >= the requested clock."""
    res, parts = measured["synthesis"]["resources"], options.resources
    pnr = measured.get("place_and_route")
    checks: dict[str, dict[str, Any]] = {}
    if options.family == "ice40":
        util = (pnr or {}).get("utilisation", {})
        used = {"lc": util.get("ICESTORM_LC", {}).get("used"), "bram": util.get("ICESTORM_RAM", {}).get("used", res["bram"]),
                "dsp": util.get("ICESTORM_DSP", {}).get("used", res["dsp"])}
    else:
        used = {"lut": res["lut"], "ff": res["ff"], "bram": res["bram_18k"], "dsp": res["dsp"]}
    for key, value in used.items():
        available = getattr(parts, key)
        if value is not None and available:
            checks[key] = {"used": value, "available": available, "ok": value <= available}
    if pnr:
        checks["fmax_mhz"] = {"used": pnr["fmax_mhz"], "required": pnr["constraint_mhz"],
                              "ok": pnr["fmax_mhz"] >= pnr["constraint_mhz"]}
    if "place_and_route_failed" in measured:
        checks["place_and_route"] = {"used": "failed", "required": "routed", "ok": False,
                                     "detail": measured["place_and_route_failed"]}
    return checks


def estimate(plan: EnginePlan, options: Any, measured: dict[str, Any], sim_cycles: int | None) -> dict[str, Any]:
    """The Estimate section: latency = simulated cycles / nextpnr fmax (both measured)."""
    pnr = measured.get("place_and_route")
    cycles = sim_cycles if sim_cycles is not None else plan.cycles()
    mhz = pnr["fmax_mhz"] if pnr and pnr["fmax_mhz"] > 0 else options.clock_mhz
    if pnr:
        label = f"measured: cycles in RTL simulation / fmax from nextpnr-ice40 (seed {options.seed})"
    else:
        label = f"cycles in RTL simulation at the requested {options.clock_mhz:g} MHz (synthesis only: no timing closure)"
    if sim_cycles is None:
        label = label.replace("cycles in RTL simulation", "cycles from the layer table (not simulated)")
    checks = _fit_checks(options, measured)
    latency_us = cycles / mhz
    layers = [{"layer": row.name, "kind": row.kind, "lanes": row.values["lanes"], "macs": row.macs,
               "cycles": plan.layer_cycles(row)} for row in plan.rows]
    return {"label": label, "part": options.part, "family": options.family,
            "total": {"latency_us": round(latency_us, 3), "throughput_per_s": round(1e6 / latency_us, 1),
                      "cycles": cycles, "clock_mhz": mhz, "cycles_source": "simulation" if sim_cycles is not None else "table"},
            "fits": all(c["ok"] for c in checks.values()) if checks else None, "fit_checks": checks,
            "measured_by": "yosys/nextpnr" if pnr else "yosys", "measured": measured,
            "analytical": analytical(plan, options.family), "layers": layers}


def _resource_lines(est: dict[str, Any]) -> str:
    lines = []
    for key, check in est["fit_checks"].items():
        limit = check.get("available", check.get("required"))
        relation = "<=" if "available" in check else ">="
        lines.append(f"| {key} | {check['used']} | {relation} {limit} | {'ok' if check['ok'] else 'EXCEEDED'} |")
    return "\n".join(lines) or "| (no part limits given) | | | |"


def readme(name: str, plan: EnginePlan, options: Any, est: dict[str, Any], agreement: Agreement | None) -> str:
    if agreement is not None:
        f = agreement.facts
        agree = (f"{agreement.samples} golden inputs, {f['elements']} output values: {f['exact']} identical to ONNX Runtime's "
                 f"INT8 output (max difference {f['max_lsb']:g} LSB), top-1 identical on {f['top1_agree']}; {f['simulator']}.")
    else:
        agree = "not run: no golden inputs were available at build time."
    m = est["measured"]
    synth = m["synthesis"]
    pnr = m.get("place_and_route")
    timing = (f"fmax {pnr['fmax_mhz']} MHz (nextpnr-ice40 --{pnr['device']} --package {pnr['package']} --seed {pnr['seed']}, "
              f"target {pnr['constraint_mhz']:g} MHz)" if pnr else "no place and route (synthesis only)")
    ana = est["analytical"]
    return f"""# RTL project: {name}

A folded int8 engine generated by edgekd from a QDQ ONNX model (power-of-two scales, zero point 0):
{plan.lanes} multiply-accumulate lanes, weights in block RAM, a pipelined round-half-to-even requantizer,
{len(plan.rows)} layers in a layer table. Target `{options.part}` (yosys family `{options.family}`).

## Files

- `rtl/engine.v` -- the engine (the same for every model); `rtl/edgekd_layers.vh` -- the layer table;
  `rtl/edgekd_config.vh` -- sizes; `rtl/weights.hex`, `rtl/channels.hex` -- weight and bias/shift ROMs
- `rtl/tb.v` -- testbench (iverilog or Verilator): `+n=N +in=codes.hex +out=results.txt`
- `rtl/build/` -- yosys/nextpnr scripts, logs and reports, the synthesized netlist

## Agreement with ONNX Runtime (simulation)

{agree}

## Measured ({est['measured_by']})

{est['total']['cycles']} cycles per image ({est['total']['cycles_source']}), {timing}: {est['total']['latency_us']} µs per image.
yosys cells: {synth['resources']}.

| resource | used | limit | |
|---|---|---|---|
{_resource_lines(est)}

## Analytical model (before any tool ran)

{ana['cycles']} cycles, {ana['dsp']} DSP, weight ROM {ana['weight_rom_bits']} bits, activations {ana['activation_bits']} bits,
channel table {ana['channel_table_bits']} bits (>= {ana['bram_lower_bound']} block RAMs if packed perfectly).
"""
