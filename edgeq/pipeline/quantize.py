"""Stage 3, quantize: post-training full-integer quantization with min/max calibration."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np

from edgeq.adapters.tf_converter import ConversionOutput, ConverterSettings, convert_int8
from edgeq.data import Dataset
from edgeq.pipeline.load import LoadedModel
from edgeq.targets import Target

ProgressFn = Callable[[int, int], None]  # (done, total)


@dataclass(frozen=True)
class QuantizeResult:
    model: bytes
    method: str
    calibration: str
    samples: int
    seconds: float
    converter_log: str


def converter_settings(target: Target) -> ConverterSettings:
    """What the target profile asks of the TFLite converter."""
    q = target.quantization
    return ConverterSettings(
        per_channel=q.weight_granularity == "per-channel",
        dense_per_channel=q.dense_granularity == "per-channel",
        input_dtype=q.input_dtype,
        output_dtype=q.output_dtype,
        float_fallback=q.float_fallback != "none",
        int16_activations=False,
    )


def quantize_ptq(
    loaded: LoadedModel,
    target: Target,
    calibration: Dataset,
    *,
    progress: ProgressFn | None = None,
) -> QuantizeResult:
    """Full-integer PTQ for `target`, calibrated by min/max on every sample of `calibration`."""
    x = calibration.x

    def samples() -> Iterator[np.ndarray]:
        # The converter pulls samples one by one; reporting from here shows calibration progress.
        for i in range(len(x)):
            yield x[i : i + 1]
            if progress is not None:
                progress(i + 1, len(x))

    t0 = time.perf_counter()
    out: ConversionOutput = convert_int8(
        loaded.batch1_function, samples, converter_settings(target), target_name=target.name
    )
    return QuantizeResult(
        model=out.model,
        method="ptq",
        calibration="minmax",
        samples=len(x),
        seconds=time.perf_counter() - t0,
        converter_log=out.log,
    )
