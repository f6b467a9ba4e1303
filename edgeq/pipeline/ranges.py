"""Activation ranges for post-training quantization, chosen from one streaming pass.

A `StreamingHistogram` per tensor sees the calibration activations batch by batch and keeps
only a fixed number of bins (never the activations); `choose_range` turns it into a clipping
range by one of `METHODS`: minmax, two-sided percentile, TensorRT's KL-divergence ("entropy")
calibration, or the range minimising the expected quantize-dequantize squared error ("mse").

Binning scheme: bin edges sit on a grid anchored at zero, ``edge = j * width``, with ``width``
a power of two. The window holds ``bins`` consecutive grid cells starting at grid index
``first``. When data falls outside the window, ``width`` is multiplied by a power of two ``k``,
so grid cell ``j`` lies wholly inside new cell ``floor(j / k)``: old counts move into new bins
without splitting. Division by a power of two is exact in floating point, so every value lands
in exactly the bin ``np.histogram(values, h.edges())`` would put it in, before and after any
number of widenings: the counts are exact, not an approximation (tests check this). The price
is resolution: a power-of-two width uses between half and all of the bins on the data's span.
The width is also kept at least 2**-40 of the largest magnitude, so grid indices stay far
inside float64's exact integers.

Two properties of the methods worth knowing when comparing them:
- mse weighs squared error, so a handful of far outliers can be worth keeping: 20 values at
  +-50 among 1e6 N(0, 1) samples give [-39.8, 39.8], the true optimum, not a tight range.
- entropy tries thresholds of at least num_quant_bins // 2 + 1 bins of |x| (the reference's
  start at 128), so its narrowest answer is 128 bin widths: a coarse histogram (far outliers,
  few bins) can make that floor the answer. More bins lift it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

METHODS = ("minmax", "percentile", "entropy", "mse")

# A range narrower than this is widened upwards (an all-zero tensor gets [0, _TINY], or
# [-_TINY, _TINY] when symmetric) so that the int8 scale, width / 255, stays a normal float32.
_TINY = 1e-6
_INDEX_BITS = 40  # width >= 2**-40 * max|x|: grid indices stay exact integers in float64
_SMALLEST_WIDTH = 2.0**-100  # the width for an all-zero first batch
_MSE_GRID = 512  # candidate scale factors alpha = 1/512 ... 1 for the mse search
_KL_EPS = 1e-4  # the count given to empty bins of Q where P has mass (KL would be infinite)
_KL_TIE = 1e-9  # KL values this close (relative) are ties


def _pow2_at_least(x: float) -> float:
    """The smallest power of two >= x (x > 0)."""
    mantissa, exponent = math.frexp(x)
    return x if mantissa == 0.5 else math.ldexp(1.0, exponent)


def _min_width(absmax: float) -> float:
    if absmax == 0.0:
        return _SMALLEST_WIDTH
    return max(math.ldexp(1.0, math.frexp(absmax)[1] - _INDEX_BITS), _SMALLEST_WIDTH)


class StreamingHistogram:
    """Histogram of one tensor's values, updated batch by batch in bounded memory.

    Args:
        bins: number of bins kept, fixed for the histogram's life.
    """

    def __init__(self, bins: int = 2048) -> None:
        if bins < 2:
            raise ValueError(f"bins must be at least 2, got {bins}")
        self._bins = bins
        self._counts = np.zeros(bins, dtype=np.int64)
        self._width = 0.0  # a power of two once the first values arrive
        self._first = 0  # grid index of bin 0: bin i covers [(first+i)*width, (first+i+1)*width)
        self._count = 0
        self._min = math.inf
        self._max = -math.inf

    @property
    def bins(self) -> int:
        return self._bins

    @property
    def width(self) -> float:
        return self._width

    @property
    def count(self) -> int:
        return self._count

    @property
    def min(self) -> float:
        return self._min

    @property
    def max(self) -> float:
        return self._max

    def edges(self) -> np.ndarray:
        return (self._first + np.arange(self._bins + 1, dtype=np.float64)) * self._width

    def counts(self) -> np.ndarray:
        return self._counts.copy()

    def update(self, values: np.ndarray) -> None:
        """Add a batch of values (any shape).

        Raises:
            ValueError: the batch holds NaN or infinite values (they have no place on a range).
        """
        x = np.asarray(values).ravel()
        if x.dtype != np.float32:
            x = x.astype(np.float64, copy=False)
        if x.size == 0:
            return
        lo, hi = float(x.min()), float(x.max())  # NaN propagates through min/max
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise ValueError("calibration values contain NaN or infinity")
        new_min, new_max = min(self._min, lo), max(self._max, hi)
        if self._count == 0:
            self._start(lo, hi)
        elif not (self._cell(lo) >= self._first and self._cell(hi) < self._first + self._bins):
            self._grow(new_min, new_max)
        self._min, self._max = new_min, new_max
        # The width is a power of two, so x * (1 / width) is exact (in float64) and much faster
        # than floor_divide. Only underflow can go wrong: a tiny negative value becomes -0.0 and
        # would land in cell 0; those are moved to cell -1 explicitly.
        # float32 data stays float32 while every cell index is an exact float32 integer.
        small = (x.dtype == np.float32 and self._width >= 2.0**-100
                 and max(abs(lo), abs(hi)) / self._width < 2.0**23)
        q = np.multiply(x, 1.0 / self._width, dtype=np.float32 if small else np.float64)
        np.floor(q, out=q)
        if lo < 0.0:
            q -= (q == 0.0) & (x < 0.0)
        q -= self._first
        self._counts += np.bincount(q.astype(np.intp), minlength=self._bins)
        self._count += x.size

    def _cell(self, value: float, width: float | None = None) -> int:
        return int(value // (width or self._width))

    def _fits(self, lo: float, hi: float, width: float) -> bool:
        return self._cell(hi, width) - self._cell(lo, width) < self._bins

    def _start(self, lo: float, hi: float) -> None:
        width = _min_width(max(abs(lo), abs(hi)))
        if hi > lo:
            width = max(width, _pow2_at_least((hi - lo) / self._bins))
        while not self._fits(lo, hi, width):  # floor alignment can need one more doubling
            width *= 2.0
        self._width, self._first = width, self._cell(lo, width)

    def _grow(self, lo: float, hi: float) -> None:
        # Every candidate is a power of two >= 2 * old width, so the ratio k is an integer.
        width = max(2.0 * self._width, _pow2_at_least((hi - lo) / self._bins))
        width = max(width, _min_width(max(abs(lo), abs(hi))))
        while not self._fits(lo, hi, width):
            width *= 2.0
        k = width / self._width
        first = self._cell(lo, width)
        occupied = np.flatnonzero(self._counts)
        # Only occupied bins move: empty bins of the old window may lie outside the new one.
        cells = np.floor_divide(self._first + occupied.astype(np.float64), k).astype(np.int64)
        counts = np.zeros(self._bins, dtype=np.int64)
        np.add.at(counts, cells - first, self._counts[occupied])
        self._counts, self._width, self._first = counts, width, first

    def _cdf_knots(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Knots of the piecewise-linear CDF: values spread evenly over each occupied bin,
        with the outermost bins narrowed to the exact [min, max].

        Returns (xp, cum, counts): cum[i] values lie below xp[i]; counts of the occupied bins.
        """
        j0, j1 = self._cell(self._min) - self._first, self._cell(self._max) - self._first
        inner = self.edges()[j0 + 1 : j1 + 1]
        xp = np.concatenate(([self._min], inner, [self._max]))
        counts = self._counts[j0 : j1 + 1]
        return xp, np.concatenate(([0], np.cumsum(counts))), counts

    def fraction_outside(self, lo: float, hi: float) -> float:
        """Fraction of the values that a clip to [lo, hi] changes (x < lo or x > hi).

        Exactly 0 on a side whose bound covers the running min/max; inside the data's span,
        values are taken as spread evenly over each bin.
        """
        if self._count == 0:
            return 0.0
        xp, cum, _ = self._cdf_knots()
        below = 0.0 if lo <= self._min else float(np.interp(lo, xp, cum))
        above = 0.0 if hi >= self._max else self._count - float(np.interp(hi, xp, cum))
        return min(1.0, (below + above) / self._count)


