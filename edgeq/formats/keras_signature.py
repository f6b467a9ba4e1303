"""What a Keras model file says about its input and output, read from its config as data
(the .keras `config.json`, the .h5 `model_config`) before TensorFlow is imported.

Why: the data a user passes is checked against the model's input shape and number of classes,
and loading the model takes TensorFlow's import and Keras' deserialization (a minute on a busy
machine). The config states the input's batch shape and dtype exactly; the number of classes is
stated when the output comes from a Dense layer on a flat (rank-2) input, through layers that
keep the shape (an activation, dropout, normalization). Anything else (a nested model, several
inputs, an output whose shape needs real shape inference) gives None for that part, and the
checks wait for the loaded model as before; `edgeq.commands.convert` compares what this read
with the loaded model and reloads the data when they differ, so a config this misreads costs
time, never a wrong check.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edgeq.formats.keras_shapes import histories

# Layers whose output has their input's shape: the class count passes through them.
_SAME_SHAPE = frozenset({
    "Activation", "Softmax", "ReLU", "LeakyReLU", "PReLU", "ELU", "ThresholdedReLU",
    "Dropout", "AlphaDropout", "GaussianDropout", "GaussianNoise", "ActivityRegularization",
    "BatchNormalization", "LayerNormalization", "UnitNormalization", "Identity",
})
# Layers whose output is (batch, features) whatever their input's rank.
_FLAT = frozenset({
    "Flatten", "GlobalAveragePooling1D", "GlobalAveragePooling2D", "GlobalAveragePooling3D",
    "GlobalMaxPooling1D", "GlobalMaxPooling2D", "GlobalMaxPooling3D",
    "GlobalAvgPool1D", "GlobalAvgPool2D", "GlobalAvgPool3D", "GlobalMaxPool1D",
    "GlobalMaxPool2D", "GlobalMaxPool3D",
})


@dataclass(frozen=True)
class DeclaredIO:
    """The model's input and first output as its config states them."""

    input_shape: tuple[int, ...]  # per sample, without the batch axis
    input_dtype: str
    input_name: str
    classes: int | None  # values in the first output per sample, when the config says
    rescaling: tuple[float, float] | None = None  # a first Rescaling layer's (scale, offset)
    output_shape: tuple[int, ...] | None = None  # the first output per sample, when stated


def declared_io(config: Any) -> DeclaredIO | None:
    """The input (and, where stated, the class count) of a Sequential or functional model's
    config; None when the config does not state a static single input."""
    if not isinstance(config, dict) or not isinstance(config.get("config"), dict):
        return None
    kind, body = config.get("class_name"), config["config"]
    layers = [layer for layer in body.get("layers") or [] if isinstance(layer, dict)]
    if not layers:
        return None
    by_name = {_name(layer): layer for layer in layers}
    if kind == "Sequential":
        first, out, previous = _sequential_input(layers, body), layers[-1], _seq_previous(layers)
    elif kind in ("Functional", "Model"):
        inputs, outputs = _refs(body.get("input_layers")), _refs(body.get("output_layers"))
        if len(inputs) != 1 or not outputs or inputs[0] not in by_name:
            return None
        first, out = by_name[inputs[0]], by_name.get(outputs[0])
        previous = _functional_previous(by_name)
    else:
        return None
    shape, dtype, name = _input_of(first)
    if shape is None:
        return None
    classes = _classes(out, previous, by_name) if out is not None else None
    return DeclaredIO(shape, dtype, name, classes, _rescaling(layers, first),
                      None if classes is None else (classes,))


def _name(layer: dict) -> str:
    cfg = layer.get("config") if isinstance(layer.get("config"), dict) else {}
    return str(layer.get("name") or cfg.get("name") or "")


def _refs(value: Any) -> list[str]:
    """The layer names a serialized reference names, in order, in either format: input_layers /
    output_layers triples and inbound nodes (edgeq.formats.keras_shapes.histories, which walks
    without recursion)."""
    return [name for name, _, _ in histories(value)]


