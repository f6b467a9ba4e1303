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


def test_raw_pixels_for_a_0_1_model_are_one_warning_for_all_sets():
    """Issue 23: float 0..255 (not whole numbers, e.g. after a resize) for a model that takes
    0..1 is one warning naming every set that has it, however the model says 0..1."""
    rng = np.random.default_rng(2)
    raw = [_ds(rng.uniform(0, 255, (32, 8, 8, 3)), f"{n}.npz") for n in ("cal", "ev")]
    sets = [("calibration", raw[0]), ("evaluation", raw[1])]
    assert data_check.check(sets) == []  # nothing says what the model takes: no guess
    norm = data_check.Expectation("the model's first layer Normalization", mean=np.full(3, 0.5),
                                  std=np.full(3, 0.29))
    for e in (data_check.expect_range(0, 1), data_check.expect_quantized_input(1 / 255, -128,
                                                                               "int8"), norm):
        (warning,) = data_check.check(sets, e, identity_preprocess=False)
        assert "cal.npz" in warning and "ev.npz" in warning and "raw 0..255" in warning, warning
    # A model that takes 0..255 itself (Rescaling(1/255)): nothing to say.
    rescaling = data_check.expect_rescaling(1 / 255, 0.0)
    assert data_check.check(sets, rescaling) == []


def test_input_range_is_checked_and_parsed():
    x = np.random.default_rng(3).uniform(-1, 1, (16, 4, 4, 1))
    (warning,) = data_check.check([("calibration", _ds(x, "pm1.npz"))],
                                  data_check.expect_range(0, 1))
    assert "outside --input-range 0,1" in warning and "pm1.npz" in warning
    assert data_check.check([("calibration", _ds(x, "pm1.npz"))],
                            data_check.expect_range(-1, 1)) == []
    assert data_check.parse_range("0,1") == (0.0, 1.0) and data_check.parse_range(None) is None
    import pytest

    from edgeq.errors import UsageError

    for bad in ("1,0", "0", "a,b", "0,inf", "0,1,2"):
        with pytest.raises(UsageError, match="--input-range"):
            data_check.parse_range(bad)
