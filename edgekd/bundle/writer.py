"""Writing a bundle: into a temporary sibling folder, renamed into place at the end, so a failed run never
leaves a folder that looks complete, and a folder that is not an edgekd bundle is never replaced. Torch-free."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from edgekd.bundle.layout import (
    EVAL,
    GOLDEN,
    MANIFEST,
    MODEL,
    OWN_FILES,
    PLOTS,
    PROFILE,
    REPORT_JSON,
    REPORT_MD,
    SCHEMA,
    VARIANTS,
    WEIGHTS,
    dump_json,
    hashed_files,
    sha256_file,
)
from edgekd.bundle.manifest import BundleManifest
from edgekd.errors import EdgekdError


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
    foreign = []
    for path in sorted(p for p in out.rglob("*") if p.is_file() or p.is_symlink()):
        rel = path.relative_to(out).as_posix()
        if not (rel in listed or rel in OWN_FILES or rel.startswith((*target_dirs, f"{PLOTS}/", f"{PROFILE}/"))
                or "/__pycache__/" in f"/{rel}"):
            foreign.append(rel)
    if foreign:
        raise EdgekdError(f"refusing to replace this bundle: it also holds files that are not part of it "
                          f"({', '.join(foreign[:5])}{' ...' if len(foreign) > 5 else ''})", where=str(out), hint=hint)


def pid_alive(pid: int) -> bool:
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
            if not pid.isdigit() or (pid_alive(int(pid)) and int(pid) != os.getpid()):
                continue
            if kind == "old" and not out.exists() and (path / MANIFEST).is_file():
                os.replace(path, out)  # killed between its two renames: the previous bundle comes back
            else:
                shutil.rmtree(path, ignore_errors=True)


def _staging_path(out: Path) -> Path:
    return out.parent / f".{out.name}.partial-{os.getpid()}"


def _swap_into_place(staging: Path, out: Path) -> None:
    """Two renames: the previous bundle aside, the new one in; a failure puts the previous one back."""
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    if out.exists():
        os.replace(out, old)
    try:
        os.replace(staging, out)
    except OSError:
        if old.exists() and not out.exists():
            os.replace(old, out)  # put the previous bundle back
        raise
    shutil.rmtree(old, ignore_errors=True)


def copy_bundle(src: Path, dest: Path, *, flag: str = "--out") -> None:
    """Copy the bundle ``src`` to ``dest`` (a build cache hit) the way a writer writes: into a sibling folder,
    then swapped into place, so ``dest`` is never half-written and a folder that is not a bundle is never replaced."""
    dest = Path(os.path.abspath(dest))
    dest.parent.mkdir(parents=True, exist_ok=True)
    recover_leftovers(dest)
    check_replaceable(dest, flag=flag)
    staging = _staging_path(dest)
    shutil.rmtree(staging, ignore_errors=True)
    try:
        shutil.copytree(src, staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _swap_into_place(staging, dest)


#: each of the bundle's own files: (role, what it is); a target's folder holds that backend's build
_WHAT = {MODEL: ("model", "the exported reference model (ONNX)"),
         GOLDEN: ("golden", "golden inputs, labels and reference outputs for parity"),
         EVAL: ("eval", "the labelled evaluation set for accuracy checks on the device"),
         WEIGHTS: ("weights", "the compressed student's PyTorch state_dict (torch.load(weights_only=True))"),
         VARIANTS: ("variant", "ONNX a target builds from"), PLOTS: ("plot", "plots"), PROFILE: ("profile", "latency runs")}


def _content_row(root: Path, path: Path) -> dict[str, Any]:
    rel = path.relative_to(root).as_posix()
    top = rel.partition("/")[0]
    role, what = _WHAT.get(top, ("target", f"target {top}'s build") if "/" in rel else ("", ""))
    return {"file": rel, "role": role, "bytes": path.stat().st_size, "what": what}


def bundle_contents(root: Path) -> list[dict[str, Any]]:
    """Every file under ``root`` with its size and what it is; manifest.json and report.* come last (they are
    written after this list)."""
    rows = [_content_row(root, p) for p in sorted(p for p in root.rglob("*")
                                                  if p.is_file() and "__pycache__" not in p.parts)]
    return [*rows, {"file": MANIFEST, "bytes": None, "what": "file list and checksums (written last)"},
            {"file": REPORT_JSON, "bytes": None, "what": "this report, machine-readable"},
            {"file": REPORT_MD, "bytes": None, "what": "this report"}]


def manifest_contents(root: Path, manifest: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The manifest's ``contents``: every checksummed file with its role, size and what it is; the sample count of
    golden.npz and eval.npz; the targets that use a file stored once (``stored_as``). Report files, plots and
    profiles are not listed (they change between identical runs; report.json's ``bundle_contents`` lists them)."""
    samples = {(manifest.get(k) or {}).get("file"): (manifest.get(k) or {}).get("samples") for k in ("golden", "eval")}
    shared: dict[str, list[str]] = {}
    for name, entry in (manifest.get("targets") or {}).items():
        for stored in (entry.get("stored_as") or {}).values():
            shared.setdefault(stored["path"], []).append(name)
    rows = []
    for rel in hashed_files(root):
        row = _content_row(root, root / rel)
        if samples.get(rel) is not None:
            row["samples"] = samples[rel]
        if rel in shared:
            row["shared_by"] = sorted(shared[rel])
        rows.append(row)
    return rows


