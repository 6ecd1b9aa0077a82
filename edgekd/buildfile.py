"""App builds: an ``edgekd.toml`` in the app's repository and a content-addressed build cache.

    # edgekd.toml -- paths are relative to this file
    model = "builtin:digits-student"        # or "model.pt", "model.onnx", "py:app/model.py:build", "torchvision:resnet18"
    teacher = "builtin:digits-teacher"      # optional
    data = "builtin:digits"                 # or "npz:data/train.npz", "imagefolder:data/images"; optional for .onnx
    recipe = "int8-kd"                      # name or path.toml
    set = ["distill.epochs=5"]              # optional: recipe overrides, as `edgekd compress --set`
    targets = ["cpu", "openvino-cpu"]       # names or paths
    out = "build/model"

    [cache]
    dir = ".edgekd-cache"                   # default: $EDGEKD_CACHE_DIR/builds or ~/.cache/edgekd/builds

``build()`` hashes every input -- the model's weights or source files (an .onnx with its
external-data files), the data files, the recipe and target files, edgekd's own source code and
the installed runtime versions -- into one key. A cached bundle with that key is copied into ``out`` (or left alone when ``out``
already holds it) without importing torch; otherwise the pipeline runs and its bundle is
stored under the key. Bundles are deterministic (no timestamps in model.onnx or
manifest.json), so a cache hit and a fresh build give the same bytes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import shutil
import sys
import time
import tomllib
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from edgekd import __version__
from edgekd.bundle import MANIFEST, copy_bundle, dump_json, is_bundle, pid_alive, read_manifest, verify_bundle
from edgekd.config import resolve_file
from edgekd.errors import ConfigError, SourceError
from edgekd.progress import log
from edgekd.typed import from_mapping

DEFAULT_FILE = "edgekd.toml"
KEY_SCHEMA = "edgekd.build-key/1"
#: distributions whose versions change what a build produces
VERSIONED = ("torch", "torchvision", "numpy", "onnx", "onnxscript", "onnxruntime", "openvino", "brevitas",
             "torch-pruning", "timm", "scikit-learn", "mlxtend", "nncf", "tensorrt")
_MODEL_PATH_SCHEMES = ("file", "onnx2torch")
_DATA_PATH_SCHEMES = ("npz", "imagefolder")
_NAMED_SCHEMES = ("builtin", "torchvision", "timm", "random", "synthetic")


@dataclass(frozen=True)
class CacheSettings:
    enabled: bool = True
    dir: str | None = None  # relative to the build file


@dataclass(frozen=True)
class BuildFile:
    """One ``edgekd.toml``. Relative paths in it are relative to the file's folder (``root``)."""

    model: str
    out: str
    data: str | None = None  # required unless the model is an .onnx file (golden inputs from its input spec)
    recipe: str = "fp32"
    #: recipe overrides ``PASS.KEY=VALUE``, as ``edgekd compress --set`` (checked when the file is loaded)
    set: tuple[str, ...] = ()
    targets: tuple[str, ...] = ("cpu",)
    teacher: str | None = None
    arch: str | None = None
    teacher_arch: str | None = None
    #: a task preset (segmentation, keypoints ... edgekd/tasks.py); None = the recipe's [task] or classification
    task: str | None = None
    seed: int = 0
    golden_samples: int = 32
    eval_samples: int = 1000  # at most this many test samples in eval.npz (as --eval-samples)
    weights: bool = True  # weights.pt in the bundle (as --no-weights when false)
    measure: bool = True  # latency during the build: goes to report.json only (never hashed)
    skip_unavailable: bool = False
    cache: CacheSettings = field(default_factory=CacheSettings)
    root: str = "."  # set by load_buildfile, not a TOML key

    def __post_init__(self) -> None:
        if not self.targets:
            raise ValueError("targets must name at least one target")
        if self.golden_samples < 1 or self.eval_samples < 1:
            raise ValueError("golden_samples and eval_samples must be >= 1")

    @property
    def root_path(self) -> Path:
        return Path(self.root)

    @property
    def out_path(self) -> Path:
        return self.root_path / os.path.expanduser(self.out)  # "~/..." in TOML is not expanded by a shell

    def cache_dir(self) -> Path:
        if self.cache.dir:
            return self.root_path / os.path.expanduser(self.cache.dir)
        base = os.environ.get("EDGEKD_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "edgekd")
        return Path(base) / "builds"


def load_buildfile(path: str | Path = DEFAULT_FILE) -> BuildFile:
    path = Path(path)
    if path.is_dir():
        path = path / DEFAULT_FILE
    if not path.is_file():
        raise ConfigError("build file not found", where=str(path),
                          hint=f"create {DEFAULT_FILE} (see `edgekd build --help`) or pass its path")
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"invalid TOML: {exc}", where=str(path)) from None
    if "root" in data:
        raise ConfigError("'root' is not a build-file key (paths are relative to the file)", where=f"{path} root")
    if "profile" in data and "recipe" not in data:  # the old key
        from edgekd.deprecation import deprecated

        deprecated(f"'profile' in {path.name}", "recipe = \"...\"")
        data["recipe"] = data.pop("profile")
    for key in ("targets", "set"):
        if isinstance(data.get(key), str):
            data[key] = [data[key]]
    bf = from_mapping(BuildFile, {**data, "root": str(path.parent.resolve())}, where=str(path))
    if bf.data is None and not bf.model.partition("?")[0].lower().endswith(".onnx"):
        raise ConfigError("missing required key(s): data (only an .onnx model may leave it out)", where=str(path),
                          hint='add data = "builtin:digits" (or npz:PATH, imagefolder:DIR, ...)')
    out = Path(os.path.abspath(bf.out_path))
    if not bf.out.strip() or out == bf.root_path or out in bf.root_path.parents:
        raise ConfigError(f"out = {bf.out!r} is the folder of {path.name} (or holds it); the bundle folder is "
                          "replaced as a whole on every build", where=f"{path} out",
                          hint='use a folder of its own, e.g. out = "build/model"')
    return bf


