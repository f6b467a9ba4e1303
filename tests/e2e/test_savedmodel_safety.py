"""A SavedModel whose graph acts outside the model (issue 14, item 1) is refused through the real
command line before TensorFlow loads or runs it: exit 2, one line naming the function and the
op, and the marker file its graph would write does not appear."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgeq.cli import main
from tests.e2e.test_robustness import _env


def _module_savedmodel(path: Path, effect) -> Path:
    import tensorflow as tf

    class Model(tf.Module):
        def __init__(self):
            self.w = tf.Variable(tf.ones((4, 2)))

        @tf.function(input_signature=[tf.TensorSpec((None, 4), tf.float32, name="x")])
        def serve(self, x):
            effect(x)
            return {"y": tf.nn.softmax(tf.matmul(x, self.w))}

    m = Model()
    tf.saved_model.save(m, str(path), signatures={"serving_default": m.serve})
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    import keras
    import tensorflow as tf

    root = tmp_path_factory.mktemp("savedmodels")
    marker = root / "MARKER"
    effects = {
        "write_file": lambda x: tf.io.write_file(str(marker), tf.strings.as_string(x[0, 0])),
        "print_to_file": lambda x: tf.print(x, output_stream="file://" + str(marker)),
        "read_file": lambda x: tf.io.read_file(str(root / "secret.txt")),
    }
    out = {name: _module_savedmodel(root / name, effect) for name, effect in effects.items()}
    keras.utils.set_random_seed(2)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    model.export(str(root / "keras_export"), verbose=False)
    out["keras_export"] = root / "keras_export"
    np.savez(root / "data.npz", x=np.random.default_rng(0).normal(size=(32, 4)).astype("float32"))
    out["data"] = root / "data.npz"
    out["marker"] = marker
    return out


def _edgeq(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgeq", *args], capture_output=True, text=True,
                          env=_env(), timeout=300)


def _convert(models, name: str, out: Path, *extra: str) -> subprocess.CompletedProcess:
    return _edgeq("convert", str(models[name]), "--target", "cortex-m4", "--data",
                  str(models["data"]), "--out", str(out), "--no-latency", *extra)


def _one_line(code: int, stderr: str) -> str:
    errors = [line for line in stderr.splitlines() if line.startswith("edgeq: error:")]
    assert code == 2 and len(errors) == 1 and "Traceback" not in stderr, stderr
    return errors[0]


def test_a_savedmodel_writing_a_file_is_refused(models, tmp_path):
    models["marker"].unlink(missing_ok=True)
    out = tmp_path / "out"
    r = _convert(models, "write_file", out)  # the real command line, supervisor included
    line = _one_line(r.returncode, r.stderr)
    assert "function '__inference_serve_" in line and "runs op WriteFile (" in line
    assert "--allow-unsafe" in line
    assert not models["marker"].exists(), "the SavedModel's graph ran"
    assert not out.exists()


@pytest.mark.parametrize("command", ["convert", "analyze"])
@pytest.mark.parametrize("name, op", [("print_to_file", "PrintV2"), ("read_file", "ReadFile")])
def test_other_effects_are_refused_by_convert_and_analyze(models, tmp_path, capsys, command,
                                                         name, op):
    # In-process (TensorFlow is imported once): the command line above covers the subprocess.
    models["marker"].unlink(missing_ok=True)
    out = tmp_path / "out"
    args = ["--target", "cortex-m4", "--data", str(models["data"])]
    if command == "convert":
        args += ["--out", str(out), "--no-latency"]
    code = main([command, str(models[name]), *args])
    line = _one_line(code, capsys.readouterr().err)
    assert "function '__inference_serve_" in line and f"runs op {op} (" in line
    assert not models["marker"].exists() and not out.exists()


def test_the_marker_proves_the_graph_would_run(models, tmp_path):
    # The control for the tests above: with --allow-unsafe edgeq loads and calls the model,
    # and its WriteFile runs.
    models["marker"].unlink(missing_ok=True)
    _convert(models, "write_file", tmp_path / "out", "--allow-unsafe")
    assert models["marker"].exists()


def test_a_keras_export_converts_with_allow_unsafe(models, tmp_path):
    out = tmp_path / "out"
    r = _convert(models, "keras_export", out, "--allow-unsafe")
    assert r.returncode == 0, r.stderr
    assert (out / "keras_export_int8.tflite").is_file()
