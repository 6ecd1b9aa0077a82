"""edgekd.toml + edgekd build: validation, content-addressed cache (hit says "cached", is several
times faster, gives the same bytes), determinism of model.onnx and manifest.json."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from edgekd.buildfile import build, cache_key, load_buildfile
from edgekd.bundle import verify_bundle
from edgekd.errors import ConfigError, EdgekdError, SourceError

APP_TOML = """\
model = "builtin:digits-student"
data = "npz:data/digits.npz"
recipe = "quick.toml"
targets = ["cpu"]
out = "build/digits"
measure = false

[cache]
dir = ".cache"
"""

# one epoch of supervised training: the determinism check covers a pass that trains, not only export
QUICK_PROFILE = """\
name = "quick"
[[passes]]
name = "distill"
loss = "ce"
epochs = 1
"""


@pytest.fixture()
def app(tmp_path: Path) -> Path:
    from edgekd.data import load_data

    d = load_data("builtin:digits")
    (tmp_path / "data").mkdir()
    np.savez(tmp_path / "data" / "digits.npz", x_train=d.x_train[:400], y_train=d.y_train[:400],
             x_test=d.x_test[:100], y_test=d.y_test[:100], labels=np.array(d.labels))
    (tmp_path / "quick.toml").write_text(QUICK_PROFILE)
    (tmp_path / "edgekd.toml").write_text(APP_TOML)
    return tmp_path


def test_buildfile_validation(tmp_path: Path) -> None:
    path = tmp_path / "edgekd.toml"
    path.write_text('model = "builtin:digits-student"\ndata = "builtin:digits"\nout = "b"\nrecip = "fp32"\n')
    with pytest.raises(ConfigError, match=r"edgekd.toml.*recip") as exc:
        load_buildfile(path)
    assert "recipe" in str(exc.value)  # the close match is suggested
    path.write_text('model = "builtin:digits-student"\nout = "b"\n')
    with pytest.raises(ConfigError, match="data"):
        load_buildfile(path)
    path.write_text('model = "builtin:digits-student"\ndata = "builtin:digits"\nout = "b"\ntargets = "cpu"\n'
                    '[cache]\nenabled = false\n')
    bf = load_buildfile(tmp_path)  # a folder means its edgekd.toml; a single target may be a string
    assert bf.targets == ("cpu",) and bf.cache.enabled is False and bf.root == str(tmp_path.resolve())
    with pytest.raises(ConfigError, match="build file not found"):
        load_buildfile(tmp_path / "nope.toml")
    path.write_text('model = "builtin:digits-student"\ndata = "builtin:digits"\nout = "~/bundles/x"\n')
    assert load_buildfile(path).out_path == Path.home() / "bundles" / "x"  # not a folder named "~"
    for out in (".", "", "..", "./"):  # the bundle folder is replaced whole: never the app's own folder
        path.write_text(f'model = "builtin:digits-student"\ndata = "builtin:digits"\nout = "{out}"\n')
        with pytest.raises(ConfigError, match="is the folder of edgekd.toml"):
            load_buildfile(path)


def test_cache_key_follows_inputs(app: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bf = load_buildfile(app / "edgekd.toml")
    key, material = cache_key(bf)
    assert cache_key(bf)[0] == key
    assert material["data"]["sha256"] and material["versions"]["onnxruntime"]
    assert material["edgekd"]["code_sha256"]

    (app / "quick.toml").write_text(QUICK_PROFILE.replace("epochs = 1", "epochs = 2"))
    key_profile = cache_key(bf)[0]
    assert key_profile != key
    with np.load(app / "data" / "digits.npz") as z:
        arrays = dict(z)
    arrays["y_train"][0] = (arrays["y_train"][0] + 1) % 10  # one label changed
    np.savez(app / "data" / "digits.npz", **arrays)
    assert cache_key(bf)[0] not in (key, key_profile)

    before = cache_key(bf)[0]
    monkeypatch.setenv("OMP_NUM_THREADS", "7")  # training results depend on the thread count
    assert cache_key(bf)[0] != before
    monkeypatch.undo()

    # py: sources are hashed from their code, without importing it
    (app / "mymodel.py").write_text("def build():\n    raise RuntimeError('never imported for the key')\n")
    text = (app / "edgekd.toml").read_text().replace("builtin:digits-student", "py:mymodel.py:build")
    (app / "edgekd.toml").write_text(text)
    k1 = cache_key(load_buildfile(app))[0]
    (app / "mymodel.py").write_text("def build():\n    return None\n")
    k2 = cache_key(load_buildfile(app))[0]
    assert k2 != k1
    # a module the file imports (app/layers.py next to it, or in a subfolder of the app) changes the key too
    (app / "app_layers").mkdir()
    (app / "app_layers" / "blocks.py").write_text("WIDTH = 8\n")
    k3 = cache_key(load_buildfile(app))[0]
    assert k3 != k2
    (app / "app_layers" / "blocks.py").write_text("WIDTH = 16\n")
    assert cache_key(load_buildfile(app))[0] != k3
    (app / "edgekd.toml").write_text(text.replace("npz:data/digits.npz", "npz:data/missing.npz"))
    with pytest.raises(SourceError, match="not found"):
        cache_key(load_buildfile(app))


def test_build_is_deterministic_and_cached(app: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from edgekd.cli import main

    bf = load_buildfile(app)
    first = build(bf)
    assert not first.cached and first.report is not None
    out = app / "build" / "digits"
    onnx1, manifest1 = (out / "model.onnx").read_bytes(), (out / "manifest.json").read_bytes()

    # a fresh build without the cache, into another folder: byte-identical model and manifest
    fresh = build(dataclasses.replace(bf, out="build/again"), use_cache=False)
    assert not fresh.cached
    assert (app / "build" / "again" / "model.onnx").read_bytes() == onnx1
    assert (app / "build" / "again" / "manifest.json").read_bytes() == manifest1

    # unchanged inputs: served from the cache, several times faster, same bytes. Other engineers may
    # edit edgekd's code (part of the key) meanwhile: then one more miss is legitimate.
    for _ in range(4):
        t0 = time.perf_counter()
        hit = build(bf)
        hit_s = time.perf_counter() - t0
        if hit.cached:
            break
        assert hit.key != first.key, "same key, yet not served from the cache"
        first = hit
    assert hit.cached and hit.up_to_date and "cached" in hit.message
    assert hit_s * 3 < first.seconds, (hit_s, first.seconds)
    shutil.rmtree(out)
    restored = build(bf)
    assert restored.cached and not restored.up_to_date and "restored" in restored.message
    assert (out / "model.onnx").read_bytes() == onnx1 and (out / "manifest.json").read_bytes() == manifest1
    assert verify_bundle(out) == []

    capsys.readouterr()
    assert main(["build", str(app / "edgekd.toml")]) == 0
    assert "cached:" in capsys.readouterr().out

    (out / "notes.txt").write_text("mine")  # a cache hit never replaces a bundle holding the user's files
    with pytest.raises(EdgekdError, match="not part of it"):
        build(bf)
    assert (out / "notes.txt").read_text() == "mine"


def test_build_command_does_not_import_torch_on_a_hit(app: Path) -> None:
    (app / "edgekd.toml").write_text(APP_TOML.replace('recipe = "quick.toml"', 'recipe = "fp32"'))
    cmd = [sys.executable, "-c",
           "import sys; from edgekd.cli import main; rc = main(['build', sys.argv[1], '-q']);"
           "print('TORCH', 'torch' in sys.modules); sys.exit(rc)", str(app)]
    miss = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert miss.returncode == 0, miss.stderr
    for _ in range(4):  # see above: a concurrent edit of edgekd's code forces one more miss
        hit = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if "cached:" in hit.stdout:
            break
        assert miss.stdout.split("key ")[1][:12] != hit.stdout.split("key ")[1][:12], hit.stdout
        miss = hit
    assert hit.returncode == 0 and "cached:" in hit.stdout and "TORCH False" in hit.stdout, hit.stdout + hit.stderr


def test_store_removes_leftovers_of_killed_builds(tmp_path: Path) -> None:
    from edgekd.buildfile import _store

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    entry = tmp_path / "ab" / "abcdef"
    (entry.parent / f".{entry.name}.tmp-{int(dead.stdout)}").mkdir(parents=True)
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "manifest.json").write_text("{}")
    _store(entry, bundle, {"k": 1})
    assert sorted(p.name for p in entry.parent.iterdir()) == ["abcdef"]


def test_no_cache_rebuild_refreshes_the_entry_so_nothing_older_is_restored(app: Path) -> None:
    bf = load_buildfile(app)
    first = build(bf)
    entry = bf.cache_dir() / first.key[:2] / first.key / "bundle"
    assert (entry / "manifest.json").is_file()
    (entry / "report.md").write_text("an older build's report\n")  # unhashed: the entry still verifies
    fresh = build(bf, use_cache=False)
    assert not fresh.cached
    assert (entry / "report.md").read_text() != "an older build's report\n"  # replaced by the fresh bundle
    again = build(bf)
    assert again.cached and again.up_to_date  # the fresh bundle in `out` is what the cache holds


def test_buildfile_set_overrides_the_recipe(tmp_path: Path) -> None:
    """``set = [...]`` in edgekd.toml (and ``edgekd build --set``): the recipe's settings overridden, checked before
    any training, and part of the cache key."""
    (tmp_path / "sup.toml").write_text('[[passes]]\nname = "distill"\nloss = "ce"\nepochs = 40\n')
    (tmp_path / "edgekd.toml").write_text('model = "builtin:digits-student"\ndata = "builtin:digits"\n'
                                          'recipe = "sup.toml"\nset = ["distill.steps=2", "distill.epochs=1"]\n'
                                          'out = "b"\nmeasure = false\n[cache]\nenabled = false\n')
    bf = load_buildfile(tmp_path)
    assert bf.set == ("distill.steps=2", "distill.epochs=1")
    outcome = build(bf)
    distill = json.loads((outcome.out / "manifest.json").read_text())["config"]["recipe"]["passes"][0]
    assert (distill["steps"], distill["epochs"]) == (2, 1) and outcome.report["passes"]["distill"]["steps"] == 2
    other = dataclasses.replace(bf, set=("distill.steps=3",), cache=dataclasses.replace(bf.cache, enabled=True))
    assert cache_key(other)[0] != cache_key(dataclasses.replace(other, set=()))[0]
    bad = dataclasses.replace(bf, set=("distill.stepz=2",), out="c")
    with pytest.raises(ConfigError, match=r"edgekd.toml set distill.stepz=2: unknown key 'stepz'; allowed keys"):
        build(bad)
    assert not (tmp_path / "c").exists()  # refused before any training
