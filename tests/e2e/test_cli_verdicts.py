"""Issue 23: the everyday mistakes, replayed through the CLI. Data mistakes are found from the
model file's config before the model is loaded (the time is measured by
tools/bench_data_mistakes.py, not here); raw pixels for a 0..1 model are one warning and
--strict-data stops them; messages and reports say what is true."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgeq.cli import main
from tests.conftest import EXAMPLE

MODEL = str(EXAMPLE / "digits_cnn.keras")


@pytest.fixture
def no_loading(monkeypatch):
    """Any attempt to load the model fails the test: the data error must come first."""
    from edgeq.pipeline import load

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before its data was checked")

    monkeypatch.setattr(load, "load_model", refuse)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """The bundled example's data, prepared wrongly in the ways users do."""
    d = tmp_path_factory.mktemp("verdicts")
    cal, ev = np.load(EXAMPLE / "digits_calibration.npz"), np.load(EXAMPLE / "digits_eval.npz")
    np.savez(d / "images_key.npz", images=cal["x"], y=cal["y"])
    np.savez(d / "mnist_shape.npz", x=np.zeros((10, 28, 28, 1), np.float32))
    np.savez(d / "labels50.npz", x=cal["x"], y=np.where(np.arange(len(cal["y"])) == 3, 50,
                                                        cal["y"]))
    # Raw pixels after a resize: floats in 0..255, not whole numbers; the model takes 0..1.
    for name, src in (("cal", cal), ("ev", ev)):
        x = (src["x"].astype(np.float32) / 16 * 254.9 + 0.05).astype(np.float32)
        np.savez(d / f"{name}255.npz", x=x, y=src["y"])
        np.savez(d / f"{name}01.npz", x=(src["x"] / 16).astype(np.float32), y=src["y"])
    np.savez(d / "cal_uint8_255.npz", x=(cal["x"].astype(np.float32) * 255 / 16)
             .round().astype(np.uint8), y=cal["y"])
    return d


def _convert(*args: str) -> list[str]:
    return ["convert", MODEL, "--target", "cortex-m4", *args]


@pytest.mark.parametrize("file,needle", [
    ("images_key.npz", "no 'x'"),
    ("mnist_shape.npz", "expects (8, 8, 1)"),
    ("labels50.npz", "outside the model's 10 classes"),
])
def test_data_mistakes_exit_2_before_the_model_loads(data, capsys, no_loading, tmp_path,
                                                     file, needle):
    code = main(_convert("--data", str(data / file), "--out", str(tmp_path / "o")))
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, err
    assert file in lines[0] and needle in lines[0], lines[0]
    assert not (tmp_path / "o").exists()


def test_mlperf_vww_h5_data_mistake_before_loading(fixtures, tmp_path, capsys, no_loading):
    """A legacy tf.keras .h5 (functional, read with tf_keras later): its model_config gives
    the input (96, 96, 3) and the 2 classes before TensorFlow is imported."""
    np.savez(tmp_path / "vww.npz", x=np.zeros((4, 96, 96, 3), np.float32), y=[0, 1, 2, 1])
    code = main(["convert", str(fixtures / "models" / "mlperf_tiny" / "vww_mobilenet_96.h5"),
                 "--target", "cortex-m4", "--data", str(tmp_path / "vww.npz")])
    err = capsys.readouterr().err
    assert code == 2 and "2 classes" in err and "vww.npz" in err, err


def test_savedmodel_data_mistake_before_loading(fixtures, tmp_path, capsys, no_loading):
    """A SavedModel's serving signature, read from saved_model.pb without TensorFlow."""
    np.savez(tmp_path / "kws.npz", x=np.zeros((4, 49, 10, 1), np.float32), y=[0, 1, 12, 1])
    code = main(["convert", str(fixtures / "models" / "mlperf_tiny" / "kws_dscnn_savedmodel"),
                 "--target", "cortex-m4", "--data", str(tmp_path / "kws.npz")])
    err = capsys.readouterr().err
    assert code == 2 and "12 classes" in err and "kws.npz" in err, err


