"""The bundle: a folder an app or a device can use without edgekd's build side.

    OUT/model.onnx            the exported reference model
    OUT/variants/*.onnx       per-runtime / per-numerics exports a target is built from (when they differ)
    OUT/<target>/...          each target's built artifact (engine, IR, HLS project, ...); a file byte-identical to
                              model.onnx / a variant is stored once, the target's ``stored_as`` says where
    OUT/golden.npz            inputs and reference outputs for parity checks on the device
    OUT/eval.npz              the labelled evaluation set (when the data is labelled; at most --eval-samples)
    OUT/weights.pt            the compressed student's state_dict (torch.load(weights_only=True); not --no-weights)
    OUT/plots/training.png    loss / validation metric per epoch, the metric per stage and per target
    OUT/manifest.json         I/O, preprocessing, labels, targets, sha256 of every artifact file, contents,
    versions and the resolved configuration -- no timestamps, so
    rebuilding from the same inputs gives the same bytes
    OUT/report.json|.md       what happened (accuracy, parity, latency): timestamps live here

This package is the only code that knows these names: ``BundleWriter`` writes a bundle (atomically),
``Bundle`` reads one. Torch-free (``edgekd.runtime`` uses it).
"""

from __future__ import annotations

from edgekd.bundle.layout import (
    EVAL,
    GOLDEN,
    MANIFEST,
    MODEL,
    PLOTS,
    PROFILE,
    REFERENCE_KEY,
    REPORT_JSON,
    REPORT_MD,
    RESERVED_NAMES,
    SCHEMA,
    UNHASHED_PREFIXES,
    VARIANTS,
    WEIGHTS,
    dump_json,
    golden_key,
    hashed_files,
    is_bundle,
    load_npz,
    reference_key,
    sha256_file,
)
from edgekd.bundle.manifest import BundleManifest, ManifestTarget, read_manifest
from edgekd.bundle.reader import Bundle, BundleTarget, verify_bundle
from edgekd.bundle.writer import BundleWriter, check_replaceable, copy_bundle, pid_alive, recover_leftovers

__all__ = [
    "EVAL",
    "GOLDEN",
    "MANIFEST",
    "MODEL",
    "PLOTS",
    "PROFILE",
    "REFERENCE_KEY",
    "REPORT_JSON",
    "REPORT_MD",
    "RESERVED_NAMES",
    "SCHEMA",
    "UNHASHED_PREFIXES",
    "VARIANTS",
    "WEIGHTS",
    "Bundle",
    "BundleManifest",
    "BundleTarget",
    "BundleWriter",
    "ManifestTarget",
    "check_replaceable",
    "copy_bundle",
    "dump_json",
    "golden_key",
    "hashed_files",
    "is_bundle",
    "load_npz",
    "pid_alive",
    "read_manifest",
    "recover_leftovers",
    "reference_key",
    "sha256_file",
    "verify_bundle",
]
