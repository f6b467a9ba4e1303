"""Tests for edgeq.pipeline.ranges: the streaming histogram and the four range methods."""

from __future__ import annotations

import numpy as np
import pytest

from edgeq.pipeline import ranges
from edgeq.pipeline.ranges import METHODS, Range, StreamingHistogram, choose_range


def _fed(*batches: np.ndarray, bins: int = 2048) -> StreamingHistogram:
    h = StreamingHistogram(bins)
    for batch in batches:
        h.update(batch)
    return h


def _assert_exact(h: StreamingHistogram, values: np.ndarray) -> None:
    """The streamed counts are exactly np.histogram's over the histogram's own edges."""
    expected, _ = np.histogram(values, bins=h.edges())
    np.testing.assert_array_equal(h.counts(), expected)


def _mse_optimum(n_clipped: int, n_inside: int, extreme: float, width_per_t: float) -> float:
    """argmin_t of n_clipped * (extreme - t)**2 + n_inside * (width_per_t * t / 255)**2 / 12."""
    rounding = n_inside * width_per_t**2 / (255**2 * 12)
    return n_clipped * extreme / (n_clipped + rounding)


@pytest.fixture(scope="module")
def gauss_outliers() -> np.ndarray:
    """N(0, 1), 1e6 samples, plus 10 outliers at +50 and 10 at -50."""
    rng = np.random.default_rng(0)
    return np.concatenate([rng.standard_normal(1_000_000), np.full(10, 50.0), np.full(10, -50.0)])


@pytest.fixture(scope="module")
def relu_outliers() -> np.ndarray:
    """|N(0, 1)|, 1e6 samples, plus 10 outliers at 100."""
    rng = np.random.default_rng(1)
    return np.concatenate([np.abs(rng.standard_normal(1_000_000)), np.full(10, 100.0)])


# --- the histogram -----------------------------------------------------------------------------


def test_streaming_in_chunks_matches_one_batch(gauss_outliers: np.ndarray) -> None:
    data = np.random.default_rng(2).permutation(gauss_outliers)
    whole, streamed = _fed(data), _fed(*np.array_split(data, 10))
    for h in (whole, streamed):
        assert (h.count, h.min, h.max) == (data.size, data.min(), data.max())
        assert h.counts().sum() == data.size
        _assert_exact(h, data)


def test_bins_stay_fixed_while_the_range_widens_to_1e6() -> None:
    rng = np.random.default_rng(3)
    batches = [rng.standard_normal(1000) * 1e6 ** (k / 39) for k in range(40)]
    h = _fed(*batches)
    values = np.concatenate(batches)
    assert len(h.counts()) == h.bins == 2048 and len(h.edges()) == 2049
    assert (h.min, h.max, h.count) == (values.min(), values.max(), values.size)
    assert h.edges()[0] <= h.min and h.max < h.edges()[-1]
    assert abs(h.max) > 1e6  # the data really grew that far
    _assert_exact(h, values)


def test_widening_merges_old_counts_exactly() -> None:
    # Exact, not approximate: the width is a power of two on a grid anchored at 0, so every
    # old bin lies inside one new bin and x / width is computed without rounding.
    rng = np.random.default_rng(4)
    first, second = rng.uniform(0, 1, 5000), rng.uniform(0, 4, 5000)
    h = _fed(first)
    width = h.width
    h.update(second)
    assert h.width > width and (h.width / width).is_integer()
    _assert_exact(h, np.concatenate([first, second]))
    third = rng.uniform(-100, 3, 5000)  # now widen downwards, past zero, by a large factor
    h.update(third)
    _assert_exact(h, np.concatenate([first, second, third]))


def test_constant_and_zero_batches_then_real_data() -> None:
    h = _fed(np.zeros(7), np.full(5, 3.0), np.linspace(-1, 1, 11))
    assert (h.count, h.min, h.max) == (23, -1.0, 3.0)
    _assert_exact(h, np.concatenate([np.zeros(7), np.full(5, 3.0), np.linspace(-1, 1, 11)]))


def test_tiny_negatives_land_below_zero() -> None:
    # x / width rounds -5e-324 / 4 to -0.0, which floors into [0, 4); floor_divide does not.
    values = np.array([-5e-324, 4096.0])
    h = _fed(values)
    assert h.width > 1
    _assert_exact(h, values)


