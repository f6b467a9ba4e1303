"""The float model's own first layer run on the data: what its outputs say about how the data was
prepared, for models whose first layer states no input range (a Conv2D takes anything).

Two kinds of evidence, both from the trained model itself:

- A BatchNormalization layer right after the first layer holds the mean and variance of that
  layer's outputs over the training data (its moving statistics). Data prepared like the
  training data gives outputs of about that spread; data scaled differently gives outputs
  scaled by the same factor. Measured on the MLPerf Tiny models with uniform noise in each
  range: ResNet-8 (trained on raw 0..255 pixels) has a median per-channel std ratio of 2.0 on
  0..255 inputs and 0.008 on 0..1 inputs; the VWW MobileNet (trained on 0..1) 1.6 on 0..1 and
  420 on 0..255. The warning takes an order of magnitude (checks.ORDERS_APART) either way.
- A bounded or rectifying activation in the first layer itself: most outputs pinned at the
  bound (relu6 at 6, sigmoid at 0 or 1, tanh at -1 or 1) is a saturated layer, which passes
  almost nothing of the input on; nearly every output zero (relu) is a dead one. Either way the
  model's answer hardly depends on the input, and inputs far outside the training range are
  the usual cause.

The layer runs eagerly on at most PROBE_SAMPLES samples per set (Keras 3 or tf_keras alike).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from edgeq.data.checks import ORDERS_APART

PROBE_SAMPLES = 256
SATURATED = 0.5  # share of outputs at an activation's bound
DEAD = 0.95  # share of rectified outputs that are exactly zero
_COMPUTE = ("Conv1D", "Conv2D", "Conv3D", "DepthwiseConv2D", "SeparableConv2D", "Dense")
_BOUNDS = {"relu6": (0.0, 6.0), "sigmoid": (0.0, 1.0), "tanh": (-1.0, 1.0),
           "hard_sigmoid": (0.0, 1.0)}


def first_layer_warnings(model: Any, sets: Sequence[tuple[str, Any]]) -> list[str]:
    """Warnings for the (role, Dataset) pairs from the model's first compute layer; [] when the
    first layer is not one (a Rescaling or Normalization layer says more, in checks.expect)."""
    first, after = _first_layers(model)
    if first is None:
        return []
    warnings: list[str] = []
    seen = set()
    for role, ds in sets:
        if ds is None or ds.source in seen:
            continue
        seen.add(ds.source)
        try:
            out = np.asarray(first(ds.x[:PROBE_SAMPLES]), dtype=np.float64)
        except Exception:  # a layer that will not run eagerly here: no evidence, no warning
            return warnings
        what = f"{role} data '{ds.source}'"
        warnings += _against_batchnorm(out, first, after, what)
        warnings += _activation(out, first, what)
    return warnings


def _first_layers(model: Any) -> tuple[Any, Any]:
    layers = [layer for layer in getattr(model, "layers", [])
              if type(layer).__name__ != "InputLayer"]
    if not layers or type(layers[0]).__name__ not in _COMPUTE:
        return None, None
    inputs = list(getattr(model, "inputs", None) or [])
    if len(inputs) != 1:
        return None, None
    return layers[0], layers[1] if len(layers) > 1 else None


def _against_batchnorm(out: np.ndarray, first: Any, after: Any, what: str) -> list[str]:
    if after is None or type(after).__name__ != "BatchNormalization":
        return []
    try:
        var = np.asarray(after.moving_variance, dtype=np.float64).reshape(-1)
    except (AttributeError, TypeError, ValueError):
        return []
    channels = out.reshape(-1, out.shape[-1])
    if channels.shape[1] != var.size:
        return []
    sd = np.sqrt(np.maximum(var, 0.0))
    live = sd > 0
    if not live.any():
        return []
    ratio = float(np.median(channels.std(axis=0)[live] / sd[live]))
    if 1 / ORDERS_APART < ratio < ORDERS_APART:
        return []
    how = f"{ratio:.3g}x wider" if ratio >= 1 else f"{1 / max(ratio, 1e-30):.3g}x narrower"
    return [f"{what}: the float model's first layer '{first.name}' gives outputs {how} (median "
            f"per-channel std) than its BatchNormalization '{after.name}' saw in training: "
            "the data is scaled differently from the training data (e.g. 0..255 pixels for a "
            "0..1 model, or the reverse); check --input-scale/--mean/--std"]


def _activation(out: np.ndarray, first: Any, what: str) -> list[str]:
    act = getattr(getattr(first, "activation", None), "__name__", "")
    if out.size == 0:
        return []
    if act in _BOUNDS:
        lo, hi = _BOUNDS[act]
        tol = 1e-3 * (hi - lo)
        pinned = float(np.mean((out <= lo + tol) | (out >= hi - tol)))
        if act == "relu6":  # zero is relu6's ordinary off state, not saturation
            pinned = float(np.mean(out >= hi - tol))
        if pinned >= SATURATED:
            return [f"{what}: the float model's first layer '{first.name}' ({act}) is "
                    f"saturated: {100 * pinned:.0f}% of its outputs sit at the bound, so the "
                    "input hardly reaches the rest of the model; the data is likely scaled "
                    "past the training range (check --input-scale/--mean/--std)"]
    if act in ("relu", "relu6"):
        dead = float(np.mean(out == 0))
        if dead >= DEAD:
            return [f"{what}: the float model's first layer '{first.name}' ({act}) is dead "
                    f"on this data: {100 * dead:.1f}% of its outputs are 0; the data is likely "
                    "prepared differently from the training data (sign, offset or scale; "
                    "check --input-scale/--mean/--std)"]
    return []
