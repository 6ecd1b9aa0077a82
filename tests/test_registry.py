"""The one registry shape: lazy references, entry-point plugins, broken plugins listed (never a crash), and
listing/--help without importing torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from edgekd.errors import ConfigError, SourceError
from edgekd.registry import Registry

REPO = Path(__file__).resolve().parents[1]


def _env(extra_path: Path | None = None) -> dict[str, str]:
    paths = [str(REPO), *([str(extra_path)] if extra_path else []), os.environ.get("PYTHONPATH", "")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p), "EDGEKD_QUIET": "1"}


def _fake_distribution(root: Path, name: str, entry_points: str, modules: dict[str, str] | None = None) -> Path:
    """An installed distribution without pip: ``<name>-0.1.dist-info`` with METADATA and entry_points.txt on a
    folder that goes on PYTHONPATH (importlib.metadata finds it there like any site-packages)."""
    info = root / f"{name}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(textwrap.dedent(entry_points))
    for module, text in (modules or {}).items():
        (root / f"{module}.py").write_text(textwrap.dedent(text))
    return root


# ---------------------------------------------------------------- the Registry itself


def test_lazy_reference_is_imported_on_first_get_only() -> None:
    reg: Registry[object] = Registry("widget")
    reg.add_lazy("json-dumps", "json:dumps", summary="static")
    reg.add_lazy("missing", "edgekd_no_such_module_xyz:thing")
    assert reg.names() == ["json-dumps", "missing"] and "missing" in reg
    assert reg.entry("json-dumps").meta == {"summary": "static"} and not reg.entry("json-dumps").loaded
    assert reg.get("json-dumps") is json.dumps
    assert reg.unavailable_reason("json-dumps") is None
    reason = reg.unavailable_reason("missing")
    assert reason is not None and reason.startswith("ModuleNotFoundError") and "edgekd_no_such_module_xyz" in reason
    with pytest.raises(ConfigError, match="widget 'missing' is unavailable: ModuleNotFoundError"):
        reg.get("missing")
    with pytest.raises(ConfigError, match="unknown widget 'json-dump'; known: json-dumps, missing") as exc:
        reg.get("json-dump")
    assert "did you mean json-dumps" in str(exc.value)


def test_registration_order_duplicates_and_error_type() -> None:
    reg: Registry[int] = Registry("scheme", error=SourceError)
    reg.add("b", 1)
    reg.add("a", 2)
    assert reg.names() == ["a", "b"] and reg.names(sort=False) == ["b", "a"] and reg.names("a*") == ["a"]
    with pytest.raises(ValueError, match="registered twice"):
        reg.add("a", 3)
    with pytest.raises(SourceError, match="unknown scheme 'c'"):
        reg.get("c")
    with pytest.raises(ValueError, match="not 'module:attr'"):
        reg.add_lazy("d", "no_colon")


def test_a_module_registering_itself_fills_its_lazy_reference() -> None:
    from edgekd.passes import BUILTIN_PASSES, PASSES, PassInfo

    info = PASSES.get("sparsify")  # imports edgekd.passes.sparsity, whose decorator registers the same name
    assert isinstance(info, PassInfo) and info.fn.__module__ == BUILTIN_PASSES["sparsify"][0].partition(":")[0]
    assert PASSES.get("sparsify") is info


def test_static_pass_table_equals_the_pass_modules() -> None:
    """`edgekd list passes` shows the static table without importing the passes: it must say what they say."""
    from edgekd.passes import BUILTIN_PASSES, PASSES, pass_listing

    for name, (_ref, config, summary) in BUILTIN_PASSES.items():
        info = PASSES.get(name)
        assert (info.summary, info.config_type.__name__) == (summary, config), name
        assert pass_listing(name) == {"name": name, "description": summary, "config": config}


def test_data_source_schemes_are_one_registry() -> None:
    from edgekd.data import DATA_SOURCES, load_data

    assert DATA_SOURCES.names(sort=False)[:6] == ["builtin", "npz", "imagefolder", "py", "random", "synthetic"]
    assert load_data("random:1x4x4?n=4").x_train.shape == (2, 1, 4, 4)
    with pytest.raises(SourceError, match="unknown data source scheme 'nosuch'"):
        load_data("nosuch:x")


# ---------------------------------------------------------------- fresh interpreters: torch-free and fast

_PROBE = """
import sys, time
t0 = time.perf_counter()
from edgekd.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
print("PROBE", "torch" in sys.modules, round(time.perf_counter() - t0, 3), code, file=sys.stderr)
"""


def _probe(*argv: str, extra_path: Path | None = None) -> tuple[bool, float, str, str]:
    proc = subprocess.run([sys.executable, "-c", _PROBE, *argv], capture_output=True, text=True, timeout=120,
                          env=_env(extra_path), cwd=REPO)
    line = next(x for x in proc.stderr.splitlines() if x.startswith("PROBE"))
    _, torch_loaded, seconds, code = line.split()
    assert code in ("0", "None"), proc.stderr
    return torch_loaded == "True", float(seconds), proc.stdout, proc.stderr


@pytest.mark.parametrize("argv", [("--help",), ("compress", "--help"), ("list", "passes"), ("list", "backends"),
                                  ("list", "recipes"), ("list", "targets")])
def test_listing_and_help_import_no_torch(argv: tuple[str, ...]) -> None:
    torch_loaded, _, out, _ = _probe(*argv)
    assert not torch_loaded, f"edgekd {' '.join(argv)} imported torch"
    assert out.strip()


def test_list_passes_is_fast() -> None:
    seconds = min(_probe("list", "passes", "--json")[1] for _ in range(2))  # best of two: a shared CI machine
    assert seconds < 1.0, f"edgekd list passes took {seconds:.2f} s in-process"
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "edgekd", "list", "passes"], check=True, capture_output=True,
                   env=_env(), cwd=REPO, timeout=60)
    assert time.perf_counter() - start < 3.0  # the whole process, interpreter start-up included


# ---------------------------------------------------------------- broken and working plugins, really installed

_ENTRY_POINTS = """
    [edgekd.backends]
    brokenrt = edgekd_no_such_plugin_xyz:Backend
    [edgekd.passes]
    broken_pass = edgekd_no_such_plugin_xyz:a_pass
    raising_pass = edgekd_raising_plugin:a_pass
    [edgekd.data_sources]
    ones = edgekd_ones_source:ones