def test_fraction_outside_by_hand() -> None:
    h = _fed(np.arange(100.0))  # 0 .. 99
    assert h.fraction_outside(h.min, h.max) == 0.0
    assert h.fraction_outside(-5.0, 1e9) == 0.0
    assert h.fraction_outside(-1.0, 49.5) == pytest.approx(0.5)  # 50 .. 99 are above
    assert h.fraction_outside(9.5, 89.5) == pytest.approx(0.2)  # 0 .. 9 and 90 .. 99
    assert h.fraction_outside(200.0, 300.0) == 1.0


def test_nan_and_infinity_raise() -> None:
    h = StreamingHistogram()
    with pytest.raises(ValueError, match="NaN"):
        h.update(np.array([1.0, np.nan]))
    with pytest.raises(ValueError, match="infinity"):
        h.update(np.array([1.0, -np.inf]))
    assert h.count == 0  # a rejected batch leaves nothing behind


def test_empty_batch_is_ignored_and_bad_bins_rejected() -> None:
    h = _fed(np.array([]), np.array([1.0, 2.0]))
    assert h.count == 2
    with pytest.raises(ValueError, match="bins"):
        StreamingHistogram(1)


def test_many_batches_stay_cheap() -> None:
    rng = np.random.default_rng(5)
    h = StreamingHistogram()
    for i in range(200):  # 2e6 values in well under a second (bincount on fixed bins)
        h.update(rng.standard_normal(10_000) * (1 + i))
    assert h.count == 2_000_000 and h.counts().sum() == h.count and len(h.counts()) == 2048


# --- the methods -------------------------------------------------------------------------------


def _check_valid(r: Range) -> None:
    assert r.lo <= 0.0 <= r.hi and r.hi > r.lo
    assert 0.0 <= r.clipped_fraction <= 1.0


def test_gaussian_with_outliers(gauss_outliers: np.ndarray) -> None:
    h = _fed(gauss_outliers)
    r = {m: choose_range(h, m) for m in METHODS}
    for m in METHODS:
        _check_valid(r[m])
        assert r[m].method == m
    assert (r["minmax"].lo, r["minmax"].hi, r["minmax"].clipped_fraction) == (-50.0, 50.0, 0.0)
    # Two-sided 99.99 %: 0.01 % clipped on each side, so about 0.02 % in all.
    assert 3.5 < r["percentile"].hi < 4.5 and -4.5 < r["percentile"].lo < -3.5
    assert 1e-4 < r["percentile"].clipped_fraction < 3e-4
    assert 0 < r["entropy"].hi < 10 and r["entropy"].lo == -r["entropy"].hi
    assert r["entropy"].clipped_fraction >= 20 / gauss_outliers.size  # the outliers at least
    # MSE does not clip these outliers: 20 values with 46**2 error each outweigh the rounding
    # error they save. It lands at the closed-form optimum of clip + rounding error.
    t = _mse_optimum(20, 1_000_000, 50.0, width_per_t=2.0)
    assert t == pytest.approx(39.8, abs=0.1)
    assert r["mse"].hi == pytest.approx(t, abs=0.25) and r["mse"].lo == -r["mse"].hi


def test_mse_clips_rare_outliers() -> None:
    rng = np.random.default_rng(6)
    data = np.concatenate([rng.standard_normal(1_000_000), [50.0, -50.0]])
    r = choose_range(_fed(data), "mse")
    t = _mse_optimum(2, 1_000_000, 50.0, width_per_t=2.0)  # about 14
    assert r.hi == pytest.approx(t, abs=0.25) and r.hi < 20
    assert r.clipped_fraction == pytest.approx(2e-6, rel=0.5)


def test_entropy_finds_an_interior_minimum_with_fine_bins(gauss_outliers: np.ndarray) -> None:
    # With 2048 bins the smallest threshold the search tries is 128 bins of |x| (8.0 here);
    # with finer bins the KL minimum lies inside the search range, at about 4.4 sigma.
    h = _fed(gauss_outliers, bins=8192)
    r = choose_range(h, "entropy")
    assert 128 * h.width < r.hi and 3.5 < r.hi < 6.0


