"""Stage 3, driver for post-training quantization: one calibration method, or `auto`.

`auto` quantizes with every method from the same statistics, checks each on the evaluation data
on the target's runtime (top-1 with labels, else output SQNR against float) and keeps the
best; min/max is tried first and only a strictly better method replaces it, so `auto` is never
worse than min/max on that data.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np

from edgeq.adapters.tf_converter import ConverterSettings
from edgeq.data import Dataset
from edgeq.pipeline import calibrate, quantize, verify
from edgeq.pipeline.load import LoadedModel
from edgeq.pipeline.ranges import METHODS
from edgeq.targets import Target

CHOICES = (*METHODS, "auto")


@dataclass
class PTQOutcome:
    result: quantize.QuantizeResult
    stats: calibrate.Statistics | None
    candidates: list[dict]  # auto: every method's figures, side by side
    diagnostics: list[dict]  # per tensor, worst first


def run_ptq(loaded: LoadedModel, target: Target, settings: ConverterSettings, calib: Dataset,
            evaluation: Dataset, float_outputs: list[np.ndarray], *, method: str,
            percentile: float, diagnostics: bool, timed: Callable, task: Callable) -> PTQOutcome:
    stats = None
    if method != "minmax" or diagnostics:
        stats = timed("statistics", calibrate.collect_statistics, loaded.batch1_function, calib,
                      settings, target.name, progress=task("collecting statistics", calib.n))
    if method == "auto":
        result, candidates = timed("auto calibration", _auto, loaded, target, settings, calib,
                                   evaluation, float_outputs, stats, percentile, task)
    elif method == "minmax":
        result = timed("quantize", quantize.quantize_minmax, loaded, target, calib, settings,
                       progress=task("calibrating", calib.n))
        result = quantize.with_ranges(result, quantize.minmax_ranges(stats))
        candidates = []
    else:
        result = timed("quantize", quantize.quantize_with_method, stats, method, settings,
                       target, calib.n, percentile=percentile)
        candidates = []
    rows = []
    if stats is not None and result.ranges:
        rows = timed("diagnose", calibrate.tensor_diagnostics, stats, result.model,
                     result.ranges, calib.x)
    return PTQOutcome(result, stats, candidates, rows)


def _auto(loaded, target, settings, calib, evaluation, float_outputs, stats, percentile, task):
    results = [quantize.with_ranges(
        quantize.quantize_minmax(loaded, target, calib, settings), quantize.minmax_ranges(stats)
    )]
    results += [quantize.quantize_with_method(stats, m, settings, target, calib.n,
                                              percentile=percentile)
                for m in METHODS if m != "minmax"]
    candidates = []
    best, best_score = None, None
    for r in results:
        check = verify.verify(r.model, target, evaluation.x, evaluation.y, float_outputs,
                              progress=task(f"checking {r.calibration}", evaluation.n),
                              measure_latency=False)
        score = _score(check)
        candidates.append({"calibration": r.calibration, "accuracy": asdict(check.accuracy),
                           "fidelity": asdict(check.fidelity)})
        if best_score is None or score > best_score:
            best, best_score = r, score
    for c in candidates:
        c["chosen"] = c["calibration"] == best.calibration
    return best, candidates


def _score(check: verify.VerifyResult) -> tuple[float, float]:
    return candidate_score({"accuracy": asdict(check.accuracy),
                            "fidelity": asdict(check.fidelity)})


def candidate_score(candidate: dict) -> tuple[float, float]:
    """Top-1 when labels exist (ties broken by output SQNR), else output SQNR alone;
    identical outputs score highest."""
    sqnr = candidate["fidelity"]["sqnr_db"]
    top1 = candidate["accuracy"]["quantized"]
    return (top1 if top1 is not None else 0.0, float("inf") if sqnr is None else sqnr)


def better_of(plain: PTQOutcome, equalized: PTQOutcome) -> tuple[PTQOutcome, bool]:
    """The better of two `auto` searches (without and with equalization), candidates of both
    listed; the equalized one must be strictly better to win."""
    for c in plain.candidates:
        c["equalized"] = False
    for c in equalized.candidates:
        c["equalized"] = True
    best_plain = max(candidate_score(c) for c in plain.candidates)
    best_eq = max(candidate_score(c) for c in equalized.candidates)
    winner, won = (equalized, True) if best_eq > best_plain else (plain, False)
    for c in (*plain.candidates, *equalized.candidates):
        c["chosen"] = c["chosen"] and (c["equalized"] == won)
    winner.candidates = [*plain.candidates, *equalized.candidates]
    return winner, won