@dataclass(frozen=True)
class Range:
    lo: float
    hi: float
    method: str
    clipped_fraction: float  # fraction of calibration values outside [lo, hi]


def choose_range(
    h: StreamingHistogram,
    method: str,
    *,
    percentile: float = 99.99,
    num_quant_bins: int = 255,
    symmetric: bool = False,
) -> Range:
    """Choose a clipping range for one tensor from its calibration histogram.

    Every range contains 0 (TFLite needs 0 exactly representable) and has hi > lo; see
    `_TINY` for all-zero tensors. With `symmetric`, the range becomes [-t, t] with t the
    larger magnitude of the chosen bounds (mse and entropy search symmetric candidates).

    Args:
        h: the tensor's histogram, fed with at least one value.
        method: one of `METHODS`.
        percentile: for "percentile": hi is this percentile, lo the (100 - p)-th.
        num_quant_bins: quantization steps of the target type (255 for int8).
        symmetric: force a range symmetric around zero.

    Returns:
        The range, with the fraction of calibration values it clips.

    Raises:
        ValueError: unknown method, bad percentile, or an empty histogram.
    """
    if method not in METHODS:
        raise ValueError(f"unknown range method {method!r}: must be one of {', '.join(METHODS)}")
    if h.count == 0:
        raise ValueError("the histogram is empty: update() it with calibration values first")
    if num_quant_bins < 2:
        raise ValueError(f"num_quant_bins must be at least 2, got {num_quant_bins}")
    if method == "minmax":
        lo, hi = h.min, h.max
    elif method == "percentile":
        if not 50.0 < percentile <= 100.0:
            raise ValueError(f"percentile must be in (50, 100], got {percentile}")
        lo, hi = _quantile(h, 1.0 - percentile / 100.0), _quantile(h, percentile / 100.0)
    elif method == "entropy":
        lo, hi = _entropy_range(h, num_quant_bins, symmetric)
    else:
        lo, hi = _mse_range(h, num_quant_bins, symmetric)
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    if symmetric:
        lo, hi = -max(-lo, hi), max(-lo, hi)
    if hi - lo < _TINY:
        lo, hi = (-_TINY, _TINY) if symmetric else (lo, lo + _TINY)
    return Range(float(lo), float(hi), method, h.fraction_outside(lo, hi))


