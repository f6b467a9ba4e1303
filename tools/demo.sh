#!/usr/bin/env bash
# Installs edgeq into ./.venv and runs the bundled example end to end: a small Keras 3 CNN
# (representative_data/digits_cnn.keras) converted to full int8 for a Cortex-M4 and verified
# on the TensorFlow Lite Micro interpreter. Outputs go to edgeq-out/digits-cortex-m4/.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
# setuptools prints an "Editable installation" notice (a warning category, so -q keeps it) for
# every editable install that goes through its import finder, which the edgeq.profiles ->
# targets/ mapping needs; it says nothing about this project, so it is filtered by its text.
PYTHONWARNINGS="ignore:Editable installation" .venv/bin/python -m pip install -q -e '.[test]'
.venv/bin/edgeq convert representative_data/digits_cnn.keras \
    --target cortex-m4 \
    --data representative_data/digits_calibration.npz \
    --eval-data representative_data/digits_eval.npz \
    --input-scale 1/16 \
    --out edgeq-out/digits-cortex-m4 --overwrite
