"""Substitutions: rewrite layers into ops the target has kernels for.

- LayerNormalization -> MEAN/SUB/MUL/RSQRT/ADD (edgeq.transforms.layers.DecomposedLayerNorm),
  exact up to float rounding: applied by edgeq itself for int16 activations (16x8), whose
  LiteRT kernels lack SQUARED_DIFFERENCE.
- `--substitute gelu`: GELU -> x * sigmoid(1.702 x), or the tanh form where the target has TANH
  but not LOGISTIC. An approximation: the float accuracy before and after goes in the report.
  TFLite Micro has no GELU kernel (tflite-micro micro_mutable_op_resolver.h lists no AddGelu),
  but has LOGISTIC, TANH and MUL.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeq.errors import UsageError
from edgeq.transforms import layers as edgeq_layers
from edgeq.transforms.rewrite import activation_name, output_change, rewrite

SUBSTITUTIONS = ("gelu",)
GELU_FORMS = {"sigmoid": ("LOGISTIC", "MUL"), "tanh": ("TANH", "MUL", "ADD")}


@dataclass(frozen=True)
class RewriteResult:
    model: Any  # a new keras.Model; the input model is not modified
    replaced: tuple[str, ...]  # layer names rewritten
    notes: tuple[str, ...]
    max_abs_diff: float  # float outputs, new vs old, on the check inputs


def decompose_layernorms(model: Any, x: np.ndarray) -> RewriteResult:
    """LayerNormalization over the last axis -> DecomposedLayerNorm (same weights)."""
    import keras

    cls = edgeq_layers.layer_norm_class()
    skipped: list[str] = []

    def replace(layer: Any) -> Any:
        if not isinstance(layer, keras.layers.LayerNormalization):
            return None
        axes = layer.axis if isinstance(layer.axis, (list, tuple)) else [layer.axis]
        rank = len(layer.input.shape)
        if [a % rank for a in axes] != [rank - 1] or getattr(layer, "rms_scaling", False):
            skipped.append(f"{layer.name} (axes {list(axes)}"
                           f"{', rms_scaling' if getattr(layer, 'rms_scaling', False) else ''})")
            return None
        return cls(epsilon=layer.epsilon, center=layer.center, scale=layer.scale,
                   name=layer.name, dtype=layer.dtype_policy)

    new, replaced = rewrite(model, replace, "int16 activations (LayerNorm decomposition)")
    notes = []
    if skipped:
        notes.append("LayerNorm not decomposed (its SQUARED_DIFFERENCE has no int16 kernel): "
                     + ", ".join(skipped))
    return RewriteResult(new, tuple(replaced), tuple(notes), output_change(model, new, x))


def gelu_form(available_ops: set[str] | None) -> str:
    """'sigmoid' unless the target's op table has TANH and not LOGISTIC."""
    if available_ops and "LOGISTIC" not in available_ops and "TANH" in available_ops:
        return "tanh"
    return "sigmoid"


def substitute(model: Any, x: np.ndarray, what: tuple[str, ...], *, form: str = "sigmoid"
               ) -> RewriteResult:
    """Apply the named substitutions (`--substitute`), e.g. ("gelu",)."""
    unknown = [w for w in what if w not in SUBSTITUTIONS]
    if unknown:
        raise UsageError(f"--substitute {unknown[0]} is not a substitution edgeq makes",
                         hint=f"use one of: {', '.join(SUBSTITUTIONS)}")
    fn = edgeq_layers.gelu_sigmoid if form == "sigmoid" else edgeq_layers.gelu_tanh
    return _replace_activation(model, x, "gelu", fn)


def _replace_activation(model: Any, x: np.ndarray, name: str, fn: Any) -> RewriteResult:
    import keras

    def replace(layer: Any) -> Any:
        activation = getattr(layer, "activation", None)
        if activation is None or activation_name(activation) != name:
            return None
        if isinstance(layer, keras.layers.Activation):
            return keras.layers.Activation(fn, name=layer.name, dtype=layer.dtype_policy)
        config = layer.get_config()
        if "activation" not in config:
            return None
        config["activation"] = fn
        return layer.__class__.from_config(config)

    new, replaced = rewrite(model, replace, f"--substitute {name}")
    notes = () if replaced else (f"--substitute {name}: no layer with a {name} activation",)
    return RewriteResult(new, tuple(replaced), notes, output_change(model, new, x))
