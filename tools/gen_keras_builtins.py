"""Regenerates edgeq/formats/keras_builtins.py, the names of Keras' and tf_keras' built-in
serializable classes and functions that edgeq's safe loader accepts in a model config.

    python tools/gen_keras_builtins.py

The list is kept in the package as data, not built when a model loads: finding it at load time
means importing Keras, which imports TensorFlow, before a hostile file could be refused.
tests/unit/test_keras_builtins.py compares it with the installed Keras and tf_keras, so a new
Keras release that adds a layer fails that test until this script is run again.
"""

from __future__ import annotations

import importlib
import inspect
import os
import pkgutil
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "edgeq" / "formats" / "keras_builtins.py"

# Public namespaces whose classes and functions a config may name (layers, their
# initializers/regularizers/constraints/activations, dtype policies, and what compile_config
# holds: losses, metrics, optimizers and schedules).
KERAS_NAMESPACES = ("layers", "initializers", "regularizers", "constraints", "activations",
                    "losses", "metrics", "optimizers", "optimizers.schedules", "dtype_policies",
                    "models", "quantizers", "random")
TF_KERAS_NAMESPACES = ("layers", "initializers", "regularizers", "constraints", "activations",
                       "losses", "metrics", "optimizers", "optimizers.legacy",
                       "optimizers.schedules", "mixed_precision", "models")
# Module-level dicts the deserializers look string names up in (aliases such as
# "glorot_uniform", "l2", "max_norm", "adam").
KERAS_DICTS = ("activations", "constraints", "dtype_policies", "initializers", "losses",
               "metrics", "optimizers", "regularizers")
# Names Keras resolves itself instead of looking them up (compile_utils, TextVectorization).
EXTRA = ("accuracy", "acc", "crossentropy", "ce", "lower_and_strip_punctuation", "lower",
         "strip_punctuation", "whitespace", "character", "Functional")


# Namespaces whose public functions are the math a config may name (activation="relu",
# loss="mse", fn="categorical_accuracy"); elsewhere only classes count, so that no config can
# name keras.models.load_model or keras.layers.deserialize as an "activation".
FUNCTION_NAMESPACES = ("activations", "losses", "metrics")
NOT_MATH = {"get", "serialize", "deserialize"}


def _public(module, ns: str) -> set[str]:
    names = set()
    for name in dir(module):
        obj = getattr(module, name)
        if name.startswith("_"):
            continue
        if inspect.isclass(obj) or (ns in FUNCTION_NAMESPACES and callable(obj)
                                    and name not in NOT_MATH):
            names.add(name)
    return names


def _attr(root, dotted: str):
    for part in dotted.split("."):
        root = getattr(root, part)
    return root


def _keras_names() -> set[str]:
    import keras
    from keras.src.ops.operation import Operation

    names = set()
    for ns in KERAS_NAMESPACES:
        names |= _public(_attr(keras, ns), ns)
    for ns in KERAS_DICTS:
        aliases = getattr(importlib.import_module(f"keras.src.{ns}"), "ALL_OBJECTS_DICT", {})
        names |= set(aliases) - NOT_MATH
    # Functional models serialize every keras.ops call as an Operation subclass by class name
    # (module keras.src.ops.numpy, class "Add").
    import keras.src.ops as ops

    for info in pkgutil.iter_modules(ops.__path__):
        if info.name.endswith("_test"):
            continue
        module = importlib.import_module(f"keras.src.ops.{info.name}")
        for name, obj in vars(module).items():
            if (inspect.isclass(obj) and issubclass(obj, Operation)
                    and obj.__module__ == module.__name__ and not name.startswith("_")):
                names.add(name)
    return names


def _tf_keras_names() -> set[str]:
    import tf_keras
    from tf_keras.src import initializers
    from tf_keras.src.layers import serialization

    names = set()
    for ns in TF_KERAS_NAMESPACES:
        names |= _public(_attr(tf_keras, ns), ns)
    serialization.populate_deserializable_objects()
    initializers.populate_deserializable_objects()
    names |= set(serialization.LOCAL.ALL_OBJECTS) | set(initializers.LOCAL.ALL_OBJECTS)
    return names


def collect() -> tuple[frozenset[str], dict[str, str]]:
    """(names, versions) from the installed Keras and tf_keras."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import tf_keras

    names = _keras_names() | _tf_keras_names() | set(EXTRA)
    return frozenset(names), {"keras": keras.__version__, "tf_keras": tf_keras.__version__}


def render(names: frozenset[str], versions: dict[str, str]) -> str:
    body = textwrap.fill(" ".join(sorted(names)), width=92, initial_indent="    ",
                         subsequent_indent="    ", break_on_hyphens=False)
    return (
        '"""Names of the built-in Keras and tf_keras classes and functions a model config may\n'
        'name: generated by tools/gen_keras_builtins.py from the installed libraries, checked\n'
        'against them by tests/unit/test_keras_builtins.py. Do not edit by hand."""\n\n'
        f"GENERATED_FROM = {versions!r}\n\n"
        f"NAMES = frozenset(\"\"\"\n{body}\n\"\"\".split())\n"
    )


def main() -> None:
    names, versions = collect()
    OUT.write_text(render(names, versions))
    print(f"wrote {OUT} ({len(names)} names from {versions})")


if __name__ == "__main__":
    main()
