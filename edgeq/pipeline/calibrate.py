"""Stage 3a, calibrate: one pass of activation statistics, then ranges by any method.

The float TFLite model runs once over the representative data; every activation tensor feeds
a bounded streaming histogram. Each method (minmax, percentile, entropy, mse) then picks a
range per tensor from the same histograms, the ranges go into the converter's calibrated model,
and TFLite's quantizer makes the integer model. Per-tensor diagnostics compare the integer
model's activations with the float ones.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from edgeq.adapters import tf_calibration
from edgeq.adapters.litert import TensorProbe
from edgeq.adapters.tf_converter import ConverterSettings
from edgeq.data import Dataset
from edgeq.pipeline.ranges import METHODS, StreamingHistogram, choose_range
from edgeq.formats.tflite import ModelInfo, read_model

ProgressFn = Callable[[int, int], None]
_DIAGNOSTIC_SAMPLES = 32
_BUFFER_BYTES = 32 << 20


@dataclass
class Statistics:
    """What one calibration pass produced; every method is derived from it."""

    calibrated: bytes  # the converter's calibrated float model (min/max on each tensor)
    float_model: bytes
    histograms: dict[str, StreamingHistogram]
    converter_ranges: dict[str, tuple[float, float]]
    stats_seconds: float  # our histogram pass
    converter_seconds: float  # the converter's own min/max calibration, same samples

    @property
    def overhead_ratio(self) -> float:
        return self.stats_seconds / max(self.converter_seconds, 1e-9)


def collect_statistics(
    concrete_function, calibration: Dataset, settings: ConverterSettings, target_name: str,
    *, progress: ProgressFn | None = None,
) -> Statistics:
    x = calibration.x

    t0 = time.perf_counter()
    calibrated = tf_calibration.calibrated_model(
        concrete_function, lambda: (x[i : i + 1] for i in range(len(x))), settings,
        target_name=target_name,
    )
    converter_seconds = time.perf_counter() - t0
    converter_ranges = tf_calibration.tensor_ranges(calibrated)

    float_model = tf_calibration.float_model(concrete_function)
    t0 = time.perf_counter()
    float_info = read_model(float_model)
    probe = TensorProbe(float_model, float_info)
    # float tensor name -> calibrated tensor name
    mapping = {f: c for f, c in tensor_mapping(float_info, read_model(calibrated)).items()
               if c in converter_ranges and f in probe.names}
    histograms = {c: StreamingHistogram() for c in mapping.values()}
    # Histogram updates cost a fixed ~30 µs each, so values are buffered over several samples
    # and added in one update; the buffer is bounded in bytes, not kept for the whole set.
    pending: dict[str, list[np.ndarray]] = {c: [] for c in histograms}
    held = 0
    for i in range(len(x)):
        values = probe.run(x[i])
        for f, c in mapping.items():
            pending[c].append(values[f])
            held += values[f].nbytes
        if held >= _BUFFER_BYTES or i == len(x) - 1:
            for c, chunks in pending.items():
                histograms[c].update(np.concatenate([v.ravel() for v in chunks]))
                chunks.clear()
            held = 0
        if progress is not None:
            progress(i + 1, len(x))
    stats_seconds = time.perf_counter() - t0
    return Statistics(calibrated, float_model, histograms, converter_ranges, stats_seconds,
                      converter_seconds)


def tensor_mapping(f: ModelInfo, c: ModelInfo) -> dict[str, str]:
    """Float-model tensor name -> calibrated-model tensor name, matched by position in the graph
    (the same op's same output) when both graphs have the same ops, else by name.

    Names alone are not reliable: fused tensors get numeric suffixes ("...Squeeze1") that the
    two conversions may hand out in a different order.
    """
    if f.op_names != c.op_names:
        names = {t.name for t in c.tensors}
        return {t.name: t.name for t in f.tensors if t.name in names}
    mapping = {}
    for fi, ci in zip(f.inputs, c.inputs):
        mapping[f.tensors[fi].name] = c.tensors[ci].name
    for fo, co in zip(f.ops, c.ops):
        for a, b in zip(fo.outputs, co.outputs):
            mapping[f.tensors[a].name] = c.tensors[b].name
    return mapping


def ranges_for(stats: Statistics, method: str, *, percentile: float = 99.99) -> dict:
    """name -> Range for every tensor we have a histogram of."""
    if method not in METHODS:
        raise ValueError(f"unknown calibration method {method!r}; one of {METHODS}")
    return {n: choose_range(h, method, percentile=percentile) for n, h in stats.histograms.items()}


def quantize_with(stats: Statistics, ranges: dict, settings: ConverterSettings,
                  target_name: str, denylist: tuple[str, ...] = ()) -> bytes:
    """The integer model for these activation ranges; ops named in ``denylist`` (by output
    tensor) stay float."""
    chosen = {n: (r.lo, r.hi) for n, r in ranges.items()}
    calibrated = tf_calibration.with_ranges(stats.calibrated, chosen) if chosen \
        else stats.calibrated
    return tf_calibration.quantize_calibrated(calibrated, settings, target_name=target_name,
                                              denylist=denylist)


def tensor_diagnostics(stats: Statistics, quantized: bytes, ranges: dict, x: np.ndarray,
                       *, samples: int = _DIAGNOSTIC_SAMPLES) -> list[dict]:
    """Per quantized activation: its range, the fraction of calibration values clipped, and
    its SQNR against the float activation on the same inputs; worst first.

    Like TFLite's QuantizationDebugger this compares tensors end to end (errors accumulate
    through the graph), matched by name between the float and the integer model.
    """
    fprobe, qprobe = TensorProbe(stats.float_model), TensorProbe(quantized)
    names = [n for n in qprobe.names if n in fprobe.names and n in ranges]
    signal = dict.fromkeys(names, 0.0)
    noise = dict.fromkeys(names, 0.0)
    for i in np.linspace(0, len(x) - 1, min(samples, len(x))).round().astype(int):
        f, q = fprobe.run(x[i]), qprobe.run(x[i])
        for n in names:
            if f[n].shape != q[n].shape:
                continue
            signal[n] += float(np.sum(f[n].astype(np.float64) ** 2))
            noise[n] += float(np.sum((f[n].astype(np.float64) - q[n]) ** 2))
    rows = []
    for n in names:
        r = ranges[n]
        sqnr = None if noise[n] == 0 else 10 * math.log10(max(signal[n], 1e-30) / noise[n])
        rows.append({"tensor": n, "lo": r.lo, "hi": r.hi, "method": r.method,
                     "clipped_fraction": r.clipped_fraction, "sqnr_db": sqnr})
    rows.sort(key=lambda r: math.inf if r["sqnr_db"] is None else r["sqnr_db"])
    return rows


def compact_histogram(h: StreamingHistogram, bins: int = 64) -> dict | None:
    """The histogram cut to the bins that hold values and merged to at most `bins` bins, small
    enough to keep in the report (the HTML report draws it under the chosen range).

    Merging whole groups of k adjacent bins keeps the counts exact: every value stays in the
    merged bin that holds its original bin. None when the histogram saw no values.
    """
    counts = h.counts()
    held = np.nonzero(counts)[0]
    if h.count == 0 or held.size == 0:
        return None
    a, b = int(held[0]), int(held[-1]) + 1
    k = -(-(b - a) // bins)  # ceil
    n = -(-(b - a) // k)
    padded = np.zeros(n * k, dtype=np.int64)
    padded[: b - a] = counts[a:b]
    edges = h.edges()[0] + (a + k * np.arange(n + 1, dtype=np.float64)) * h.width
    return {"edges": [float(e) for e in edges],
            "counts": [int(c) for c in padded.reshape(n, k).sum(axis=1)],
            "min": float(h.min), "max": float(h.max), "count": int(h.count)}
