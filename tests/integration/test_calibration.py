"""Calibration beyond min/max, through the real converter and interpreters: the custom-range
path reproduces the converter's own result, every method is reported under `auto`, outliers
are clipped by percentile, and equalization / int16 options reach the converter."""

from __future__ import annotations

import numpy as np
import pytest

from edgeq.adapters import tf_calibration
from edgeq.adapters.litert import LiteRTRunner
from edgeq.adapters.tf_converter import convert_int8
from edgeq.api import ConvertOptions, convert
from edgeq.cli import main
from edgeq.data import Preprocess, load_dataset
from edgeq.pipeline.load import load_model
from edgeq.pipeline.quantize import converter_settings
from edgeq.targets import load_target
from edgeq.formats.tflite import read_model
from tests.conftest import EXAMPLE

pytestmark = pytest.mark.slow
MODEL = str(EXAMPLE / "digits_cnn.keras")
CALIB = str(EXAMPLE / "digits_calibration.npz")
EVAL = str(EXAMPLE / "digits_eval.npz")


def _digits(target: str = "cortex-m4"):
    loaded = load_model(MODEL)
    ds = load_dataset(CALIB, loaded.input_spec, Preprocess(scale=1 / 16))
    return loaded, ds, converter_settings(load_target(target))


def test_custom_range_path_reproduces_the_converter():
    """Ranges read back from the converter's calibrated model and requantized give the same
    ops and, within one output quantization step, the same outputs as convert()."""
    loaded, ds, settings = _digits()
    samples = lambda: (ds.x[i : i + 1] for i in range(ds.n))  # noqa: E731
    reference = convert_int8(loaded.batch1_function, samples, settings).model
    calibrated = tf_calibration.calibrated_model(loaded.batch1_function, samples, settings)
    ranges = tf_calibration.tensor_ranges(calibrated)
    assert len(ranges) >= 5
    ours = tf_calibration.quantize_calibrated(
        tf_calibration.with_ranges(calibrated, ranges), settings)
    assert read_model(ours).op_names == read_model(reference).op_names
    a, b = LiteRTRunner(reference).run(ds.x[:50])[0], LiteRTRunner(ours).run(ds.x[:50])[0]
    step = read_model(reference).output_tensors[0].scales[0]
    assert np.max(np.abs(a - b)) <= step + 1e-9


def test_auto_reports_every_method_and_keeps_the_best(tmp_path):
    result = convert(ConvertOptions(model=MODEL, target="cortex-m4", data=CALIB, eval_data=EVAL,
                                    out=str(tmp_path / "o"), calibration="auto",
                                    preprocess=Preprocess(scale=1 / 16), measure_latency=False))
    report = result.report
    cands = report.calibration_candidates
    assert [c["calibration"] for c in cands] == ["minmax", "percentile", "entropy", "mse"]
    assert sum(c["chosen"] for c in cands) == 1
    chosen = next(c for c in cands if c["chosen"])
    assert report.calibration == chosen["calibration"] and report.calibration_requested == "auto"
    best = max(c["accuracy"]["quantized"] for c in cands)
    assert chosen["accuracy"]["quantized"] == best
    minmax = next(c for c in cands if c["calibration"] == "minmax")
    assert report.accuracy["quantized"] >= minmax["accuracy"]["quantized"]
    assert report.statistics["tensors"] >= 5 and report.statistics["ratio"] > 0
    sqnrs = [r["sqnr_db"] for r in report.layers if r["sqnr_db"] is not None]
    assert sqnrs == sorted(sqnrs), "diagnostics are listed worst first"


def test_percentile_clips_rare_outliers(tmp_path):
    """A ReLU layer whose activations have rare huge values: min/max keeps them, percentile
    clips them, and the diagnostics say how much was clipped."""
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((16,)), keras.layers.Dense(32, activation="relu",
                              name="hidden"), keras.layers.Dense(4, name="head")])
    path = tmp_path / "outliers.keras"
    model.save(path)
    x = np.random.default_rng(0).normal(size=(2000, 16)).astype(np.float32)
    x[777] *= 200.0  # one outlier sample: its activations are 0.05 % of all values
    np.savez(tmp_path / "d.npz", x=x)
    ranges = {}
    for method in ("minmax", "percentile"):
        r = convert(ConvertOptions(model=str(path), target="arm-cpu", data=str(tmp_path / "d.npz"),
                                   out=str(tmp_path / method), calibration=method,
                                   percentile=99.9, calibration_samples=2000, diagnostics=True,
                                   measure_latency=False))
        hidden = [row for row in r.report.layers if "hidden" in row["tensor"]
                  and row["lo"] == 0.0]
        assert hidden, [row["tensor"] for row in r.report.layers]
        ranges[method] = hidden[0]
    assert ranges["percentile"]["hi"] < ranges["minmax"]["hi"] / 10
    assert ranges["percentile"]["clipped_fraction"] > 0
    assert ranges["minmax"]["clipped_fraction"] == 0