# ---------------------------------------------------------------- hashing


def _sha_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _sha_file(path: Path) -> str:
    from edgekd.bundle import sha256_file

    return sha256_file(path)


def _sha_tree(root: Path, suffixes: tuple[str, ...] | None = None) -> str:
    """Names and contents of every file under ``root`` (sorted): renames count as changes."""
    digest = hashlib.sha256()
    for p in sorted(q for q in root.rglob("*") if q.is_file()):
        rel = p.relative_to(root).as_posix()
        if "__pycache__" in rel or (suffixes and p.suffix not in suffixes):
            continue
        digest.update(rel.encode() + b"\0" + _sha_file(p).encode() + b"\n")
    return digest.hexdigest()


def _sha_path(path: Path, where: str) -> str:
    if path.is_file():
        return _sha_file(path)
    if path.is_dir():
        return _sha_tree(path)
    raise SourceError("file or folder not found", where=where, hint="paths in edgekd.toml are relative to the file")


def _python_module_digest(ref: str, root: Path, where: str) -> dict[str, str]:
    """Hash the code behind ``py:pkg.mod:fn`` / ``py:file.py:fn`` without importing it (importing could
    pull in torch and make a cache hit slow). A package is hashed whole: helpers change results too."""
    module_ref = ref.rpartition(":")[0] or ref
    if module_ref.endswith(".py"):
        # the file imports its neighbours (`from layers import Block`, `from app.blocks import ...`): hash every .py
        # of the folder it is in, or of the app's tree (the build file's folder) when the file lies inside it
        path = root / module_ref
        _sha_path(path, where)  # a clear error when the file is missing
        folder = root if path.resolve().is_relative_to(root.resolve()) else path.parent
        return {"file": module_ref, "tree": _sha_tree(folder, (".py",))}
    top, *rest = module_ref.split(".")
    for base in (root, *(Path(p) for p in sys.path if p)):
        pkg = base / top
        if (pkg / "__init__.py").is_file() or (pkg.is_dir() and rest):
            return {"package": top, "sha256": _sha_tree(pkg, (".py",))}
        if (base / f"{top}.py").is_file():
            return {"module": top, "sha256": _sha_file(base / f"{top}.py")}
    raise SourceError(f"cannot find the Python module {module_ref!r} to hash it", where=where,
                      hint="put it next to edgekd.toml or install it; the cache key needs its source")


