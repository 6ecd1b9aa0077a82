"""edgekd.runtime: loads a bundle without torch, verifies checksums and the I/O spec, clear errors."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgekd import runtime
from edgekd.bundle import MANIFEST, dump_json, read_manifest
from edgekd.errors import BuildError, ConfigError, EdgekdError

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from edgekd.buildfile import BuildFile, CacheSettings, build

    root = tmp_path_factory.mktemp("app")
    cache = tmp_path_factory.getbasetemp() / "hil-build-cache"  # shared with the other HIL test files
    bf = BuildFile(model="builtin:digits-student", data="builtin:digits", out="bundle", measure=False,
                   cache=CacheSettings(dir=str(cache)), root=str(root))
    return build(bf).out


def _python(code: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=cwd, env={**os.environ, "EDGEKD_QUIET": "1"})


def test_runtime_never_imports_torch(bundle: Path) -> None:
    code = f"""
import sys
import numpy as np
import edgekd.runtime as rt
assert "torch" not in sys.modules, "import edgekd.runtime pulled in torch"
model = rt.load({str(bundle)!r}, target="cpu")
golden = rt.load_npz(model.bundle / "golden.npz")
out = model.predict(golden["input"])
assert np.allclose(out, golden["reference"], atol=1e-5)
heavy = sorted(m for m in ("torch", "torchvision", "brevitas", "torch_pruning", "timm") if m in sys.modules)
print("HEAVY", heavy)
"""
    proc = _python(code)
    assert proc.returncode == 0, proc.stderr
    assert "HEAVY []" in proc.stdout


def test_predict_and_classify(bundle: Path) -> None:
    model = runtime.load(bundle)  # the only target is picked
    assert model.target_name == "cpu"
    golden = runtime.load_npz(bundle / "golden.npz")
    np.testing.assert_allclose(model.predict(golden["input"]), golden["reference"], atol=1e-5)
    assert model.predict(golden["input"][:3], batch=1).shape == (3, 10)  # chunked
    labels = model.classify(golden["input"][:4])
    assert labels == [model.labels[i] for i in golden["reference"][:4].argmax(1)]
    assert model.preprocessing["layout"] == "NCHW"
    assert model.describe()["runtime"] == "onnxruntime"
    out = model.infer({"input": golden["input"][:2]})
    assert set(out) == {"logits"}


def test_input_validation_errors(bundle: Path) -> None:
    model = runtime.load(bundle, "cpu")
    x = runtime.load_npz(bundle / "golden.npz")["input"][:2]
    with pytest.raises(BuildError, match=r"is float64, the model expects float32") as exc:
        model.infer({"input": x.astype(np.float64)})
    assert "astype(np.float32)" in str(exc.value)
    with pytest.raises(BuildError, match=r"is uint8, the model expects float32") as exc:
        model.infer({"input": (x * 16).astype(np.uint8)})  # digits are 0..16: the bundle's scale is 1/16
    assert f"x.astype(np.float32) * {model.preprocessing['scale']:.8g}" in exc.value.hint
    assert "a bare astype keeps a range the model never saw" in exc.value.hint
    with pytest.raises(BuildError, match=r"shape \[2, 8, 8\], the model expects \['batch', 1, 8, 8\]"):
        model.infer({"input": x[:, 0]})
    with pytest.raises(BuildError, match=r"missing \['input'\], unexpected \['image'\]"):
        model.infer({"image": x})


def test_checksum_and_target_errors(bundle: Path, tmp_path: Path) -> None:
    b = tmp_path / "b"
    shutil.copytree(bundle, b)
    data = bytearray((b / "model.onnx").read_bytes())  # cpu's artifact, stored once (manifest stored_as)
    data[-1] ^= 1
    (b / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(EdgekdError, match=r"model.onnx: checksum mismatch") as exc:
        runtime.load(b)
    assert "rebuild or re-copy" in str(exc.value)
    (b / "model.onnx").write_bytes((bundle / "model.onnx").read_bytes())
    (b / "extra.bin").write_bytes(b"x")
    with pytest.raises(EdgekdError, match="extra.bin: not listed"):
        runtime.load(b)

    with pytest.raises(ConfigError, match=r"target 'cpx' is not in this bundle; it has: cpu") as exc:
        runtime.load(bundle, "cpx")
    assert "did you mean cpu" in str(exc.value)
    with pytest.raises(EdgekdError, match="no manifest.json"):
        runtime.load(tmp_path)


def test_io_spec_mismatch_is_caught(bundle: Path, tmp_path: Path) -> None:
    b = tmp_path / "b"
    shutil.copytree(bundle, b)
    manifest = read_manifest(b)
    manifest["model"]["inputs"][0]["shape"] = ["batch", 3, 8, 8]  # says RGB; the artifact is grayscale
    dump_json(manifest, b / MANIFEST)
    with pytest.raises(BuildError, match=r"runtime reports shape \[None, 1, 8, 8\].*manifest.json says \['batch', 3, 8, 8\]"):
        runtime.load(b)


def test_example_app_runs_without_torch(bundle: Path) -> None:
    app = REPO / "examples" / "digits_app" / "app.py"
    x = runtime.load_npz(bundle / "eval.npz")["x"]
    img = bundle.parent / "digit.npy"
    np.save(img, x[0, 0])
    code = f"""
