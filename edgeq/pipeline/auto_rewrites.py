"""`--method auto`'s model-rewrite stages, tried after PTQ's calibrator search and before
sensitivity / partial float:

- **smooth**: SmoothQuant (edgeq.transforms.smooth) with the migration strength searched:
  alpha in SMOOTH_ALPHAS, each converted (min/max) and measured on the target's runtime; the
  most accurate kept (the smaller alpha among equals: it moves less range into the weights).
  Exact in float, so only the int8 error changes.
- **clip**: activation clipping with per-activation bounds searched on the calibration data
  (edgeq.transforms.clip, `--clip auto`). It changes the float function; each attempt is
  measured against the original model's float outputs, so its drop counts the clip's own cost.

Only Keras models can be rewritten; a SavedModel skips these stages with a note.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Callable

from edgeq.errors import EdgeqError

SMOOTH_ALPHAS = (0.25, 0.5, 0.75)
CHECK_SAMPLES = 256


def stages(loaded: Any, target: Any, settings: Any, calib: Any, budget: float,
           measure: Callable, meets: Callable, attempt_cls: type
           ) -> tuple[list[Any], list[str]]:
    """(attempts, notes): the smooth stage, then the clip stage if smoothing missed the budget."""
    from edgeq.pipeline import quantize

    if loaded.format == "savedmodel" or loaded.owner is None:
        return [], ["auto: SmoothQuant and clipping not tried (they rewrite Keras models; this "
                    "is a SavedModel)"]
    x = calib.x[: min(CHECK_SAMPLES, calib.n)]
    attempts: list[Any] = []
    notes: list[str] = []

    def convert(model: Any, stage: str, name: str, details: dict) -> Any:
        rewritten = loaded.replaced_by(model, [])
        result = quantize.quantize_minmax(rewritten, target, calib, settings)
        result = replace(result, calibration=f"minmax, {name}")
        return attempt_cls(stage, name, result, measure(result, name), details)

    from edgeq.transforms.smooth import smooth_model

    tried: list[Any] = []
    for alpha in SMOOTH_ALPHAS:
        try:
            sm = smooth_model(loaded.owner, x, alpha=alpha)
        except EdgeqError as exc:
            notes.append(f"auto: SmoothQuant not tried ({exc})")
            break
        if not sm.smoothed:
            notes.append("auto: SmoothQuant not tried (no LayerNorm -> Dense pattern to smooth)")
            break
        tried.append(convert(sm.model, "smooth", f"SmoothQuant alpha {alpha:g}",
                             {"alpha": alpha, "smoothed": list(sm.smoothed)}))
    if tried:
        best = max(tried, key=lambda a: (a.check.accuracy.quantized or 0.0, -tried.index(a)))
        for a in tried:
            a.details["alpha_searched"] = list(SMOOTH_ALPHAS[: len(tried)])
            a.details["best_alpha"] = a is best
        attempts += [best] + [a for a in tried if a is not best]  # the best alpha first
        if meets(best.check, budget):
            return attempts, notes

    from edgeq.transforms.clip import clip_activations

    try:
        clipped = clip_activations(loaded.owner, x, "auto")
    except EdgeqError as exc:
        notes.append(f"auto: clipping not tried ({exc})")
        return attempts, notes
    if not clipped.clipped:
        notes.append("auto: clipping not tried (no activation's searched bound is below its "
                     "calibration maximum)")
        return attempts, notes
    layers = [c["layer"] for c in clipped.clipped]
    attempts.append(convert(clipped.model, "clip", f"clip {', '.join(layers)}",
                            {"clipped": list(clipped.clipped)}))
    return attempts, notes


def int16_route(loaded: Any, target: Any, calib: Any) -> str:
    """What to say about `--recipe a16w8` on this target, after trying it: the 16x8 model is
    converted (LayerNorm decomposed as `convert` does) and one sample run on the target's
    runtime; the route is recommended only if that ran."""
    from edgeq.pipeline import quantize, verify
    from edgeq.transforms.stage import decomposed_for_int16

    try:
        model = decomposed_for_int16(loaded, calib.x[: min(CHECK_SAMPLES, calib.n)])
        settings = quantize.converter_settings(target, int16_activations=True)
        result = quantize.quantize_minmax(model, target, calib.spread(min(100, calib.n)),
                                          settings)
        verify.run_batched(verify.runner_for(result.model, target), calib.x[:1], None)
    except (EdgeqError, RuntimeError, ValueError) as exc:
        return f"--recipe a16w8 (int16 activations) was tried and does not run here: {exc}"
    return "--recipe a16w8: int16 activations; a 16x8 model of this one ran on the runtime"
