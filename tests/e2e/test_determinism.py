"""The same inputs give byte-identical .tflite output on two separate runs of the CLI."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import pytest

from tests.conftest import EXAMPLE

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("target", ["cortex-m4", "coral"])
def test_two_runs_give_identical_bytes(tmp_path, target):
    digests = []
    for run in ("a", "b"):
        out = tmp_path / run
        proc = subprocess.run(
            [sys.executable, "-m", "edgeq", "convert", str(EXAMPLE / "digits_cnn.keras"),
             "--target", target, "--data", str(EXAMPLE / "digits_calibration.npz"),
             "--eval-data", str(EXAMPLE / "digits_eval.npz"), "--input-scale", "1/16",
             "--out", str(out), "--no-latency", "--json"],
            capture_output=True, text=True, timeout=600,
        )
        assert proc.returncode == 0, proc.stderr
        report = json.loads(proc.stdout)
        model = (out / "digits_cnn_int8.tflite").read_bytes()
        assert report["output"]["sha256"] == hashlib.sha256(model).hexdigest()
        digests.append(report["output"]["sha256"])
    assert digests[0] == digests[1]
