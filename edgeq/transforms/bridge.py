"""The Keras 3 -> tf_keras bridge: rebuild a Sequential or functional Keras 3 model layer by
layer in tf_keras (which tfmot's quantization-aware training needs), copy the weights and prove
the copy computes the same float outputs.

Each layer's Keras 3 config is translated to what tf_keras accepts (input `batch_shape` ->
`batch_input_shape`, dtype-policy dicts -> policy names, serialized initializers, regularizers,
constraints and activations without Keras 3's `module`/`registered_name` envelope and without
keys tf_keras does not know when they hold their neutral value). A key with a non-neutral value
tf_keras has no equivalent for is refused, never dropped silently. The graph is replayed from
the model's serialized config: every call of every layer (shared layers included) with its
tensor arguments and constant keyword arguments.
"""

from __future__ import annotations

import inspect
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeq.errors import UsageError
from edgeq.transforms.keras_config import first_line

TOLERANCE = 1e-5  # max |tf_keras - Keras 3| on the float outputs

# tf_keras' base Layer takes these besides its named arguments (tf_keras/engine/base_layer.py).
_BASE_KWARGS = {"input_dim", "input_shape", "batch_input_shape", "batch_size", "weights",
                "activity_regularizer", "autocast", "implementation"}
# Keras 3 config keys tf_keras lacks; harmless (dropped) while they hold these values.
_NEUTRAL = {"optional": False, "lora_rank": None, "lora_alpha": None, "quantization_config": None,
            "input_axes": None, "output_axes": None, "seed": None, "synchronized": False,
            "rms_scaling": False,
            # MultiHeadAttention (Keras 3.15): no gate and full attention are tf_keras' math
            "use_gate": False, "sliding_window": None}
# Keras 3 keys that choose how, not what, a layer computes: dropped whatever their value
# (flash_attention picks a fused kernel for the same softmax(QK^T/sqrt(d))V).
_IMPLEMENTATION_ONLY = {"flash_attention"}
_OBJECT_KEYS = ("initializer", "regularizer", "constraint")
_MODEL_CLASSES = ("Functional", "Sequential")


class BridgeError(UsageError):
    """The Keras 3 model cannot be rebuilt in tf_keras for quantization-aware training."""


@dataclass
class BridgeResult:
    model: Any  # the tf_keras model (the input itself when it already was one)
    bridged: bool  # False when the model was a tf_keras model and went straight through
    max_abs_diff: float  # float outputs, tf_keras against the original, on the samples
    notes: list[str]


def is_tf_keras(model: Any) -> bool:
    import tf_keras

    return isinstance(model, tf_keras.Model)


def to_tf_keras(model: Any, samples: np.ndarray) -> BridgeResult:
    """The model as a tf_keras model with the same weights and float outputs.

    Args:
        model: a Keras 3 Sequential or functional model, or a tf_keras model (returned as is).
        samples: a few inputs (N, ...) on which the two models must agree within TOLERANCE.

    Raises:
        BridgeError: a subclassed model, layers tf_keras cannot rebuild (all named at once),
            or outputs that differ by more than TOLERANCE.
    """
    if is_tf_keras(model):
        return BridgeResult(model, False, 0.0, [])
    kind = type(model).__name__
    if kind not in _MODEL_CLASSES:
        raise BridgeError(
            f"--method qat cannot rebuild model '{model.name}' in tf_keras: it is a subclassed "
            f"model ({kind}), whose graph exists only as Python code",
            hint="build it as a Sequential or functional model, or use --method ptq",
        )
    rebuilt, notes = _rebuild(model)
    diff = _max_abs_diff(model, rebuilt, samples)
    if not diff <= TOLERANCE:
        raise BridgeError(
            f"the tf_keras copy of model '{model.name}' computes different float outputs "
            f"(max |diff| {diff:.3g} > {TOLERANCE:g}); a layer behaves differently in tf_keras",
            hint="use --method ptq, or report the model so the bridge can learn the layer",
        )
    return BridgeResult(rebuilt, True, diff, notes)


# --- rebuilding ---------------------------------------------------------------------------------


