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


def check_replaceable(out: Path, *, flag: str = "--out") -> None:
    """Raise unless ``out`` may be replaced by a bundle: missing, empty, or an edgekd bundle holding only its
    own files. A folder with anything else in it (a web app's manifest.json, notes next to a bundle) is the
    user's: it is never deleted."""
    out = Path(out)
    if not out.exists() and not out.is_symlink():
        return
    hint = f"choose another {flag}, or move the files out of it"
    if out.is_symlink() or not out.is_dir():
        raise EdgekdError(f"{flag} is a {'link' if out.is_symlink() else 'file'}, not a folder", where=str(out),
                          hint=f"choose another {flag}")
    cwd = Path.cwd().resolve()
    if cwd == out.resolve() or out.resolve() in cwd.parents:
        raise EdgekdError(f"{flag} is the current folder (or holds it); a bundle folder is replaced as a whole",
                          where=str(out), hint=f"run from another folder or choose another {flag}")
    if not any(out.iterdir()):
        return
    if not (out / MANIFEST).is_file():
        raise EdgekdError("refusing to replace a non-empty folder that is not an edgekd bundle", where=str(out),
                          hint=f"choose another {flag} or empty it")
    try:
        manifest = json.loads((out / MANIFEST).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        manifest = None
    if not isinstance(manifest, dict) or not str(manifest.get("schema", "")).startswith("edgekd.manifest/"):
        raise EdgekdError("refusing to replace a folder whose manifest.json is not an edgekd manifest",
                          where=str(out), hint=hint)
    listed = manifest.get("files") or {}
    # files a device adds inside a target's folder (a TensorRT engine built by build_engine.sh) are the bundle's
    target_dirs = tuple(f"{t.get('dir', name)}/" for name, t in (manifest.get("targets") or {}).items()
                        if isinstance(t, dict))
    own = {MANIFEST, "report.json", "report.md"}
    foreign = []
    for path in sorted(p for p in out.rglob("*") if p.is_file() or p.is_symlink()):
        rel = path.relative_to(out).as_posix()
        if not (rel in listed or rel in own or rel.startswith((*target_dirs, "plots/", "profile/"))
                or "/__pycache__/" in f"/{rel}"):
            foreign.append(rel)
    if foreign:
        raise EdgekdError(f"refusing to replace this bundle: it also holds files that are not part of it "
                          f"({', '.join(foreign[:5])}{' ...' if len(foreign) > 5 else ''})", where=str(out), hint=hint)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def recover_leftovers(out: Path) -> None:
    """Clean up after a writer that was killed (SIGKILL, power loss): its staging folder is removed, and a
    previous bundle it had moved aside but not yet replaced is put back."""
    out = Path(out)
    if not out.parent.is_dir():
        return
    for kind in ("partial", "old"):
        for path in out.parent.glob(f".{out.name}.{kind}-*"):
            pid = path.name.rpartition("-")[2]
            if not pid.isdigit() or (_pid_alive(int(pid)) and int(pid) != os.getpid()):
                continue
            if kind == "old" and not out.exists() and (path / MANIFEST).is_file():
                os.replace(path, out)  # killed between its two renames: the previous bundle comes back
            else:
                shutil.rmtree(path, ignore_errors=True)


class BundleWriter:
    """``with BundleWriter(out) as staging: ...; writer.finish(manifest)`` -- atomic rename at the end."""

    def __init__(self, out: Path) -> None:
        self.out = Path(os.path.abspath(out))
        self.staging = self.out.parent / f".{self.out.name}.partial-{os.getpid()}"
        self._done = False

    def __enter__(self) -> BundleWriter:
        try:
            self.out.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise EdgekdError(f"cannot create the output's parent folder: {exc.strerror or exc}",
                              where=str(self.out.parent), hint="choose another --out") from None
        recover_leftovers(self.out)
        check_replaceable(self.out)
        shutil.rmtree(self.staging, ignore_errors=True)
        try:
            self.staging.mkdir()
        except OSError as exc:
            raise EdgekdError(f"cannot write next to the output folder: {exc.strerror or exc}",
                              where=str(self.staging), hint="the bundle is written into a sibling folder and "
                              "renamed into place: the parent folder must be writable") from None
        return self

    def finish(self, manifest: dict[str, Any]) -> Path:
        """Checksum everything, write the manifest last, then swap the folder into place."""
        manifest = {**manifest, "schema": SCHEMA, "files": hashed_files(self.staging)}
        dump_json(manifest, self.staging / MANIFEST)
        check_replaceable(self.out)  # again: the folder may have changed during a long run
        old = self.out.parent / f".{self.out.name}.old-{os.getpid()}"
        if self.out.exists():
            os.replace(self.out, old)
        try:
            os.replace(self.staging, self.out)
        except OSError:
            if old.exists() and not self.out.exists():
                os.replace(old, self.out)  # put the previous bundle back
            raise
        shutil.rmtree(old, ignore_errors=True)
        self._done = True
        return self.out

    def __exit__(self, *exc: object) -> None:
        if not self._done:
            shutil.rmtree(self.staging, ignore_errors=True)


def read_manifest(bundle: Path) -> dict[str, Any]:
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
