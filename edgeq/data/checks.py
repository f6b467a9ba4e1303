"""Data sanity before any work: the data sets of one run compared with each other and with what
the model's first layer expects.

Each data set is checked against the model's input shape on loading (edgeq.data); what that
cannot see is data that fits the shape but is prepared differently: calibration images in
0..255 next to evaluation images in 0..1 give a model that scores 10 % with no error anywhere.
Such mistakes show as statistics orders of magnitude apart, so this compares per-channel
statistics (channels on the last axis) and warns; `--strict-data` makes the warnings an error.
It also names samples far beyond the others (`OUTLIER_FACTOR`): one value of 3e38 among
pixels in 0..1 sets the calibration range, and the int8 model loses every other input.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

# Statistics this many times apart are a different preparation, not a different sample.
ORDERS_APART = 10.0
DOMINANT = 0.5  # constant or repeated samples above this share of a set make it suspect
# A sample whose peak magnitude is this many times the typical sample's takes the int8 range
# from all the others: the typical sample then spans a quarter of one int8 step. On the
# digits example, one pixel of 1e3 among pixels in 0..1 takes top-1 from 99 % to 11 %, and
# 1e2 costs 0.8 points. Real sets stay far below: the largest ratio in the MNIST, digits and
# wake-word fixtures is 5.4.
OUTLIER_FACTOR = 1e3
_SHOWN = 5  # sample indices named in a warning
_ROWS_CHUNK = 256  # samples per pass: bounded temporaries on large sets
_PIXEL_NOTE = "0..255"
# Raw pixels: data up to 255 whose top is past _PIXEL_LO, for a model taking a span of at most
# _UNIT_SPAN (0..1 or -1..1).
_PIXEL_LO = 2.0
_UNIT_SPAN = 2.5
# A stated input range (--input-range) is exceeded when data passes it by this share of its width.
RANGE_SLACK = 0.1  # edgeq.data's notes for uint8 data and image folders already say so


@dataclass(frozen=True)
class Expectation:
    """What the model's first layer says about its input, per channel where it can."""

    # What says so, as it reads after "but": "the model's first layer Rescaling(scale=0.00392,
    # offset=0)", "the model's int8 input quantization (0..1)", "--input-range 0,1".
    layer: str
    span: float | None = None  # typical max - min of the raw input
    mean: np.ndarray | None = None  # per channel
    std: np.ndarray | None = None  # per channel
    lo: float | None = None  # the range the model saw in training, when known for certain
    hi: float | None = None


@dataclass(frozen=True)
class Stats:
    role: str  # calibration | evaluation | training
    source: str
    lo: float
    hi: float
    std: float
    channel_mean: np.ndarray
    channel_std: np.ndarray

    def describe(self) -> str:
        return f"{self.role} data '{self.source}' spans {_g(self.lo)}..{_g(self.hi)} " \
               f"(std {_g(self.std)})"


def statistics(role: str, source: str, x: np.ndarray) -> Stats:
    """Range, and mean and std per channel (the last axis), of samples ``x`` (N, ...)."""
    channels = x.reshape(-1, x.shape[-1] if x.ndim > 1 else 1).astype(np.float64)
    return Stats(role, source, float(channels.min()), float(channels.max()),
                 float(channels.std()), channels.mean(axis=0), channels.std(axis=0))


def check(sets: Sequence[tuple[str, Any]], expectation: Expectation | None = None,
          *, identity_preprocess: bool = True) -> list[str]:
    """Warnings for the data sets of one run, in words that name the files and figures.

    Args:
        sets: (role, edgeq.data.Dataset) pairs, e.g. ("calibration", calib); the same file
            under two roles is checked once.
        expectation: what the model's first layer expects, when it says (see `expect`).
        identity_preprocess: no --input-scale/--mean/--std were given (the data is raw).
    """
    seen: dict[str, Stats] = {}
    warnings: list[str] = []
    pixels: dict[str, list[Stats]] = {}
    for role, ds in sets:
        if ds is None or ds.source in {s.source for s in seen.values()}:
            continue
        stats = statistics(role, ds.source, ds.x)
        seen[role] = stats
        warnings += _degenerate(stats, ds.x)
        warnings += _outliers(role, ds.source, ds.x)
        noted = any(_PIXEL_NOTE in n for n in ds.notes)
        # One warning per mistake: raw pixels for a 0..1 model is said once, as raw pixels,
        # for all the sets that have it together.
        kind = _raw_pixels(stats, ds.x, expectation, heuristic=identity_preprocess and not noted)
        if kind is not None:
            pixels.setdefault(kind, []).append(stats)
        elif expectation is not None:
            warnings += _against_model(stats, expectation)
    warnings += [_pixel_warning(kind, found, expectation) for kind, found in pixels.items()]
    ordered = list(seen.values())
    for i, a in enumerate(ordered):
        for b in ordered[i + 1:]:
            warnings += _apart(a, b)
    return warnings


