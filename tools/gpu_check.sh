#!/usr/bin/env bash
# The prepared TensorRT check for a bare x86-64 Linux machine with an NVIDIA GPU (docs/backends.md,
# "TensorRT on a GPU machine (prepared check)"). Made beforehand on a CPU machine: tools/gpu_check_prepare.sh.
#
#   bash tools/gpu_check.sh --out "$OUT"     the real run, under 8 minutes: installs TensorRT from the carried
#                                            wheels (or uses an installed tensorrt), builds one engine per carried
#                                            bundle with edgekd's backend, golden parity, latency (edgekd profile;
#                                            trtexec too when it is on PATH), engine-inspector precision and sparse
#                                            tactics -> gpu_check.json, gpu_check.md and gpu_check.log in --out
#   bash tools/gpu_check.sh --dry-run        no GPU needed: checks the carried wheels (or an importable tensorrt),
#                                            the bundles (manifest + checksums), the carry size and every step's
#                                            command line; exit 1 when something the real run needs is missing
# Options: --bundles DIR (default tools/gpu_check/bundles), --wheels DIR (tools/gpu_check/wheels),
#          --expect a,b (bundle names that must be there; default the four the prepare script makes),
#          --work DIR (scratch, default $TMPDIR/edgekd-gpu-check). $PYTHON picks the interpreter (python3).
# Exit status: 0 every step passed; 1 a step failed (the line "gpu_check: FAILED at step ..." says which and why,
# the JSON keeps what the other steps measured); 2 the run could not start (usage, no TensorRT, no GPU).
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DRY=0
OUTDIR="${OUT:-}"
BUNDLES="$ROOT/tools/gpu_check/bundles"
WHEELS="$ROOT/tools/gpu_check/wheels"
EXPECT=""
WORK="${TMPDIR:-/tmp}/edgekd-gpu-check"
BUDGET_S="${GPU_CHECK_BUDGET_S:-420}"  # every step together (+10 s kill grace); then the summary's own 30 s: < 8 min

usage() { sed -n '2,19p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
need() { [ $# -ge 2 ] && [ -n "$2" ] || { echo "gpu_check: $1 needs a value" >&2; exit 2; }; }
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1 ;;
    --out) need "$@"; OUTDIR="$2"; shift ;;
    --bundles) need "$@"; BUNDLES="$2"; shift ;;
    --wheels) need "$@"; WHEELS="$2"; shift ;;
    --expect) need "$@"; EXPECT="$2"; shift ;;
    --work) need "$@"; WORK="$2"; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "gpu_check: unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

PY="${PYTHON:-python3}"
command -v "$PY" >/dev/null || { echo "gpu_check: FAILED at step setup: no Python interpreter '$PY'" >&2; exit 2; }
if [ "$DRY" = 0 ]; then
  [ -n "$OUTDIR" ] || { echo "gpu_check: say where the results go: --out DIR (or set \$OUT)" >&2; exit 2; }
  mkdir -p "$OUTDIR" || exit 2
  OUTDIR="$(cd "$OUTDIR" && pwd)"
fi
# the work folder is emptied first: only a new one, an empty one or an earlier run's (it has the marker file)
if [ -d "$WORK" ] && [ ! -f "$WORK/.edgekd-gpu-check" ] && [ -n "$(ls -A "$WORK")" ]; then
  echo "gpu_check: refusing to empty --work $WORK: it is not empty and not a gpu_check work folder" >&2
  exit 2
fi
rm -rf "$WORK" && mkdir -p "$WORK/results" "$WORK/bundles" || { echo "gpu_check: cannot use --work $WORK" >&2; exit 2; }
touch "$WORK/.edgekd-gpu-check"
: >"$WORK/steps.tsv"
# edgekd from this checkout (no build backend needed offline), and the check's own target files by name
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" EDGEKD_TARGETS_PATH="$ROOT/tools/gpu_check/targets"
export EDGEKD_QUIET=1 PYTHONUNBUFFERED=1 EDGEKD_TRT_CACHE="$WORK/timing-cache"
HELPER=("$PY" "$ROOT/tools/gpu_check.py")
[ "$DRY" = 1 ] && HELPER+=(--dry-run)
START=$SECONDS
FAILED=()

# run_step NAME LIMIT_S CMD...: prints the command line, runs it under `timeout` (capped by what is left of the
# budget), records NAME/status/exit/seconds/command in steps.tsv; a failure prints which step and why.
run_step() {
  local name=$1 limit=$2
  shift 2
  local cmd status=ok rc=0 t0=$SECONDS left=$((BUDGET_S - (SECONDS - START)))
  cmd="$(printf '%q ' "$@")"
  echo "== step $name (limit ${limit}s): $cmd"
  if [ "$DRY" = 0 ] && [ "$left" -lt 15 ]; then
    status="skipped: the 8-minute budget is spent"
    rc=124
  else
    [ "$DRY" = 0 ] && [ "$limit" -gt "$left" ] && limit=$left
    timeout --kill-after=10 "$limit" "$@" </dev/null
    rc=$?
    if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then status="timed out after ${limit}s"; elif [ "$rc" != 0 ]; then status=failed; fi
  fi
  printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$status" "$rc" "$((SECONDS - t0))" "$cmd" >>"$WORK/steps.tsv"
  if [ "$status" != ok ]; then
    echo "gpu_check: FAILED at step $name: $status (exit $rc); its own message is above" >&2
    FAILED+=("$name")
  fi
  return "$rc"
}