def _quantile(h: StreamingHistogram, q: float) -> float:
    """The q-quantile, interpolated linearly within its bin."""
    xp, cum, _ = h._cdf_knots()
    rank = q * h.count
    j = int(np.clip(np.searchsorted(cum, rank, side="left"), 1, len(cum) - 1))
    frac = (rank - cum[j - 1]) / (cum[j] - cum[j - 1])  # cum[j] >= rank > cum[j-1] (or j == 1)
    return float(xp[j - 1] + frac * (xp[j] - xp[j - 1]))


def _mse_range(h: StreamingHistogram, num_quant_bins: int, symmetric: bool) -> tuple[float, float]:
    """Scale [min(min, 0), max(max, 0)] by the alpha in (0, 1] that minimises clipping error
    plus rounding error (step**2 / 12 per value inside), each bin taken at its centre."""
    xp, _, counts = h._cdf_knots()
    mid, n = (xp[:-1] + xp[1:]) / 2.0, counts.astype(np.float64)
    s0, s1, s2 = (np.concatenate(([0.0], np.cumsum(m))) for m in (n, n * mid, n * mid * mid))
    lo0, hi0 = min(h.min, 0.0), max(h.max, 0.0)
    if symmetric:
        lo0, hi0 = -max(-lo0, hi0), max(-lo0, hi0)
    alpha = np.arange(1, _MSE_GRID + 1) / _MSE_GRID
    lo, hi = alpha * lo0, alpha * hi0
    a = np.searchsorted(mid, lo, side="left")  # bins [0, a) lie below lo
    b = np.searchsorted(mid, hi, side="right")  # bins [b, end) lie above hi
    below = s2[a] - 2.0 * lo * s1[a] + lo * lo * s0[a]
    above = (s2[-1] - s2[b]) - 2.0 * hi * (s1[-1] - s1[b]) + hi * hi * (s0[-1] - s0[b])
    rounding = (s0[b] - s0[a]) * ((hi - lo) / num_quant_bins) ** 2 / 12.0
    best = int(np.argmin(below + above + rounding))
    return float(lo[best]), float(hi[best])


