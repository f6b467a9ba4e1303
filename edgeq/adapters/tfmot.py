"""The one place that touches tensorflow-model-optimization (tfmot): which layers its default
8-bit scheme can quantize, and the fake-quantized training model.

tfmot builds on tf_keras (Keras 2): it picks tf_keras when `TF_USE_LEGACY_KERAS` is set at its
import, and sets that variable itself. edgeq sets it only around the import and restores the
caller's value, so a process that uses Keras 3 keeps doing so (`import keras` is unaffected;
`tf.keras` resolves to tf_keras in this process afterwards). tfmot is composed, not subclassed:
layers are annotated with `quantize_annotate_layer` and applied with `quantize_apply`.
"""

from __future__ import annotations

import os
from typing import Any, Iterable

from edgeq.errors import MissingDependencyError


def import_tfmot() -> Any:
    """tensorflow_model_optimization, imported so that it uses tf_keras."""
    before = os.environ.get("TF_USE_LEGACY_KERAS")
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    try:
        import tensorflow_model_optimization as tfmot
    except ImportError as exc:
        raise MissingDependencyError(
            "tensorflow-model-optimization (for --method qat)",
            "pip install tensorflow-model-optimization tf-keras",
        ) from exc
    finally:
        if before is None:
            os.environ.pop("TF_USE_LEGACY_KERAS", None)
        else:
            os.environ["TF_USE_LEGACY_KERAS"] = before
    return tfmot


def unsupported_layers(model: Any) -> list[tuple[str, str]]:
    """(name, class) of the layers tfmot's default 8-bit scheme has no quantization for."""
    import_tfmot()  # first: importing any tfmot module runs its Keras selection
    from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (
        default_8bit_quantize_registry as registry_module,
    )

    registry = registry_module.Default8BitQuantizeRegistry()
    return [(layer.name, type(layer).__name__) for layer in model.layers
            if type(layer).__name__ != "InputLayer" and not registry.supports(layer)]


def quantize(model: Any, *, skip: Iterable[str] = (), per_tensor_weights: bool = False) -> Any:
    """The model with fake quantization on every layer but `skip` (a new model, same weights).

    Args:
        model: a tf_keras Sequential or functional model whose layers tfmot supports
            (apart from those in `skip`).
        skip: layer names left without fake quantization.
        per_tensor_weights: one weight scale per tensor (targets without per-channel weights).
    """
    tfmot = import_tfmot()
    qk = tfmot.quantization.keras
    from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (
        default_8bit_quantize_scheme as scheme_module,
    )

    skip = set(skip)
    scheme = scheme_module.Default8BitQuantizeScheme(disable_per_axis=per_tensor_weights)
    from tensorflow_model_optimization.python.core.keras.compat import keras

    def annotate(layer: Any) -> Any:
        if layer.name in skip or type(layer).__name__ == "InputLayer":
            return layer
        return qk.quantize_annotate_layer(layer)

    # The annotation wraps the original layer objects; quantize_apply copies them with weights.
    annotated = keras.models.clone_model(model, clone_function=annotate)
    with qk.quantize_scope():
        return qk.quantize_apply(annotated, scheme=scheme)
