"""One contract for every registered backend: its declarations are well-formed, and build -> load -> infer on a
tiny model matches ONNX Runtime running the same file (within the target's parity tolerances).

A new backend (built in or a plugin installed in this environment) is picked up here without editing the test;
a backend whose SDK is missing is checked as far as it goes without it (``builds_without_sdk``) or skipped.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgekd.backends import BACKENDS
from edgekd.backends.base import (
    BuildResult,
    Numerics,
    QDQFlavor,
    auto_precisions_of,
    call_build,
    latency_of,
    numerics_of,
)
from edgekd.backends.flavors import KNOWN_FLAVORS, TENSORRT, flavor_named, flavor_of
from edgekd.config import Target, available, load_target
from edgekd.errors import ExportError


def _target_for(backend_name: str) -> Target | None:
    """A shipped target file for the backend (the first by name), or None when none ships."""
    for path in available("targets").values():
        target = load_target(path)
        if target.backend == backend_name:
            return target
    return None


BACKEND_NAMES = BACKENDS.names()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A seeded 2-layer MLP on 1x8x8 inputs: float ONNX and a symmetric int8 QDQ copy made by ONNX Runtime's
    quantizer. ``reduce_range`` (7-bit weights): on CPUs without VNNI the u8 x s8 int16 pair sums of full-range
    weights saturate in OpenVINO's and ONNX Runtime's kernels, each differently; the contract is about the
    backends, not that hardware limit."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    from edgekd.testing.models import export_float, make_module

    work = tmp_path_factory.mktemp("contract")
    x = np.random.default_rng(0).uniform(0, 1, (16, 1, 8, 8)).astype(np.float32)
    float_path = export_float(make_module("mlp", seed=0), work / "tiny.onnx", x)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.samples = iter([{"input": x[i : i + 1]} for i in range(len(x))])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.samples, None)

    qdq_path = work / "tiny.qdq.onnx"
    quantize_static(str(float_path), str(qdq_path), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    reduce_range=True, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                    extra_options={"ActivationSymmetric": True, "WeightSymmetric": True})
    return {"float": float_path, "qdq": qdq_path, "x": x}


@pytest.mark.parametrize("name", BACKEND_NAMES)
def test_declarations_are_well_formed(name: str) -> None:
    backend = BACKENDS.get(name)
    assert backend.name == name and isinstance(backend.options_type, type)
    flavor = flavor_of(backend)
    assert isinstance(flavor, QDQFlavor) and flavor.name and flavor.runtime
    assert latency_of(backend) in ("measured", "estimate")
    for attr in ("builds_without_sdk", "requires_quantized"):
        assert isinstance(getattr(backend, attr, False), bool), attr
    suffixes = tuple(getattr(backend, "artifact_suffixes", ()))
    assert all(s.startswith(".") and s == s.lower() for s in suffixes), suffixes
    assert all(isinstance(m, str) and m for m in getattr(backend, "sdk_modules", ()))
    target = _target_for(name)
    if target is None:
        pytest.skip(f"no shipped target file uses backend {name!r}")
    numerics = numerics_of(backend, target)
    assert isinstance(numerics, Numerics) and all(isinstance(v, bool) for v in numerics.key())
    assert 8 in numerics.weight_bits and 8 in numerics.act_bits  # every backend runs W8A8
    if backend.availability().available:
        assert all(isinstance(p, str) and p for p in auto_precisions_of(backend, target))


def test_no_two_backends_claim_one_artifact_suffix() -> None:
    owners: dict[str, str] = {}
    for name in BACKEND_NAMES:
        for suffix in getattr(BACKENDS.get(name), "artifact_suffixes", ()):
            assert suffix not in owners, f"{suffix} is claimed by {owners[suffix]} and {name}"
            owners[suffix] = name


def test_flavors_by_name_object_or_derived() -> None:
    assert set(KNOWN_FLAVORS) == {"ort", "openvino", "tensorrt", "hls"}
    old_style = type("OldPlugin", (), {"name": "old", "onnx_flavor": "tensorrt"})()  # a plugin written before objects
    assert flavor_of(old_style) is TENSORRT
    derived = TENSORRT.derive("mine", rewrites=())
    assert flavor_named(derived) is derived and derived.activations == "int8" and derived != TENSORRT
    with pytest.raises(ExportError, match="unknown ONNX flavor 'nope'") as err:
        flavor_of(type("Bad", (), {"name": "bad", "onnx_flavor": "nope"})())
    assert "derive" in (err.value.hint or "")
    with pytest.raises(ValueError, match="names a file"):
        QDQFlavor("a/b", "x")


@pytest.mark.parametrize("name", BACKEND_NAMES)
def test_build_load_infer_matches_onnxruntime(name: str, tiny: dict[str, Any], tmp_path: Path) -> None:
    from edgekd.export import onnx_outputs
    from edgekd.parity import compare_outputs, quantized_output_step

    backend = BACKENDS.get(name)
    target = _target_for(name)
    if target is None:
        pytest.skip(f"no shipped target file uses backend {name!r}")
    status = backend.availability()
    if not status.available and not getattr(backend, "builds_without_sdk", False):
        pytest.skip(f"{name} is {status}")
    if hasattr(target.options, "batch") and getattr(target.options, "batch", None) is not None:
        target = dataclasses.replace(target, options=dataclasses.replace(target.options, batch=None))
    sources = ["qdq"] if getattr(backend, "requires_quantized", False) else ["float", "qdq"]
    x = tiny["x"]
    for kind in sources:
        source, out_dir = tiny[kind], tmp_path / kind
        build = call_build(backend, source, target, out_dir, x)
        assert isinstance(build, BuildResult) and build.backend == name
        assert all((out_dir / f).exists() for f in build.files), build.files
        assert BuildResult.from_dict(build.to_dict()).to_dict() == build.to_dict()  # what a bundle reads back
        if build.estimate is not None:
            assert build.estimate.label and build.estimate.latency_us > 0
        if not build.runnable:
            assert not status.available, f"{name} built a non-runnable artifact although its SDK is available"
            continue
        runner = backend.load(out_dir, target, build)
        got = runner.infer({runner.inputs[0].name: x})[runner.outputs[0].name]
        parity = compare_outputs(onnx_outputs(source, x), got, target.parity, output_step=quantized_output_step(source))
        assert parity.ok, (name, kind, parity.to_dict())