def expect(keras_model: Any) -> Expectation | None:
    """What the first layer of a Keras model (Keras 3 or tf_keras) expects of its input: a
    Rescaling layer its scale, a Normalization or BatchNormalization layer its statistics.
    None when the first layer says nothing (a Conv2D takes whatever it was trained on)."""
    layers = [layer for layer in getattr(keras_model, "layers", [])
              if type(layer).__name__ != "InputLayer"]
    if not layers:
        return None
    first = layers[0]
    kind = type(first).__name__
    try:
        if kind == "Rescaling":
            cfg = first.get_config()
            scale = float(np.mean(np.abs(np.asarray(cfg["scale"], dtype=np.float64))))
            offset = float(np.mean(np.asarray(cfg.get("offset", 0.0), dtype=np.float64)))
            return expect_rescaling(scale, offset)
        if kind == "Normalization":
            mean = np.asarray(first.mean, dtype=np.float64).reshape(-1)
            var = np.asarray(first.variance, dtype=np.float64).reshape(-1)
            return Expectation("the model's first layer Normalization (adapted mean and "
                               "variance)", mean=mean,
                               std=np.sqrt(np.maximum(var, 0.0)))
        if kind == "BatchNormalization":
            mean = np.asarray(first.moving_mean, dtype=np.float64).reshape(-1)
            var = np.asarray(first.moving_variance, dtype=np.float64).reshape(-1)
            return Expectation("the model's first layer BatchNormalization (moving mean and "
                               "variance)", mean=mean,
                               std=np.sqrt(np.maximum(var, 0.0)))
    except (AttributeError, KeyError, TypeError, ValueError):
        return None  # an unusual layer config: no expectation rather than a wrong one
    return None


def expect_rescaling(scale: float, offset: float) -> Expectation | None:
    """A first Rescaling layer's expectation from its scale and offset (read from the config
    before the model loads, or from the layer)."""
    scale, offset = abs(scale), offset
    if scale == 0:
        return None
    # Rescaling maps raw inputs to about 0..1 (offset 0) or -1..1 (offset -1).
    span = (1.0 if offset == 0 else 2.0) / scale
    return Expectation(f"the model's first layer Rescaling(scale={scale:.4g}, "
                       f"offset={offset:g})", span=span)


def expect_quantized_input(scale: float, zero_point: int, dtype: str) -> Expectation | None:
    """What an integer model input can represent: values outside it saturate."""
    bounds = {"int8": (-128, 127), "uint8": (0, 255), "int16": (-32768, 32767)}.get(dtype)
    if bounds is None or not scale > 0:
        return None
    lo, hi = (scale * (b - zero_point) for b in bounds)
    return Expectation(f"the model's {dtype} input quantization ({_g(lo)}..{_g(hi)})",
                       span=hi - lo)


def parse_range(text: str | None) -> tuple[float, float] | None:
    """--input-range "LO,HI" as two finite numbers, LO < HI.

    Raises:
        UsageError: anything else.
    """
    if text is None:
        return None
    from edgeq.errors import UsageError

    parts = text.split(",")
    try:
        lo, hi = (float(p) for p in parts)
    except ValueError:
        lo = hi = math.nan
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise UsageError(f"--input-range takes LO,HI with LO < HI (e.g. 0,1 or -1,1), "
                         f"got '{text}'")
    return lo, hi


def expect_range(lo: float, hi: float) -> Expectation:
    """The range the model's input had in training, as the user states it (--input-range)."""
    return Expectation(f"--input-range {lo:g},{hi:g} (the model's training-time input range)",
                       span=hi - lo, lo=lo, hi=hi)