import runpy, sys
sys.argv = ["app.py", "--bundle", {str(bundle)!r}, "--demo", {str(img)!r}]
try:
    runpy.run_path({str(app)!r}, run_name="__main__")
except SystemExit as exc:
    assert not exc.code, exc.code
assert "torch" not in sys.modules
print("TORCH-FREE")
"""
    proc = _python(code)
    assert proc.returncode == 0, proc.stderr
    assert "accuracy on 500 bundled test images" in proc.stdout
    assert f"{img}: " in proc.stdout and "TORCH-FREE" in proc.stdout


def test_wrong_call_shapes_get_hints(bundle: Path) -> None:
    model = runtime.load(bundle)
    x = np.zeros((2, 1, 8, 8), np.float32)
    with pytest.raises(BuildError, match=r"add the batch axis: x\[None\]"):
        model.predict(x[0])
    with pytest.raises(BuildError, match="channels-last"):
        model.predict(x.transpose(0, 2, 3, 1))
    with pytest.raises(BuildError, match="got a scalar"):
        model.predict(np.float32(1))
    with pytest.raises(BuildError, match="feeds must be a dict"):
        model.infer(x)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="target must be a target name"):
        runtime.load(bundle, 0)  # type: ignore[arg-type]
    with pytest.raises(EdgekdError, match="is a file; a bundle is the folder"):
        runtime.load(bundle / "model.onnx")


@pytest.mark.parametrize(("edit", "message"), [
    (lambda m: m["targets"]["cpu"].__setitem__("dir", "../elsewhere"), "targets.cpu dir and artifact must be paths inside"),
    (lambda m: m["files"].__setitem__("../../etc/hostname", "0" * 64), "files must map paths inside the bundle"),
    (lambda m: m["targets"]["cpu"].pop("target"), r"targets.cpu.target must be the resolved target"),
    (lambda m: m.pop("model"), "model.file must name a file"),
    (lambda m: m["model"].__setitem__("inputs", [{"nm": "x"}]), "model.inputs must be a list"),
])
def test_damaged_manifest_is_a_clear_error(bundle: Path, tmp_path: Path, edit, message: str) -> None:
    import json

    copy = tmp_path / "b"
    shutil.copytree(bundle, copy)
    manifest = json.loads((copy / MANIFEST).read_text())
    edit(manifest)
    dump_json(manifest, copy / MANIFEST)
    with pytest.raises(EdgekdError, match=f"manifest.json is damaged: {message}"):
        runtime.load(copy)


def test_shape_hints() -> None:
    from edgekd.runtime import _shape_hint

    assert "fixed batch of 1" in _shape_hint((3, 1, 8, 8), (1, 1, 8, 8))
    assert "x[None]" in _shape_hint((1, 8, 8), ("batch", 1, 8, 8))
    assert "channels-last" in _shape_hint((2, 8, 8, 3), ("batch", 3, 8, 8))


def test_bundle_runner_passes_the_bound_call_through(bundle: Path) -> None:
    """edgekd.runtime's runner (what HIL checks time) offers the backend's bound call on validated feeds: same
    outputs as infer(), and the profiler's loop times it."""
    from edgekd.backends.base import bound_call_of
    from edgekd.profiler.measure import MeasureSettings, measure_latency

    model = runtime.load(bundle, "cpu")
    x = runtime.load_npz(bundle / "golden.npz")["input"][:2]
    bound = bound_call_of(model, {"input": x})
    assert bound is not None and "IOBinding" in bound.path
    bound.run()
    np.testing.assert_array_equal(bound.outputs()[0], model.infer({"input": x})["logits"])
    with pytest.raises(BuildError, match="float32"):
        bound_call_of(model, {"input": x.astype(np.float64)})  # validated like infer()
    sample = measure_latency(model, {"input": x[:1]}, settings=MeasureSettings(warmup=2, iterations=10))
    assert sample.call_path == "bound"
