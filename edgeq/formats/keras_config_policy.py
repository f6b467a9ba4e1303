"""The safe-loading policy for Keras model configs: a config is walked as plain data, before
any loader (Keras 3, tf_keras) deserializes it, and everything that would import or run code
is found and named.

What a config may hold without --allow-unsafe:
- objects (`{"class_name": ..., "config": ...}`, with or without Keras 3's `module` and
  `registered_name`) whose class is a Keras or tf_keras built-in (keras_builtins.NAMES,
  generated from the installed libraries) from a Keras module, registered under no other name;
- functions and objects named by string (`"activation": "relu"`, `"kernel_initializer":
  "glorot_uniform"`, `"loss": "mse"`, `"fn": "categorical_accuracy"`) that are built-ins;
- Keras 3 function objects (`{"class_name": "function", "config": "relu"}`) naming built-ins.

What is refused, wherever it sits (layers, RNN cells, wrappers, nested models, build and
compile configs, shared objects, call arguments):
- Lambda layers and the other built-ins that run or load code the file names (DENIED);
- serialized lambdas (`__lambda__`), `*_type: "lambda"` / `"function"` entries, the wrapper
  functions of RNN cell wrappers, and any string that is base64 of marshalled Python bytecode;
- unknown classes, classes from modules outside Keras, custom registered names, non-built-in
  function names; TFOpLambda layers except for side-effect-free TensorFlow math.

The top-level `compile_config` is not checked: edgeq loads with compile=False and Keras drops
it unread (a model compiled with a custom metric stays loadable); a nested model's
compile_config is deserialized, so it is checked. For the same reason a legacy .h5 file's
`training_config` attribute is never read.
"""

from __future__ import annotations

import binascii
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from edgeq.errors import ModelFileError, UnsafeModelError

MAX_DEPTH = 200  # real configs nest about 20 deep; Keras recurses once per level or more
# Real configs hold about 16 bytes of JSON per value (a 40 KiB config, 2,600 values), so a 16 MiB
# config (keras_files.CONFIG_MAX) of real layers stays under this; a config of 16 MiB of `{},`
# holds 5.6 million, and walking them all would take 20 s.
MAX_VALUES = 2_000_000

# Built-in classes that run or load code named by the file.
DENIED = {
    "Lambda": "runs arbitrary Python code stored in the file",
    "TFSMLayer": "loads another model from a path the file names",
    "TorchModuleWrapper": "unpickles a PyTorch module stored in the file",
    "JaxLayer": "calls Python functions the file names",
    "FlaxLayer": "calls Python functions the file names",
    "DenseFeatures": "builds feature columns, which can name Python functions",
    "SequenceFeatures": "builds feature columns, which can name Python functions",
}
# Keys whose value is a Python function even without a `*_type` key next to them.
CODE_KEYS = {"residual_fn": "the ResidualWrapper's residual function",
             "dropout_fn": "the DropoutWrapper's state filter function",
             "dropout_state_filter_visitor": "the DropoutWrapper's state filter function"}
# Serialization markers for data (tensors, tuples, shapes), not classes.
_MARKERS = {"__keras_tensor__", "__tuple__", "__tensor__", "__numpy__", "__bytes__", "__slice__",
            "__ellipsis__", "TensorShape", "TypeSpec", "CompositeTensor"}
# TFOpLambda / SlicingOpLambda call the TensorFlow API symbol named by `function`, with
# arguments from the file: allowed for pure math only (never tf.io, tf.print, raw_ops, ...).
_TF_PURE_PREFIXES = ("math.", "nn.", "linalg.", "signal.", "image.", "__operators__.")
_TF_PURE = {"reshape", "concat", "stack", "unstack", "transpose", "expand_dims", "squeeze",
            "cast", "identity", "split", "tile", "pad", "gather", "gather_nd", "clip_by_value",
            "maximum", "minimum", "add", "subtract", "multiply", "divide", "matmul", "einsum",
            "reduce_sum", "reduce_mean", "reduce_max", "reduce_min", "reduce_prod", "shape",
            "slice", "strided_slice", "where", "zeros_like", "ones_like", "broadcast_to", "abs",
            "exp", "sqrt", "square", "pow", "sigmoid", "tanh", "argmax", "argmin", "one_hot",
            "range", "fill", "reverse", "roll", "size", "rank", "sort", "argsort", "repeat"}
