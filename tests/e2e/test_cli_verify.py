"""`edgeq verify` as a CI regression gate, and `edgeq.testing` for users' own tests.

The worse model is the same depthwise network quantized with per-tensor weights (the
imx8mp-npu profile) instead of per-channel (arm-cpu). The network is trained here on MNIST,
then a few depthwise channels are scaled up 100x and the next 1x1 conv down by as much
(relu(100 z) / 100 = relu(z): the function is unchanged): per-tensor weight scales then crush
the other channels, as they do on real MobileNets with uneven channel ranges."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgeq.cli import main
from tests.integration.test_equalize import _inputs, _unbalance


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _depthwise_net(x, y):
    import keras

    keras.utils.set_random_seed(0)
    L = keras.layers
    inp = keras.Input((28, 28, 1))
    h = L.Conv2D(16, 3, strides=2, activation="relu", name="conv1")(inp)
    h = L.DepthwiseConv2D(3, activation="relu", name="dw1")(h)
    h = L.Conv2D(32, 1, activation="relu", name="pw1")(h)
    h = L.Flatten()(L.MaxPooling2D()(h))
    model = keras.Model(inp, L.Dense(10, name="logits")(h))
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=3, batch_size=64, verbose=0)
    _unbalance(model, "dw1", "pw1", (0, 5, 10))
    return model


@pytest.fixture(scope="module")
def models(mnist_xy, tmp_path_factory):
    d = tmp_path_factory.mktemp("verify")
    x, y = mnist_xy
    model = _depthwise_net(x[:4000], y[:4000])
    model.save(d / "dw.keras")
    np.savez(d / "calib.npz", x=x[4000:4300])
    np.savez(d / "eval.npz", x=x[4300:], y=y[4300:])
    for target, out in (("arm-cpu", "good"), ("imx8mp-npu", "worse")):
        assert main(["convert", str(d / "dw.keras"), "--target", target, "--data",
                     str(d / "calib.npz"), "--eval-data", str(d / "eval.npz"), "--out",
                     str(d / out)]) == 0
    return d


def test_worse_model_fails_the_gate_with_exit_4(models, capsys):
    d = models
    report = json.loads((d / "good" / "report.json").read_text())["accuracy"]
    assert report["float"] > 0.85  # a trained network, or the comparison means nothing
    good = report["quantized"]
    code, out, err = run(capsys, "verify", str(d / "worse" / "dw_int8.tflite"), "--target",
                         "arm-cpu", "--eval-data", str(d / "eval.npz"), "--baseline",
                         str(d / "good" / "report.json"),
                         "--max-drop", "1", "--no-latency", "--json")
    assert code == 4, err
    result = json.loads(out)
    # A new build of the same model (same inputs and outputs): compared, and said so.
    assert any("new build of the same model" in n for n in result["notes"]), result["notes"]
    worse = result["accuracy"]["quantized"]
    assert 100 * (good - worse) > 1.0, (good, worse)
    assert result["ok"] is False
    (acc,) = [c for c in result["checks"] if c["metric"] == "accuracy"]
    assert acc["ok"] is False
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "regression against" in lines[0] and "drop" in lines[0]


def test_same_model_passes_against_itself(models, capsys, tmp_path):
    d = models
    model = str(d / "worse" / "dw_int8.tflite")
    code, out, err = run(capsys, "verify", model, "--target", "imx8mp-npu", "--eval-data",
                         str(d / "eval.npz"), "--baseline", str(d / "worse" / "report.json"),
                         "--max-drop", "0", "--max-growth", "0", "--no-latency",
                         "--report", str(tmp_path / "now.json"))
    assert code == 0, err
    assert "ok top-1" in " ".join(out.split())
    # this run's own report serves as the next baseline
    code, _, err = run(capsys, "verify", model, "--target", "imx8mp-npu", "--eval-data",
                       str(d / "eval.npz"), "--baseline", str(tmp_path / "now.json"),
                       "--max-drop", "0", "--max-growth", "0", "--no-latency")
    assert code == 0, err


def test_growth_gate_on_model_size(models, capsys, tmp_path):
    d = models
    base = json.loads((d / "good" / "report.json").read_text())
    base["output"]["bytes"] = int(base["output"]["bytes"] * 0.8)  # the model grew by 25 %
    (tmp_path / "small.json").write_text(json.dumps(base))
    code, _, err = run(capsys, "verify", str(d / "good" / "dw_int8.tflite"), "--target",
                       "arm-cpu", "--eval-data", str(d / "eval.npz"), "--baseline",
                       str(tmp_path / "small.json"), "--max-growth", "10", "--no-latency")
    assert code == 4 and "model_bytes" in err


def test_pytest_helper(models):
    from edgeq.testing import assert_no_regression

    d = models
    outcome = assert_no_regression(d / "good" / "dw_int8.tflite", target="arm-cpu",
                                   eval_data=d / "eval.npz",
                                   baseline=d / "good" / "report.json", max_drop=0.0)
    assert outcome.ok and outcome.runtime == "litert"
    with pytest.raises(AssertionError, match="regressed"):
        assert_no_regression(d / "worse" / "dw_int8.tflite", target="arm-cpu",
                             eval_data=d / "eval.npz", baseline=d / "good" / "report.json",
                             max_drop=1.0, allow_different_model=True)


def test_bad_inputs_exit_2(models, capsys, tmp_path):
    d = models
    model = str(d / "good" / "dw_int8.tflite")
    (tmp_path / "bad.json").write_text("not json")
    np.savez(tmp_path / "nolabels.npz", x=_inputs(10, seed=5)[..., 0])
    for args, needle in (
        (["--baseline", str(tmp_path / "bad.json"), "--max-drop", "1"], "bad.json"),
        (["--max-drop", "1"], "--baseline"),
    ):
        code, _, err = run(capsys, "verify", model, "--target", "arm-cpu", "--eval-data",
                           str(d / "eval.npz"), "--no-latency", *args)
        assert code == 2 and needle in err and "Traceback" not in err, err
    code, _, err = run(capsys, "verify", model, "--target", "arm-cpu", "--eval-data",
                       str(tmp_path / "nolabels.npz"), "--no-latency")
    assert code == 2 and "labels" in err


def test_a_baseline_of_another_model_or_target_is_refused_naming_both(models, capsys, tmp_path):
    """The baseline records the model's sha256, inputs, outputs and target; verify compares
    like with like (the same file, or a new build with the same inputs and outputs) unless
    told otherwise, and names every check it then cannot make."""
    d = models
    good, worse = str(d / "good" / "dw_int8.tflite"), str(d / "worse" / "dw_int8.tflite")
    base = str(d / "good" / "report.json")  # arm-cpu, the good model
    common = ["--eval-data", str(d / "eval.npz"), "--baseline", base, "--no-latency"]
    # A baseline made for a model with other outputs: exit 2, one line naming both models.
    other = json.loads((d / "good" / "report.json").read_text())
    other["model"]["outputs"] = [[5]]
    other["output"]["sha256"] = "0" * 64
    (tmp_path / "other.json").write_text(json.dumps(other))
    code, _, err = run(capsys, "verify", worse, "--target", "arm-cpu", "--eval-data",
                       str(d / "eval.npz"), "--baseline", str(tmp_path / "other.json"),
                       "--no-latency")
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, err
    assert "other.json" in lines[0] and "another model" in lines[0] and worse in lines[0]
    assert "[5]" in lines[0] and "--allow-different-model" in lines[0]
    code, _, err = run(capsys, "verify", worse, "--target", "arm-cpu", "--eval-data",
                       str(d / "eval.npz"), "--baseline", str(tmp_path / "other.json"),
                       "--no-latency", "--allow-different-model", "--max-drop", "100")
    assert code == 0, err
    # The same model for another target: exit 2 naming both targets.
    code, _, err = run(capsys, "verify", good, "--target", "imx8mp-npu", *common)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, err
    assert "'arm-cpu'" in lines[0] and "'imx8mp-npu'" in lines[0]
    assert "--allow-different-target" in lines[0]
    # With the override: compared, and the checks that were not made are named.
    code, out, err = run(capsys, "verify", good, "--target", "imx8mp-npu", *common,
                         "--allow-different-target", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert any(s.startswith("arena not compared") for s in result["skipped"]), result
    assert any(s.startswith("latency not gated") for s in result["skipped"]), result
    assert result["output"]["sha256"] == json.loads(
        (d / "good" / "report.json").read_text())["output"]["sha256"]
    code, out, err = run(capsys, "verify", good, "--target", "imx8mp-npu", *common,
                         "--allow-different-target")
    assert code == 0 and "skipped arena not compared" in " ".join(out.split()), out


def test_float_io_model_on_an_int8_only_mcu_gets_a_note(tmp_path, capsys):
    """An android-arm64 build (float32 I/O) given to an int8-only microcontroller profile:
    verify and embed say so (TFLite Micro runs it, with float QUANTIZE/DEQUANTIZE)."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "representative_data"
    out = tmp_path / "android"
    assert main(["convert", str(root / "digits_cnn.keras"), "--target", "android-arm64",
                 "--data", str(root / "digits_calibration.npz"), "--input-scale", "1/16",
                 "--no-latency", "--out", str(out)]) == 0
    capsys.readouterr()
    code, stdout, err = run(capsys, "verify", str(out / "model.tflite"), "--target",
                            "cortex-m4", "--eval-data", str(root / "digits_eval.npz"),
                            "--input-scale", "1/16", "--no-latency", "--json")
    assert code == 0, err
    notes = json.loads(stdout)["notes"]
    assert any("float32" in n and "cortex-m4" in n and "int8" in n for n in notes), notes
    code, stdout, err = run(capsys, "embed", str(out / "model.tflite"), "--target",
                            "cortex-m4", "--out", str(tmp_path / "fw"))
    assert code == 0, err
    assert "note: the model's input" in stdout and "cortex-m4" in stdout, stdout
