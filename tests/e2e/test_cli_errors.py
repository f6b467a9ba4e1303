"""Bad input through the real command line: exit code 2, one readable line that names the
problem and the fix, no traceback, and no output left behind."""

from __future__ import annotations

import numpy as np
import pytest

from edgeq.cli import main
from tests.conftest import EXAMPLE

MODEL = str(EXAMPLE / "digits_cnn.keras")
CALIB = str(EXAMPLE / "digits_calibration.npz")


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def convert_args(out, model=MODEL, data=CALIB, target="cortex-m4", *extra: str) -> list[str]:
    return ["convert", model, "--target", target, "--data", data, "--input-scale", "1/16",
            "--out", str(out), "--no-latency", *extra]


def assert_clean_failure(code, err, out_dir, *needles: str, status: int = 2) -> None:
    assert code == status, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line, got:\n{err}"
    assert lines[0].startswith("edgeq: error: ")
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"
    assert not out_dir.exists(), "a failed run must leave no output"
    leftovers = [p for p in out_dir.parent.iterdir() if "edgeq-tmp" in p.name]
    assert not leftovers


def test_missing_model(tmp_path, capsys):
    out = tmp_path / "out"
    code, _, err = run(capsys, *convert_args(out, model=str(tmp_path / "nope.keras")))
    assert_clean_failure(code, err, out, "nope.keras", "not found")


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_corrupt_model(tmp_path, capsys, suffix):
    bad = tmp_path / f"broken{suffix}"
    bad.write_bytes(np.random.default_rng(0).bytes(4096))
    out = tmp_path / "out"
    code, _, err = run(capsys, *convert_args(out, model=str(bad)))
    assert_clean_failure(code, err, out, f"broken{suffix}")


def test_unknown_model_format(tmp_path, capsys):
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"onnx")
    out = tmp_path / "out"
    code, _, err = run(capsys, *convert_args(out, model=str(bad)))
    assert_clean_failure(code, err, out, "model.onnx", ".keras")


def test_data_of_wrong_shape(tmp_path, capsys):
    data = tmp_path / "wrong.npz"
    np.savez(data, x=np.zeros((10, 28, 28), np.uint8))
    out = tmp_path / "out"
    code, _, err = run(capsys, *convert_args(out, data=str(data)))
    assert_clean_failure(code, err, out, "wrong.npz", "(28, 28", "(8, 8, 1)")


def test_data_of_wrong_dtype(tmp_path, capsys):
    data = tmp_path / "text.npy"
    np.save(data, np.array([["a"] * 8] * 8, dtype="<U1")[None].repeat(4, axis=0))
    out = tmp_path / "out"
    code, _, err = run(capsys, *convert_args(out, data=str(data)))
    assert_clean_failure(code, err, out, "text.npy", "dtype")


def test_empty_data_folder(tmp_path, capsys):
    folder = tmp_path / "images"
    folder.mkdir()
    out = tmp_path / "out"
    code, _, err = run(capsys, *convert_args(out, data=str(folder)))
    assert_clean_failure(code, err, out, "images")


def test_nan_in_data(tmp_path, capsys):
    x = np.random.default_rng(0).uniform(0, 16, (20, 8, 8)).astype(np.float32)
    x[7, 3, 3] = np.nan
    data = tmp_path / "nan.npz"
    np.savez(data, x=x)
    out = tmp_path / "out"
    code, _, err = run(capsys, *convert_args(out, data=str(data)))
    assert_clean_failure(code, err, out, "nan.npz", "NaN")


def test_unknown_target(tmp_path, capsys):
    out = tmp_path / "out"
    code, _, err = run(capsys, *convert_args(out, target="cortex-m5"))
    assert_clean_failure(code, err, out, "cortex-m5", "did you mean")


def test_lambda_layer_needs_allow_unsafe(tmp_path, capsys):
    import keras

    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Lambda(lambda t: t * 2.0,
                              name="times_two"), keras.layers.Flatten(), keras.layers.Dense(10)])
    path = tmp_path / "lambda.keras"
    model.save(path)
    out = tmp_path / "out"
    code, _, err = run(capsys, *convert_args(out, model=str(path)))
    assert_clean_failure(code, err, out, "times_two", "--allow-unsafe")


def test_existing_output_needs_overwrite(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.json").write_text("{}")
    code, _, err = run(capsys, *convert_args(out))
    assert code == 2 and "--overwrite" in err and "Traceback" not in err
    assert (out / "report.json").read_text() == "{}", "existing output must be kept"


def test_op_the_target_cannot_run_exits_3(tmp_path, capsys):
    """GELU has an int8 LiteRT kernel but no TFLite Micro kernel: cortex-m4 must refuse it,
    naming the op, and write nothing."""
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
                              keras.layers.Dense(16, activation="gelu"), keras.layers.Dense(10)])
    path = tmp_path / "gelu.keras"
    model.save(path)
    out = tmp_path / "out"
    code, _, err = run(capsys, *convert_args(out, model=str(path)))
    assert_clean_failure(code, err, out, "GELU", "cortex-m4", status=3)


def test_help_is_instant_and_tf_free():
    import subprocess
    import sys

    code = ("import sys; from edgeq.cli import main; rc = main(['--help']); "
            "print('TF' if 'tensorflow' in sys.modules else 'noTF', rc)")
    run_ = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert run_.stdout.strip().splitlines()[-1] == "noTF 0"
    assert "convert" in run_.stdout and "targets" in run_.stdout