_KERAS_MODULE = re.compile(r"(tf_)?keras(\..+)?")
_REGISTERED_PACKAGES = ("keras", "Keras", "tf_keras")
_SPEC = re.compile(r"[A-Za-z]*Spec")


@dataclass(frozen=True)
class Finding:
    """One thing in a config that would import or run code."""

    owner: str  # the layer path, e.g. "rnn/residual_wrapper", or "" at the model level
    path: str  # where in the config, e.g. "config.layers[1].config.cell"
    key: str  # the offending key
    what: str  # what it is, for the user


def check_config(p: Path, config: Any, source: str, *, allow_unsafe: bool) -> None:
    """Refuse a config that would run or import code, unless ``allow_unsafe``.

    Args:
        p: the model file, named in the message.
        config: the parsed JSON config.
        source: where it came from in the file ("config.json", "model_config").

    Raises:
        ModelFileError: the config is not an object config, nests too deeply or is too big.
        UnsafeModelError: the first finding, with a count of the others.
    """
    if not isinstance(config, dict) or "class_name" not in config:
        raise ModelFileError(p, f"its {source} is not a Keras model config (a "
                             f"{type(config).__name__} without a class_name)",
                             hint="re-save the model with model.save()")
    try:
        findings = find_code(config)
    except ConfigTooComplexError as exc:
        raise ModelFileError(p, f"its {source} {exc}, more than any model config",
                             hint="re-save the model with model.save()") from exc
    if not findings or allow_unsafe:
        return
    raise UnsafeModelError(p, describe(findings, source),
                           hint="pass --allow-unsafe only if you trust where this file came from")


def describe(findings: list[Finding], source: str) -> str:
    """The one-line refusal: the first finding, the layer, where, the key, and the rest counted."""
    findings = _distinct(findings)
    lambdas = [f.owner or "?" for f in findings if f.what == "a Lambda layer"]
    if lambdas:
        first = next(f for f in findings if f.what == "a Lambda layer")
        text = (f"has Lambda layer(s) {', '.join(lambdas)} ({source}: {first.path}, key "
                f"'{first.key}'), which run arbitrary Python code when loaded")
        rest = len(findings) - len(lambdas)
    else:
        f = findings[0]
        where = f"layer '{f.owner}'" if f.owner else "the model"
        text = (f"{where} ({source}: {f.path}): key '{f.key}' {f.what}; loading it would "
                "import or run code the file names")
        rest = len(findings) - 1
    return text + (f" (and {rest} more finding{'s' * (rest > 1)})" if rest else "")


def _distinct(findings: list[Finding]) -> list[Finding]:
    """One finding per place: a lambda's `*_type` key, its bytecode and its wrapper key name
    the same thing."""
    out: list[Finding] = []
    for f in findings:
        if not any(f.path == d.path or f.path.startswith((d.path + ".", d.path + "["))
                   for d in out[-50:]):
            out.append(f)
    return out


class ConfigTooComplexError(ValueError):
    """The config nests deeper or holds more values than a model config does."""


