from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgekd.bundle import read_manifest, verify_bundle
from edgekd.errors import EdgekdError
from edgekd.pipeline import CompressOptions, compress

FAST = CompressOptions(golden_samples=8)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("b") / "bundle"
    report = compress("builtin:digits-student", teacher="builtin:digits-teacher", data="builtin:digits",
                      recipe="fp32", targets=["cpu"], out=out, options=FAST)
    return out, report


def test_bundle_complete_and_checksums_verify(bundle) -> None:
    out, report = bundle
    for name in ("model.onnx", "manifest.json", "golden.npz", "eval.npz", "report.json", "report.md"):
        assert (out / name).is_file(), name
    assert verify_bundle(out) == []
    manifest = read_manifest(out)
    # cpu's model.onnx is byte-identical to the bundle's: stored once, and the manifest says where
    assert not (out / "cpu" / "model.onnx").exists()
    assert manifest["targets"]["cpu"]["stored_as"] == {"model.onnx": {"path": "model.onnx",
                                                                       "sha256": manifest["files"]["model.onnx"]}}
    assert manifest["model"]["inputs"][0]["shape"][1:] == [1, 8, 8]
    assert manifest["targets"]["cpu"]["backend"] == "onnxruntime"
    assert manifest["versions"]["onnxruntime"] and manifest["config"]["recipe"]["name"] == "fp32"
    assert "started_at" not in json.dumps(manifest)  # timestamps live in the report only
    golden = np.load(out / "golden.npz")
    assert golden["input"].shape == (8, 1, 8, 8) and golden["reference"].shape == (8, 10)
    entry = report["targets"]["cpu"]
    assert entry["status"] == "passed" and entry["parity"]["top1_agreement"] == 1.0
    assert entry["latency"]["p50_ms"] > 0 and entry["latency"]["iterations"] == 200
    assert report["accuracy"]["teacher"] > 95


def test_tampering_is_detected(bundle, tmp_path: Path) -> None:
    import shutil

    out, _ = bundle
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    (copy / "model.onnx").write_bytes(b"tampered")
    (copy / "extra.bin").write_bytes(b"x")
    problems = verify_bundle(copy)
    assert any("model.onnx: checksum mismatch" in p for p in problems)
    assert any("extra.bin: not listed" in p for p in problems)


def test_failed_run_leaves_no_bundle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import edgekd.pipeline as pipeline

    def explode(*args, **kwargs):
        raise RuntimeError("simulated crash while building a target")

    monkeypatch.setattr(pipeline, "_build_target", explode)
    out = tmp_path / "bundle"
    with pytest.raises(RuntimeError, match="simulated crash"):
        compress("builtin:digits-student", data="builtin:digits", recipe="fp32", targets=["cpu"], out=out, options=FAST)
    assert not (out / "manifest.json").exists()
    assert list(tmp_path.iterdir()) == []  # staging folder removed too


def test_failed_rebuild_keeps_previous_bundle(bundle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    import edgekd.pipeline as pipeline

    out, _ = bundle
    copy = tmp_path / "bundle"
    shutil.copytree(out, copy)
    monkeypatch.setattr(pipeline, "_build_target", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("crash")))
    with pytest.raises(RuntimeError):
        compress("builtin:digits-student", data="builtin:digits", recipe="fp32", targets=["cpu"], out=copy, options=FAST)
    assert verify_bundle(copy) == []  # the old complete bundle is untouched


def test_refuses_to_replace_foreign_folder(tmp_path: Path) -> None:
    out = tmp_path / "precious"
    out.mkdir()
    (out / "thesis.tex").write_text("do not delete")
    with pytest.raises(EdgekdError, match="not an edgekd bundle"):
        compress("builtin:digits-student", data="builtin:digits", recipe="fp32", targets=["cpu"], out=out, options=FAST)
    assert (out / "thesis.tex").exists()


def test_shape_mismatch_between_model_and_data(tmp_path: Path) -> None:
    with pytest.raises(EdgekdError, match=r"data samples have shape \(1, 28, 28\).*expects \(1, 8, 8\)"):
        compress("builtin:digits-student", data="builtin:mnist5k", recipe="fp32", targets=["cpu"],
                 out=tmp_path / "x", options=FAST)


