"""Stage 3, quantize: post-training full-integer quantization for a target.

`minmax` is the converter's own calibration. The other methods (percentile, entropy, mse) use
one pass of activation histograms (`edgeq.pipeline.calibrate`) and TFLite's quantizer with the
chosen ranges. Int16 activations (16x8) go through the converter's own path, min/max only.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np

from edgeq.adapters.tf_converter import (
    ConversionOutput,
    ConverterSettings,
    convert_int8,
    convert_weight_only,
)
from edgeq.data import Dataset
from edgeq.errors import UsageError
from edgeq.pipeline import calibrate
from edgeq.pipeline.load import LoadedModel
from edgeq.pipeline.ranges import METHODS, Range
from edgeq.targets import Target

ProgressFn = Callable[[int, int], None]


@dataclass(frozen=True)
class QuantizeResult:
    model: bytes
    method: str
    calibration: str
    samples: int
    seconds: float
    converter_log: str
    ranges: dict[str, Range] = field(default_factory=dict)  # tensor -> chosen activation range


def converter_settings(target: Target, *, int16_activations: bool = False) -> ConverterSettings:
    """What the target profile asks of the TFLite converter."""
    q = target.quantization
    if int16_activations and not q.int16_activations:
        raise UsageError(
            f"target '{target.name}' does not allow int16 activations",
            hint="drop --int16-activations, or use a target whose profile allows them (arm-cpu)",
        )
    io = ("int16", "int16") if int16_activations else (q.input_dtype, q.output_dtype)
    return ConverterSettings(
        per_channel=q.weight_granularity == "per-channel",
        dense_per_channel=q.dense_granularity == "per-channel",
        input_dtype=io[0],
        output_dtype=io[1],
        float_fallback=q.float_fallback != "none",
        int16_activations=int16_activations,
    )


def quantize_minmax(loaded: LoadedModel, target: Target, calibration: Dataset,
                    settings: ConverterSettings, *, progress: ProgressFn | None = None
                    ) -> QuantizeResult:
    """Full-integer PTQ calibrated by the converter's own min/max on every sample."""
    x = calibration.x

    def samples() -> Iterator[np.ndarray]:
        # The converter pulls samples one by one; reporting from here shows calibration progress.
        for i in range(len(x)):
            yield x[i : i + 1]
            if progress is not None:
                progress(i + 1, len(x))

    t0 = time.perf_counter()
    out: ConversionOutput = convert_int8(loaded.batch1_function, samples, settings,
                                         target_name=target.name)
    return QuantizeResult(out.model, "ptq", "minmax", len(x), time.perf_counter() - t0, out.log)


def quantize_with_method(stats: calibrate.Statistics, method: str, settings: ConverterSettings,
                         target: Target, samples: int, *, percentile: float = 99.99
                         ) -> QuantizeResult:
    """PTQ with activation ranges chosen by `method` from the collected histograms."""
    if method not in METHODS:
        raise UsageError(f"unknown calibration method '{method}'",
                         hint=f"use one of: {', '.join(METHODS)}, auto")
    t0 = time.perf_counter()
    ranges = calibrate.ranges_for(stats, method, percentile=percentile)
    model = calibrate.quantize_with(stats, ranges, settings, target.name)
    return QuantizeResult(model, "ptq", method, samples, time.perf_counter() - t0, "", ranges)


def minmax_ranges(stats: calibrate.Statistics | None) -> dict[str, Any]:
    """The ranges the converter's min/max calibration used (they clip nothing by definition)."""
    if stats is None:
        return {}
    return {n: Range(lo, hi, "minmax", 0.0) for n, (lo, hi) in stats.converter_ranges.items()}


def quantize_weights_only(loaded: LoadedModel, recipe: Any) -> QuantizeResult:
    """Recipes that quantize weights only (dynamic range, float16, int4): no calibration."""
    t0 = time.perf_counter()
    if recipe.engine == "ai-edge-quantizer":
        from edgeq.adapters import aeq, tf_calibration

        float_model = tf_calibration.float_model(loaded.batch1_function)
        model = aeq.quantize_weights(float_model, bits=int(recipe.weights[3:]),
                                     block_size=recipe.block_size)
        log = ""
    else:
        out = convert_weight_only(loaded.batch1_function, recipe.weights)
        model, log = out.model, out.log
    return QuantizeResult(model, "ptq", "none (weights only)", 0, time.perf_counter() - t0, log)


def with_ranges(result: QuantizeResult, ranges: dict[str, Range]) -> QuantizeResult:
    return dataclasses.replace(result, ranges=ranges)
