"""Run a bundle in an app or on a device with only the runtime's own dependency (no torch).

    from edgekd import runtime
    model = runtime.load("build/digits", target="cpu")
    probs = model.predict(images)          # images: float32 NCHW, already preprocessed
    model.labels, model.preprocessing       # from manifest.json

``load`` verifies every checksum in manifest.json, rebuilds the target from the resolved
target dict stored in the manifest, loads the artifact through the target's backend, and
checks that what the runtime reports matches the manifest's I/O spec. Everything here
(and everything it imports) must stay torch-free: a test imports this module in a fresh
interpreter and asserts that ``torch`` is not in ``sys.modules``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.artifact import IOSpec
from edgekd.backends import BACKENDS, BuildResult
from edgekd.backends.base import BoundCall, bound_call_of, dtype_hint
from edgekd.bundle import Bundle, load_npz
from edgekd.errors import BackendUnavailable, BuildError, ConfigError, EdgekdError
from edgekd.inputs import ModelInputs, run_batched

__all__ = ["BundleRunner", "load", "load_npz", "select_target"]


def select_target(manifest: Mapping[str, Any], target: str | None, *, where: str) -> str:
    """The manifest's target entry to use: ``target`` by name, or the only one there is."""
    names = sorted(manifest.get("targets") or {})
    if target is not None and not isinstance(target, str):
        raise ConfigError(f"target must be a target name (str), got {type(target).__name__} {target!r}", where=where,
                          hint=f"one of: {', '.join(names)}")
    if not names:
        raise EdgekdError("the bundle has no built targets", where=where,
                          hint="rebuild it with at least one --target")
    if target is None:
        if len(names) == 1:
            return names[0]
        raise ConfigError(f"the bundle has several targets ({', '.join(names)}); say which one",
                          where=where, hint="pass target=NAME (CLI: --target NAME)")
    if target not in names:
        import difflib

        close = difflib.get_close_matches(target, names, n=2)
        raise ConfigError(f"target {target!r} is not in this bundle; it has: {', '.join(names)}", where=where,
                          hint=f"did you mean {', '.join(close)}?" if close else "rebuild the bundle with that target")
    return target


def _target_object(stored: Mapping[str, Any], *, where: str) -> Any:
    # config.py is torch-free; the pass registry it could touch is only imported for profiles.
    from edgekd.config import target_from_mapping

    return target_from_mapping(dict(stored), where=where)


def _check_io(declared: list[IOSpec], actual: tuple[IOSpec, ...], kind: str, *, where: str) -> None:
    """The runtime's view of the model must agree with the manifest (names, ranks, fixed dims, dtypes)."""
    if [s.name for s in declared] != [s.name for s in actual]:
        raise BuildError(f"model {kind}s {[s.name for s in actual]} differ from manifest.json {[s.name for s in declared]}",
                         where=where, hint="the artifact does not belong to this manifest; rebuild the bundle")
    for want, got in zip(declared, actual, strict=True):
        fixed_mismatch = len(want.shape) != len(got.shape) or any(
            isinstance(a, int) and isinstance(b, int) and a != b for a, b in zip(want.shape, got.shape, strict=True))
        if fixed_mismatch or want.dtype != got.dtype:
            raise BuildError(f"{kind} {want.name!r}: runtime reports shape {list(got.shape)} {got.dtype}, "
                             f"manifest.json says {list(want.shape)} {want.dtype}", where=where,
                             hint="the artifact does not belong to this manifest; rebuild the bundle")


def _shape_hint(got: tuple[int, ...], want: tuple[Any, ...]) -> str:
    """What to change when an input's shape does not fit (``want`` has names/None for free axes)."""
    def fits(shape: tuple[int, ...]) -> bool:
        return len(shape) == len(want) and all(not isinstance(w, int) or w == g for g, w in zip(shape, want))

    if got and want and isinstance(want[0], int) and fits((want[0], *got[1:])):
        return (f"the artifact has a fixed batch of {want[0]}: feed {want[0]} sample(s) at a time, or use predict(x), "
                "which splits the input")
    if fits((1, *got)):
        return "add the batch axis: x[None] (one sample) -- the model takes a batch"
    if len(got) == 4 and fits((got[0], got[3], got[1], got[2])):
        return "the array looks channels-last (N, H, W, C); the model takes NCHW: x.transpose(0, 3, 1, 2)"
    return "apply the bundle's preprocessing (runner.preprocessing) and add the batch axis"


