"""One way to rewrite layers of a Keras 3 model: clone it with some layers replaced, copy the
weights by layer name, and measure how far the new float outputs moved.

Used by the substitutions (edgeq.transforms.substitute) and activation clipping
(edgeq.transforms.clip). The replacements are edgeq's own layers and activation functions, so
the rewritten model only lives in memory: edgeq writes the TFLite model, never this Keras one.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from edgeq.errors import UsageError
from edgeq.transforms.keras_config import compare_outputs, copy_layer, first_line

# layer -> a replacement layer (same name, same weights in the same order), or None to keep it
Replace = Callable[[Any], Any]


def rewrite(model: Any, replace: Replace, option: str) -> tuple[Any, list[str]]:
    """A copy of `model` where `replace(layer)` returned a new layer; the names replaced.

    Raises:
        UsageError: the model cannot be cloned (subclassed, nested models), naming `option`.
    """
    import keras

    replaced: list[str] = []

    def clone(layer: Any) -> Any:
        new = replace(layer)
        if new is None:
            return copy_layer(layer)
        replaced.append(layer.name)
        return new

    try:
        nested = [layer.name for layer in model.layers if isinstance(layer, keras.Model)]
        if nested:
            raise ValueError(f"nested model(s) {', '.join(nested)}")
        new = keras.models.clone_model(model, clone_function=clone)
        for layer in new.layers:
            if layer.weights:
                layer.set_weights(model.get_layer(layer.name).get_weights())
    except (ValueError, TypeError, AttributeError) as exc:
        raise UsageError(
            f"{option} cannot rewrite model '{getattr(model, 'name', '?')}': {first_line(exc)}",
            hint=f"{option} works on Sequential and functional Keras models without nested "
                 "models",
        ) from exc
    return new, replaced


def output_change(old: Any, new: Any, x: np.ndarray) -> float:
    """The largest absolute difference between the two models' outputs on `x`."""
    diff, _ = compare_outputs(old, new, x)
    return float(diff)


def activation_name(fn: Any) -> str:
    """'gelu', 'relu', ... for a Keras activation function or edgeq's own."""
    return getattr(fn, "edgeq_name", None) or getattr(fn, "__name__", str(fn))
