"""The bundle's file names, in one place: every other module asks ``edgekd.bundle`` for a path. Torch-free."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekd.errors import EdgekdError

if TYPE_CHECKING:
    import numpy as np

SCHEMA = "edgekd.manifest/1"
MANIFEST = "manifest.json"
MODEL = "model.onnx"  # the exported reference model (manifest model.file)
GOLDEN = "golden.npz"  # golden inputs, labels and reference outputs (manifest golden.file)
EVAL = "eval.npz"  # the labelled evaluation set, x and y (manifest eval.file)
WEIGHTS = "weights.pt"  # the compressed student's state_dict (manifest weights.file), loadable with weights_only=True
REPORT_JSON = "report.json"
REPORT_MD = "report.md"
VARIANTS = "variants"  # per-runtime / per-numerics ONNX files a target is built from
PLOTS = "plots"
PROFILE = "profile"  # latency runs written into a bundle (`edgekd profile BUNDLE`, precision = "auto")

#: the key of the golden reference outputs of model.onnx (a variant's are "reference@variants/NAME")
REFERENCE_KEY = "reference"
#: files the writer owns besides those the manifest lists
OWN_FILES = frozenset({MANIFEST, REPORT_JSON, REPORT_MD})
#: files whose content changes between identical runs (timings): listed, never checksummed
UNHASHED_PREFIXES = ("report.", f"{PLOTS}/", f"{PROFILE}/")
#: a target's name is its folder in the bundle: these names are the bundle's own files and folders
RESERVED_NAMES = (MODEL, GOLDEN, EVAL, WEIGHTS, MANIFEST, REPORT_JSON, REPORT_MD, VARIANTS, PLOTS, PROFILE)


def is_bundle(path: str | Path) -> bool:
    """A folder with a manifest.json (not yet validated: ``Bundle(path).manifest`` does that)."""
    return Path(path).is_dir() and (Path(path) / MANIFEST).is_file()


def reference_key(source_rel: str) -> str:
    """The golden.npz key holding the reference outputs of ``source_rel`` (model.onnx or a variant)."""
    return REFERENCE_KEY if source_rel == MODEL else f"{REFERENCE_KEY}@{source_rel}"


def golden_key(reference: str, output: str, index: int) -> str:
    """The golden.npz key of one output's reference values: the plain ``reference`` key for the first output (what
    a one-output bundle has always held), ``reference#<output>`` for every further output of a multi-output model."""
    return reference if index == 0 else f"{reference}#{output}"


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


def load_npz(path: Path) -> dict[str, np.ndarray]:
    """A bundle's .npz (golden / eval) as plain arrays; pickles are refused."""
    import numpy as np  # lazily: config.py reads RESERVED_NAMES, and `edgekd list` stays fast

    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError) as exc:
        raise EdgekdError(f"cannot read {path.name}: {exc}", where=str(path)) from None