def find_code(config: Any) -> list[Finding]:
    """Every code-carrying entry in a parsed config, in document order.

    Walks depth-first with a stack of iterators, so memory grows with the nesting depth, not
    with the config's width, and nothing recurses.

    Raises:
        ConfigTooComplexError: deeper than MAX_DEPTH or more than MAX_VALUES values.
    """
    findings: list[Finding] = []
    trail: list[str | int] = []  # the keys and indices down to the container being walked
    # Each iterator yields (key or index, value, owner layer path, key it sits under, whether
    # strings are names of built-ins) for one container; the first yields the root.
    stack: list[Iterator[tuple[Any, Any, str, str, bool]]] = [iter([(None, config, "", "",
                                                                     False)])]
    values = 0
    while stack:
        item = next(stack[-1], None)
        if item is None:
            stack.pop()
            if stack:
                trail.pop()
            continue
        step, node, owner, key, names = item
        values += 1
        if values > MAX_VALUES:
            raise ConfigTooComplexError(f"holds more than {MAX_VALUES:,} values")
        if isinstance(node, str):
            if _is_bytecode(node):
                findings.append(Finding(owner, _path(trail, step), key,
                                        "holds marshalled Python bytecode"))
            elif names and node not in _names():
                findings.append(Finding(owner, _path(trail, step), key, f"names "
                                        f"'{node[:80]}', which is not a Keras built-in function "
                                        "or class"))
            continue
        if not isinstance(node, (dict, list)):
            continue
        if len(stack) > MAX_DEPTH:
            raise ConfigTooComplexError(f"is nested deeper than {MAX_DEPTH} levels")
        path = _path(trail, step)
        if isinstance(node, list):
            children = _list_children(node, owner, key, names)
        else:
            if "class_name" in node:
                if step is not None:  # the model itself is the root: layers are named without it
                    owner = _join_owner(owner, _name(node))
                # An object in a list (a layer) is named by its class; one under a key
                # (activation, cell, kernel_initializer) by that key.
                findings += _check_object(node, path, owner, "class_name"
                                          if isinstance(step, int) or not key else key)
                cls = node["class_name"]
                if isinstance(cls, str) and (cls == "__lambda__" or cls in DENIED):
                    continue  # refused whole: what it holds adds nothing to say
                names = False  # an object's config is keyed by argument names again
            for k, v in node.items():
                findings += _check_key(node, str(k), v, path, owner)
            children = _dict_children(node, step is None, owner, names)
        stack.append(children)
        trail.append(step)
    return findings


# Generator functions, not expressions: an expression would read owner/key/names when it runs,
# by then rebound by the walk.
def _list_children(node: list, owner: str, key: str, names: bool
                   ) -> Iterator[tuple[Any, Any, str, str, bool]]:
    for i, v in enumerate(node):
        yield i, v, owner, key, names


def _dict_children(node: dict, root: bool, owner: str, names: bool
                   ) -> Iterator[tuple[Any, Any, str, str, bool]]:
    for k, v in node.items():
        k = str(k)
        if root and k == "compile_config":
            continue  # dropped by Keras under compile=False (module docstring)
        yield k, v, owner, k, names or _names_key(k)


def _path(trail: list[str | int], step: str | int | None) -> str:
    out = ""
    for part in (*trail, step):
        if part is None:
            continue
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def _check_object(node: dict, path: str, owner: str, key: str) -> list[Finding]:
    cls, module = node.get("class_name"), node.get("module")
    registered = node.get("registered_name")
    at = path or "(top level)"
    if not isinstance(cls, str):
        return [Finding(owner, at, "class_name", f"is {str(cls)[:40]!r}, not a class name")]
    if cls == "__lambda__":
        return [Finding(owner, at, key, "is a serialized lambda function")]
    if cls in DENIED:
        if cls == "Lambda":
            return [Finding(owner, at, "function", "a Lambda layer")]
        return [Finding(owner, at, key, f"is a {cls} layer, which {DENIED[cls]}")]
    if cls == "function":
        return _check_function(node, at, owner, key)
    if cls == "__typespec__":
        spec = node.get("spec_name")
        if isinstance(module, str) and module.startswith("tensorflow.") and isinstance(
                spec, str) and _SPEC.fullmatch(spec):
            return []
        return [Finding(owner, at, key, f"names type spec {str(spec)[:80]!r} from module "
                        f"{str(module)[:80]!r}, which is not TensorFlow's")]
    found = []
    if module is not None and not _keras_module(module):
        found.append(Finding(owner, at, key, f"names class '{cls[:80]}' from module "
                             f"'{str(module)[:80]}', which is not part of Keras"))
    if cls in ("TFOpLambda", "SlicingOpLambda"):
        config = node.get("config")
        fn = config.get("function") if isinstance(config, dict) else None
        if not (isinstance(fn, str) and (fn in _TF_PURE or fn.startswith(_TF_PURE_PREFIXES))):
            found.append(Finding(owner, at, "function", f"calls TensorFlow function "
                                 f"{str(fn)[:80]!r}, which edgeq does not know to be free of "
                                 "side effects"))
    elif cls not in _MARKERS and cls not in _names():
        found.append(Finding(owner, at, key, f"names unknown class '{cls[:80]}' (not a Keras or "
                             "tf_keras built-in)"))
    if registered is not None and registered != cls and not (
            isinstance(registered, str) and registered.partition(">")[::2]
            in {(pkg, cls) for pkg in _REGISTERED_PACKAGES}):
        found.append(Finding(owner, at, key, f"names custom registered class "
                             f"'{str(registered)[:80]}'"))
    return found


