"""Reading a bundle: ``Bundle(path)`` is the one view of a bundle folder every consumer uses. Torch-free."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from edgekd.bundle.layout import MANIFEST, REFERENCE_KEY, REPORT_JSON, VARIANTS, hashed_files, load_npz, sha256_file
from edgekd.bundle.manifest import read_manifest
from edgekd.errors import EdgekdError


@dataclass(frozen=True)
class BundleTarget:
    """One target of a bundle, as its manifest entry records it (defaults fill keys older bundles lack)."""

    name: str
    backend: str
    dir: Path  # the target's folder: bundle / rel_dir
    rel_dir: str  # the manifest's "dir" (the target's name for bundles edgekd writes)
    artifact: str  # the artifact's file name inside ``dir``
    precision: str
    source: str  # the ONNX file the target was built from, relative to the bundle
    golden_reference: str  # the golden.npz key of that file's reference outputs
    output_step: float
    target: dict[str, Any]  # the resolved target (edgekd.config.target_from_mapping)
    #: files of the target the bundle stores once elsewhere: {file in dir: {"path", "sha256"}} (older bundles: {})
    stored_as: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    bundle: Path = Path()

    def file(self, name: str) -> Path:
        """Where the target's file ``name`` lives: in its folder, or where the bundle stores its one copy."""
        stored = self.stored_as.get(name)
        return self.bundle / stored["path"] if stored else self.dir / name

    def ref(self, name: str) -> str:
        """``name`` as a backend's ``load(dir, ...)`` joins it to ``dir``: the name itself, or the absolute path of
        the shared copy (``dir / "/abs/path"`` is ``/abs/path``)."""
        return os.path.abspath(self.file(name)) if name in self.stored_as else name

    @property
    def artifact_path(self) -> Path:
        return self.file(self.artifact)

    def size_bytes(self) -> int:
        """What the target's files hold on a device: its folder plus the files it shares with the bundle."""
        own = sum(p.stat().st_size for p in self.dir.rglob("*") if p.is_file()) if self.dir.is_dir() else 0
        return own + sum(self.file(n).stat().st_size for n in self.stored_as if self.file(n).is_file())


