"""Android export (--target android-arm64): model.tflite, model.json and labels.txt in the
output directory, consistent with the model itself."""

from __future__ import annotations

import json

import numpy as np

from edgeq.cli import main
from edgeq.formats.tflite import read_model_file
from tests.conftest import EXAMPLE

MODEL = str(EXAMPLE / "digits_cnn.keras")
CALIB = str(EXAMPLE / "digits_calibration.npz")
EVAL = str(EXAMPLE / "digits_eval.npz")
LABELS = [f"digit {i}" for i in range(10)]


def convert(out, *extra):
    return main(["convert", MODEL, "--target", "android-arm64", "--data", CALIB, "--eval-data",
                 EVAL, "--input-scale", "1/16", "--out", str(out), "--no-latency", *extra])


def test_android_assets(tmp_path, capsys):
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(LABELS) + "\n\n")
    assert convert(tmp_path / "app", "--labels", str(labels)) == 0
    capsys.readouterr()
    app = tmp_path / "app"
    assert sorted(p.name for p in app.iterdir()) == ["labels.txt", "model.json", "model.tflite",
                                                     "report.json", "report.md"]
    assert (app / "labels.txt").read_text().splitlines() == LABELS
    desc = json.loads((app / "model.json").read_text())
    info = read_model_file(app / "model.tflite")
    (inp,), (out,) = desc["inputs"], desc["outputs"]
    assert inp["name"] == info.input_tensors[0].name and inp["shape"] == [1, 8, 8, 1]
    assert inp["dtype"] == info.input_tensors[0].dtype == "float32"  # the app feeds floats
    assert inp["normalization"]["scale"] == 1 / 16
    assert out["shape"] == [1, 10] and desc["labels"] == "labels.txt"
    import hashlib

    assert desc["model_sha256"] == hashlib.sha256((app / "model.tflite").read_bytes()).hexdigest()
    # the model is still full integer inside: only the I/O ends are float
    assert "CONV_2D" in info.op_names and info.ops[0].op == "QUANTIZE"
    # the app's view: raw pixels normalised as model.json says give the report's accuracy
    from edgeq.adapters.litert import LiteRTRunner

    data = np.load(EVAL)
    x = (data["x"].astype(np.float32) * inp["normalization"]["scale"])[..., None]
    top1 = float(np.mean(LiteRTRunner((app / "model.tflite").read_bytes()).run(x)[0].argmax(1)
                         == data["y"]))
    report = json.loads((app / "report.json").read_text())
    assert abs(top1 - report["accuracy"]["quantized"]) < 1e-9


def test_android_label_errors(tmp_path, capsys):
    labels = tmp_path / "three.txt"
    labels.write_text("a\nb\nc\n")
    assert convert(tmp_path / "a", "--labels", str(labels)) == 2
    err = capsys.readouterr().err
    assert "3 labels" in err and "[10]" in err and not (tmp_path / "a").exists()
    code = main(["convert", MODEL, "--target", "cortex-m4", "--data", CALIB, "--input-scale",
                 "1/16", "--out", str(tmp_path / "b"), "--labels", str(labels)])
    assert code == 2 and "android" in capsys.readouterr().err