def _rebuild(model: Any) -> tuple[Any, list[str]]:
    import tf_keras

    config = model.get_config()
    specs = config["layers"]
    if type(model).__name__ == "Sequential":
        specs = _sequential_as_functional(model, specs)
    blocked = [f"{s['config'].get('name', '?')} ({s['class_name']})" for s in specs
               if not _known_layer(s)]
    if blocked:
        raise BridgeError(
            "--method qat cannot rebuild these layers in tf_keras (custom layers or layers "
            f"tf_keras does not have): {', '.join(blocked)}",
            hint="replace them with built-in Keras layers, or use --method ptq",
        )
    notes: list[str] = []
    tensors: dict[tuple[str, int], list[Any]] = {}  # (layer, node index) -> output tensors
    layers_by_name = {layer.name: layer for layer in model.layers}
    new_layers: dict[str, Any] = {}
    for spec in specs:
        name = spec["config"]["name"]
        layer = _make_layer(spec, notes)
        new_layers[name] = layer
        if spec["class_name"] == "InputLayer":
            tensors[(name, 0)] = [layer.output]
            continue
        for index, node in enumerate(_nodes(spec)):
            args = _replace_tensors(node.get("args", []), tensors)
            kwargs = _replace_tensors(node.get("kwargs", {}), tensors)
            out = layer(*args, **kwargs)
            tensors[(name, index)] = list(out) if isinstance(out, (list, tuple)) else [out]
    inputs = [tensors[(n, i)][t] for n, i, t in _endpoints(config, "input_layers", specs)]
    outputs = [tensors[(n, i)][t] for n, i, t in _endpoints(config, "output_layers", specs)]
    rebuilt = tf_keras.Model(inputs if len(inputs) > 1 else inputs[0],
                             outputs if len(outputs) > 1 else outputs[0], name=model.name)
    for name, layer in new_layers.items():
        source = layers_by_name.get(name)
        if source is None or not source.weights:
            continue
        try:
            layer.set_weights([np.asarray(w) for w in source.get_weights()])
        except ValueError as exc:
            raise BridgeError(f"layer '{name}': its weights do not fit the tf_keras layer "
                              f"({first_line(exc)})", hint="use --method ptq") from exc
    return rebuilt, notes


def _sequential_as_functional(model: Any, specs: list[dict]) -> list[dict]:
    """A Sequential config as a chain of functional nodes, with an input layer first."""
    specs = [dict(s) for s in specs]
    if not specs or specs[0]["class_name"] != "InputLayer":
        shape = getattr(model, "input_shape", None)
        if shape is None:
            raise BridgeError(f"model '{model.name}' has no known input shape",
                              hint="start the Sequential model with keras.Input(shape=...)")
        specs.insert(0, {"class_name": "InputLayer", "module": "keras.layers",
                         "config": {"name": "input", "batch_shape": list(shape),
                                    "dtype": "float32"}})
    for prev, spec in zip(specs, specs[1:]):
        history = [prev["config"]["name"], 0, 0]
        spec["inbound_nodes"] = [{"args": [{"class_name": "__keras_tensor__",
                                            "config": {"keras_history": history}}],
                                  "kwargs": {}}]
    return specs


def _known_layer(spec: dict) -> bool:
    import tf_keras

    # Built-in Keras 3 layers serialize with module "keras.layers" and no registered name.
    builtin = str(spec.get("module")).startswith("keras.") and not spec.get("registered_name")
    return builtin and hasattr(tf_keras.layers, spec["class_name"])


def _make_layer(spec: dict, notes: list[str]) -> Any:
    import tf_keras

    cls = getattr(tf_keras.layers, spec["class_name"])
    config = _translate_config(spec["config"], cls, notes)
    name = config.get("name", "?")
    if spec["class_name"] == "MultiHeadAttention":
        # tf_keras' from_config pops these (the shapes it was built with); None builds the
        # layer on its first call, as the graph replay below makes.
        for key in ("query_shape", "key_shape", "value_shape"):
            config.setdefault(key, None)
    try:
        if spec["class_name"] == "InputLayer":
            return cls(**config)
        return cls.from_config(config)
    except (TypeError, ValueError) as exc:
        raise BridgeError(f"layer '{name}' ({spec['class_name']}) cannot be rebuilt in "
                          f"tf_keras: {first_line(exc)}", hint="use --method ptq") from exc


