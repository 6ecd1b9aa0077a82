#!/usr/bin/env bash
# The device-side install, as a device gets it: a FRESH venv, `pip install -c constraints.txt .` (the base install,
# no extras) from the package index, then `edgekd check`, `edgekd profile` and edgekd.runtime on a bundle that the
# build side (the project venv, with torch) made. Fails if torch (or another [train] package) got installed.
# Usage: tools/slim_install_check.sh [BUNDLE] [OUT_DIR]
#   BUNDLE defaults to the digits app's bundle (built with .venv/bin/edgekd when missing); OUT_DIR to out/slim-install.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
BUNDLE=$(realpath -m "${1:-examples/digits_app/build/digits}")
OUT=$(realpath -m "${2:-out/slim-install}")
export EDGEKD_QUIET=1
unset PYTHONPATH
fail() { echo "slim_install_check: FAILED: $*" >&2; exit 1; }
step() { printf '\n=== %s\n' "$*"; }
T0=$SECONDS
rm -rf "$OUT" && mkdir -p "$OUT"
if [ ! -f "$BUNDLE/manifest.json" ]; then
  step "no bundle at $BUNDLE: building the digits app with the project venv (the build side, with torch)"
  .venv/bin/edgekd build examples/digits_app --quiet | tail -n 1
fi
VENV=$(mktemp -d /tmp/edgekd-slim.XXXXXX)
trap 'rm -rf "$VENV"' EXIT

step "fresh venv + pip install -c constraints.txt . (base install: no extras)"
python3 -m venv "$VENV"
"$VENV/bin/pip" install -q -c constraints.txt "$REPO" > "$OUT/pip.log" 2>&1 || { tail -n 20 "$OUT/pip.log"; fail "pip install"; }
"$VENV/bin/pip" list --format=freeze > "$OUT/installed.txt" 2>/dev/null
for pkg in torch torchvision brevitas torch-pruning scipy scikit-learn onnxscript; do
  if "$VENV/bin/pip" show "$pkg" > /dev/null 2>&1; then fail "the base install pulled in $pkg"; fi
done
echo "installed $(wc -l < "$OUT/installed.txt") packages, none of torch/torchvision/brevitas/torch-pruning/scipy ($((SECONDS - T0)) s)"

cd "$OUT"  # nowhere near the source tree: the installed package is what runs
step "edgekd check on the device install"
"$VENV/bin/edgekd" check "$BUNDLE" --target cpu --junit "$OUT/check.xml" | tee "$OUT/check.txt" | grep "^RESULT" \
  || fail "edgekd check did not pass in the torch-free install"
step "edgekd profile on the device install"
"$VENV/bin/edgekd" profile "$BUNDLE/model.onnx" --target cpu --out "$OUT/profile" | tail -n 2 \
  || fail "edgekd profile failed in the torch-free install"
[ -s "$OUT/profile/profile.json" ] || fail "edgekd profile wrote no profile.json"
step "edgekd.runtime on the device install"
"$VENV/bin/python" - "$BUNDLE" "$VENV" <<'PYEOF'
import sys
import numpy as np
import edgekd
import edgekd.runtime as rt
assert edgekd.__file__.startswith(sys.argv[2]), f"ran {edgekd.__file__}, not the installed package"
model = rt.load(sys.argv[1], target="cpu")
golden = rt.load_npz(model.bundle / "golden.npz")
out = model.infer({model.inputs[0].name: golden["input"]})
err = float(np.abs(next(iter(out.values())) - golden["reference"]).max())
assert err <= 1e-5, f"runtime output differs from the golden reference by {err}"
heavy = sorted(m for m in sys.modules if m.partition(".")[0] in {"torch", "torchvision", "brevitas", "torch_pruning", "scipy"})
assert not heavy, heavy
print(f"edgekd.runtime: {model.target_name}, max|err| {err:.3g} vs golden, no torch/scipy loaded")
PYEOF
step "a torch command names the [train] extra"
if "$VENV/bin/edgekd" demo > "$OUT/demo.txt" 2>&1; then fail "edgekd demo ran without torch"; fi
grep -q "needs the \[train\] extra" "$OUT/demo.txt" || { cat "$OUT/demo.txt"; fail "edgekd demo did not name the [train] extra"; }
echo "slim install check: PASSED in $((SECONDS - T0)) s"