def test_cli_compress_and_list(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from edgekd.cli import main

    assert main(["list", "backends", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {"name": "onnxruntime", "status": "available", "reason": ""} in rows
    code = main(["compress", "--model", "builtin:digits-student", "--data", "builtin:digits", "--recipe", "fp32",
                 "--target", "cpu", "--out", str(tmp_path / "b"), "--no-measure", "--quiet"])
    assert code == 0 and verify_bundle(tmp_path / "b") == []
    assert main(["compress", "--model", "builtin:digits-student", "--data", "builtin:digits",
                 "--target", "nosuch", "--out", str(tmp_path / "c"), "--quiet"]) == 2
    assert "unknown target 'nosuch'" in capsys.readouterr().err


def test_teacher_shape_mismatch(tmp_path: Path) -> None:
    # (a torchvision teacher loads instantly; builtin:mnist-teacher would train first). Its 224 px is a default,
    # not a requirement, so the run on the data's samples is what refuses it, naming the size it was built for
    with pytest.raises(EdgekdError, match=r"teacher resnet18 cannot run on the data's samples of shape \[1, 8, 8\]"
                       r"(.|\n)*resnet18 is built for \[3, 224, 224\]"):
        compress("builtin:digits-student", teacher="torchvision:resnet18", data="builtin:digits", recipe="fp32",
                 targets=["cpu"], out=tmp_path / "x", options=FAST)
    with pytest.raises(EdgekdError, match=r"teacher resnet18 expects \(3, 224, 224\)"):  # ?input_size= fixes it
        compress("builtin:digits-student", teacher="torchvision:resnet18?input_size=224", data="builtin:digits",
                 recipe="fp32", targets=["cpu"], out=tmp_path / "x", options=FAST)
    assert not (tmp_path / "x").exists()


def test_fpga_target_needs_a_quantized_profile(tmp_path: Path) -> None:
    with pytest.raises(EdgekdError, match="needs a quantized model, but recipe 'fp32' has no quantize pass"):
        compress("builtin:digits-student", data="builtin:digits", recipe="fp32", targets=["fpga-zcu104"],
                 out=tmp_path / "x", options=FAST)
    assert not (tmp_path / "x").exists()


def test_never_replaces_user_files(bundle, tmp_path: Path) -> None:
    import shutil

    from edgekd.bundle import BundleWriter

    webapp = tmp_path / "webapp"  # a folder that has a manifest.json of its own
    webapp.mkdir()
    (webapp / "manifest.json").write_text('{"name": "my pwa"}')
    (webapp / "index.html").write_text("<html>")
    with pytest.raises(EdgekdError, match="manifest.json is not an edgekd manifest"):
        BundleWriter(webapp).__enter__()
    assert (webapp / "index.html").exists()

    out, _ = bundle
    copy = tmp_path / "bundle"
    shutil.copytree(out, copy)
    (copy / "notes.txt").write_text("mine")
    with pytest.raises(EdgekdError, match=r"holds files that are not part of it \(notes.txt\)"):
        BundleWriter(copy).__enter__()
    (copy / "notes.txt").unlink()
    (copy / "report.pdf").write_text("mine too")  # named like the bundle's report files, yet not one of them
    with pytest.raises(EdgekdError, match=r"not part of it \(report.pdf\)"):
        BundleWriter(copy).__enter__()
    (copy / "report.pdf").unlink()
    (copy / "cpu" / "model.engine").write_bytes(b"built on the device")  # inside a target folder: replaceable
    with BundleWriter(copy) as writer:
        (writer.staging / "model.onnx").write_bytes(b"new")
        writer.finish({})
    assert (copy / "model.onnx").read_bytes() == b"new"

    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    with pytest.raises(EdgekdError, match="is a file, not a folder"):
        BundleWriter(a_file).__enter__()


def test_out_is_current_folder(bundle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from edgekd.bundle import BundleWriter

    (tmp_path / "b").mkdir()
    monkeypatch.chdir(tmp_path / "b")
    with pytest.raises(EdgekdError, match="is the current folder"):
        BundleWriter(Path(".")).__enter__()


def test_killed_writer_leftovers_are_recovered(bundle, tmp_path: Path) -> None:
    """A SIGKILLed run leaves .OUT.partial-PID (and, between its two renames, .OUT.old-PID)."""
    import shutil
    import subprocess
    import sys

    from edgekd.bundle import BundleWriter

    out, _ = bundle
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)  # a process id that no longer runs
    (tmp_path / f".b.partial-{pid}").mkdir()
    shutil.copytree(out, tmp_path / f".b.old-{pid}")  # killed after moving the previous bundle aside
    with pytest.raises(RuntimeError), BundleWriter(tmp_path / "b"):
        raise RuntimeError("this run fails too")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]  # leftovers gone, previous bundle back
    assert verify_bundle(tmp_path / "b") == []


def test_sigterm_removes_the_staging_folder_and_says_so(tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "b"
    proc = subprocess.Popen([sys.executable, "-m", "edgekd", "compress", "--model", "builtin:digits-student",
                             "--data", "builtin:digits", "--recipe", "fp32",
                             "--target", "cpu", "--out", str(out)], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(".b.partial-*")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None, "the run ended before its staging folder appeared"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "terminated (SIGTERM)" in err and "Traceback" not in err
    assert not list(tmp_path.glob(".b.*")) and not out.exists()



# ---------------------------------------------------------------- the Bundle reader


def test_bundle_reader_on_a_real_bundle(bundle) -> None:
    from edgekd.bundle import GOLDEN, MODEL, Bundle, BundleManifest, ManifestTarget

    out, report = bundle
    b = Bundle(out)
    assert b.manifest == read_manifest(out) and b.verify() == [] and b.where == str(out / "manifest.json")
    assert b.model_path == out / MODEL and b.model_path.is_file() and b.variants() == []
    golden = b.golden()
    assert golden is not None and b.golden_path == out / GOLDEN
    assert golden["input"].shape == (8, 1, 8, 8) and golden["reference"].shape == (8, 10) and golden["labels"].shape == (8,)
    x, y = b.eval_set()
    assert x.shape[1:] == (1, 8, 8) and y.shape == (len(x),) and len(x) == report["data"]["test"]
    assert b.report()["targets"]["cpu"]["status"] == report["targets"]["cpu"]["status"] == "passed"
    assert b.target_names == ["cpu"] and b.has_target("cpu") and not b.has_target("gpu")
    cpu = b.target("cpu")
    assert (cpu.name, cpu.backend, cpu.rel_dir, cpu.source, cpu.golden_reference) == (
        "cpu", "onnxruntime", "cpu", "model.onnx", "reference")
    assert cpu.dir == out / "cpu" and cpu.artifact_path == out / MODEL and cpu.target["backend"] == "onnxruntime"
    assert cpu.stored_as["model.onnx"]["sha256"] == b.file_digest("model.onnx") == b.manifest["files"]["model.onnx"]
    assert cpu.size_bytes() == (out / MODEL).stat().st_size  # the shared copy counts towards the target's size
    with pytest.raises(EdgekdError, match="target 'gpu' is not in this bundle; it has: cpu"):
        b.target("gpu")

    # the schema the writer fills: the manifest read back rebuilds to the same dict (what finish adds aside)
    m = b.manifest
    rebuilt = BundleManifest(
        name=m["name"], edgekd_version=m["edgekd_version"], inputs=m["model"]["inputs"], outputs=m["model"]["outputs"],
        preprocessing=m["preprocessing"], labels=m["labels"], num_classes=m["num_classes"],
        golden_samples=m["golden"]["samples"], eval_samples=m["eval"]["samples"], history=m["history"],
        targets={n: ManifestTarget(**t) for n, t in m["targets"].items()},
        versions=m["versions"], config=m["config"], reference_metrics=m["reference_metrics"],
        failed_targets=m["failed_targets"], task=m["task"]).to_dict()
    assert json.dumps(rebuilt, sort_keys=True) == json.dumps({k: v for k, v in m.items() if k not in ("schema", "files", "contents")},
                                                             sort_keys=True)


def test_bundle_from_an_older_manifest_still_loads(bundle, tmp_path: Path) -> None:
    """Manifests written before targets recorded source/golden_reference/output_step/precision (and without an
    eval set) load with the defaults those versions implied, in the runtime and in `edgekd check`."""
    import shutil

    from edgekd import runtime
    from edgekd.bundle import Bundle, dump_json
    from edgekd.hil import CheckOptions, run_checks

    out, _ = bundle
    old = tmp_path / "old"
    shutil.copytree(out, old)
    manifest = json.loads((old / "manifest.json").read_text())
    for key in ("source", "golden_reference", "output_step", "precision"):
        del manifest["targets"]["cpu"][key]
    manifest["eval"] = None
    (old / "eval.npz").unlink()
    del manifest["files"]["eval.npz"]
    dump_json(manifest, old / "manifest.json")  # the manifest is not checksummed: the others still verify

    b = Bundle(old)
    assert b.verify() == [] and b.eval_set() is None and b.eval_path is None
    cpu = b.target("cpu")
    assert (cpu.source, cpu.golden_reference, cpu.output_step, cpu.precision) == ("model.onnx", "reference", 0.0, "fp32")
    model = runtime.load(old)
    golden = b.golden()
    np.testing.assert_allclose(model.predict(golden["input"]), golden["reference"], rtol=1e-4, atol=1e-5)
    report = run_checks(old, CheckOptions(iterations=10, warmup=1))
    assert report.result("integrity").status == "passed" and report.result("golden_parity").status == "passed"
    assert report.result("accuracy").status == "skipped"  # no eval.npz, no --data


def test_manifest_paths_must_stay_inside_the_bundle(bundle, tmp_path: Path) -> None:
    import shutil

    from edgekd.bundle import dump_json

    out, _ = bundle
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    good = json.loads((copy / "manifest.json").read_text())
    golden_outside = json.loads(json.dumps(good))
    golden_outside["golden"]["file"] = "../elsewhere.npz"
    dump_json(golden_outside, copy / "manifest.json")
    with pytest.raises(EdgekdError, match="golden.file must name a file inside the bundle"):
        read_manifest(copy)
    source_outside = json.loads(json.dumps(good))
    source_outside["targets"]["cpu"]["source"] = "/etc/passwd"
    dump_json(source_outside, copy / "manifest.json")
    with pytest.raises(EdgekdError, match="targets.cpu.source must be a path inside the bundle"):
        read_manifest(copy)
