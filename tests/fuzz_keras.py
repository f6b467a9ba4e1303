"""Mutations of Keras model configs for the hostile-config fuzz test: code-carrying entries
injected at random depths, class names swapped for unknown or dangerous ones, module keys
removed, deep nesting, odd values and wrong types, configs that are not objects, and text that
is not JSON. Each mutant says whether it still carries code (then it must be refused)."""

from __future__ import annotations

import copy
import json
import random
from typing import Any

from tests.keras_hostile import keras3_lambda, strip_modules

EVIL_MODULE = "edgeq_fuzz_evil"
EVIL_NAME = "edgeq_fuzz_payload"
# Strings only a code-carrying mutation puts into a config (besides the payload code itself).
_TOKENS = ('"Lambda"', '"__lambda__"', '"TFSMLayer"', f'"{EVIL_MODULE}', f'"{EVIL_NAME}',
           '"EdgeqFuzzBackdoor"', '"TFOpLambda"', '"TorchModuleWrapper"')

# Real structures (trimmed from Keras 3 and tf_keras configs) grafted into layer lists, so RNNs,
# wrappers and nested models get mutated too.
_GRAFTS = [
    {"module": "keras.layers", "class_name": "Bidirectional", "registered_name": None,
     "config": {"name": "bidirectional", "merge_mode": "concat",
                "layer": {"module": "keras.layers", "class_name": "LSTM", "registered_name": None,
                          "config": {"name": "forward_lstm", "units": 4, "activation": "tanh",
                                     "recurrent_activation": "sigmoid",
                                     "kernel_initializer": {
                                         "module": "keras.initializers",
                                         "class_name": "GlorotUniform",
                                         "config": {"seed": None}, "registered_name": None}}}}},
    {"class_name": "RNN", "config": {
        "name": "rnn", "cell": {"module": "tf_keras.src.layers.rnn.cell_wrappers",
                                "class_name": "ResidualWrapper",
                                "registered_name": "ResidualWrapper",
                                "config": {"name": "residual_wrapper", "cell": {
                                    "class_name": "LSTMCell", "config": {
                                        "name": "lstm_cell", "units": 3, "activation": "tanh",
                                        "recurrent_activation": "sigmoid"}}}}}},
    {"class_name": "TimeDistributed", "config": {"name": "td", "layer": {
        "class_name": "Dense", "config": {"name": "d", "units": 2, "activation": "relu6",
                                          "kernel_regularizer": {"class_name": "L2",
                                                                 "config": {"l2": 0.01}}}}}},
    {"module": "keras", "class_name": "Sequential", "registered_name": None,
     "config": {"name": "inner", "layers": [{"module": "keras.layers", "class_name": "Dense",
                                             "registered_name": None,
                                             "config": {"name": "inner_dense", "units": 2}}]},
     "compile_config": {"loss": "mse", "metrics": ["accuracy"], "optimizer": "adam"}},
]


def _payloads(code: str) -> list[tuple[str, Any]]:
    """(key, value) pairs that carry code."""
    return [
        ("activation", keras3_lambda(code)),
        ("kernel_initializer", keras3_lambda(code)),
        ("fuzz_note", code),
        ("activation", {"module": EVIL_MODULE, "class_name": "function", "config": EVIL_NAME,
                        "registered_name": EVIL_NAME}),
        ("activation", EVIL_NAME),
        ("dtype", {"module": EVIL_MODULE, "class_name": "EdgeqFuzzBackdoor", "config": {}}),
        ("extra", {"class_name": "EdgeqFuzzBackdoor", "config": {},
                   "__passive_serialization__": True}),
        ("cell", {"class_name": "TFSMLayer", "config": {"name": "tfsm", "filepath": "/x"}}),
        ("layer", {"class_name": "Lambda", "config": {"name": "lam", "function": [code, None,
                                                                                   None],
                                                       "function_type": "lambda"}}),
    ]


_CODE_KEYS = [("function", "function_type"), ("output_shape", "output_shape_type"),
              ("residual_fn", "residual_fn_type"), ("dropout_fn", "dropout_fn_type"),
              ("mask", "mask_type")]
_CLASS_SWAPS = ["Lambda", "TFOpLambda", "EdgeqFuzzBackdoor", "__lambda__", "TFSMLayer",
                "TorchModuleWrapper", "function", "Dense", "ResidualWrapper", "Functional",
                "", 42, None, ["Dense"], {"x": 1}]
_ODD = [1e308, -1, 2**63, float("nan"), float("inf"), "x" * 5000, [], {}, True, None, -0.0,
        "\u0000", "\U0001f4a5", 10**30, [[[[[]]]]], {"class_name": None}]