def _abs_counts(h: StreamingHistogram) -> tuple[np.ndarray, float]:
    """Histogram of |x| on bins [i * width, (i+1) * width) from zero, at most h.bins long."""
    counts = h.counts()
    occupied = np.flatnonzero(counts)
    cells = h._first + occupied
    folded = np.where(cells >= 0, cells, -cells - 1)  # cell -1 is (-w, 0], i.e. |x| in [0, w)
    k = 1
    while int(folded.max()) // k >= h.bins:  # merge pairs until it fits, like a widening
        k *= 2
    return np.bincount(folded // k, weights=counts[occupied]), h.width * k


def _entropy_range(
    h: StreamingHistogram, num_quant_bins: int, symmetric: bool
) -> tuple[float, float]:
    """TensorRT's calibration (Migacz 2017): the threshold T minimising KL(P || Q).

    Non-negative tensors search [0, T] with num_quant_bins levels; signed ones search |x|
    with num_quant_bins // 2 + 1 levels, giving [-T, T] cut to the data's [min, max].
    """
    counts, width = _abs_counts(h)
    if len(counts) > 1:
        # The bin at zero holds every exact zero (ReLU outputs, padding): a spike that
        # dominates KL and drags the threshold to the narrow end. TensorRT's
        # pytorch-quantization reference flattens it to its neighbour's count; so do we.
        counts = counts.copy()
        counts[0] = counts[1]
    unsigned = h.min >= 0.0
    levels = num_quant_bins if unsigned else num_quant_bins // 2 + 1
    t = _kl_threshold(counts, levels, start=num_quant_bins // 2 + 1) * width
    if unsigned:
        return 0.0, min(t, h.max)
    return (-t, t) if symmetric else (max(-t, h.min), min(t, h.max))


def _kl_threshold(counts: np.ndarray, levels: int, start: int) -> int:
    """The number of bins i to keep, over i = start ... len(counts), with minimal KL(P || Q).

    P is counts[:i] with the outliers counts[i:] added to its last bin; Q is counts[:i]
    (without the outliers, as in the reference) merged into `levels` bins and spread back
    evenly over the bins where P is non-zero. Ties go to the widest range, as in TensorRT's
    reference (its last argmin): at equal KL, clipping less is the safer choice.
    """
    n = len(counts)
    if n <= start:
        return n
    tails = np.concatenate((np.cumsum(counts[::-1])[::-1], [0.0]))  # tails[i] = sum(counts[i:])
    divergences = np.array([_kl(counts[:i], tails[i], levels) for i in range(start, n + 1)])
    best = divergences.min()  # finite: at i = n nothing is clipped and Q has mass
    return start + int(np.flatnonzero(divergences <= best + _KL_TIE * abs(best))[-1])


def _kl(kept: np.ndarray, outliers: float, levels: int) -> float:
    i = len(kept)
    p = kept.astype(np.float64)
    p[-1] += outliers
    nonzero = p != 0
    level = np.arange(i) * levels // i  # bins spread as evenly as possible over the levels
    merged = np.bincount(level, weights=kept, minlength=levels)
    spread = np.bincount(level, weights=nonzero, minlength=levels)
    q = merged[level][nonzero] / spread[level][nonzero]
    p = p[nonzero]
    if not q.any():  # everything is an outlier: Q has no mass at all
        return math.inf
    # Smoothing: where P has mass and Q none (clipped outliers piled on the last bin), give Q
    # a small count. Only those bins: smoothing P's empty bins too (MXNet/TVM) makes KL drift
    # with the number of empty bins, which turns exact ties into spurious minima.
    q = np.where(q == 0, _KL_EPS, q)
    p, q = p / p.sum(), q / q.sum()
    return float(np.sum(p * np.log(p / q)))