def test_int16_activations_on_arm_cpu_and_refused_elsewhere(tmp_path, capsys):
    result = convert(ConvertOptions(model=MODEL, target="arm-cpu", data=CALIB, eval_data=EVAL,
                                    out=str(tmp_path / "a16"), int16_activations=True,
                                    preprocess=Preprocess(scale=1 / 16), measure_latency=False))
    info = read_model((tmp_path / "a16" / "digits_cnn_int8.tflite").read_bytes())
    assert info.input_tensors[0].dtype == "int16"
    assert result.report.accuracy["drop_pp"] <= 1.0
    code = main(["convert", MODEL, "--target", "cortex-m4", "--data", CALIB, "--input-scale",
                 "1/16", "--int16-activations", "--out", str(tmp_path / "no")])
    assert code == 2 and "int16" in capsys.readouterr().err


def test_equalize_runs_and_is_reported(tmp_path):
    result = convert(ConvertOptions(model=MODEL, target="imx8mp-npu", data=CALIB, eval_data=EVAL,
                                    out=str(tmp_path / "eq"), equalize=True,
                                    preprocess=Preprocess(scale=1 / 16), measure_latency=False))
    assert any("cross-layer equalization" in n for n in result.report.notes)
    assert result.report.accuracy["drop_pp"] <= 2.0


@pytest.mark.parametrize("network,shape", [("ic_resnet8.h5", (32, 32, 3)),
                                           ("kws_dscnn_savedmodel", (49, 10, 1))])
def test_float_tensors_map_onto_the_converters_tensors(fixtures, network, shape):
    """Our histograms are keyed through the float TFLite model; every tensor the converter
    calibrates must find its histogram, and on the same samples the histogram's min/max must
    equal the converter's own, with one known exception: TFLite's calibrator logs an op's
    inputs after the op ran, so when ADD reuses its input's buffer in place (ResNet shortcuts)
    the input's recorded max becomes the ADD output's. Our histogram keeps the true values."""
    from edgeq.data import Dataset
    from edgeq.pipeline.calibrate import collect_statistics

    loaded = load_model(fixtures / "models" / "mlperf_tiny" / network)
    x = np.random.default_rng(0).uniform(-1, 1, size=(8, *shape)).astype(np.float32)
    if network.startswith("ic_"):
        x = (x + 1) * 127.5
    ds = Dataset(x=x, y=None, source="random", notes=(), stats={})
    stats = collect_statistics(loaded.batch1_function, ds,
                               converter_settings(load_target("cortex-m4")), "cortex-m4")
    assert set(stats.histograms) == set(stats.converter_ranges)
    maxima = {round(h.max, 3) for h in stats.histograms.values()}
    exact = 0
    for name, (lo, hi) in stats.converter_ranges.items():
        h = stats.histograms[name]
        assert h.min == pytest.approx(lo, rel=1e-4, abs=1e-5), name
        if h.max == pytest.approx(hi, rel=1e-4, abs=1e-5):
            exact += 1
        else:  # the in-place artifact: the converter's max is another tensor's true max
            assert h.max < hi and round(hi, 3) in maxima, name
    assert exact >= 0.8 * len(stats.converter_ranges)


def test_auto_on_a_per_tensor_target_also_tries_equalization(tmp_path):
    result = convert(ConvertOptions(model=MODEL, target="imx8mp-npu", data=CALIB, eval_data=EVAL,
                                    out=str(tmp_path / "o"), calibration="auto",
                                    preprocess=Preprocess(scale=1 / 16), measure_latency=False))
    cands = result.report.calibration_candidates
    assert len(cands) == 8
    assert {c["equalized"] for c in cands} == {False, True}
    assert sum(c["chosen"] for c in cands) == 1
    assert any("with and without cross-layer equalization" in n for n in result.report.notes)


@pytest.mark.parametrize("method", ["percentile", "entropy", "mse"])
def test_fixed_range_ops_keep_the_spec(tmp_path, method):
    """Custom ranges never override TFLite's fixed output range of SOFTMAX (scale 1/256,
    zero point -128 for int8), which TFLite Micro enforces at run time."""
    convert(ConvertOptions(model=MODEL, target="cortex-m4", data=CALIB, out=str(tmp_path / "o"),
                           calibration=method, preprocess=Preprocess(scale=1 / 16),
                           measure_latency=False))
    info = read_model((tmp_path / "o" / "digits_cnn_int8.tflite").read_bytes())
    softmax = next(op for op in info.ops if op.op == "SOFTMAX")
    out = info.tensors[softmax.outputs[0]]
    assert out.scales == (1 / 256,) and out.zero_points == (-128,)