def _dicts(node: Any, skip_compile: bool = True) -> list[dict]:
    """Every dict in the config (not under the top-level compile_config, which Keras drops)."""
    found, stack = [], [(node, True)]
    while stack:
        n, top = stack.pop()
        if isinstance(n, dict):
            found.append(n)
            stack += [(v, False) for k, v in n.items()
                      if not (top and skip_compile and k == "compile_config")]
        elif isinstance(n, list):
            stack += [(v, False) for v in n]
    return found


def _containers(node: Any) -> list[tuple[Any, Any]]:
    """(container, key or index) for every value in the config."""
    out = []
    for d in _dicts(node, skip_compile=False):
        out += [(d, k) for k in d]
    stack = [node]
    while stack:
        n = stack.pop()
        if isinstance(n, list):
            out += [(n, i) for i in range(len(n))]
            stack += n
        elif isinstance(n, dict):
            stack += list(n.values())
    return out


def carries_code(config: Any, code: str) -> bool:
    if isinstance(config, dict) and "compile_config" in config:
        config = {k: v for k, v in config.items() if k != "compile_config"}
    text = json.dumps(config)
    return code in text or any(t in text for t in _TOKENS)


def mutate(config: Any, rng: random.Random, code: str) -> tuple[str, Any]:
    """(kind, mutant): a JSON value, or bytes for mutants that are not JSON."""
    config = copy.deepcopy(config)
    kinds = []
    for _ in range(rng.choice((1, 1, 2, 3))):
        kind = rng.choice(("inject", "inject", "code_key", "swap_class", "strip", "strip_some",
                           "nest", "odd", "wrong_type", "delete", "graft", "top_level", "text",
                           "wide"))
        kinds.append(kind)
        config = _apply(kind, config, rng, code)
        if isinstance(config, bytes):
            break
    return "+".join(kinds), config


def _apply(kind: str, config: Any, rng: random.Random, code: str) -> Any:
    dicts = _dicts(config) if isinstance(config, (dict, list)) else []
    objects = [d for d in dicts if "class_name" in d]
    if kind == "inject" and dicts:
        key, value = rng.choice(_payloads(code))
        rng.choice(dicts)[key] = copy.deepcopy(value)
    elif kind == "code_key" and dicts:
        key, type_key = rng.choice(_CODE_KEYS)
        target = rng.choice(dicts)
        target[key] = rng.choice(([code, None, None], keras3_lambda(code), EVIL_NAME))
        target[type_key] = rng.choice(("lambda", "function"))
    elif kind == "swap_class" and objects:
        rng.choice(objects)["class_name"] = copy.deepcopy(rng.choice(_CLASS_SWAPS))
    elif kind == "strip":
        strip_modules(config)
    elif kind == "strip_some" and objects:
        for d in rng.sample(objects, max(1, len(objects) // 3)):
            d.pop("module", None)
            d.pop("registered_name", None)
    elif kind == "nest" and dicts:
        value: Any = rng.choice((None, 1, "relu", {}))
        for _ in range(rng.randint(20, 400)):
            value = [value] if rng.random() < 0.5 else {"n": value}
        rng.choice(dicts)[rng.choice(("nested", "config", "layers", "activation"))] = value
    elif kind == "odd":
        spots = _containers(config)
        if spots:
            container, key = rng.choice(spots)
            container[key] = copy.deepcopy(rng.choice(_ODD))
    elif kind == "wrong_type" and objects:
        target = rng.choice(objects)
        target["config"] = rng.choice(([], "config", 7, None, [target.get("config")]))
    elif kind == "delete":
        spots = [(c, k) for c, k in _containers(config) if isinstance(c, dict)]
        if spots:
            container, key = rng.choice(spots)
            container.pop(key, None)
    elif kind == "graft":
        lists = [d["layers"] for d in dicts if isinstance(d.get("layers"), list)]
        if lists:
            target = rng.choice(lists)
            target.insert(rng.randint(0, len(target)), copy.deepcopy(rng.choice(_GRAFTS)))
    elif kind == "wide":
        lists = [d["layers"] for d in dicts if isinstance(d.get("layers"), list) and d["layers"]]
        if lists:
            target = rng.choice(lists)
            target.extend(copy.deepcopy(target[-1]) for _ in range(rng.randint(10, 300)))
    elif kind == "top_level":
        return copy.deepcopy(rng.choice(([], "model", 3, None, {}, [config], {"config": config})))
    elif kind == "text":
        text = json.dumps(config).encode()
        cut = rng.randrange(max(1, len(text)))
        return rng.choice((text[:cut], text[:cut] + b"\xff\xfe" + text[cut:],
                           text.replace(b'"', b"'", 3), b"\x00" * 64, b"",
                           text[:cut] + b"9" * 5000 + text[cut:]))
    return config
