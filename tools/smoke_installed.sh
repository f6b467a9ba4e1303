#!/usr/bin/env bash
# Smoke test of an installed edgeq (what `pip install .` gives), run from a directory outside
# the checkout so that nothing can come from the source tree: every subcommand, on one target
# of each family. Usage: tools/smoke_installed.sh VENV   (CI: .ci/run builds VENV from the wheel)
set -euo pipefail
VENV=$(cd "$1" && pwd)
SRC=$(cd "$(dirname "$0")/.." && pwd)
EDGEQ="$VENV/bin/edgeq"
DATA="$SRC/representative_data"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/edgeq-smoke.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"
cp "$DATA"/digits_cnn.keras "$DATA"/digits_calibration.npz "$DATA"/digits_eval.npz .
unset EDGEQ_TARGETS_DIR PYTHONPATH

step() { echo "smoke: $*"; }

step "the package comes from the venv, not the checkout"
"$VENV/bin/python" - "$SRC" <<'PY'
import sys, edgeq, edgeq.targets as t
src = sys.argv[1]
assert not edgeq.__file__.startswith(src), f"edgeq imported from the checkout: {edgeq.__file__}"
assert not str(t.targets_dir()).startswith(src), f"profiles from the checkout: {t.targets_dir()}"
print(f"  edgeq {edgeq.__version__} at {edgeq.__file__}; profiles at {t.targets_dir()}")
PY
"$EDGEQ" --version
step "targets"
"$EDGEQ" targets > targets.txt
"$EDGEQ" targets coral > /dev/null
"$EDGEQ" targets coral --supported-ops > /dev/null
"$EDGEQ" targets cortex-m4 --json > /dev/null
for target in coral cortex-m4 ethos-u55-128 arm-cpu android-arm64; do
    grep -q "$target" targets.txt || { echo "smoke: $target not listed"; exit 1; }
    out="out-$target"
    step "convert --target $target"
    "$EDGEQ" convert digits_cnn.keras --target "$target" --data digits_calibration.npz \
        --eval-data digits_eval.npz --input-scale 1/16 --out "$out" --no-latency > /dev/null
    model=$(ls "$out"/*.tflite | grep -v -e _vela -e _edgetpu | head -1)
    step "analyze / inspect / verify $model"
    "$EDGEQ" analyze "$model" --target "$target" > /dev/null
    "$EDGEQ" inspect "$model" --json > /dev/null
    "$EDGEQ" verify "$model" --target "$target" --eval-data digits_eval.npz --input-scale 1/16 \
        --baseline "$out/report.json" --no-latency > /dev/null
done
step "embed --target cortex-m4"
"$EDGEQ" embed out-cortex-m4/digits_cnn_int8.tflite --out firmware --name g_digits \
    --target cortex-m4 > /dev/null
test -s firmware/g_digits.h && test -s firmware/g_digits.cc && test -s firmware/g_digits_ops.h
step "embed --cmake-dir: the CMake helpers ship in the wheel"
cmake_dir=$("$EDGEQ" embed --cmake-dir)
case "$cmake_dir" in "$VENV"/*) ;; *) echo "smoke: CMake helpers not from the venv: $cmake_dir"; exit 1;; esac
test -s "$cmake_dir/EdgeqEmbed.cmake"
step "emulate on cortex-m4 with the TFLM tree the wheel ships (no --tflm-tree)"
unset EDGEQ_TFLM_TREE
"$EDGEQ" emulate out-cortex-m4/digits_cnn_int8.tflite -t cortex-m4 --eval-data digits_eval.npz \
    --input-scale 1/16 --eval-samples 50 --json > emulate.json
"$VENV/bin/python" - <<'PY'
import json
e = json.load(open("emulate.json"))["emulator"]
assert e["outputs_identical"] and e["toolchain"]["tflm_tree"] == "bundled", e["toolchain"]
assert e["arena_fits_declared"], (e["arena_bytes"], e["arena_declared"])
print(f"  {e['instructions_per_inference']:,} instructions, identical to the TFLM interpreter")
PY
step "analyze a Keras model for coral (the edgetpu package)"
"$EDGEQ" analyze digits_cnn.keras --target coral --data digits_calibration.npz > /dev/null
step "ok"
