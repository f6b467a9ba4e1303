"""Converter failures in native code (issue 14, item 7): a recurrent model that TF's calibrator
would crash on ends as exit 3 with one line naming the op and the fix, not as a SIGSEGV."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.e2e.test_robustness import _env

SEQ = (8, 4)


def _rnn(tmp_path: Path, name: str, **layer_args) -> Path:
    import keras

    keras.utils.set_random_seed(5)
    batch = 1 if layer_args.get("stateful") else None
    model = keras.Sequential([keras.Input(SEQ, batch_size=batch),
                              keras.layers.SimpleRNN(8, **layer_args),
                              keras.layers.Dense(3, activation="softmax")])
    path = tmp_path / f"{name}.keras"
    model.save(path)
    return path


@pytest.fixture()
def data(tmp_path: Path) -> Path:
    path = tmp_path / "d.npz"
    np.savez(path, x=np.random.default_rng(0).normal(size=(16, *SEQ)).astype("float32"))
    return path


def _convert(model: Path, data: Path, out: Path, target: str = "cortex-m4"):
    return subprocess.run(
        [sys.executable, "-m", "edgeq", "convert", str(model), "--target", target,
         "--data", str(data), "--out", str(out)],
        capture_output=True, text=True, env=_env(), timeout=300)


def _one_error_line(stderr: str) -> str:
    errors = [line for line in stderr.splitlines() if line.startswith("edgeq: error:")]
    assert len(errors) == 1, stderr
    assert "Traceback" not in stderr and "crashed in native code" not in stderr
    return errors[0]


@pytest.mark.parametrize("target", ["cortex-m4", "arm-cpu"])
def test_a_simple_rnn_not_unrolled_is_exit_3_naming_the_loop(tmp_path, data, target):
    out = tmp_path / "out"
    r = _convert(_rnn(tmp_path, "rnn"), data, out, target)
    assert r.returncode == 3, r.stderr
    line = _one_error_line(r.stderr)
    assert line.startswith("edgeq: error: op WHILE (the loop in '")
    assert "simple_rnn" in line and "tensorflow/tensorflow#75140" in line
    assert "Fix: build the SimpleRNN/LSTM/GRU layer with unroll=True" in line
    assert not out.exists()


def test_a_stateful_rnn_is_exit_3_naming_read_variable(tmp_path, data):
    out = tmp_path / "out"
    r = _convert(_rnn(tmp_path, "stateful", stateful=True), data, out)
    assert r.returncode == 3, r.stderr
    line = _one_error_line(r.stderr)
    assert line.startswith("edgeq: error: op READ_VARIABLE (stateful RNN or resource-variable "
                           "ops, layer 'simple_rnn")
    assert "stateful=False" in line
    assert not out.exists()


def test_the_same_rnn_unrolled_converts(tmp_path, data):
    out = tmp_path / "out"
    r = _convert(_rnn(tmp_path, "unrolled", unroll=True), data, out)
    assert r.returncode == 0, r.stderr
    assert (out / "unrolled_int8.tflite").is_file()


# --- any native crash: the supervisor reports the last error the tool printed ----------------------


def test_a_crash_inside_a_capture_reports_the_tools_last_error(capsys, monkeypatch):
    from edgeq.process import supervise

    monkeypatch.setenv("PYTHONPATH", _env()["PYTHONPATH"])
    body = (
        "import ctypes, os\n"
        "from edgeq.adapters.native import capture_fds\n"
        "os.write(int(os.environ['EDGEQ_STAGE_FD']), b'quantize\\t60\\n')\n"
        "with capture_fds():\n"
        "    os.write(2, b'I0000 00:00:1.0 1 lite.cc:1] starting\\n')\n"
        "    os.write(2, b'F0000 00:00:1.0 1 calibrator.cc:267] Check failed: tensor.data.f"
        " != nullptr \\x1b[1mbold\\x1b[0m\\n')\n"
        "    os.write(2, b'progress 3/4\\n')\n"
        "    ctypes.string_at(0)\n")
    assert supervise.run(["convert"], command=[sys.executable, "-c", body]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert ("quantize crashed in native code (SIGSEGV); its last message: 'Check failed: "
            "tensor.data.f != nullptr bold'; this is a bug") in err


def test_a_capture_that_ends_leaves_nothing_behind(tmp_path, monkeypatch):
    from edgeq.adapters.native import NATIVE_LOG_ENV, capture_fds, last_native_error

    monkeypatch.setenv(NATIVE_LOG_ENV, str(tmp_path))
    with capture_fds() as captured:
        os.write(2, b"E0000 00:00:1.0 1 x.cc:1] not a crash\n")
    assert "not a crash" in captured.text
    assert list(tmp_path.iterdir()) == [] and last_native_error(tmp_path, os.getpid()) is None