def _apart(a: Stats, b: Stats) -> list[str]:
    ratio = _ratio(a.std, b.std)
    mean_gap = abs(float(np.mean(a.channel_mean)) - float(np.mean(b.channel_mean)))
    if ratio < ORDERS_APART and mean_gap <= ORDERS_APART * max(a.std, b.std):
        return []
    how = f"{ratio:.3g}x apart in spread" if ratio >= ORDERS_APART else "centred far apart"
    return [f"{a.describe()} but {b.describe()}: {how}. The model sees both through the same "
            "--input-scale/--mean/--std, so one of them is prepared differently (e.g. 0..255 "
            "pixels in one, 0..1 in the other); fix the file, or its figures mean little"]


def _against_model(s: Stats, e: Expectation) -> list[str]:
    if e.lo is not None and e.hi is not None:
        # A stated range: values past it by a tenth of its width are inputs the model never saw.
        slack = RANGE_SLACK * (e.hi - e.lo)
        if s.lo < e.lo - slack or s.hi > e.hi + slack:
            return [f"{s.describe()}, outside {e.layer}: check --input-scale/--mean/--std"]
    if e.span is not None:
        span = s.hi - s.lo
        if span > 0 and _ratio(span, e.span) >= ORDERS_APART:
            return [f"{s.describe()}, but {e.layer} expects inputs spanning about "
                    f"{_g(e.span)}: {_ratio(span, e.span):.3g}x apart; check "
                    "--input-scale/--mean/--std"]
        return []
    if e.std is None or e.mean is None or len(e.std) != len(s.channel_std):
        return []
    for c, (m, sd, dm, dsd) in enumerate(zip(e.mean, e.std, s.channel_mean, s.channel_std)):
        if sd <= 0:
            continue
        if _ratio(dsd, sd) >= ORDERS_APART or abs(dm - m) > ORDERS_APART * sd:
            return [f"{s.describe()}; channel {c} has mean {_g(dm)} and std {_g(dsd)}, but "
                    f"{e.layer} expects mean {_g(m)} and std {_g(sd)}: "
                    "check --input-scale/--mean/--std"]
    return []


def _raw_pixels(s: Stats, x: np.ndarray, e: Expectation | None, *, heuristic: bool
                ) -> str | None:
    """Data in 0..255 like raw pixels, where the model takes 0..1 (or -1..1): "model" when the
    model says so, "whole" when only the data's look does, None otherwise.

    When the model says what it takes (a Rescaling layer, the integer input's quantization,
    --input-range) and that is about 0..1 or -1..1, data spanning more than 2 up to 255 is a
    mistake whatever its dtype and whether or not it holds whole numbers (resized images are
    not whole). When the model says nothing, only float data of whole numbers in 0..255 is
    suspect (``heuristic``: no --input-scale given and the loader has not noted it already):
    many models (the MLPerf Tiny ones) take raw 0..255 pixels."""
    if not (s.lo >= 0 and _PIXEL_LO < s.hi <= 255):
        return None
    span = _implied_span(e)
    if span is not None:
        # A wider span: the model takes the range itself (a Rescaling(1/255) takes 0..255).
        return "model" if span <= _UNIT_SPAN else None
    if not heuristic or x.dtype.kind != "f":
        return None
    sample = x.reshape(-1)[: 1 << 20]
    return "whole" if np.all(sample == np.round(sample)) else None


def _implied_span(e: Expectation | None) -> float | None:
    """The input span an expectation implies: stated, or from per-channel statistics (a
    Normalization adapted on 0..1 data has means near 0.5 and stds near 0.3: mean +- 3 std)."""
    if e is None:
        return None
    if e.span is not None:
        return e.span
    if e.mean is not None and e.std is not None and len(e.mean) and len(e.std) == len(e.mean):
        return float(np.max(e.mean + 3 * e.std) - np.min(e.mean - 3 * e.std))
    return None


def _pixel_warning(kind: str, found: list[Stats], e: Expectation | None) -> str:
    what = "; ".join(s.describe() for s in found)
    span = _implied_span(e)
    if kind == "model" and e is not None and span is not None:
        expects = f"{_g(e.lo)}..{_g(e.hi)}" if e.lo is not None and e.hi is not None \
            else f"inputs spanning about {_g(span)}"
        top = max(s.hi for s in found)
        return (f"{what}: like raw 0..255 pixels, but {e.layer} expects {expects} "
                f"({top / max(span, 1e-12):.3g}x the range); scale the data (--input-scale "
                "1/255) or fix the file")
    return (f"{what}: whole numbers like raw 0..255 pixels; if the model was trained on 0..1, "
            "pass --input-scale 1/255 (or --input-range 0,1 to have it checked)")


