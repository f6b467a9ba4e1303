"""Stage 6, verify: run the integer model on the target's runtime next to the float model.

Accuracy and agreement are measured on the runtime the device uses (TFLite Micro for
microcontrollers, LiteRT otherwise); latency is always LiteRT with XNNPACK on this host,
labelled as a host figure, since no board is attached.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from edgeq.adapters.litert import LiteRTRunner
from edgeq.adapters.tflm import ArenaUsage, TFLMRunner
from edgeq.targets import Target

ProgressFn = Callable[[int, int], None]
_CHUNK = 64  # samples per progress step


@dataclass(frozen=True)
class Accuracy:
    float: float | None  # top-1 of the float model, None without labels
    quantized: float | None
    drop_pp: float | None  # 100 * (float - quantized)
    agreement: float  # fraction of samples whose argmax matches the float model's
    n: int
    runtime: str


@dataclass(frozen=True)
class Fidelity:
    sqnr_db: float | None  # None when the outputs are identical (no noise to measure)
    cosine: float


@dataclass(frozen=True)
class Latency:
    median: float
    runtime: str
    threads: int
    host: bool
    runs: int
    delegate: str


@dataclass(frozen=True)
class VerifyResult:
    accuracy: Accuracy
    fidelity: Fidelity
    latency: Latency | None
    arena: ArenaUsage | None
    seconds: float


def runner_for(model: bytes, target: Target):
    """The interpreter that stands in for the device."""
    if target.runtime.name == "tflm":
        return TFLMRunner(model)
    return LiteRTRunner(model, threads=target.runtime.threads,
                        xnnpack=target.runtime.delegate == "xnnpack")


def run_batched(runner, x: np.ndarray, progress: ProgressFn | None) -> list[np.ndarray]:
    parts = []
    for start in range(0, len(x), _CHUNK):
        parts.append(runner.run(x[start : start + _CHUNK]))
        if progress is not None:
            progress(min(start + _CHUNK, len(x)), len(x))
    return [np.concatenate([p[k] for p in parts]) for k in range(len(parts[0]))]


def verify(
    model: bytes,
    target: Target,
    x: np.ndarray,
    y: np.ndarray | None,
    float_outputs: list[np.ndarray],
    *,
    progress: ProgressFn | None = None,
    measure_latency: bool = True,
) -> VerifyResult:
    """Compare the integer model with the float outputs on the same samples."""
    import time

    t0 = time.perf_counter()
    runner = runner_for(model, target)
    quant_outputs = run_batched(runner, x, progress)
    accuracy = compare_accuracy(float_outputs[0], quant_outputs[0], y, runner.runtime)
    fidelity = compare_fidelity(float_outputs, quant_outputs)
    latency = None
    if measure_latency:
        # Host latency is always LiteRT + XNNPACK at the target's thread count.
        host = runner if isinstance(runner, LiteRTRunner) and runner.xnnpack else LiteRTRunner(
            model, threads=target.runtime.threads, xnnpack=True
        )
        median, runs = host.latency_ms(x[0])
        latency = Latency(median, "litert", host.threads, True, runs, "xnnpack")
    arena = runner.arena if isinstance(runner, TFLMRunner) else None
    return VerifyResult(accuracy, fidelity, latency, arena, time.perf_counter() - t0)


def compare_accuracy(f: np.ndarray, q: np.ndarray, y: np.ndarray | None, runtime: str) -> Accuracy:
    f2, q2 = f.reshape(len(f), -1), q.reshape(len(q), -1)
    fa, qa = f2.argmax(axis=1), q2.argmax(axis=1)
    agreement = float(np.mean(fa == qa))
    if y is None:
        return Accuracy(None, None, None, agreement, len(f), runtime)
    float_acc = float(np.mean(fa == y))
    quant_acc = float(np.mean(qa == y))
    return Accuracy(float_acc, quant_acc, round(100.0 * (float_acc - quant_acc), 4), agreement,
                    len(f), runtime)


def compare_fidelity(float_outputs: list[np.ndarray], quant_outputs: list[np.ndarray]) -> Fidelity:
    f = np.concatenate([o.reshape(len(o), -1) for o in float_outputs], axis=1).astype(np.float64)
    q = np.concatenate([o.reshape(len(o), -1) for o in quant_outputs], axis=1).astype(np.float64)
    noise = float(np.sum((f - q) ** 2))
    signal = float(np.sum(f**2))
    sqnr = None if noise == 0.0 else 10.0 * math.log10(max(signal, 1e-30) / noise)
    norms = np.linalg.norm(f, axis=1) * np.linalg.norm(q, axis=1)
    dots = np.sum(f * q, axis=1)
    cos = np.where(norms > 0, dots / np.where(norms > 0, norms, 1.0), 1.0)
    return Fidelity(sqnr, float(np.mean(cos)))
