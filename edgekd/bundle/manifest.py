"""manifest.json: the schema the writer fills and the checks every reader relies on. Torch-free.

No timestamps: rebuilding from the same inputs gives the same bytes (``dump_json`` sorts keys).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgekd.bundle.layout import EVAL, GOLDEN, MANIFEST, MODEL, REFERENCE_KEY, SCHEMA
from edgekd.errors import EdgekdError


@dataclass(frozen=True)
class ManifestTarget:
    """One built target as the manifest records it; ``dir`` is the target's folder in the bundle."""

    backend: str
    dir: str
    artifact: str
    precision: str
    source: str  # the ONNX file (model.onnx or variants/...) the target was built from
    golden_reference: str  # the golden.npz key of that file's reference outputs
    output_step: float
    target: dict[str, Any]  # the resolved target, enough to rebuild it (edgekd.config.target_from_mapping)
    fits: bool | None = None  # the backend's resource estimate fits the part (FPGA); None: no estimate
    fit_detail: str = ""
    device_outputs: tuple[str, ...] = ()  # files a device step may add to ``dir`` (Backend.device_outputs)
    #: files of the target stored once elsewhere in the bundle: {file in dir: {"path": bundle path, "sha256": ...}}
    stored_as: Mapping[str, Mapping[str, str]] = field(default_factory=dict)

    @classmethod
    def of(cls, target: Any, entry: Mapping[str, Any]) -> ManifestTarget:
        """From an ``edgekd.config.Target`` and its report entry (build, source, golden_reference, output_step)."""
        return cls(backend=target.backend, dir=target.name, artifact=entry["build"]["artifact"],
                   precision=entry["build"]["precision"], source=entry["source"],
                   golden_reference=entry["golden_reference"], output_step=entry.get("output_step", 0.0),
                   target=target.to_dict(), fits=entry.get("fits_part"), fit_detail=entry.get("fit_detail", ""),
                   device_outputs=tuple(entry.get("device_outputs", ())),
                   stored_as={k: dict(v) for k, v in (entry.get("stored_as") or {}).items()})

    def to_dict(self) -> dict[str, Any]:
        return {"backend": self.backend, "dir": self.dir, "artifact": self.artifact, "precision": self.precision,
                "source": self.source, "golden_reference": self.golden_reference, "output_step": self.output_step,
                "target": self.target, **({"fits": self.fits, "fit_detail": self.fit_detail} if self.fits is not None else {}),
                **({"device_outputs": list(self.device_outputs)} if self.device_outputs else {}),
                **({"stored_as": {k: dict(v) for k, v in self.stored_as.items()}} if self.stored_as else {})}


@dataclass(frozen=True)
class BundleManifest:
    """What ``BundleWriter.finish`` writes (it adds ``schema`` and the ``files`` checksums)."""

    name: str
    edgekd_version: str
    inputs: Sequence[Mapping[str, Any]]  # IOSpec.to_dict() of model.onnx's inputs
    outputs: Sequence[Mapping[str, Any]]
    preprocessing: Mapping[str, Any]
    labels: Sequence[str]
    num_classes: int | None
    golden_samples: int
    eval_samples: int | None  # None: no labelled evaluation set in the bundle
    history: Sequence[str]
    targets: Mapping[str, ManifestTarget]
    versions: Mapping[str, Any]
    config: Mapping[str, Any] = field(default_factory=dict)
    #: what `edgekd check` judges the accuracy budget against: {"fp32": {"accuracy", "stage", "data"}} (eval.npz)
    reference_metrics: Mapping[str, Any] | None = None
    #: targets whose build failed: in report.json with their reasons, not in the bundle
    failed_targets: Mapping[str, Sequence[str]] | None = None
    #: the task (edgekd.tasks.TaskSpec.to_dict): each output's kind and class axis, the metric and its direction
    task: Mapping[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "edgekd_version": self.edgekd_version,
            "model": {"file": MODEL, "inputs": [dict(s) for s in self.inputs], "outputs": [dict(s) for s in self.outputs]},
            "preprocessing": self.preprocessing,
            "labels": list(self.labels),
            "num_classes": self.num_classes,
            "golden": {"file": GOLDEN, "samples": self.golden_samples},
            "reference_metrics": dict(self.reference_metrics) if self.reference_metrics else None,
            "failed_targets": {k: list(v) for k, v in self.failed_targets.items()} if self.failed_targets else None,
            "task": dict(self.task) if self.task else None,
            "eval": {"file": EVAL, "samples": self.eval_samples} if self.eval_samples is not None else None,
            "history": list(self.history),
            "targets": {name: t.to_dict() for name, t in self.targets.items()},
            "versions": dict(self.versions),
            "config": dict(self.config),
        }


