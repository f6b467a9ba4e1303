"""Quantization-aware training end to end: a Keras 3 CNN fine-tuned with fake quantization,
converted for a microcontroller and checked on TFLite Micro next to float and PTQ; the Keras 3
-> tf_keras bridge on the MLPerf Tiny models; layers tfmot cannot quantize; repeatability."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgeq.api import ConvertOptions, convert
from edgeq.cli import main
from edgeq.data import Preprocess
from edgeq.formats.tflite import read_model

pytestmark = pytest.mark.slow

MLPERF = "models/mlperf_tiny"


def test_mnist_qat_for_cortex_m4_keeps_float_accuracy(mnist_model, tmp_path):
    """Acceptance: held-out top-1 of the QAT model on the TFLM interpreter within 0.5 points
    of float; the report puts float, PTQ and QAT side by side."""
    epochs: list[tuple[int, int, dict]] = []

    class Recorder:
        def stage(self, name):
            pass

        def task(self, name, total):
            return lambda done, total: None

        def epoch(self, epoch, total, metrics):
            epochs.append((epoch, total, metrics))

    result = convert(ConvertOptions(
        model=str(mnist_model["model"]), target="cortex-m4", data=str(mnist_model["train"]),
        eval_data=str(mnist_model["test"]), out=str(tmp_path / "out"), method="qat",
        train_data=str(mnist_model["train"]), epochs=2, preprocess=Preprocess(scale=1 / 255),
        measure_latency=False,
    ), Recorder())
    report = result.report
    acc = report.accuracy
    assert result.ok, result.gate_error
    assert report.method == "qat" and acc["runtime"] == "tflm" and acc["n"] == 1000
    assert acc["float"] > 0.95
    print(f"mnist cortex-m4 (tflm): float {acc['float']:.4f}, ptq "
          f"{report.qat['ptq_baseline']['accuracy']['quantized']:.4f}, qat {acc['quantized']:.4f}")
    assert acc["drop_pp"] <= 0.5, acc
    assert [(e, t) for e, t, _ in epochs] == [(1, 2), (2, 2)]
    assert {"loss", "accuracy", "val_loss", "val_accuracy", "lr"} <= set(epochs[0][2])

    q = report.qat
    assert [r["model"] for r in q["side_by_side"]] == ["float", "ptq (minmax)", "qat"]
    assert q["ptq_baseline"]["accuracy"]["runtime"] == "tflm"
    t = q["training"]
    assert t["learning_rate"] == pytest.approx(0.01 * t["base_learning_rate"])
    assert t["base_learning_rate"] == pytest.approx(1e-3)  # the fixture compiles with "adam"
    assert t["validation_samples"] == 400 and t["train_samples"] == 3600
    assert sum(h["best"] for h in t["history"]) == 1
    assert q["bridge"]["rebuilt_in_tf_keras"] and q["bridge"]["max_abs_diff"] <= 1e-5

    model = (tmp_path / "out" / "mnist_cnn_qat_int8.tflite").read_bytes()
    info = read_model(model)
    assert info.input_tensors[0].dtype == "int8" and not info.float_op_tensors()
    saved = json.loads((tmp_path / "out" / "report.json").read_text())
    assert saved["qat"]["side_by_side"][2]["top1"] == acc["quantized"]
    md = (tmp_path / "out" / "report.md").read_text()
    assert "## Float / PTQ / QAT" in md and "| ptq (minmax) |" in md


def _vww_as_keras3(path):
    """Keras 3 cannot read the VWW .h5 (DepthwiseConv2D 'groups'): build the same network in
    Keras 3 from the tf_keras config and copy the weights, as a Keras 3 user's model would be."""
    import keras
    import tf_keras

    source = tf_keras.models.load_model(path, compile=False)
    config = source.get_config()
    for layer in config["layers"]:
        c = layer["config"]
        if layer["class_name"] == "DepthwiseConv2D":
            c.pop("groups", None)
        if layer["class_name"] == "BatchNormalization" and isinstance(c["axis"], list):
            c["axis"] = c["axis"][0]
    model = keras.Model.from_config(config)
    for new, old in zip(model.layers, source.layers):
        new.set_weights(old.get_weights())
    return model


@pytest.mark.parametrize("name", ["ic_resnet8", "vww_mobilenet_96"])
def test_bridge_reproduces_mlperf_models_and_qat_runs(fixtures, name):
    import keras

    from edgeq.transforms.bridge import TOLERANCE, to_tf_keras
    from edgeq.data import Dataset
    from edgeq.pipeline import qat

    path = fixtures / MLPERF / f"{name}.h5"
    model = (keras.models.load_model(path, compile=False) if name == "ic_resnet8"
             else _vww_as_keras3(path))
    assert type(model).__module__.startswith("keras."), "the test needs a Keras 3 model"
    shape = tuple(model.inputs[0].shape[1:])
    rng = np.random.default_rng(0)
    high = 255.0 if name == "ic_resnet8" else 1.0  # resnet8 takes raw 0-255 pixels
    x = rng.uniform(0, high, (24, *shape)).astype(np.float32)
    bridged = to_tf_keras(model, x[:8])
    assert bridged.bridged and bridged.max_abs_diff <= TOLERANCE
    print(f"{name}: bridge max |diff| {bridged.max_abs_diff:.3g}")

    classes = int(model.outputs[0].shape[-1])
    y = rng.integers(0, classes, len(x))
    train = Dataset(x, y, "random", (), {})
    out = qat.fine_tune(bridged.model, train, qat.QATSettings(epochs=1, batch_size=8))
    assert len(out.history) == 1 and np.isfinite(out.history[0]["loss"])
    assert any(layer.name.startswith("quant_") for layer in out.model.layers)