@dataclass
class BundleRunner:
    """A loaded bundle target: ``infer(feeds)`` by name, or ``predict(x)`` for single-input models."""

    bundle: Path
    target_name: str
    target: Any  # edgekd.config.Target
    manifest: dict[str, Any]
    runner: Any  # the backend's Runner

    @property
    def inputs(self) -> tuple[IOSpec, ...]:
        return tuple(IOSpec.from_dict(d) for d in self.manifest["model"]["inputs"])

    @property
    def outputs(self) -> tuple[IOSpec, ...]:
        return tuple(IOSpec.from_dict(d) for d in self.manifest["model"]["outputs"])

    @property
    def labels(self) -> list[str]:
        return list(self.manifest.get("labels") or [])

    @property
    def preprocessing(self) -> dict[str, Any]:
        return dict(self.manifest.get("preprocessing") or {})

    @property
    def target_dir(self) -> Path:
        return Bundle(self.bundle).target(self.target_name).dir

    @property
    def where(self) -> str:
        return Bundle(self.bundle).where

    def validate(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Names, dtypes and shapes against manifest.json; errors say what to change."""
        names = [s.name for s in self.inputs]
        if not isinstance(feeds, Mapping):
            raise BuildError(f"feeds must be a dict {{input name: array}}, got {type(feeds).__name__}",
                             where=self.where,
                             hint=f"infer({{{names[0]!r}: x}})" + (", or predict(x)" if len(names) == 1 else ""))
        unknown = sorted(set(feeds) - set(names))
        missing = [n for n in names if n not in feeds]
        if unknown or missing:
            raise BuildError(f"feeds must be keyed by the model's inputs {names}: missing {missing}, unexpected {unknown}",
                             where=self.where)
        out = {}
        for spec in self.inputs:
            arr = np.asarray(feeds[spec.name])
            if str(arr.dtype) != spec.dtype:
                raise BuildError(f"input {spec.name!r} is {arr.dtype}, the model expects {spec.dtype}",
                                 where=self.where,
                                 hint=dtype_hint(arr.dtype, spec.dtype, self.preprocessing))
            if not spec.matches(tuple(arr.shape)):
                raise BuildError(f"input {spec.name!r} has shape {list(arr.shape)}, the model expects {list(spec.shape)} "
                                 "(a name or null is any size)", where=self.where,
                                 hint=_shape_hint(tuple(arr.shape), tuple(spec.shape)))
            out[spec.name] = arr
        return out

    def infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.runner.infer(self.validate(feeds))

    def infer_unchecked(self, feeds: Mapping[str, np.ndarray]) -> Any:
        """The backend's hot path (for latency loops): no validation."""
        call = getattr(self.runner, "infer_unchecked", self.runner.infer)
        return call(feeds)

    def bound_call(self, feeds: Mapping[str, np.ndarray]) -> BoundCall | None:
        """The backend's bound call (``edgekd.backends.base.BoundCall``) on validated feeds; None when it has none."""
        return bound_call_of(self.runner, self.validate(feeds))

    def predict(self, x: np.ndarray, batch: int = 256) -> np.ndarray:
        """First output for a single-input model, in chunks (fixed-batch artifacts run one batch at a time)."""
        return self.predict_all(x, batch)[self.outputs[0].name]

    def predict_all(self, x: Any, batch: int = 256) -> dict[str, np.ndarray]:
        """Every output (by name), in chunks (fixed-batch artifacts one batch at a time). ``x``: one array for a
        single-input model, a dict {input name: array} (or edgekd.inputs.ModelInputs) for several."""
        if len(self.inputs) != 1:
            if isinstance(x, Mapping):
                x = ModelInputs(dict(x))
            if not isinstance(x, ModelInputs):
                raise BuildError(f"this model has {len(self.inputs)} inputs ({', '.join(s.name for s in self.inputs)}); "
                                 "predict() takes one array only for a single-input model",
                                 hint="pass a dict {name: array, ...}, or use infer({name: array, ...})")
            return run_batched(self.infer, self.inputs, x, [o.name for o in self.outputs], batch)
        spec = self.inputs[0]
        step = spec.shape[0] if spec.shape and isinstance(spec.shape[0], int) else batch
        x = np.asarray(x)
        if x.ndim == 0 or len(x) == 0:
            raise BuildError(f"predict() needs a batch of samples, shape {list(spec.shape)}; got "
                             f"{'a scalar' if x.ndim == 0 else 'an empty batch'}")
        parts = [self.infer({spec.name: x[i : i + step]}) for i in range(0, len(x), step)]
        return {o.name: np.concatenate([p[o.name] for p in parts]) for o in self.outputs}

    def classify(self, x: np.ndarray) -> list[str]:
        """Top-1 label per sample (the index when the bundle has no labels)."""
        top = self.predict(x).reshape(len(x), -1).argmax(1)
        return [self.labels[i] if i < len(self.labels) else str(i) for i in top]

    def describe(self) -> dict[str, Any]:
        return {"bundle": str(self.bundle), "target": self.target_name, **self.runner.describe()}


def load(bundle_dir: str | Path, target: str | None = None, *, verify: bool = True,
         target_override: Any = None) -> BundleRunner:
    """Load ``bundle_dir``'s artifact for ``target`` (a target name in manifest.json).

    The checksums of the files ``target`` uses (its folder, the shared files, its Q/DQ variant) are verified
    first; other targets' folders may be absent, so a device ships only the target it runs. ``verify=False``
    skips the check (``edgekd check`` reports it as its own check).
    ``target_override`` (an edgekd.config.Target of the same backend) replaces the stored target's
    options and budgets, e.g. a device's own thread count.
    """
    bundle = Bundle(bundle_dir)
    manifest = bundle.manifest
    where = bundle.where
    name = select_target(manifest, target, where=where)
    if verify:  # this target's files and the shared ones: a bundle shipped with only this target's folder loads
        problems = bundle.verify(target=name)
        if problems:
            raise EdgekdError("bundle failed its checksum verification: " + "; ".join(problems[:5])
                              + (f" (+{len(problems) - 5} more)" if len(problems) > 5 else ""), where=str(bundle.path),
                              hint="the bundle was modified or copied incompletely; rebuild or re-copy it")
    entry = bundle.target(name)
    tgt = target_override if target_override is not None else _target_object(entry.target, where=f"{where} targets.{name}")
    backend = BACKENDS.get(entry.backend, where=f"{where} targets.{name}.backend")
    status = backend.availability()
    if not status.available:
        raise BackendUnavailable(f"backend {entry.backend!r} is {status}", where=f"{where} targets.{name}",
                                 hint="install the runtime this target needs, or load another target")
    # a de-duplicated artifact (stored once as model.onnx) is handed to the backend by its absolute path
    build = BuildResult(backend=entry.backend, artifact=entry.ref(entry.artifact), precision=entry.precision)
    if not entry.artifact_path.is_file():
        raise BuildError(f"artifact {entry.artifact!r} is missing", where=str(entry.dir))
    runner = backend.load(entry.dir, tgt, build)
    declared_in = [IOSpec.from_dict(d) for d in manifest["model"]["inputs"]]
    declared_out = [IOSpec.from_dict(d) for d in manifest["model"]["outputs"]]
    _check_io(declared_in, tuple(runner.inputs), "input", where=str(entry.artifact_path))
    _check_io(declared_out, tuple(runner.outputs), "output", where=str(entry.artifact_path))
    return BundleRunner(bundle=bundle.path, target_name=name, target=tgt, manifest=manifest, runner=runner)