def _sequential_input(layers: list[dict], body: dict) -> dict:
    # An InputLayer first (Keras 3, keras.Input in tf.keras), else the first layer carries
    # batch_input_shape (tf.keras), else the model's own build_input_shape.
    first = layers[0]
    if first.get("class_name") == "InputLayer" or "batch_input_shape" in first.get("config", {}):
        return first
    shape = body.get("build_input_shape")
    return {"class_name": "InputLayer", "config": {"batch_shape": shape, "name": "input"}}


def _input_of(layer: dict) -> tuple[tuple[int, ...] | None, str, str]:
    cfg = layer.get("config") if isinstance(layer.get("config"), dict) else {}
    shape = cfg.get("batch_shape", cfg.get("batch_input_shape"))
    if not isinstance(shape, list) or len(shape) < 2:
        return None, "", ""
    dims = shape[1:]
    if not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in dims):
        return None, "", ""  # a dynamic dimension: the loader names it
    dtype = cfg.get("dtype", "float32")
    if isinstance(dtype, dict):  # a DTypePolicy
        dtype = (dtype.get("config") or {}).get("name", "float32")
    if not isinstance(dtype, str):
        return None, "", ""
    return tuple(dims), dtype, str(cfg.get("name") or "input")


def _seq_previous(layers: list[dict]):
    index = {id(layer): i for i, layer in enumerate(layers)}

    def previous(layer: dict) -> dict | None:
        i = index.get(id(layer), 0)
        return layers[i - 1] if i > 0 else None
    return previous


def _functional_previous(by_name: dict[str, dict]):
    def previous(layer: dict) -> dict | None:
        names = _refs(layer.get("inbound_nodes"))
        return by_name.get(names[0]) if len(names) == 1 else None
    return previous


def _classes(layer: dict, previous, by_name: dict[str, dict], depth: int = 0) -> int | None:
    """Values per sample in this layer's output, when the config states it for certain."""
    kind = layer.get("class_name")
    cfg = layer.get("config") if isinstance(layer.get("config"), dict) else {}
    if depth > 64:
        return None
    if kind in _SAME_SHAPE:
        before = previous(layer)
        return None if before is None else _classes(before, previous, by_name, depth + 1)
    if kind == "Dense" and isinstance(cfg.get("units"), int):
        before = previous(layer)
        if _rank(before, previous, depth + 1) == 2:
            return cfg["units"]
        build = (layer.get("build_config") or {}).get("input_shape")
        if isinstance(build, list) and len(build) == 2:
            return cfg["units"]
    return None


def _rank(layer: dict | None, previous, depth: int) -> int | None:
    """The rank (with the batch axis) of a layer's output, where it is plain from the config."""
    if layer is None or depth > 64:
        return None
    kind = layer.get("class_name")
    cfg = layer.get("config") if isinstance(layer.get("config"), dict) else {}
    if kind in _FLAT and not cfg.get("keepdims", False):
        return 2
    if kind == "InputLayer":
        shape = cfg.get("batch_shape", cfg.get("batch_input_shape"))
        return len(shape) if isinstance(shape, list) else None
    if kind in _SAME_SHAPE or kind == "Dense":
        return _rank(previous(layer), previous, depth + 1)
    return None


def _rescaling(layers: list[dict], first: dict) -> tuple[float, float] | None:
    """A Rescaling layer right after the input: its scale and offset (plain numbers only)."""
    after = [layer for layer in layers if layer is not first
             and layer.get("class_name") != "InputLayer"]
    if not after or after[0].get("class_name") != "Rescaling":
        return None
    cfg = after[0].get("config") or {}
    scale, offset = cfg.get("scale"), cfg.get("offset", 0.0)
    if isinstance(scale, (int, float)) and isinstance(offset, (int, float)) and scale:
        return float(scale), float(offset)
    return None