def test_strict_data_stops_raw_pixels_for_a_0_1_model_before_loading(data, capsys, tmp_path,
                                                                     no_loading):
    for file in ("cal255.npz", "cal_uint8_255.npz"):  # float (not whole) and uint8 alike
        code = main(_convert("--data", str(data / file), "--input-range", "0,1",
                             "--strict-data", "--out", str(tmp_path / "o")))
        err = capsys.readouterr().err
        assert code == 2 and "--strict-data" in err and file in err, err
        assert "raw 0..255 pixels" in err and "--input-range 0,1" in err, err
    assert not (tmp_path / "o").exists()


def test_raw_pixels_without_strict_are_exactly_one_warning(data, capsys, tmp_path):
    out = tmp_path / "o"
    code = main(_convert("--data", str(data / "cal255.npz"), "--eval-data",
                         str(data / "ev255.npz"), "--input-range", "0,1", "--no-latency",
                         "--out", str(out), "--json"))
    captured = capsys.readouterr()
    assert code == 0, captured.err
    warnings = json.loads(captured.out)["data"]["warnings"]
    assert len(warnings) == 1, warnings
    assert "cal255.npz" in warnings[0] and "ev255.npz" in warnings[0], warnings
    assert "raw 0..255 pixels" in warnings[0] and "--input-scale 1/255" in warnings[0]
    assert json.loads((out / "report.json").read_text())["data"]["warnings"] == warnings


def test_a_large_drop_with_a_data_warning_names_the_likely_cause(data, capsys, tmp_path):
    """Calibrated on 0..1, evaluated on 0..255: the warning names both files, and the summary
    says it is the likely cause of the drop; the warning is printed once."""
    out = tmp_path / "o"
    code = main(_convert("--data", str(data / "cal01.npz"), "--eval-data",
                         str(data / "ev255.npz"), "--no-latency", "--out", str(out)))
    captured = capsys.readouterr()
    assert code == 0, captured.err
    report = json.loads((out / "report.json").read_text())
    assert report["accuracy"]["drop_pp"] >= 5, report["accuracy"]
    assert any("cal01.npz" in w and "ev255.npz" in w for w in report["data"]["warnings"])
    md = (out / "report.md").read_text()
    assert "| likely cause | the data warning" in md, md
    text = " ".join(captured.out.split())
    assert "likely cause" in text
    warned = report["data"]["warnings"][0]
    # In-process the progress is printed on a duplicate of fd 2 (not captured here); the
    # summary on stdout counts the warnings instead of printing them again.
    assert warned[:40] not in text and "data warnings: 1, shown above" in text, text


def test_layer_names_on_every_target(tmp_path):
    """Every op row names its Keras layer on cortex-m4, ethos-u55-128 (through Vela),
    android-arm64 and arm-cpu: the converter's tensor names, read back per op."""
    from edgeq.formats import keras_files
    from edgeq.formats.tflite import read_model
    from edgeq.pipeline.compile import compile_for_target
    from edgeq.pipeline.place import place_ops
    from edgeq.targets import load_target

    out = tmp_path / "m4"
    assert main(_convert("--data", str(EXAMPLE / "digits_calibration.npz"), "--input-scale",
                         "1/16", "--no-latency", "--out", str(out))) == 0
    report = json.loads((out / "report.json").read_text())
    assert [o.get("layer") for o in report["ops"]] == [
        "conv2d", "conv2d_1", "flatten", "dense", "dense_1", "dense_1"], report["ops"]
    assert "| 0 | CONV_2D | conv2d |" in (out / "report.md").read_text()
    model = (out / "digits_cnn_int8.tflite").read_bytes()
    info = read_model(model, "digits")
    config = keras_files.keras_config(Path(MODEL))
    names = tuple(layer["config"]["name"] for layer in config["config"]["layers"])
    for name in ("ethos-u55-128", "android-arm64", "arm-cpu"):
        target = load_target(name)
        placed = place_ops(info, target, names, "digits_cnn")
        if target.compiler is not None:  # Vela's own placement keeps the layer names
            placed = compile_for_target(model, target, placed, "digits_int8").placements
        assert all(p.layer for p in placed), (name, placed)