def _degenerate(s: Stats, x: np.ndarray) -> list[str]:
    n = len(x)
    if n < 2:
        return []
    flat = x.reshape(n, -1)
    out = []
    constant = int(np.sum(flat.max(axis=1) == flat.min(axis=1)))
    if constant / n > DOMINANT:
        out.append(f"{s.role} data '{s.source}': {constant} of {n} samples are constant (one "
                   "value throughout); check how the file was written")
    distinct = len({hashlib.sha1(row.tobytes()).digest() for row in np.ascontiguousarray(flat)})
    if (n - distinct) / n > DOMINANT:
        out.append(f"{s.role} data '{s.source}': only {distinct} distinct samples among {n}; "
                   "repeated samples weigh calibration and accuracy towards themselves")
    return out


def sample_peaks(x: np.ndarray) -> np.ndarray:
    """(N, channels) float64: each sample's largest magnitude per channel (the last axis)."""
    n = len(x)
    channels = x.shape[-1] if x.ndim > 1 else 1
    peaks = np.empty((n, channels), dtype=np.float64)
    for start in range(0, n, _ROWS_CHUNK):  # max and min need no copy of x
        part = x[start:start + _ROWS_CHUNK].reshape(-1, max(x[0].size // channels, 1), channels)
        peaks[start:start + len(part)] = np.maximum(part.max(axis=1), -part.min(axis=1))
    return peaks


def outlier_samples(x: np.ndarray, factor: float = OUTLIER_FACTOR) -> tuple[np.ndarray, str]:
    """Indices of samples whose peak magnitude is at least ``factor`` times the typical
    sample's peak, and a description of the worst one ("" when none).

    Why magnitudes and not deviations from the median: TFLite's int8 ranges always include
    zero (the converter nudges min <= 0 <= max), so what a value costs the others is its
    distance from zero. Why the whole sample and not each channel: a model input has one scale
    for the whole tensor (TFLite quantizes activations per tensor), so a value that is large
    for its channel but ordinary for the tensor (a rarely active feature next to a busy one)
    costs nothing. Why per-sample peaks and the median over samples: one bad sample may be all
    3e38 (every value of it), which moves percentiles over all values but not the median
    sample. When the median peak is 0 (a set of mostly empty samples), the median of the
    samples that are not all zero stands in; a set where at most one sample is not zero has no
    typical peak, and nothing is flagged (`_degenerate` names the constant samples instead).
    """
    if len(x) < 2 or x.size == 0:
        return np.zeros(0, dtype=np.int64), ""
    peaks = sample_peaks(x)
    overall = peaks.max(axis=1)
    typical = float(np.median(overall))
    if typical == 0 and np.count_nonzero(overall) > 1:
        typical = float(np.median(overall[overall > 0]))
    if not typical > 0:
        return np.zeros(0, dtype=np.int64), ""
    ratio = overall / typical
    flagged = np.flatnonzero(ratio >= factor)
    if not len(flagged):
        return flagged, ""
    i = int(np.argmax(ratio))
    c = int(np.argmax(peaks[i]))
    channel = f" in channel {c}" if peaks.shape[1] > 1 else ""
    return flagged, (f"sample {i} reaches {_g(peaks[i, c])}{channel}, {_g(ratio[i])}x the "
                     f"typical sample's peak ({_g(typical)})")


def _outliers(role: str, source: str, x: np.ndarray) -> list[str]:
    flagged, worst = outlier_samples(x)
    if not len(flagged):
        return []
    idx = [int(i) for i in flagged[:_SHOWN]]
    named = ", ".join(map(str, idx)) + (", ..." if len(flagged) > _SHOWN else "")
    what = (f"sample {idx[0]} is" if len(flagged) == 1
            else f"samples {named} ({len(flagged)} of {len(x)}) are")
    if role == "calibration":
        why = ("calibration sets each int8 range from the largest values, so every other sample "
               "keeps almost none of the 256 steps (top-1 collapses); remove those samples")
    else:
        why = "check how those samples were written, or remove them"
    return [f"{role} data '{source}': {what} {OUTLIER_FACTOR:g}x or more the typical "
            f"sample's magnitude ({worst}): {why}"]


def _ratio(a: float, b: float) -> float:
    lo, hi = sorted((abs(a), abs(b)))
    if hi == 0:
        return 1.0
    return math.inf if lo == 0 else hi / lo


def _g(v: float) -> str:
    return f"{v:.4g}"