def _check_function(node: dict, at: str, owner: str, key: str) -> list[Finding]:
    fn, module, registered = node.get("config"), node.get("module"), node.get("registered_name")
    if not isinstance(fn, str) or fn not in _names():
        return [Finding(owner, at, key, f"names function {str(fn)[:80]!r}, which is not a Keras "
                        "built-in")]
    # activation=tf.nn.relu6 serializes with TensorFlow's module; the name is still a built-in.
    if module is not None and not (_keras_module(module) or (
            isinstance(module, str) and module.startswith("tensorflow."))):
        return [Finding(owner, at, key, f"names function '{fn}' from module "
                        f"'{str(module)[:80]}', which is not part of Keras")]
    if registered not in (None, fn):
        return [Finding(owner, at, key, f"names custom registered function "
                        f"'{str(registered)[:80]}'")]
    return []


def _check_key(node: dict, k: str, v: Any, path: str, owner: str) -> list[Finding]:
    """Keys of a dict that hold a Python function (path: the dict's own path)."""
    if v is None:
        return []
    if k in CODE_KEYS:
        return [Finding(owner, _join(path, k), k, f"holds {CODE_KEYS[k]}, a Python function")]
    if k.endswith("_type") and v in ("lambda", "function"):
        base = k[: -len("_type")]
        what = ("is a Python lambda (marshalled bytecode)" if v == "lambda"
                else "is a Python function looked up by name")
        named = base if base in node else k
        return [Finding(owner, _join(path, named), named, what)]
    return []


def _names_key(k: str) -> bool:
    """Keys whose string values name a function or object for Keras to look up."""
    return k in ("activation", "fn", "loss", "metrics", "weighted_metrics", "optimizer",
                 "standardize", "split", "initializer", "regularizer", "constraint") or k.endswith(
        ("_activation", "_initializer", "_regularizer", "_constraint"))


def _is_bytecode(s: str) -> bool:
    # Keras and tf_keras store lambdas as base64 of marshal.dumps(code); a marshalled code
    # object starts with b"c" (or b"\xe3" with the reference flag): base64 "Yw"/"4w".
    if len(s) < 16 or not s.startswith(("4w", "Yw")):
        return False
    try:
        head = binascii.a2b_base64(s[:16])
    except (binascii.Error, ValueError):
        return False
    return head[:1] in (b"c", b"\xe3")


def _keras_module(module: Any) -> bool:
    return isinstance(module, str) and _KERAS_MODULE.fullmatch(module) is not None


def _name(node: dict) -> str | None:
    inner = node.get("config")
    name = inner.get("name") if isinstance(inner, dict) else None
    name = name if isinstance(name, str) else node.get("name")
    return name if isinstance(name, str) else None


def _join_owner(owner: str, name: str | None) -> str:
    if not name:
        return owner
    return f"{owner}/{name}" if owner else name


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


_NAMES: frozenset[str] | None = None


def _names() -> frozenset[str]:
    global _NAMES
    if _NAMES is None:  # loaded on first use, not when edgeq is imported
        from edgeq.formats.keras_builtins import NAMES

        _NAMES = NAMES
    return _NAMES