class Bundle:
    """A bundle folder: ``Bundle(path).manifest`` (validated), ``golden()``, ``eval_set()``, ``report()``,
    ``target(name)``, ``verify()``. Cheap to create; the manifest is read (and checked) on first use."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"Bundle({str(self.path)!r})"

    @cached_property
    def manifest(self) -> dict[str, Any]:
        return read_manifest(self.path)

    @property
    def where(self) -> str:
        """Where errors about the manifest's content point."""
        return str(self.path / MANIFEST)

    @property
    def model_path(self) -> Path:
        """The exported reference model (model.onnx)."""
        return self.path / self.manifest["model"]["file"]

    def variants(self) -> list[Path]:
        """The per-runtime / per-numerics ONNX files targets were built from (variants/*.onnx)."""
        folder = self.path / VARIANTS
        return sorted(folder.glob("*.onnx")) if folder.is_dir() else []

    @property
    def golden_path(self) -> Path | None:
        info = self.manifest.get("golden") or {}
        return self.path / info["file"] if info.get("file") else None

    def golden(self) -> dict[str, Any] | None:
        """golden.npz's arrays ("input", "labels", "reference", "reference@variants/..."); None without one."""
        path = self.golden_path
        return load_npz(path) if path is not None and path.is_file() else None

    @property
    def eval_path(self) -> Path | None:
        info = self.manifest.get("eval") or {}
        return self.path / info["file"] if info.get("file") else None

    def eval_set(self) -> tuple[Any, Any] | None:
        """The labelled evaluation set (x, y) that travels with the bundle; None when the data was unlabelled."""
        path = self.eval_path
        if path is None or not path.is_file():
            return None
        arrays = load_npz(path)
        per_output = {k[2:]: v for k, v in arrays.items() if k.startswith("y_")}
        if "x" in arrays and "y" not in arrays and per_output:  # a multi-output model's labels, one per output
            return arrays["x"], per_output
        if "x" not in arrays or "y" not in arrays:
            raise EdgekdError(f"{path.name} has no x/y arrays (found: {', '.join(sorted(arrays)) or 'none'})",
                              where=str(path), hint="the bundle was modified; rebuild or re-copy it")
        return arrays["x"], arrays["y"]

    def report(self) -> dict[str, Any]:
        """report.json (what happened at build time: accuracy, parity, latency); {} when the bundle has none."""
        path = self.path / REPORT_JSON
        if not path.is_file():
            return {}
        try:
            report = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise EdgekdError(f"{REPORT_JSON} is not readable JSON: {exc}", where=str(path),
                              hint="the report is not checksummed; rebuild the bundle or delete the file") from None
        return report if isinstance(report, dict) else {}

    @property
    def target_names(self) -> list[str]:
        return sorted(self.manifest.get("targets") or {})

    def has_target(self, name: str) -> bool:
        return name in (self.manifest.get("targets") or {})

    def target(self, name: str) -> BundleTarget:
        entry = (self.manifest.get("targets") or {}).get(name)
        if entry is None:
            raise EdgekdError(f"target {name!r} is not in this bundle; it has: {', '.join(self.target_names) or 'none'}",
                              where=self.where, hint="rebuild the bundle with that target")
        return BundleTarget(name=name, backend=entry["backend"], dir=self.path / entry["dir"], rel_dir=entry["dir"],
                            artifact=entry["artifact"],
                            precision=entry.get("precision", "fp32"), source=entry.get("source") or self.manifest["model"]["file"],
                            golden_reference=entry.get("golden_reference", REFERENCE_KEY),
                            output_step=float(entry.get("output_step", 0.0)), target=dict(entry["target"]),
                            stored_as={k: dict(v) for k, v in (entry.get("stored_as") or {}).items()},
                            bundle=self.path)

    def file_digest(self, rel: str) -> str | None:
        """The sha256 the manifest lists for ``rel``."""
        return (self.manifest.get("files") or {}).get(rel)

    def other_targets_files(self, target: str) -> set[str]:
        """Listed files only other targets use: their folders, and the Q/DQ variants only they are built from."""
        targets = self.manifest.get("targets") or {}
        mine = targets.get(target) or {}
        own = {mine.get("source"), *[(v or {}).get("path") for v in (mine.get("stored_as") or {}).values()]}
        dirs = [e["dir"] + "/" for n, e in targets.items() if n != target and isinstance(e.get("dir"), str)]
        sources = {e.get("source") for n, e in targets.items() if n != target} - own
        return {rel for rel in self.manifest.get("files", {})
                if rel.startswith(tuple(dirs)) or (rel in sources and rel.startswith("variants/"))}

    def verify(self, target: str | None = None) -> list[str]:
        """Problems found (missing/changed/unlisted files); empty when every checksum verifies. With ``target``,
        the files only other targets use may be missing (a bundle shipped with one target's folder); any file
        that is there is still verified."""
        problems = []
        listed: dict[str, str] = self.manifest.get("files", {})
        optional = self.other_targets_files(target) if target is not None else set()
        for rel, digest in listed.items():
            path = self.path / rel
            if not path.is_file():
                if rel not in optional:
                    problems.append(f"{rel}: missing")
            elif sha256_file(path) != digest:
                problems.append(f"{rel}: checksum mismatch (file changed after the bundle was written)")
        for name, entry in (self.manifest.get("targets") or {}).items():
            # a file stored once: the target's record of its digest must be the listed file's (checksummed above)
            for file, stored in (entry.get("stored_as") or {}).items():
                if stored["path"] not in listed:
                    problems.append(f"{entry['dir']}/{file}: stored as {stored['path']}, which is not in the bundle")
                elif listed[stored["path"]] != stored["sha256"]:
                    problems.append(f"{entry['dir']}/{file}: stored as {stored['path']}, whose checksum is not the "
                                    f"target's (the target {name} was built from another file)")
        device_outputs = self.device_outputs()
        for rel in hashed_files(self.path):
            if rel not in listed and rel not in device_outputs:
                problems.append(f"{rel}: not listed in {MANIFEST}")
        return problems

    def device_outputs(self) -> set[str]:
        """Bundle-relative paths a target's device step may add (its backend verifies them when loading)."""
        found: set[str] = set()
        for entry in (self.manifest.get("targets") or {}).values():
            names = entry.get("device_outputs") or []
            if isinstance(names, list) and isinstance(entry.get("dir"), str):
                found |= {f"{entry['dir']}/{name}" for name in names if isinstance(name, str) and "/" not in name
                          and ".." not in name}
        return found


def verify_bundle(bundle: Path) -> list[str]:
    """Problems found (missing/changed/unlisted files); empty when every checksum verifies."""
    return Bundle(bundle).verify()