def source_digest(text: str, kind: str, root: Path) -> dict[str, Any]:
    """What identifies a model/data source's content: file hashes for paths and code, the name for
    named sources (builtin/torchvision/timm/random/synthetic: their code is edgekd's or a versioned package's).

    >>> source_digest("builtin:digits?seed=1", "data", Path("."))
    {'source': 'builtin:digits?seed=1'}
    """
    raw = text.partition("?")[0]
    scheme, colon, arg = raw.partition(":")
    if not colon or len(scheme) == 1:  # a plain path (or a Windows drive letter)
        scheme, arg = "path", raw
    where = f"{kind} = {text!r}"
    out: dict[str, Any] = {"source": text}
    if scheme in _NAMED_SCHEMES:
        return out
    if scheme == "py":
        out["code"] = _python_module_digest(arg, root, where)
    elif scheme == "path" or scheme in (_MODEL_PATH_SCHEMES if kind != "data" else _DATA_PATH_SCHEMES):
        out["sha256"] = _sha_path(root / arg, where)
        if arg.lower().endswith(".onnx"):
            out["external_data"] = _onnx_external_data(root / arg)
    else:  # a scheme this module does not know (e.g. a plugin's): be safe and never cache it
        raise SourceError(f"cannot hash a {kind} source with scheme {scheme!r} for the build cache", where=where,
                          hint="set [cache] enabled = false in edgekd.toml, or use a file/npz/py source")
    return out


def _onnx_external_data(path: Path) -> dict[str, str]:
    """The files an ONNX model keeps its weights in (save_as_external_data), by name: they change the model too."""
    import onnx
    from onnx.external_data_helper import ExternalDataInfo, uses_external_data

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:
        return {}  # not readable as ONNX: the build itself says what the file is
    names = sorted({ExternalDataInfo(t).location for t in model.graph.initializer if uses_external_data(t)})
    return {name: _sha_path(path.parent / name, f"external data {name} of {path.name}") for name in names}


def edgekd_code_digest() -> str:
    """edgekd's own source: during development the version string alone would not notice a changed pass."""
    return _sha_tree(Path(__file__).resolve().parent, (".py", ".toml", ".j2", ".cpp", ".h", ".tcl"))


def runtime_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version(), "machine": platform.machine()}
    for dist in VERSIONED:
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    return versions


def load_buildfile_recipe(bf: BuildFile) -> Any:
    """The build file's recipe with its ``set`` overrides applied (a name when there are none), validated."""
    if not bf.set:
        return bf.recipe
    from edgekd.config import load_recipe

    with contextlib.chdir(bf.root_path):
        return load_recipe(bf.recipe, bf.set, origin=f"{DEFAULT_FILE} set")


def cache_key(bf: BuildFile) -> tuple[str, dict[str, Any]]:
    """(hex key, the material it was computed from). Torch-free and fast: a hit must be cheap."""
    root = bf.root_path
    with contextlib.chdir(root):  # recipe/target paths are relative to the build file
        recipe_path = resolve_file("recipes", bf.recipe)
        target_paths = [resolve_file("targets", t) for t in bf.targets]
    material = {
        "schema": KEY_SCHEMA,
        "model": source_digest(bf.model, "model", root),
        "teacher": source_digest(bf.teacher, "teacher", root) if bf.teacher else None,
        "arch": source_digest(bf.arch, "arch", root) if bf.arch else None,
        "teacher_arch": source_digest(bf.teacher_arch, "teacher_arch", root) if bf.teacher_arch else None,
        "data": source_digest(bf.data, "data", root) if bf.data else None,
        "recipe": {"ref": bf.recipe, "sha256": _sha_file(root / recipe_path), "set": list(bf.set)},
        "targets": [{"ref": t, "sha256": _sha_file(root / p)} for t, p in zip(bf.targets, target_paths)],
        "settings": {"task": bf.task, "seed": bf.seed, "golden_samples": bf.golden_samples,
                     "eval_samples": bf.eval_samples, "weights": bf.weights, "measure": bf.measure,
                     "skip_unavailable": bf.skip_unavailable},
        "edgekd": {"version": __version__, "code_sha256": edgekd_code_digest()},
        "versions": runtime_versions(),
        # torch's CPU kernels reduce in a thread-count-dependent order: a training pass run with 1 vs 2
        # threads gives different weights (measured), so the thread settings are an input too
        "threads": {"cpu_count": os.cpu_count(),
                    **{v: os.environ.get(v) for v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}},
    }
    blob = json.dumps(material, sort_keys=True, separators=(",", ":")).encode()
    return _sha_bytes(blob), material


# ---------------------------------------------------------------- building