def _layernorm_model(path):
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8, 8)), keras.layers.Flatten(),
                              keras.layers.Dense(16, activation="relu", name="hidden"),
                              keras.layers.LayerNormalization(name="ln"),
                              keras.layers.Dense(10, name="logits")])
    model.save(path)


def _digits_npz(path, n=60):
    rng = np.random.default_rng(0)
    np.savez(path, x=rng.uniform(0, 1, (n, 8, 8)).astype(np.float32), y=rng.integers(0, 10, n))


def _run(capsys, *args):
    code = main(list(args))
    return code, capsys.readouterr().err


def test_layer_tfmot_cannot_quantize_is_skipped_with_a_note(tmp_path, capsys):
    _layernorm_model(tmp_path / "ln.keras")
    _digits_npz(tmp_path / "d.npz")
    out = tmp_path / "out"
    base = ["convert", str(tmp_path / "ln.keras"), "--data", str(tmp_path / "d.npz"),
            "--method", "qat", "--train-data", str(tmp_path / "d.npz"), "--out", str(out),
            "--no-latency", "--epochs", "1"]
    # tfmot has no quantization for LayerNormalization: it trains without fake quantization,
    # the converter quantizes it from --data (int8 on an integer-only target), and a note says so.
    code, err = _run(capsys, *base, "--target", "cortex-m4")
    assert code == 0, err
    report = json.loads((out / "report.json").read_text())
    note = next(n for n in report["notes"] if "no quantization for" in n)
    assert "ln (LayerNormalization)" in note and "--qat-skip" in note
    assert report["qat"]["float_ops"] == []
    assert report["output"]["input_dtype"] == "int8"
    import shutil

    shutil.rmtree(out)

    # On an integer-only target, skipping cannot help: exit 3 says why, before training.
    code, err = _run(capsys, *base, "--target", "cortex-m4", "--qat-skip", "ln")
    assert code == 3 and "float fallback" in err and "ln" in err and not out.exists()

    # Where the target has float fallback, the skipped layer trains in float and it converts.
    code, err = _run(capsys, *base, "--target", "arm-cpu", "--qat-skip", "ln")
    assert code == 0, err
    report = json.loads((out / "report.json").read_text())
    assert report["method"] == "qat" and report["qat"]["training"]["skipped_layers"] == ["ln"]
    # ... and stays float in the converted model: its ops are denylisted
    float_ops = report["qat"]["float_ops"]
    assert float_ops and {o["layer"] for o in float_ops} == {"ln"}
    from edgeq.formats.tflite import read_model_file

    info = read_model_file(next(out.glob("*.tflite")))
    assert "DEQUANTIZE" in info.op_names
    floats = {t.name for t in info.float_op_tensors()}
    assert any("/ln/" in n for n in floats), sorted(floats)[:10]


def test_qat_input_errors_exit_2(tmp_path, capsys):
    _layernorm_model(tmp_path / "ln.keras")
    np.savez(tmp_path / "nolabels.npz", x=np.zeros((20, 8, 8), np.float32))
    out = tmp_path / "out"
    base = ["convert", str(tmp_path / "ln.keras"), "--target", "arm-cpu", "--data",
            str(tmp_path / "nolabels.npz"), "--out", str(out), "--method", "qat"]
    code, err = _run(capsys, *base)
    assert code == 2 and "--train-data" in err and "Traceback" not in err
    code, err = _run(capsys, *base, "--train-data", str(tmp_path / "nolabels.npz"),
                     "--qat-skip", "ln")
    assert code == 2 and "labels" in err and "nolabels.npz" in err
    code, err = _run(capsys, *base, "--train-data", str(tmp_path / "nolabels.npz"),
                     "--epochs", "0")
    assert code == 2 and "--epochs" in err
    assert not out.exists()


def test_bridge_names_subclassed_models_and_custom_layers():
    import keras

    from edgeq.transforms.bridge import BridgeError, to_tf_keras

    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(3)

        def call(self, x):
            return self.dense(x)

    net = Net()
    x = np.zeros((2, 4), np.float32)
    net(x)
    with pytest.raises(BridgeError, match="subclassed model"):
        to_tf_keras(net, x)

    @keras.saving.register_keras_serializable(package="edgeq_test")
    class Double(keras.layers.Layer):
        def call(self, t):
            return 2.0 * t

    inp = keras.Input((4,))
    model = keras.Model(inp, keras.layers.Dense(3)(Double(name="double")(inp)))
    with pytest.raises(BridgeError, match=r"double \(Double\)"):
        to_tf_keras(model, x)


def test_qat_is_repeatable_with_a_seed():
    import keras

    from edgeq.transforms.bridge import to_tf_keras
    from edgeq.data import Dataset
    from edgeq.pipeline import qat

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3, activation="relu"),
                              keras.layers.Flatten(), keras.layers.Dense(10)])
    rng = np.random.default_rng(0)
    train = Dataset(rng.uniform(0, 1, (64, 8, 8, 1)).astype(np.float32),
                    rng.integers(0, 10, 64), "random", (), {})
    bridged = to_tf_keras(model, train.x[:4]).model
    settings = qat.QATSettings(epochs=2, lr=1e-3, batch_size=16, seed=3)
    a = qat.fine_tune(bridged, train, settings)
    b = qat.fine_tune(bridged, train, settings)
    assert a.history == b.history
    for wa, wb in zip(a.model.get_weights(), b.model.get_weights()):
        np.testing.assert_array_equal(wa, wb)
