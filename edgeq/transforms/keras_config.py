"""Shared pieces of the Keras weight transforms (equalize, smooth): reading a Keras 3 model's
graph from its serialized config (no Keras private attributes) and checking that a rewritten
model computes the same float outputs."""

from __future__ import annotations

from typing import Any


def history_names(node: Any) -> list[str]:
    """Names of the layers whose outputs a serialized argument (or the output list) refers to:
    tensors appear as {"keras_history": [name, node_index, tensor_index]}, outputs as bare
    [name, node_index, tensor_index] triples."""
    if isinstance(node, dict):
        if "keras_history" in node:
            return [node["keras_history"][0]]
        return [n for value in node.values() for n in history_names(value)]
    if isinstance(node, (list, tuple)):
        if len(node) == 3 and isinstance(node[0], str) and isinstance(node[1], int):
            return [node[0]]
        return [n for value in node for n in history_names(value)]
    return []


def compare_outputs(old: Any, new: Any, x: Any, *, batch: int = 256) -> tuple[float, float]:
    """(max |new - old|, max |old|) over all outputs of two Keras models on `x`, in inference
    mode, in float64. Exceptions from running the models propagate to the caller, which knows
    what the inputs were for."""
    import keras
    import numpy as np

    diff = ref = 0.0
    for i in range(0, len(x), batch):
        chunk = x[i : i + batch]
        olds = keras.tree.flatten(old(chunk, training=False))
        news = keras.tree.flatten(new(chunk, training=False))
        for o, n in zip(olds, news):
            o = np.asarray(keras.ops.convert_to_numpy(o), dtype=np.float64)
            n = np.asarray(keras.ops.convert_to_numpy(n), dtype=np.float64)
            diff = max(diff, float(np.max(np.abs(n - o))))
            ref = max(ref, float(np.max(np.abs(o))))
    return diff, ref


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (TF's run on for pages), at most 300 chars."""
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:300]


def clone_with_weights(model: Any, option: str) -> Any:
    """A copy of a Sequential or functional Keras model with the same weights, to rewrite.

    Raises:
        UsageError: the model cannot be cloned (subclassed models, unknown input); names
            `option` (e.g. "--smooth").
    """
    import keras

    from edgeq.errors import UsageError

    try:
        clone = keras.models.clone_model(model, clone_function=copy_layer)
        clone.set_weights(model.get_weights())
    except (ValueError, TypeError, AttributeError) as exc:
        raise UsageError(
            f"{option} cannot rewrite model '{getattr(model, 'name', '?')}': {first_line(exc)}",
            hint=f"{option} works on Sequential and functional Keras models with a known input",
        ) from exc
    return clone


def copy_layer(layer: Any) -> Any:
    """A new layer like `layer` (no weights yet). The activation is passed as the function
    itself: an earlier rewrite may have set one of edgeq's own (edgeq.transforms.layers),
    which a config round trip could not name, so rewrites compose (a16w8 after
    --substitute, SmoothQuant after a substitution)."""
    config = layer.get_config()
    if "activation" in config and getattr(layer, "activation", None) is not None:
        config["activation"] = layer.activation
    return layer.__class__.from_config(config)