def test_relu_with_outliers(relu_outliers: np.ndarray) -> None:
    h = _fed(relu_outliers)
    r = {m: choose_range(h, m) for m in METHODS}
    for m in METHODS:
        _check_valid(r[m])
        assert r[m].lo == 0.0
    assert r["minmax"].hi == 100.0
    # Both clip the outliers at 100; entropy keeps ties on the wide side (TensorRT's rule).
    assert r["percentile"].hi < 10 and r["entropy"].hi < 20
    # 10 outliers at 100 are again worth keeping by squared error (closed form about 88.6).
    assert r["mse"].hi == pytest.approx(_mse_optimum(10, 1_000_000, 100.0, 1.0), abs=0.5)


@pytest.mark.parametrize("method", ["mse", "entropy"])
def test_uniform_keeps_nearly_the_whole_range(method: str) -> None:
    h = _fed(np.random.default_rng(7).uniform(0, 1, 1_000_000))
    r = choose_range(h, method)
    assert r.lo == 0.0 and r.hi > 0.99
    assert r.clipped_fraction < 0.01


def test_percentile_by_hand() -> None:
    r = choose_range(_fed(np.arange(100.0)), "percentile", percentile=90)
    assert 89.0 <= r.hi <= 90.0 and r.lo == 0.0  # the 10th percentile (about 9) widens to 0
    assert r.clipped_fraction == pytest.approx(0.1, abs=0.01)
    r = choose_range(_fed(np.arange(-50.0, 50.0)), "percentile", percentile=90)
    assert 39.0 <= r.hi <= 40.0 and -41.0 <= r.lo <= -40.0


def test_percentile_interpolates_within_a_bin() -> None:
    h = _fed(np.linspace(0.0, 0.999, 1000), bins=4)  # 4 bins of 0.25, values spread evenly
    r = choose_range(h, "percentile", percentile=90)
    assert r.hi == pytest.approx(0.9, abs=0.01)


def test_percentile_range_always_contains_zero() -> None:
    r = choose_range(_fed(np.random.default_rng(8).uniform(5, 6, 1000)), "percentile")
    assert r.lo == 0.0 and 5.9 < r.hi <= 6.0


@pytest.mark.parametrize("method", METHODS)
def test_symmetric(method: str) -> None:
    data = np.random.default_rng(9).normal(1.0, 1.0, 100_000)  # mostly positive
    r = choose_range(_fed(data), method, symmetric=True)
    _check_valid(r)
    assert r.lo == -r.hi


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("value", [3.0, -2.0])
def test_constant_tensor(method: str, value: float) -> None:
    r = choose_range(_fed(np.full(50, value)), method)
    assert (r.lo, r.hi) == (min(value, 0.0), max(value, 0.0))
    assert r.clipped_fraction == 0.0


@pytest.mark.parametrize("method", METHODS)
def test_all_zero_tensor(method: str) -> None:
    h = _fed(np.zeros((4, 8)))
    assert choose_range(h, method) == Range(0.0, ranges._TINY, method, 0.0)
    r = choose_range(h, method, symmetric=True)
    assert (r.lo, r.hi) == (-ranges._TINY, ranges._TINY)


def test_errors_name_the_valid_values() -> None:
    h = _fed(np.arange(10.0))
    with pytest.raises(ValueError, match="minmax, percentile, entropy, mse"):
        choose_range(h, "kl")
    with pytest.raises(ValueError, match="percentile"):
        choose_range(h, "percentile", percentile=40)
    with pytest.raises(ValueError, match="empty"):
        choose_range(StreamingHistogram(), "minmax")


def test_entropy_is_not_dragged_down_by_the_relu_zero_spike():
    """Half of a ReLU output is exact zeros. Left in, that spike dominates KL and the search
    stops at the narrow end, clipping percent of the real values (seen on real models); the
    reference flattens the zero bin. The chosen range must keep nearly all values."""
    x = np.maximum(np.random.default_rng(3).normal(size=1_000_000), 0.0)
    h = StreamingHistogram()
    h.update(x)
    r = choose_range(h, "entropy")
    assert r.clipped_fraction < 1e-3, r
    assert r.hi > 3.5