class BundleWriter:
    """``with BundleWriter(out) as writer: ...; writer.finish(manifest)`` -- atomic rename at the end.

    Everything is written into ``writer.staging`` (``model_path``, ``variant_path()``, ``target_dir()``,
    ``write_golden()``, ``write_eval()``, ``write_report()``); ``finish`` checksums it and writes manifest.json."""

    def __init__(self, out: Path) -> None:
        self.out = Path(os.path.abspath(out))
        self.staging = _staging_path(self.out)
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

    # ------------------------------------------------------------ where things go (inside the staging folder)

    @property
    def model_path(self) -> Path:
        return self.staging / MODEL

    def variant_path(self, name: str) -> Path:
        return self.staging / VARIANTS / name

    def target_dir(self, target_name: str) -> Path:
        return self.staging / target_name

    def relpath(self, path: Path) -> str:
        """``path`` (inside the staging folder) as the bundle names it: "model.onnx", "variants/...", ..."""
        return Path(path).relative_to(self.staging).as_posix()

    def share(self, target_name: str, file: str, source: Path) -> dict[str, str] | None:
        """Store ``target_name``'s ``file`` once: when it is byte-identical to ``source`` (model.onnx or a variant,
        already in the bundle), the target's copy is removed and the entry the manifest records under the target's
        ``stored_as`` is returned ({"path": where the bytes live, "sha256": their digest}); None when they differ.
        A resnet18 bundle held its 45 MB model.onnx twice (model.onnx and cpu/model.onnx)."""
        copy = self.target_dir(target_name) / file
        if not copy.is_file() or not Path(source).is_file() or copy.stat().st_size != Path(source).stat().st_size:
            return None
        digest = sha256_file(copy)
        if sha256_file(Path(source)) != digest:
            return None
        copy.unlink()
        return {"path": self.relpath(Path(source)), "sha256": digest}

    # ------------------------------------------------------------ the bundle's own files

    def write_golden(self, arrays: Mapping[str, Any]) -> Path:
        """Golden inputs ("input"), labels ("labels") and reference outputs ("reference", "reference@...")."""
        import numpy as np

        path = self.staging / GOLDEN
        # compressed (np.load reads either); zip entries carry numpy's fixed 1980 date: same arrays, same bytes
        np.savez_compressed(path, **arrays)
        return path

    def write_eval(self, x: Any, y: Any) -> Path:
        """The evaluation set, so `edgekd check` can test the task metric on the device (``y`` may be None for
        a reconstruction task, whose target is the input)."""
        import numpy as np

        path = self.staging / EVAL
        labels = {f"y_{k}": v for k, v in y.items()} if isinstance(y, dict) else ({"y": y} if y is not None else {})
        xs = dict(x) if isinstance(x, Mapping) else {"x": x}  # a multi-input model's x_<name> (edgekd.inputs.to_npz)
        np.savez_compressed(path, **xs, **labels)
        return path

    def write_weights(self, data: bytes) -> Path:
        """weights.pt: the compressed student's state_dict, serialized by the caller (this package is torch-free)."""
        path = self.staging / WEIGHTS
        path.write_bytes(data)
        return path

    def write_report(self, report: Mapping[str, Any], markdown: Callable[[Mapping[str, Any], Path], Any] | None = None) -> Path:
        """report.json (timings live here: listed as unhashed) and, with ``markdown``, report.md through it; both
        say what is inside the bundle (``bundle_contents``: every file written so far and its size)."""
        path = self.staging / REPORT_JSON
        report = {**report, "bundle_contents": bundle_contents(self.staging)}
        dump_json(report, path)
        if markdown is not None:
            markdown(report, self.staging / REPORT_MD)
        return path

    def finish(self, manifest: BundleManifest | dict[str, Any]) -> Path:
        """Checksum everything, write the manifest last, then swap the folder into place."""
        data = manifest.to_dict() if isinstance(manifest, BundleManifest) else manifest
        manifest = {**data, "schema": SCHEMA, "files": hashed_files(self.staging)}
        manifest["contents"] = manifest_contents(self.staging, manifest)
        dump_json(manifest, self.staging / MANIFEST)
        check_replaceable(self.out)  # again: the folder may have changed during a long run
        _swap_into_place(self.staging, self.out)
        self._done = True
        return self.out

    def __exit__(self, *exc: object) -> None:
        if not self._done:
            shutil.rmtree(self.staging, ignore_errors=True)
