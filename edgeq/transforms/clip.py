"""Activation clipping before quantization (the GELU10 recipe), as a model transform.

Outlier activations stretch an int8 range so the ordinary values get a few levels. Clipping
them in the float model (Kim et al.'s GELU10: min(GELU(x), 10); BACKGROUND.md's BERT table:
max calibration 85.92, max + GELU10 90.66, float 91.01) trades the rare outlier's error for
the resolution of everything else, and because the clip is an op of the model, the float model
edgeq verifies against is the clipped one: the report shows the float accuracy with clipping,
so the cost of the clip itself is visible apart from the cost of quantization.

`--clip` takes
- a number B: every GELU activation is clipped to at most B (B = 10 is GELU10);
- `auto`: every unbounded activation (GELU, ReLU, SiLU/swish, ELU, ...) gets the upper bound the
  calibrators' MSE measure picks from its calibration histogram (edgeq.pipeline.ranges, the expected
  quantize-dequantize error of int8), and is clipped only where that bound is below the
  largest value seen.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeq.errors import UsageError
from edgeq.transforms import layers as edgeq_layers
from edgeq.transforms.rewrite import activation_name, output_change, rewrite

# Activations without an upper bound: the ones a clip can help. Bounded ones (sigmoid, tanh,
# relu6, softmax) already have a fixed int8 range in TFLite.
UNBOUNDED = ("gelu", "relu", "silu", "swish", "elu", "selu", "leaky_relu", "softplus",
             "gelu~x*sigmoid(1.702x)", "gelu~tanh")
_PROBE_BATCH = 128


@dataclass(frozen=True)
class ClipResult:
    model: Any
    clipped: tuple[dict, ...]  # {"layer", "activation", "lo", "hi", "max_seen", "clipped_fraction"}
    max_abs_diff: float  # float outputs change (clipping changes the function, unlike smoothing)
    spec: str


def parse(spec: str) -> float | str:
    """'auto' or a positive bound."""
    if spec == "auto":
        return spec
    try:
        bound = float(spec)
    except ValueError:
        bound = float("nan")
    if not bound > 0 or bound == float("inf"):
        raise UsageError(f"--clip takes 'auto' or a positive number (10 is GELU10), got {spec!r}")
    return bound


def clip_activations(model: Any, x: np.ndarray, spec: str) -> ClipResult:
    """Clip activations of `model` per `spec` (see the module doc); `x` is calibration data."""
    how = parse(spec)
    candidates = [layer for layer in model.layers if _activation(layer) in UNBOUNDED]
    if how != "auto":
        candidates = [la for la in candidates if _activation(la).startswith("gelu")]
    seen = _activation_stats(model, candidates, x)
    bounds: dict[str, dict] = {}
    for layer, (lo_seen, hi_seen, values) in zip(candidates, seen):
        hi = float(how) if how != "auto" else _searched_bound(values)
        if hi < hi_seen:
            bounds[layer.name] = {"layer": layer.name, "activation": _activation(layer),
                                  "lo": float(min(lo_seen, 0.0)), "hi": hi,
                                  "max_seen": float(hi_seen),
                                  "clipped_fraction": float(np.mean(values > hi))}

    def replace(layer: Any) -> Any:
        b = bounds.get(layer.name)
        if b is None:
            return None
        import keras

        fn = edgeq_layers.clipped(layer.activation, b["lo"], b["hi"])
        if isinstance(layer, keras.layers.Activation):
            return keras.layers.Activation(fn, name=layer.name, dtype=layer.dtype_policy)
        config = layer.get_config()
        config["activation"] = fn
        return layer.__class__.from_config(config)

    new, _ = rewrite(model, replace, "--clip")
    return ClipResult(new, tuple(bounds.values()), output_change(model, new, x), spec)


def _activation(layer: Any) -> str:
    fn = getattr(layer, "activation", None)
    return activation_name(fn) if fn is not None else ""


def _activation_stats(model: Any, layers: list, x: np.ndarray) -> list[tuple[float, float, np.ndarray]]:
    """(min, max, a sample of values) of each layer's output on `x`."""
    if not layers:
        return []
    import keras

    probe = keras.Model(model.inputs, [layer.output for layer in layers])
    outs: list[list[np.ndarray]] = [[] for _ in layers]
    for i in range(0, len(x), _PROBE_BATCH):
        got = probe(x[i : i + _PROBE_BATCH], training=False)
        got = got if isinstance(got, (list, tuple)) else [got]
        for k, g in enumerate(got):
            outs[k].append(np.asarray(keras.ops.convert_to_numpy(g), np.float32).ravel())
    stats = []
    for chunks in outs:
        v = np.concatenate(chunks)
        stats.append((float(v.min()), float(v.max()), v))
    return stats


def _searched_bound(values: np.ndarray) -> float:
    """The upper bound of the int8 range the MSE calibrator chooses for these values."""
    from edgeq.pipeline.ranges import StreamingHistogram, choose_range

    h = StreamingHistogram()
    h.update(values)
    return float(choose_range(h, "mse").hi)