@dataclass(frozen=True)
class BuildOutcome:
    out: Path
    key: str
    cached: bool  # served from the cache
    up_to_date: bool  # ``out`` already held exactly this bundle: nothing was copied
    seconds: float
    report: dict[str, Any] | None = None  # the pipeline's report on a fresh build

    @property
    def message(self) -> str:
        short = self.key[:12]
        if not self.key:
            return f"built {self.out} in {self.seconds:.1f} s (build cache not used)"
        if self.up_to_date:
            return f"cached: {self.out} is up to date (key {short}, {self.seconds:.2f} s)"
        if self.cached:
            return f"cached: restored {self.out} from the build cache (key {short}, {self.seconds:.2f} s)"
        return f"built {self.out} in {self.seconds:.1f} s (key {short}, stored in the build cache)"


def _same_bundle(a: Path, b: Path) -> bool:
    try:
        return (a / MANIFEST).read_bytes() == (b / MANIFEST).read_bytes() and not verify_bundle(a)
    except OSError:
        return False


def _store(cache_entry: Path, bundle: Path, material: dict[str, Any], *, replace: bool = False) -> None:
    """Copy ``bundle`` into the cache under its key; ``replace`` (a --no-cache rebuild) drops an older entry."""
    tmp = cache_entry.parent / f".{cache_entry.name}.tmp-{os.getpid()}"
    for stale in cache_entry.parent.glob(f".{cache_entry.name}.tmp-*") if cache_entry.parent.is_dir() else ():
        pid = stale.name.rpartition("-")[2]
        if pid.isdigit() and not pid_alive(int(pid)):  # left by a build that was killed while storing
            shutil.rmtree(stale, ignore_errors=True)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    shutil.copytree(bundle, tmp / "bundle")
    dump_json(material, tmp / "key.json")
    if replace and cache_entry.exists():
        old = cache_entry.parent / f".{cache_entry.name}.old-{os.getpid()}"
        os.replace(cache_entry, old)
        shutil.rmtree(old, ignore_errors=True)
    try:
        os.replace(tmp, cache_entry)
    except OSError:  # another build stored the same key first: theirs is as good as ours
        shutil.rmtree(tmp, ignore_errors=True)


def build(bf: BuildFile, *, use_cache: bool | None = None) -> BuildOutcome:
    """Build ``bf`` into ``bf.out``, from the cache when every input is unchanged."""
    started = time.perf_counter()
    use_cache = bf.cache.enabled if use_cache is None else use_cache
    # --no-cache (use_cache=False) rebuilds without reading the cache but refreshes its entry, so the next cached
    # build serves this fresh bundle instead of restoring an older one over it
    key, material = cache_key(bf) if bf.cache.enabled else ("", {})
    out = bf.out_path
    entry = bf.cache_dir() / key[:2] / key
    if use_cache and is_bundle(entry / "bundle"):
        cached_bundle = entry / "bundle"
        problems = verify_bundle(cached_bundle)
        if not problems:
            up_to_date = out.is_dir() and _same_bundle(out, cached_bundle)
            if not up_to_date:
                copy_bundle(cached_bundle, out, flag="`out` in edgekd.toml")
            return BuildOutcome(out, key, True, up_to_date, time.perf_counter() - started)
        log(f"build cache entry {key[:12]} is damaged ({problems[0]}); rebuilding")
        shutil.rmtree(entry, ignore_errors=True)

    from edgekd.pipeline import CompressOptions, compress  # torch: only when something must be built

    root = bf.root_path
    added_path = str(root) not in sys.path
    if added_path:  # py:pkg.mod sources next to edgekd.toml import like the app's own code
        sys.path.insert(0, str(root))
    try:
        with contextlib.chdir(root):
            options = CompressOptions(seed=bf.seed, golden_samples=bf.golden_samples, eval_samples=bf.eval_samples,
                                      weights=bf.weights, skip_unavailable=bf.skip_unavailable, measure=bf.measure)
            report = compress(bf.model, data=bf.data, recipe=load_buildfile_recipe(bf), targets=list(bf.targets),
                              teacher=bf.teacher, out=bf.out_path, arch=bf.arch, teacher_arch=bf.teacher_arch,
                              task=bf.task, options=options)
    finally:
        if added_path:
            sys.path.remove(str(root))
    read_manifest(out)  # the pipeline wrote a complete bundle
    if bf.cache.enabled:
        _store(entry, out, material, replace=not use_cache)
    return BuildOutcome(out, key, False, False, time.perf_counter() - started, report)

