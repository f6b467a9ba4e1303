"""Data values through the real command line (issue 14, item 6): labels outside the model's
classes stop `convert` and `verify` with exit 2, and an extreme calibration sample is a data
warning that names it, in the output and in report.json, and exit 2 under --strict-data.
Before, labels of 50, 2^62 or 99 on a 10-class model gave "top-1 0.00 % -> 0.00 %" with no
word, and one value of 3e38 ruined the model without a warning."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.conftest import EXAMPLE, FIXTURES
from tests.e2e.test_cli_errors import assert_clean_failure, run

MODEL = str(EXAMPLE / "digits_cnn.keras")
RESNET = FIXTURES / "models" / "mlperf_tiny" / "ic_resnet8_int8_reference.tflite"
HELLO = FIXTURES / "models" / "tflm" / "hello_world_int8.tflite"

BAD_LABELS = {  # name: (labels for 500 samples, what the message must say)
    "50, 99 and 2^62": (lambda y: np.where(np.arange(500) < 312, np.array([50, 99, 2**62])[
        np.arange(500) % 3], y), "312 of 500 labels are 50, 99 or 4611686018427387904"),
    "2^62 once": (lambda y: np.where(np.arange(500) == 7, 2**62, y),
                  "1 of 500 labels are 4611686018427387904"),
    "all 99": (lambda y: np.full(500, 99), "500 of 500 labels are 99"),
}


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """The digits example as float32 in 0..1 (no --input-scale needed), and variants."""
    root = tmp_path_factory.mktemp("digits")
    with np.load(EXAMPLE / "digits_calibration.npz") as c, \
            np.load(EXAMPLE / "digits_eval.npz") as e:
        cx, cy = (c["x"] / 16.0).astype(np.float32), c["y"]
        ex, ey = (e["x"] / 16.0).astype(np.float32), e["y"]
    files = {"calib": root / "calib.npz", "eval": root / "eval.npz"}
    np.savez(files["calib"], x=cx, y=cy)
    np.savez(files["eval"], x=ex, y=ey)
    for name, (relabel, _) in BAD_LABELS.items():
        files[name] = root / f"eval_{len(files)}.npz"
        np.savez(files[name], x=ex, y=relabel(ey).astype(np.int64))
    for value in (1e4, 3e38):
        x = cx.copy()
        x[7, 3, 3] = value
        files[value] = root / f"calib_{value:g}.npz"
        np.savez(files[value], x=x, y=cy)
    return files


def _convert(out, calib, eval_data, *extra: str) -> list[str]:
    return ["convert", MODEL, "--target", "arm-cpu", "--data", str(calib), "--eval-data",
            str(eval_data), "--out", str(out), "--no-latency", *extra]


@pytest.mark.parametrize("case", sorted(BAD_LABELS))
def test_convert_refuses_labels_outside_the_classes(tmp_path, capsys, digits, case):
    out = tmp_path / "out"
    code, _, err = run(capsys, *_convert(out, digits["calib"], digits[case]))
    assert_clean_failure(code, err, out, str(digits[case]), "(evaluation)",
                         "outside the model's 10 classes (0..9)", BAD_LABELS[case][1],
                         "Fix: labels are indices into the model's first output")


@pytest.mark.parametrize("case", ["50, 99 and 2^62", "all 99"])
def test_verify_refuses_labels_outside_the_classes(tmp_path, capsys, case):
    """The classes of a .tflite come from its first output tensor: [1, 10] for ResNet-8."""
    rng = np.random.default_rng(0)
    y = BAD_LABELS[case][0](np.arange(500) % 10).astype(np.int64)
    path = tmp_path / "eval.npz"
    np.savez(path, x=rng.uniform(0, 1, (500, 32, 32, 3)).astype(np.float32), y=y)
    code, _, err = run(capsys, "verify", str(RESNET), "--target", "cortex-m7", "--eval-data",
                       str(path), "--no-latency")
    assert_clean_failure(code, err, tmp_path / "none", str(path), BAD_LABELS[case][1],
                         "outside the model's 10 classes")


def test_verify_on_a_single_value_output_explains_why(tmp_path, capsys):
    path = tmp_path / "eval.npz"
    np.savez(path, x=np.zeros((4, 1), np.float32), y=np.array([0, 1, 0, 1]))
    code, _, err = run(capsys, "verify", str(HELLO), "--target", "cortex-m7", "--eval-data",
                       str(path), "--no-latency")
    assert_clean_failure(code, err, tmp_path / "none", "1 value per sample",
                         "2 of 4 labels are 1", "sigmoid, regression")


def _one_paragraph(text: str) -> str:
    return " ".join(text.split())  # the console wraps long warnings


# Warnings go to the progress console, which writes to a duplicate of file descriptor 2
# (edgeq.cli.render): capfd sees them, capsys does not.


def test_extreme_calibration_sample_is_a_warning_in_output_and_report(tmp_path, capfd, digits):
    out = tmp_path / "out"
    code, _, err = run(capfd, *_convert(out, digits[1e4], digits["eval"]))
    assert code == 0, err
    err = _one_paragraph(err)
    needle = f"calibration data '{digits[1e4]}': sample 7 is 1000x or more the typical sample's"
    assert needle in err and "sample 7 reaches 1e+04" in err
    report = json.loads((out / "report.json").read_text())
    (warning,) = [w for w in report["data"]["warnings"] if "typical sample's" in w]
    assert needle in warning and "remove those samples" in warning
    # What the warning is about: one pixel of 1e4 among 0..1 costs most of the accuracy.
    assert report["accuracy"]["drop_pp"] > 50


def test_strict_data_stops_on_the_extreme_sample(tmp_path, capsys, digits):
    out = tmp_path / "out"
    code, _, err = run(capsys, *_convert(out, digits[3e38], digits["eval"], "--strict-data"))
    assert_clean_failure(code, err, out, "data sanity (--strict-data)",
                         f"calibration data '{digits[3e38]}': sample 7 is 1000x or more",
                         "sample 7 reaches 3e+38")


def test_3e38_without_strict_data_warns_then_names_the_infinite_scale(tmp_path, capfd, digits):
    """3e38 overflows the float model's activations: no calibration method recovers, and the
    converted model has an infinite scale. The run stops there (exit 3), after the warning that
    named the sample, with a hint that points back at the data."""
    out = tmp_path / "out"
    code, _, err = run(capfd, *_convert(out, digits[3e38], digits["eval"]))
    assert code == 3, err
    assert "sample 7 is 1000x or more" in _one_paragraph(err)
    (line,) = [ln for ln in err.splitlines() if ln.startswith("edgeq: error: ")]
    assert "has scale inf" in line and "edgeq's data warnings name such samples" in line
    assert "Traceback" not in err and not out.exists()
