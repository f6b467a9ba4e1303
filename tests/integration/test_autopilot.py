"""--method auto against an accuracy budget, on a CNN whose conv2 has a few channels scaled
200x after training (conv3 scaled back: the same function in float). Min/max and the clipping
calibrators cannot cover both the outliers and the ordinary channels in 8 bits."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgeq.cli import main
from edgeq.formats.tflite import read_model_file


@pytest.fixture(scope="module")
def outlier(mnist_xy, tmp_path_factory):
    import keras

    d = tmp_path_factory.mktemp("auto")
    x, y = mnist_xy
    keras.utils.set_random_seed(0)
    L = keras.layers
    inp = keras.Input((28, 28, 1))
    h = L.MaxPooling2D()(L.Conv2D(16, 3, activation="relu", name="conv1")(inp))
    h = L.MaxPooling2D()(L.Conv2D(32, 3, activation="relu", name="conv2")(h))
    h = L.Flatten()(L.Conv2D(32, 3, activation="relu", name="conv3")(h))
    model = keras.Model(inp, L.Dense(10, name="logits")(h), name="outlier_net")
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x[:4000], y[:4000], epochs=3, batch_size=64, verbose=0)
    conv2, conv3 = model.get_layer("conv2"), model.get_layer("conv3")
    probe = keras.Model(model.input, conv2.output)
    busy = np.argsort(probe.predict(x[:500], verbose=0).mean(axis=(0, 1, 2)))[::-1][:3]
    k2, b2 = conv2.get_weights()
    k3, b3 = conv3.get_weights()
    k2[..., busy] *= 200.0
    b2[busy] *= 200.0
    k3[:, :, busy, :] /= 200.0
    conv2.set_weights([k2, b2])
    conv3.set_weights([k3, b3])
    model.save(d / "outlier.keras")
    np.savez(d / "calib.npz", x=x[4000:4300])
    np.savez(d / "eval.npz", x=x[4300:], y=y[4300:])
    np.savez(d / "train.npz", x=x[:4000], y=y[:4000])
    return d


def auto(d, out, target, budget, *extra):
    return main(["convert", str(d / "outlier.keras"), "--target", target, "--data",
                 str(d / "calib.npz"), "--eval-data", str(d / "eval.npz"), "--method", "auto",
                 "--max-drop", str(budget), "--out", str(out), "--no-latency", *extra])


def test_partial_float_on_arm_cpu_meets_the_budget_with_fewer_float_ops(outlier, tmp_path,
                                                                       capsys):
    assert auto(outlier, tmp_path / "o", "arm-cpu", 0.5) == 0, capsys.readouterr().err
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    a = report["autopilot"]
    first, *_ = a["stages"]
    assert first["stage"] == "ptq" and not first["met_budget"]  # PTQ alone misses it
    assert a["winner"] == {"stage": "partial-float", "name": a["winner"]["name"],
                           "met_budget": True}
    assert report["accuracy"]["drop_pp"] <= 0.5
    assert a["float_layers"][0]["layer"] == "conv2"  # the layer with the outliers
    assert a["float_ops"] < a["naive"]["float_ops"]
    assert [s["chosen"] for s in a["stages"]].count(True) == 1
    # the output really keeps a float island
    ops = read_model_file(tmp_path / "o" / "outlier_int8.tflite").op_names
    assert "DEQUANTIZE" in ops
    md = (tmp_path / "o" / "report.md").read_text()
    assert "## Auto: stages tried (budget 0.5 pp)" in md and "Kept in float" in md


def test_integer_only_target_reports_options_and_exits_4(outlier, tmp_path, capsys):
    code = auto(outlier, tmp_path / "m", "cortex-m4", 0.5)
    err = capsys.readouterr().err
    assert code == 4, err
    report = json.loads((tmp_path / "m" / "report.json").read_text())  # best result kept
    a = report["autopilot"]
    assert not a["winner"]["met_budget"] and report["gates"]["accuracy"]["ok"] is False
    assert "conv2" in a["options"][0]
    assert any("--train-data" in o for o in a["options"])
    assert "DEQUANTIZE" not in read_model_file(tmp_path / "m" / "outlier_int8.tflite").op_names
    code = auto(outlier, tmp_path / "c", "coral", 0.5)
    capsys.readouterr()
    options = json.loads((tmp_path / "c" / "report.json").read_text())["autopilot"]["options"]
    assert any("Edge TPU" in o and "split" in o for o in options)


def test_qat_stage_with_training_data(outlier, tmp_path, capsys):
    code = auto(outlier, tmp_path / "q", "cortex-m4", 0.5, "--train-data",
                str(outlier / "train.npz"), "--epochs", "2")
    assert code == 0, capsys.readouterr().err
    a = json.loads((tmp_path / "q" / "report.json").read_text())["autopilot"]
    # no LayerNorm to smooth; clipping the ReLUs (bounds searched) is tried and misses
    assert [s["stage"] for s in a["stages"]] == ["ptq", "clip", "qat"]
    assert not a["stages"][1]["met_budget"]
    assert a["winner"]["stage"] == "qat" and a["stages"][2]["met_budget"]


def test_first_stage_wins_when_ptq_is_enough(outlier, tmp_path, capsys):
    assert auto(outlier, tmp_path / "p", "arm-cpu", 10) == 0
    a = json.loads((tmp_path / "p" / "report.json").read_text())["autopilot"]
    assert [s["stage"] for s in a["stages"]] == ["ptq"] and a["winner"]["stage"] == "ptq"
    assert "sensitivity" not in a


def test_auto_needs_a_budget_and_labelled_eval_data(outlier, tmp_path, capsys):
    code = main(["convert", str(outlier / "outlier.keras"), "--target", "arm-cpu", "--data",
                 str(outlier / "calib.npz"), "--eval-data", str(outlier / "eval.npz"),
                 "--method", "auto", "--out", str(tmp_path / "x")])
    assert code == 2 and "--max-drop" in capsys.readouterr().err
    code = main(["convert", str(outlier / "outlier.keras"), "--target", "arm-cpu", "--data",
                 str(outlier / "calib.npz"), "--method", "auto", "--max-drop", "1", "--out",
                 str(tmp_path / "x")])
    assert code == 2 and "--eval-data" in capsys.readouterr().err