finish() {  # the summary always runs (outside the budget), then the exit status says what happened
  local code=$1
  if [ "$DRY" = 0 ]; then
    timeout 30 "${HELPER[@]}" summary "$WORK" --out "$OUTDIR" || code=$((code > 1 ? code : 1))
    echo "gpu_check: wrote $OUTDIR/gpu_check.json, gpu_check.md, gpu_check.log in $((SECONDS - START)) s"
  fi
  if [ ${#FAILED[@]} -gt 0 ]; then
    echo "gpu_check: FAILED: ${#FAILED[@]} step(s): ${FAILED[*]}" >&2
    exit $((code > 1 ? code : 1))
  fi
  [ "$DRY" = 1 ] && echo "gpu_check --dry-run: OK, the real run has what it needs"
  exit "$code"
}

run_all() {
# ---- 1. TensorRT: an installed one, else the carried wheels (pip --target: a venv made from the device's own
# venv would not see its torch/onnx, so the wheels go to a folder on PYTHONPATH instead)
if "$PY" -c "import tensorrt" 2>/dev/null; then
  echo "tensorrt is already installed: $("$PY" -c 'import tensorrt; print(tensorrt.__version__, tensorrt.__file__)')"
else
  run_step wheels 30 "${HELPER[@]}" wheels "$WHEELS" || { [ "$DRY" = 1 ] || finish 2; }
  if [ "$DRY" = 0 ]; then
    run_step install-tensorrt 180 "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
      --target "$WORK/site" "$WHEELS"/*.whl || finish 2
    export PYTHONPATH="$WORK/site:$PYTHONPATH"
  fi
fi
# the CUDA runtime of the device's own nvidia-* wheels, for TensorRT's libraries to find
CUDART_DIRS="$("$PY" - <<'EOF' 2>/dev/null
import glob, os, sys
print(":".join(sorted({os.path.dirname(p) for d in sys.path if os.path.isdir(d)
                       for p in glob.glob(os.path.join(d, "nvidia", "**", "libcudart.so*"), recursive=True)})))
EOF
)"
[ -n "$CUDART_DIRS" ] && export LD_LIBRARY_PATH="$CUDART_DIRS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

# ---- 2. the machine, and what travels
run_step env 60 "${HELPER[@]}" env --json "$WORK/env.json" || { [ "$DRY" = 1 ] || finish 2; }
if [ "$DRY" = 1 ]; then
  run_step carry-size 60 "${HELPER[@]}" carry "$BUNDLES" "$WHEELS"
fi

# ---- 3. the bundles: manifest + checksums (edgekd's verifier), one job per TensorRT target
run_step bundles 120 "${HELPER[@]}" plan "$BUNDLES" ${EXPECT:+--expect "$EXPECT"} --list "$WORK/plan.tsv"
[ -s "$WORK/plan.tsv" ] || { echo "gpu_check: FAILED at step bundles: no verified bundle to build" >&2; FAILED+=(no-bundles); finish 1; }

# ---- 4. per bundle: engine, parity, latency (edgekd profile; trtexec when present)
TRTEXEC="$(command -v trtexec || true)"
while IFS=$'\t' read -r -u 3 bundle target dir; do
  job="$bundle/$target"
  res="$WORK/results/${bundle}__${target}"
  mkdir -p "$res"
  run_step "build:$job" 150 "${HELPER[@]}" build "$BUNDLES/$bundle" --target "$target" --work "$WORK/bundles" \
    --json "$res/build.json" || continue
  run_step "parity:$job" 60 "${HELPER[@]}" parity "$WORK/bundles/$bundle" --target "$target" --json "$res/parity.json"
  profile=(profile "$WORK/bundles/$bundle/$dir/model.engine" --target "$target" --out "$res/profile" --no-plots
           --no-layers --batches 1,8 --label "$job" -q)
  if [ "$DRY" = 1 ]; then
    run_step "profile:$job" 60 "${HELPER[@]}" cli-args "${profile[@]}"
    run_step "trtexec-script:$job" 10 bash -n "$BUNDLES/$bundle/$dir/build_engine.sh"
  else
    run_step "profile:$job" 90 "$PY" -m edgekd "${profile[@]}"
  fi
  if [ -n "$TRTEXEC" ] && [ "$DRY" = 0 ]; then  # the bundle's own build_engine.sh, in a copy of its target folder
    cp -r "$BUNDLES/$bundle/$dir" "$res/trtexec"
    run_step "trtexec:$job" 150 bash -c 'cd "$1" && TRTEXEC="$2" bash build_engine.sh --iterations=500 --duration=0 \
      >trtexec.log 2>&1; rc=$?; tail -n 25 trtexec.log; exit $rc' _ "$res/trtexec" "$TRTEXEC" &&
      "${HELPER[@]}" trtexec-log "$res/trtexec/trtexec.log" --bundle "$bundle" --json "$res/trtexec.json"
  fi
done 3<"$WORK/plan.tsv"
[ -n "$TRTEXEC" ] || echo "trtexec is not on PATH: latency from edgekd profile only"

# ---- 5. gpu_check.json + gpu_check.md (finish writes them in the real run)
[ "$DRY" = 1 ] && run_step summary 30 "${HELPER[@]}" summary "$WORK" --out "$WORK"
finish 0
}

if [ "$DRY" = 1 ]; then
  run_all
else  # everything the run prints also goes to gpu_check.log (a pipe, so the log is complete when this returns)
  run_all 2>&1 | tee "$OUTDIR/gpu_check.log"
  exit "${PIPESTATUS[0]}"
fi
