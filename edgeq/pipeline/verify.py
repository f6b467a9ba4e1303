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
class RuntimeDiff:
    """The emulator's outputs against LiteRT's for the same integer model and inputs."""

    output: int
    max_abs_diff: float  # in output units (dequantized)
    mismatched_fraction: float  # fraction of output values that differ at all
    argmax_agreement: float


@dataclass(frozen=True)
class VerifyResult:
    accuracy: Accuracy
    fidelity: Fidelity
    latency: Latency | None
    arena: ArenaUsage | None
    seconds: float
    # For TFLite Micro targets: TFLM (the device's kernels) against LiteRT, per output.
    tflm_vs_litert: tuple[RuntimeDiff, ...] = ()


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
    arena, diffs = None, ()
    if isinstance(runner, TFLMRunner):
        arena = runner.arena
        # LiteRT's optimized kernels may round differently from TFLM's reference kernels;
        # a user reading accuracy from a LiteRT run should know by how much.
        litert = LiteRTRunner(model, threads=target.runtime.threads, xnnpack=True)
        diffs = compare_runtimes(quant_outputs, litert.run(x))
    return VerifyResult(accuracy, fidelity, latency, arena, time.perf_counter() - t0, diffs)


def compare_runtimes(a: list[np.ndarray], b: list[np.ndarray]) -> tuple[RuntimeDiff, ...]:
    diffs = []
    for k, (x, y) in enumerate(zip(a, b)):
        delta = np.abs(x.astype(np.float64) - y.astype(np.float64))
        x2, y2 = x.reshape(len(x), -1), y.reshape(len(y), -1)
        diffs.append(RuntimeDiff(
            output=k,
            max_abs_diff=float(delta.max()) if delta.size else 0.0,
            mismatched_fraction=float(np.mean(delta > 0)) if delta.size else 0.0,
            argmax_agreement=float(np.mean(x2.argmax(axis=1) == y2.argmax(axis=1))),
        ))
    return tuple(diffs)


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
