"""Data sanity (edgeq.data.checks): data sets compared with each other and with what the
model's first layer expects. No TensorFlow: datasets are built in memory."""

from __future__ import annotations

import numpy as np

from edgeq.data import checks as data_check
from edgeq.data import Dataset


def _ds(x: np.ndarray, source: str, notes: tuple[str, ...] = ()) -> Dataset:
    return Dataset(np.ascontiguousarray(x, dtype=np.float32), None, source, notes, {})


def _pixels(n: int = 64, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 8, 8, 3)).astype(np.float32)


def test_sets_prepared_differently_are_named_with_their_ranges():
    calib, evaluation = _ds(_pixels(), "calib.npz"), _ds(_pixels(seed=1) / 255, "eval.npz")
    warnings = data_check.check([("calibration", calib), ("evaluation", evaluation)])
    (apart,) = [w for w in warnings if "eval.npz" in w]
    assert "calib.npz" in apart and "0..255" in apart and "0..1" in apart, apart


def test_sets_prepared_alike_give_no_warning():
    x = _pixels() / 255
    warnings = data_check.check([("calibration", _ds(x[:32], "a.npz")),
                                 ("evaluation", _ds(x[32:], "b.npz"))])
    assert warnings == []


def test_float_data_in_whole_0_255_gets_the_pixel_warning_unless_the_model_takes_it():
    ds = _ds(_pixels(), "raw.npz")
    (warning,) = data_check.check([("calibration", ds)])
    assert "raw.npz" in warning and "--input-scale 1/255" in warning
    rescaling = data_check.Expectation("Rescaling(scale=0.003922, offset=0)", span=255.0)
    assert data_check.check([("calibration", ds)], rescaling) == []
    # Already noted by the loader (uint8 data, image folders), or preprocessed: no repeat.
    noted = _ds(_pixels(), "raw.npz", ("uint8 data used as 0..255 values",))
    assert data_check.check([("calibration", noted)]) == []
    assert data_check.check([("calibration", ds)], identity_preprocess=False) == []


def test_data_far_from_the_first_layer_expectation():
    rescaling = data_check.Expectation("Rescaling(scale=0.003922, offset=0)", span=255.0)
    warnings = data_check.check([("calibration", _ds(_pixels() / 255, "small.npz"))], rescaling)
    assert len(warnings) == 1 and "Rescaling" in warnings[0] and "small.npz" in warnings[0]
    norm = data_check.Expectation("Normalization", mean=np.full(3, 120.0),
                                  std=np.full(3, 70.0))
    assert data_check.check([("calibration", _ds(_pixels(), "p.npz"))], norm,
                            identity_preprocess=False) == []
    (warning,) = data_check.check([("calibration", _ds(_pixels() / 255, "p.npz"))], norm,
                                  identity_preprocess=False)
    assert "channel 0" in warning and "Normalization" in warning


def test_quantized_input_range():
    e = data_check.expect_quantized_input(1 / 255, -128, "int8")
    assert e is not None and abs(e.span - 1.0) < 1e-9
    (warning,) = data_check.check([("evaluation", _ds(_pixels() * 4, "big.npz"))], e,
                                  identity_preprocess=False)
    assert "int8 input quantization" in warning


def test_constant_and_repeated_samples_dominating():
    x = _pixels(10) / 255
    x[:7] = 0.5  # 7 of 10 constant, and (the same constant) repeated
    warnings = data_check.check([("calibration", _ds(x, "flat.npz"))])
    assert any("7 of 10 samples are constant" in w for w in warnings), warnings
    assert any("only 4 distinct samples among 10" in w for w in warnings), warnings
    assert data_check.check([("calibration", _ds(_pixels(10) / 255, "ok.npz"))]) == []
