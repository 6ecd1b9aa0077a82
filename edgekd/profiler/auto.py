"""``precision = "auto"``: build every precision the target supports, profile each on this device,
ship the fastest one that stays inside the target's accuracy budget, and say why.

On AMX CPUs OpenVINO's bf16 often beats an NNCF INT8 model (mobilenet_v2: 2.13 vs 3.06 ms), so a
fixed choice leaves speed on the table. Candidates for an OpenVINO target:

* FP32 ONNX: ``f32``, plus ``bf16`` / ``f16`` when the CPU reports them (OPTIMIZATION_CAPABILITIES);
* Q/DQ ONNX: the int8 kernels run whatever the hint, so the hint decides the float remainder:
  ``int8+f32``, ``int8+bf16``, ...;
* every ONNX variant in a bundle (``model.onnx`` and ``variants/*.onnx``) gets the same treatment.

Accuracy per candidate: the bundle's labelled ``eval.npz`` (top-1 %, drop vs the ONNX reference)
when present; otherwise top-1 agreement with ONNX Runtime FP32 on golden/seeded inputs. The
budget is ``budgets.max_accuracy_drop`` (percentage points); no budget = every candidate qualifies.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.backends import BACKENDS
from edgekd.backends.base import auto_precisions_of
from edgekd.bundle import Bundle, is_bundle
from edgekd.config import Target, load_target, target_from_mapping
from edgekd.errors import ConfigError
from edgekd.profiler import stats
from edgekd.profiler.run import ProfileOptions, profile
from edgekd.progress import log


@dataclass
class CandidateResult:
    label: str
    onnx: str
    requested: str
    ran: str | None
    p50_ms: float | None
    p90_ms: float | None
    p90_ci: dict[str, float] | None
    accuracy: float | None
    accuracy_drop: float | None
    within_budget: bool
    out_dir: str
    doc: dict[str, Any] = field(repr=False, default_factory=dict)

    def row(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "doc"}


@dataclass
class AutoResult:
    target: str
    accuracy_metric: str
    budget: float | None
    candidates: list[CandidateResult]
    winner: str | None
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"schema": "edgekd.auto-precision/1", "target": self.target, "accuracy_metric": self.accuracy_metric,
                "max_accuracy_drop": self.budget, "winner": self.winner, "reason": self.reason,
                "candidates": [c.row() for c in self.candidates]}

    def markdown(self) -> str:
        lines = [f"## precision = \"auto\" on {self.target}", "",
                 f"Accuracy: {self.accuracy_metric}; budget: max drop {self.budget if self.budget is not None else 'none'} pp.",
                 "", "| candidate | requested | ran | p50 ms | p90 ms | p90 95% CI | accuracy | drop pp | in budget |",
                 "|---|---|---|---:|---:|---|---:|---:|---|"]
        for c in self.candidates:
            ci = f"[{c.p90_ci['low']:.4f}, {c.p90_ci['high']:.4f}]" if c.p90_ci else "—"
            mark = " **winner**" if c.label == self.winner else ""
            lines.append(f"| {c.label}{mark} | {c.requested} | {c.ran} | {_f(c.p50_ms)} | {_f(c.p90_ms)} | {ci} | "
                         f"{_f(c.accuracy, 2)} | {_f(c.accuracy_drop, 2)} | {'yes' if c.within_budget else 'NO'} |")
        lines += ["", f"**Why:** {self.reason}", ""]
        return "\n".join(lines)


def _f(v: float | None, d: int = 4) -> str:
    return "—" if v is None else f"{v:.{d}f}"


def _has_qdq(onnx_path: Path) -> bool:
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    return any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node)


@dataclass
class _Sources:
    target: Target
    onnx: list[Path]
    eval_x: np.ndarray | None = None
    eval_y: np.ndarray | None = None
    reference_acc: float | None = None
    golden: np.ndarray | None = None


def _sources(artifact: Path, target_spec: str | Target, eval_data: tuple[np.ndarray, np.ndarray] | None = None,
             reference_acc: float | None = None) -> _Sources:
    if isinstance(target_spec, Target):  # called from compress(): the ONNX being built plus the run's eval set
        src = _Sources(target_spec, [artifact], reference_acc=reference_acc)
        if eval_data is not None:
            src.eval_x, src.eval_y = eval_data
        return src
    if is_bundle(artifact):
        bundle = Bundle(artifact)
        target = (target_from_mapping(bundle.target(target_spec).target, where=f"{bundle.where} targets.{target_spec}")
                  if bundle.has_target(target_spec) else load_target(target_spec))
        src = _Sources(target, [bundle.model_path, *bundle.variants()])
        eval_set = bundle.eval_set()
        if eval_set is not None:
            src.eval_x, src.eval_y = eval_set
        golden = bundle.golden()
        if golden is not None:
            src.golden = golden.get("input")
        src.reference_acc = (bundle.report().get("accuracy") or {}).get("onnx_reference")
        return src
    if artifact.suffix.lower() != ".onnx":
        raise ConfigError("precision auto needs an ONNX model (a bundle or a .onnx) to build candidates from",
                          where=str(artifact), hint="pass the bundle folder or the .onnx it was built from")
    return _Sources(load_target(target_spec), [artifact])


def _predict(runner: Any, x: np.ndarray) -> np.ndarray:
    # one sample at a time: the batch the latency run used. OpenVINO's request, after a shared-input
    # batch-1 run, refuses to grow its input tensor to a bigger batch.
    from edgekd.inputs import run_batched  # one conversion for one array or several named inputs

    out = runner.outputs[0].name
    return run_batched(runner.infer, runner.inputs, x, [out], batch=1)[out]


def _reference_outputs(onnx: Path, x: np.ndarray) -> np.ndarray:
    from edgekd.export import onnx_outputs

    return onnx_outputs(onnx, x)


def auto_precision(artifact: str | Path, target_spec: str | Target, out_dir: Path, options: ProfileOptions | None = None,
                   precisions: list[str] | None = None, eval_data: tuple[np.ndarray, np.ndarray] | None = None,
                   reference_acc: float | None = None) -> AutoResult:
    """Profile every candidate precision of ``artifact`` on a target whose backend offers several (OpenVINO); see
    the module doc.

    ``target_spec`` may be a Target object (compress passes the target being built, with the run's
    labelled ``eval_data`` and the ONNX reference accuracy)."""
    artifact = Path(artifact)
    src = _sources(artifact, target_spec, eval_data, reference_acc)
    offered = auto_precisions_of(BACKENDS.get(src.target.backend, where=src.target.source), src.target)
    if not offered:
        raise ConfigError(f"backend {src.target.backend!r} of target {src.target.name!r} offers no precisions to "
                          "choose from", where="--precision",
                          hint="precision auto needs a backend with several float precisions (e.g. an openvino target)")
    opts = options or ProfileOptions()
    floats = precisions or list(offered)
    budget = src.target.budgets.max_accuracy_drop
    labelled = src.eval_x is not None and src.eval_y is not None
    metric = ("top-1 accuracy (%) on the bundle's eval.npz" if labelled
              else "top-1 agreement (%) with ONNX Runtime FP32 on golden/seeded inputs")
    probe_x = src.golden
    results: list[CandidateResult] = []
    for onnx in src.onnx:
        qdq = _has_qdq(onnx)
        stem = onnx.stem.replace("model.", "").replace("model", "") or "model"
        if not labelled and probe_x is None:
            shape = _input_shape(onnx, opts.shapes)
            probe_x = np.random.default_rng(0).standard_normal((64, *shape[1:])).astype(np.float32)
        reference = None if labelled else _reference_outputs(src.onnx[0], probe_x).argmax(1)
        for prec in floats:
            label = (f"int8+{prec}" if qdq else prec) + ("" if len(src.onnx) == 1 else f"@{stem}")
            options_c = dataclasses.replace(src.target.options, precision=prec)
            target_c = dataclasses.replace(src.target, options=options_c, name=f"{src.target.name}")
            holder: dict[str, float] = {}

            def measure_accuracy(runner: Any, holder: dict[str, float] = holder, reference: Any = reference,
                                 probe: Any = probe_x) -> None:
                if labelled:
                    holder["acc"] = float((_predict(runner, src.eval_x).argmax(1) == src.eval_y).mean() * 100)
                else:
                    holder["acc"] = float((_predict(runner, probe).argmax(1) == reference).mean() * 100)

            log(f"auto precision: candidate {label}")
            cdir = out_dir / "candidates" / label.replace("+", "_").replace("@", "_")
            doc = profile(onnx, target_c, cdir, dataclasses.replace(opts, label=label), on_runner=measure_accuracy)
            ss = doc.get("single_stream") or {}
            acc = holder.get("acc")
            base = src.reference_acc if labelled and src.reference_acc is not None else (None if labelled else 100.0)
            drop = None if acc is None or base is None else base - acc
            doc["accuracy"] = None if acc is None else {"value": acc, "metric": metric, "source": "auto precision"}
            results.append(CandidateResult(label, str(onnx), prec, (doc.get("build") or {}).get("precision"),
                                           ss.get("p50_ms"), ss.get("p90_ms"), ss.get("p90_ci_ms"), acc, drop,
                                           budget is None or (drop is not None and drop <= budget), str(cdir), doc))
    if labelled and src.reference_acc is None:  # no reference in the bundle: drops are vs the best f32 candidate
        ref = max((c.accuracy for c in results if c.requested == "f32" and c.accuracy is not None), default=None)
        for c in results:
            c.accuracy_drop = None if ref is None or c.accuracy is None else ref - c.accuracy
            c.within_budget = budget is None or (c.accuracy_drop is not None and c.accuracy_drop <= budget)
    winner, reason = choose(results, budget)
    return AutoResult(src.target.name, metric, budget, results, winner, reason)


def _input_shape(onnx: Path, shapes: dict[str, tuple[int, ...]] | None = None) -> list[int]:
    """Shape of the seeded probe inputs that accuracy is compared on: one float input, every
    dimension but the batch known (from the model or --shape)."""
    import onnx as onnx_lib
    from onnx import TensorProto

    model = onnx_lib.load(str(onnx), load_external_data=False)
    inits = {i.name for i in model.graph.initializer}
    inputs = [vi for vi in model.graph.input if vi.name not in inits]
    hint = ("profile a bundle (its eval.npz/golden.npz give real inputs), or measure latency without "
            "--precision auto")
    if len(inputs) != 1:
        raise ConfigError(f"precision auto compares top-1 agreement on seeded inputs and needs a model with one "
                          f"input; this one has {len(inputs)}: {', '.join(vi.name for vi in inputs)}",
                          where=str(onnx), hint=hint)
    t = inputs[0].type.tensor_type
    if t.elem_type not in (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16):
        raise ConfigError(f"precision auto compares top-1 agreement on seeded float inputs; input {inputs[0].name!r} "
                          f"is {TensorProto.DataType.Name(t.elem_type).lower()}", where=str(onnx), hint=hint)
    dims = [d.dim_value if d.dim_value > 0 else None for d in t.shape.dim]
    given = (shapes or {}).get(inputs[0].name)
    if given is not None and len(given) == len(dims):
        dims = [dims[0], *given[1:]]
    if any(d is None for d in dims[1:]):
        raise ConfigError(f"input {inputs[0].name!r} has dynamic dimensions besides the batch "
                          f"({'x'.join(str(d) if d else '?' for d in dims)})", where=str(onnx),
                          hint=f"give its shape: --shape {inputs[0].name}=1x..., or {hint}")
    return [d or 1 for d in dims]


def choose(results: list[CandidateResult], budget: float | None) -> tuple[str | None, str]:
    """Fastest p90 among candidates inside the accuracy budget; the reason names the runner-up and
    whether the gap is statistically significant (bootstrap CI of the p90 ratio)."""
    ok = [c for c in results if c.within_budget and c.p90_ms is not None]
    rejected = [c for c in results if not c.within_budget]
    if not ok:
        return None, ("no candidate meets the accuracy budget "
                      f"(max drop {budget} pp): " + ", ".join(f"{c.label} drops {_f(c.accuracy_drop, 2)} pp" for c in results))
    ok.sort(key=lambda c: c.p90_ms)
    best = ok[0]
    parts = [f"{best.label} has the lowest p90 ({best.p90_ms:.4f} ms) among {len(ok)} candidate(s) within the accuracy budget"]
    if len(ok) > 1:
        second = ok[1]
        a = np.asarray(second.doc["single_stream"]["times_ms"])
        b = np.asarray(best.doc["single_stream"]["times_ms"])
        ci = stats.ratio_ci(a, b, 90, n_boot=1000)
        sig = "significant" if not ci.contains(1.0) else "NOT significant (within noise)"
        parts.append(f"runner-up {second.label} at {second.p90_ms:.4f} ms; p90 ratio winner/runner-up {ci.estimate:.3f} "
                     f"[95% CI {ci.low:.3f}-{ci.high:.3f}], {sig}")
    if rejected:
        parts.append("excluded by accuracy: " + ", ".join(f"{c.label} (drop {_f(c.accuracy_drop, 2)} pp)" for c in rejected))
    return best.label, "; ".join(parts) + "."


def write_auto(result: AutoResult, out_dir: Path, *, plots: bool = True) -> list[str]:
    from edgekd.profiler import report

    out_dir.mkdir(parents=True, exist_ok=True)
    written = ["auto.json", "auto.md"]
    for c in result.candidates:
        report.write_all(c.doc, Path(c.out_dir), plots=plots)
    md = result.markdown()
    if plots and any(c.accuracy is not None for c in result.candidates):
        from edgekd.profiler.plots import accuracy_scatter

        accuracy_scatter([c.doc for c in result.candidates], out_dir / "accuracy_vs_p90.png",
                         title=f"precision auto on {result.target}: accuracy vs p90 (Pareto front)")
        written.append("accuracy_vs_p90.png")
        md += "\n![accuracy vs p90](accuracy_vs_p90.png)\n"
    (out_dir / "auto.json").write_text(json.dumps(result.to_dict(), indent=2, default=str) + "\n")
    (out_dir / "auto.md").write_text(md)
    return [*written, "candidates/"]