def _translate_config(config: dict, cls: type, notes: list[str]) -> dict:
    out: dict[str, Any] = {}
    accepted = _accepted_keys(cls)
    name = config.get("name", "?")
    for key, value in config.items():
        if key == "batch_shape":
            key = "batch_input_shape"
        if key == "dtype":
            value = _dtype_name(value)
        elif key.endswith(_OBJECT_KEYS) or key == "activation":
            value = _translate_object(value, f"layer '{name}' {key}", notes)
        if key not in accepted:
            if key in _IMPLEMENTATION_ONLY:
                continue
            if key in _NEUTRAL and value == _NEUTRAL[key]:
                continue
            raise BridgeError(f"layer '{name}' ({cls.__name__}): option {key}={value!r} has no "
                              "tf_keras equivalent", hint="use --method ptq")
        out[key] = value
    return out


def _accepted_keys(cls: type) -> set[str]:
    keys = set(_BASE_KWARGS)
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        for p in inspect.signature(init).parameters.values():
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "self":
                keys.add(p.name)
    return keys


def _dtype_name(value: Any) -> Any:
    """Keras 3 writes {"class_name": "DTypePolicy", "config": {"name": "float32"}}; tf_keras
    takes the policy name ("float32", "mixed_float16")."""
    if isinstance(value, dict):
        return (value.get("config") or {}).get("name", "float32")
    return value


def _translate_object(value: Any, where: str, notes: list[str]) -> Any:
    """A serialized initializer/regularizer/constraint/activation in tf_keras' form."""
    if not isinstance(value, dict):
        return value  # None or a name ("relu", "glorot_uniform")
    if value.get("module") not in (None, "keras.initializers", "keras.regularizers",
                                   "keras.constraints", "keras.activations", "builtins"):
        raise BridgeError(f"{where}: custom object {value.get('class_name')} "
                          f"({value.get('registered_name') or value.get('module')})",
                          hint="use built-in Keras objects, or --method ptq")
    if value.get("module") in ("keras.activations", "builtins") and "config" in value:
        return value["config"] if isinstance(value["config"], str) else value.get("class_name")
    config = {k: v for k, v in (value.get("config") or {}).items()
              if not (k in _NEUTRAL and v == _NEUTRAL[k])}
    return {"class_name": value["class_name"], "config": config}


def _nodes(spec: dict) -> list[dict]:
    nodes = spec.get("inbound_nodes") or []
    for node in nodes:
        if not isinstance(node, dict):  # tf_keras' list form never reaches here from Keras 3
            raise BridgeError(f"layer '{spec['config']['name']}': unexpected node format",
                              hint="use --method ptq")
    return nodes


def _replace_tensors(node: Any, tensors: dict[tuple[str, int], list[Any]]) -> Any:
    if isinstance(node, dict):
        if node.get("class_name") == "__keras_tensor__":
            name, index, which = node["config"]["keras_history"]
            return tensors[(name, index)][which]
        return {k: _replace_tensors(v, tensors) for k, v in node.items()}
    if isinstance(node, (list, tuple)):
        return type(node)(_replace_tensors(v, tensors) for v in node)
    return node


def _endpoints(config: dict, key: str, specs: list[dict]) -> list[tuple[str, int, int]]:
    raw = config.get(key)
    if raw is None:  # Sequential: first and last layer
        name = specs[0 if key == "input_layers" else -1]["config"]["name"]
        return [(name, 0, 0)]
    if raw and isinstance(raw[0], str):  # a single [name, node, tensor] triple
        raw = [raw]
    return [(n, i, t) for n, i, t in raw]


def _max_abs_diff(old: Any, new: Any, x: np.ndarray) -> float:
    import tensorflow as tf

    diff = 0.0
    with warnings.catch_warnings():  # Keras 3 warns when a one-input list model gets a tensor
        warnings.simplefilter("ignore")
        a = old(x, training=False)
    b = new(tf.constant(x), training=False)
    a = a if isinstance(a, (list, tuple)) else [a]
    b = b if isinstance(b, (list, tuple)) else [b]
    for o, n in zip(a, b):
        d = np.abs(np.asarray(o, np.float64) - np.asarray(n, np.float64))
        diff = max(diff, float(d.max()) if d.size else 0.0)
    return diff
