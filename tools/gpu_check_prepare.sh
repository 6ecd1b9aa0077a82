#!/usr/bin/env bash
# Prepare what tools/gpu_check.sh carries to the GPU machine (run on the CPU machine, from a checkout with edgekd's
# development environment):
#   tools/gpu_check/wheels/   TensorRT's Python wheels for the GPU machine's Python (3.12, manylinux x86-64)
#   tools/gpu_check/bundles/  the bundles it builds engines from (`edgekd compress`, see RECIPES in tools/gpu_check.py)
# then runs `tools/gpu_check.sh --dry-run`. Both folders are ignored by git: they are carried, never committed.
#
#   bash tools/gpu_check_prepare.sh [--wheels] [--bundles] [--only NAME] [--force] [--trt-version V]
# With neither --wheels nor --bundles it does both. --only NAME makes one bundle; --force remakes existing ones.
# $PYTHON is the interpreter with edgekd's dependencies (python3). Exit 1 when something could not be made.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python3}"
WHEELS="$ROOT/tools/gpu_check/wheels"
BUNDLES="$ROOT/tools/gpu_check/bundles"
# the newest TensorRT 10.x for CUDA 13: 10.x still has weak typing (BuilderFlag.FP16), which the fp16 bundle
# needs; 11.x is strongly typed only (docs/backends.md)
TRT_VERSION="10.16.1.11"
DO_WHEELS=0 DO_BUNDLES=0 ONLY="" FORCE=0
while [ $# -gt 0 ]; do
  case "$1" in
    --wheels) DO_WHEELS=1 ;;
    --bundles) DO_BUNDLES=1 ;;
    --only) ONLY="${2:?--only needs a bundle name}"; DO_BUNDLES=1; shift ;;
    --force) FORCE=1 ;;
    --trt-version) TRT_VERSION="${2:?--trt-version needs a version}"; shift ;;
    -h|--help) sed -n '2,11p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "gpu_check_prepare: unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
[ "$DO_WHEELS$DO_BUNDLES" = 00 ] && DO_WHEELS=1 DO_BUNDLES=1
PROBLEMS=()
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
cd "$ROOT" || exit 2

# the GPU machine: CPython 3.12 on x86-64 glibc; pip must match each manylinux tag exactly
PLATFORM=(--python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64
          --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)

prepare_wheels() {
  local tmp
  tmp="$(mktemp -d)"
  mkdir -p "$WHEELS"
  echo "== TensorRT $TRT_VERSION wheels for CPython 3.12 x86-64 -> $WHEELS"
  "$PY" -m pip download -q --only-binary=:all: --no-deps "${PLATFORM[@]}" -d "$WHEELS" \
    "tensorrt-cu13-bindings==$TRT_VERSION" || PROBLEMS+=("tensorrt-cu13-bindings $TRT_VERSION: pip download failed")
  # tensorrt-cu13 (the `tensorrt` module) is a pure-Python sdist: made into a wheel here, so the device installs wheels only
  if "$PY" -m pip download -q --no-binary=:all: --no-deps --no-build-isolation -d "$tmp" "tensorrt-cu13==$TRT_VERSION"; then
    "$PY" -m pip wheel -q --no-deps --no-build-isolation -w "$WHEELS" "$tmp"/tensorrt_cu13-*.tar.gz ||
      PROBLEMS+=("tensorrt-cu13 $TRT_VERSION: could not turn the sdist into a wheel")
  else
    PROBLEMS+=("tensorrt-cu13 $TRT_VERSION: pip download failed")
  fi
  if ! "$PY" -m pip download -q --only-binary=:all: --no-deps "${PLATFORM[@]}" -d "$WHEELS" \
      "tensorrt-cu13-libs==$TRT_VERSION" 2>"$tmp/libs.err"; then
    PROBLEMS+=("tensorrt-cu13-libs $TRT_VERSION: not on the PyPI mirror as a wheel. PyPI holds only NVIDIA's small
    wheel-stub sdist, whose build step downloads the real wheel from NVIDIA's own package index at install time,
    which neither this machine nor the GPU machine can reach. That wheel holds libnvinfer, the builder resources and
    the ONNX parser: hundreds of MB (NVIDIA gave 550-800 MB for TensorRT 8.5/8.6; 10.x not measured here), far
    over the GPU machine's 64 MiB carry limit. Put tensorrt_cu13_libs-$TRT_VERSION-*.whl into $WHEELS by hand only if it fits; otherwise the
    check needs a GPU machine whose image has tensorrt installed (gpu_check.sh uses an importable tensorrt as it is).")
  fi
  rm -rf "$tmp"
  ls -l "$WHEELS"/*.whl 2>/dev/null
  du -cb "$WHEELS"/*.whl 2>/dev/null | tail -n1 | awk '{printf "wheels: %.1f MiB together (carry limit 64 MiB for everything)\n", $1 / 1048576}'
}

prepare_bundles() {
  mkdir -p "$BUNDLES"
  local name names
  names="${ONLY:-$("$PY" tools/gpu_check.py recipes)}"
  for name in $names; do
    if [ -f "$BUNDLES/$name/manifest.json" ] && [ "$FORCE" = 0 ]; then
      echo "== bundle $name: already there (--force remakes it)"
      continue
    fi
    echo "== bundle $name: $("$PY" tools/gpu_check.py recipes -v | grep "^$name: ")"
    local t0=$SECONDS
    timeout 3600 "$PY" tools/gpu_check.py make-bundle "$name" --bundles "$BUNDLES" ||
      PROBLEMS+=("bundle $name: edgekd compress failed (see above)")
    echo "   $((SECONDS - t0)) s, $(du -sh "$BUNDLES/$name" 2>/dev/null | cut -f1)"
  done
}

[ "$DO_WHEELS" = 1 ] && prepare_wheels
[ "$DO_BUNDLES" = 1 ] && prepare_bundles
echo "== dry run of the GPU check"
PYTHON="$PY" bash tools/gpu_check.sh --dry-run
dry=$?
for p in "${PROBLEMS[@]}"; do echo "gpu_check_prepare: PROBLEM: $p" >&2; done
[ ${#PROBLEMS[@]} -eq 0 ] && [ "$dry" = 0 ] || exit 1
