"""The bundle: a folder an app or a device can use without edgekd's build side.

    OUT/model.onnx            the exported reference model
    OUT/<target>/...          each target's built artifact (engine, IR, HLS project, ...)
    OUT/golden.npz            inputs and reference outputs for parity checks on the device
    OUT/manifest.json         I/O, preprocessing, labels, targets, sha256 of every artifact file,
                              versions and the resolved configuration -- no timestamps, so
                              rebuilding from the same inputs gives the same bytes
    OUT/report.json|.md       what happened (accuracy, parity, latency): timestamps live here

A bundle is written into a temporary sibling folder and renamed into place at the end:
a failed run never leaves a folder that looks complete. Torch-free.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from edgekd.errors import EdgekdError

MANIFEST = "manifest.json"
SCHEMA = "edgekd.manifest/1"
#: files whose content changes between identical runs (timings): listed, never checksummed
UNHASHED_PREFIXES = ("report.", "plots/", "profile/")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def hashed_files(root: Path) -> dict[str, str]:
    out = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if rel == MANIFEST or rel.startswith(UNHASHED_PREFIXES) or "/__pycache__/" in rel or rel.endswith(".pyc"):
            continue
        out[rel] = sha256_file(path)
    return out


def dump_json(data: Any, path: Path) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


class BundleWriter:
    """``with BundleWriter(out) as staging: ...; writer.finish(manifest)`` -- atomic rename at the end."""

    def __init__(self, out: Path) -> None:
        self.out = Path(out)
        self.staging = self.out.parent / f".{self.out.name}.partial-{os.getpid()}"
        self._done = False

    def __enter__(self) -> BundleWriter:
        self.out.parent.mkdir(parents=True, exist_ok=True)
        if self.out.exists() and not (self.out / MANIFEST).exists() and any(self.out.iterdir()):
            raise EdgekdError("refusing to replace a non-empty folder that is not an edgekd bundle",
                              where=str(self.out), hint="choose another --out or empty it")
        shutil.rmtree(self.staging, ignore_errors=True)
        self.staging.mkdir()
        return self

    def finish(self, manifest: dict[str, Any]) -> Path:
        """Checksum everything, write the manifest last, then swap the folder into place."""
        manifest = {**manifest, "schema": SCHEMA, "files": hashed_files(self.staging)}
        dump_json(manifest, self.staging / MANIFEST)
        old = self.out.parent / f".{self.out.name}.old-{os.getpid()}"
        if self.out.exists():
            os.replace(self.out, old)
        os.replace(self.staging, self.out)
        shutil.rmtree(old, ignore_errors=True)
        self._done = True
        return self.out

    def __exit__(self, *exc: object) -> None:
        if not self._done:
            shutil.rmtree(self.staging, ignore_errors=True)


def read_manifest(bundle: Path) -> dict[str, Any]:
    path = Path(bundle) / MANIFEST
    if not path.is_file():
        raise EdgekdError("not an edgekd bundle (no manifest.json)", where=str(bundle),
                          hint="build one with `edgekd compress ... --out DIR`")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise EdgekdError(f"manifest.json is not valid JSON: {exc}", where=str(path)) from None
    if manifest.get("schema") != SCHEMA:
        raise EdgekdError(f"unsupported manifest schema {manifest.get('schema')!r} (expected {SCHEMA})", where=str(path))
    return manifest


def verify_bundle(bundle: Path) -> list[str]:
    """Problems found (missing/changed/unlisted files); empty when every checksum verifies."""
    bundle = Path(bundle)
    manifest = read_manifest(bundle)
    problems = []
    listed: dict[str, str] = manifest.get("files", {})
    for rel, digest in listed.items():
        path = bundle / rel
        if not path.is_file():
            problems.append(f"{rel}: missing")
        elif sha256_file(path) != digest:
            problems.append(f"{rel}: checksum mismatch (file changed after the bundle was written)")
    for rel in hashed_files(bundle):
        if rel not in listed:
            problems.append(f"{rel}: not listed in manifest.json")
    return problems