"""
_MODULES = {
    "edgekd_raising_plugin": "raise RuntimeError('this plugin is broken on purpose')\n",
    "edgekd_ones_source": """
        import numpy as np
        from edgekd.data import DataSplits

        def ones(spec, ctx):
            x = np.ones((int(spec.arg), 1, 8, 8), np.float32)
            return DataSplits("ones", x, None, x, None)
    """,
}


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _fake_distribution(tmp_path_factory.mktemp("site"), "edgekd_test_plugins", _ENTRY_POINTS, _MODULES)


def test_broken_plugins_are_listed_unavailable(plugin_path: Path) -> None:
    torch_loaded, _, out, _ = _probe("list", "backends", "--json", extra_path=plugin_path)
    rows = {r["name"]: r for r in json.loads(out)}
    assert rows["brokenrt"]["status"] == "unavailable", rows
    assert "ModuleNotFoundError" in rows["brokenrt"]["reason"] and "edgekd_no_such_plugin_xyz" in rows["brokenrt"]["reason"]
    assert rows["onnxruntime"]["status"] == "available" and not torch_loaded
    _, _, out, _ = _probe("list", "passes", "--json", extra_path=plugin_path)
    passes = {r["name"]: r["description"] for r in json.loads(out)}
    assert passes["broken_pass"].startswith("unavailable: ModuleNotFoundError")
    assert passes["raising_pass"] == "unavailable: RuntimeError: this plugin is broken on purpose"
    assert passes["distill"].startswith("Knowledge distillation")


def test_a_broken_plugin_does_not_stop_compress(plugin_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    proc = subprocess.run([sys.executable, "-m", "edgekd", "compress", "--model", "builtin:digits-student",
                           "--data", "ones:8", "--recipe", "fp32", "--target", "cpu", "--out", str(out),
                           "--no-measure", "--quiet", "--json"],
                          capture_output=True, text=True, timeout=300, env=_env(plugin_path), cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert (out / "manifest.json").is_file() and json.loads(proc.stdout)["sources"]["data"] == "ones:8"


def test_an_unavailable_plugin_is_a_clear_error_when_used(plugin_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "edgekd", "compress", "--model", "builtin:digits-student",
                           "--data", "builtin:digits", "--target", str(_write_target(plugin_path)), "--out",
                           str(plugin_path / "never"), "--quiet"],
                          capture_output=True, text=True, timeout=300, env=_env(plugin_path), cwd=REPO)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert "backend 'brokenrt' is unavailable: ModuleNotFoundError" in proc.stderr
    assert "entry point edgekd.backends" in proc.stderr


def _write_target(root: Path) -> Path:
    path = root / "broken-target.toml"
    path.write_text('backend = "brokenrt"\n')
    return path
