#!/usr/bin/env bash
# The whole hardware-in-the-loop flow with this machine's CPU as the device (the project's CI runs it).
#   1. edgekd build examples/digits_app       (an app's build step; a second build is served from the cache)
#   2. edgekd check on cpu and openvino-cpu   (must pass; JUnit XML + a baseline profile)
#   3. edgekd check against the baseline      (regression check)
#   4. a budget tightened below the measured p90, and a tampered golden output: must FAIL (exit 1)
#   5. the same checks through the pytest plugin, and the example app (no torch) on the bundle
# Usage: tools/hil_demo.sh [OUT_DIR]   (default out/hil-demo; EDGEKD=path/to/edgekd to override)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-out/hil-demo}
EDGEKD=${EDGEKD:-.venv/bin/edgekd}
PY=${PY:-.venv/bin/python}
BUNDLE=examples/digits_app/build/digits
export EDGEKD_QUIET=1
rm -rf "$OUT" && mkdir -p "$OUT"
fail() { echo "hil_demo: FAILED: $*" >&2; exit 1; }
step() { printf '\n=== %s\n' "$*"; }
T0=$SECONDS

key_of() { sed -n 's/.*(key \([0-9a-f]*\).*/\1/p' "$1" | tail -n 1; }
step "build (edgekd.toml -> bundle)"
"$EDGEKD" build examples/digits_app --quiet | tee "$OUT/build1.txt" | tail -n 1
step "build again: unchanged inputs must come from the cache"
for attempt in 1 2 3; do
  "$EDGEKD" build examples/digits_app --quiet | tee "$OUT/build2.txt" | tail -n 1
  grep -q "^cached" "$OUT/build2.txt" && break
  # edgekd's own source is part of the key: on a shared dev checkout someone may have edited it meanwhile
  [ "$(key_of "$OUT/build1.txt")" != "$(key_of "$OUT/build2.txt")" ] || fail "same key, yet not served from the cache"
  echo "(edgekd's code changed between the builds, so the key did too; building again)"
  cp "$OUT/build2.txt" "$OUT/build1.txt"
done
grep -q "^cached" "$OUT/build2.txt" || fail "the build was never served from the cache"

step "check cpu (must pass)"
"$EDGEKD" check "$BUNDLE" --target cpu --junit "$OUT/cpu.xml" --save-baseline "$OUT/baseline-cpu.json" \
  || fail "check on cpu did not pass"

step "check openvino-cpu (must pass when OpenVINO is available)"
if "$PY" -c "import json,sys; sys.exit('openvino-cpu' not in json.load(open('$BUNDLE/manifest.json'))['targets'])"; then
  "$EDGEKD" check "$BUNDLE" --target openvino-cpu --junit "$OUT/openvino-cpu.xml" || fail "check on openvino-cpu did not pass"
else
  echo "skipped: the bundle has no openvino-cpu target (OpenVINO backend unavailable on this machine)"
fi

step "regression vs the baseline (generous tolerance: a shared CI machine is noisy)"
"$EDGEKD" check "$BUNDLE" --target cpu --baseline "$OUT/baseline-cpu.json" --max-regression 100% \
  --junit "$OUT/cpu-regression.xml" || fail "regression check did not pass"

step "negative: p90 budget tightened below the measured p90 (must fail)"
printf '# stricter than any CPU can be\n[budgets]\np90_ms = 0.0001\n' > "$OUT/cpu.toml"
if "$EDGEKD" check "$BUNDLE" --target "$OUT/cpu.toml" --junit "$OUT/cpu-tight.xml"; then
  fail "a check with p90_ms = 0.0001 passed"
fi
grep -q '<failure message="p90 latency' "$OUT/cpu-tight.xml" || fail "JUnit XML does not carry the latency failure"

step "negative: tampered golden output (must fail)"
rm -rf "$OUT/tampered" && cp -r "$BUNDLE" "$OUT/tampered"
"$PY" - "$OUT/tampered/golden.npz" <<'PYEOF'
import sys
import numpy as np
path = sys.argv[1]
golden = dict(np.load(path))
golden["reference"][0, 0] += 1.0
np.savez(path, **golden)
PYEOF
if "$EDGEKD" check "$OUT/tampered" --target cpu --junit "$OUT/tampered.xml"; then
  fail "a bundle with a tampered golden output passed"
fi
grep -q 'name="golden_parity"' "$OUT/tampered.xml" && grep -q 'samples outside |err|' "$OUT/tampered.xml" \
  || fail "JUnit XML does not carry the golden parity failure"

step "pytest plugin (one test per check, marked hil)"
# run from $OUT so the repository's own tests and pytest settings stay out of it
PY_ABS=$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")
BUNDLE_ABS=$(cd "$BUNDLE" && pwd)
(cd "$OUT" && "$PY_ABS" -m pytest -p no:cacheprovider -q -rs -m hil --edgekd-bundle="$BUNDLE_ABS" \
  --edgekd-target cpu --junitxml=pytest-hil.xml) || fail "pytest plugin run failed"

step "the example app (edgekd.runtime, no torch)"
"$PY" examples/digits_app/app.py --bundle "$BUNDLE" --demo

printf '\nhil_demo: OK in %d s; JUnit files in %s\n' $((SECONDS - T0)) "$OUT"