def read_manifest(bundle: Path) -> dict[str, Any]:
    """manifest.json of ``bundle``, validated (schema, structure, paths inside the bundle)."""
    path = Path(bundle) / MANIFEST
    if Path(bundle).is_file():
        raise EdgekdError("is a file; a bundle is the folder that holds manifest.json", where=str(bundle),
                          hint=f"pass {Path(bundle).parent}" if (Path(bundle).parent / MANIFEST).is_file() else None)
    if not path.is_file():
        raise EdgekdError("not an edgekd bundle (no manifest.json)", where=str(bundle),
                          hint="build one with `edgekd compress ... --out DIR`")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise EdgekdError(f"manifest.json is not valid JSON: {exc}", where=str(path)) from None
    if not isinstance(manifest, dict):
        raise EdgekdError(f"manifest.json holds a JSON {type(manifest).__name__}, not an object", where=str(path),
                          hint="the bundle is damaged; rebuild or re-copy it")
    if manifest.get("schema") != SCHEMA:
        raise EdgekdError(f"unsupported manifest schema {manifest.get('schema')!r} (expected {SCHEMA})", where=str(path),
                          hint="rebuild the bundle with this edgekd version")
    _check_structure(manifest, where=str(path))
    return manifest


def _safe_relpath(value: Any) -> bool:
    """A path inside the bundle: relative, no '..', no drive letter."""
    if not isinstance(value, str) or not value or value.startswith(("/", "\\")) or ":" in value:
        return False
    return ".." not in value.replace("\\", "/").split("/")


def _check_structure(manifest: dict[str, Any], *, where: str) -> None:
    """The keys the runtime and `edgekd check` rely on, with paths that stay inside the bundle."""
    def bad(key: str, what: str) -> EdgekdError:
        return EdgekdError(f"manifest.json is damaged: {key} {what}", where=where,
                           hint="the bundle was modified or written by another tool; rebuild or re-copy it")

    model = manifest.get("model")
    if not isinstance(model, dict) or not _safe_relpath(model.get("file")):
        raise bad("model.file", "must name a file inside the bundle")
    for key in ("inputs", "outputs"):
        specs = model.get(key)
        if not isinstance(specs, list) or not specs or not all(
                isinstance(d, dict) and isinstance(d.get("name"), str) and isinstance(d.get("shape"), list)
                for d in specs):
            raise bad(f"model.{key}", "must be a list of {name, shape, dtype}")
    files = manifest.get("files", {})
    if not isinstance(files, dict) or not all(_safe_relpath(k) and isinstance(v, str) for k, v in files.items()):
        raise bad("files", "must map paths inside the bundle to sha256 digests")
    for key in ("golden", "eval"):
        section = manifest.get(key)
        if section is not None and (not isinstance(section, dict) or not _safe_relpath(section.get("file"))):
            raise bad(f"{key}.file", "must name a file inside the bundle")
    targets = manifest.get("targets") or {}
    if not isinstance(targets, dict):
        raise bad("targets", "must be an object")
    for name, entry in targets.items():
        if not isinstance(entry, dict) or not all(isinstance(entry.get(k), str) for k in ("backend", "dir", "artifact")):
            raise bad(f"targets.{name}", "must have backend, dir and artifact strings")
        if not _safe_relpath(entry["dir"]) or not _safe_relpath(entry["artifact"]):
            raise bad(f"targets.{name}", "dir and artifact must be paths inside the bundle")
        if not isinstance(entry.get("target"), dict):
            raise bad(f"targets.{name}.target", "must be the resolved target (an object)")
        if entry.get("source") is not None and not _safe_relpath(entry["source"]):
            raise bad(f"targets.{name}.source", "must be a path inside the bundle")
        if not isinstance(entry.get("golden_reference", REFERENCE_KEY), str):
            raise bad(f"targets.{name}.golden_reference", "must be a golden.npz key (a string)")
        stored = entry.get("stored_as") or {}
        if not isinstance(stored, dict) or not all(
                isinstance(k, str) and "/" not in k and _safe_relpath(k) and isinstance(v, dict)
                and _safe_relpath(v.get("path")) and isinstance(v.get("sha256"), str) for k, v in stored.items()):
            raise bad(f"targets.{name}.stored_as", "must map file names of the target to {path, sha256} inside the bundle")
