"""Stage 1, load: a Keras 3 `.keras`, legacy `.h5` or SavedModel directory, fixed to batch 1.

Safety: Keras files are read as data first. A `Lambda` layer (Python bytecode or source), a
serialized lambda, or a class from outside Keras (a custom layer's module, a custom registered
name) is refused before Keras deserializes anything, unless `--allow-unsafe`; Keras 3 then
loads in its own safe mode too. Pickles are never unpickled (data is read with
`allow_pickle=False` semantics, see edgeq.data). A SavedModel runs no Python from the file, but
TensorFlow runs its graph when loading and calling it, so its files and graph are read as data
first (edgeq.formats.savedmodel_policy): ops that act outside the graph (files, Python,
network) are refused unless `--allow-unsafe`.

Returns a `LoadedModel` holding two traced functions over the same weights: a batch-1 function
for the converter (edge compilers reject dynamic dimensions, and converting a Keras model
directly keeps a dynamic batch that adds SHAPE/STRIDED_SLICE/PACK ops), and a dynamic-batch
function that computes the float reference outputs quickly.
"""

from __future__ import annotations

import json
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgeq.adapters.native import import_tensorflow_quietly
from edgeq.data import InputSpec
from edgeq.errors import ModelFileError, UnsafeModelError, UsageError
from edgeq.formats.savedmodel_policy import check_savedmodel

_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_PREDICT_BATCH = 256


@dataclass
class LoadedModel:
    path: str
    format: str  # "keras" (.keras), "h5", "savedmodel"
    loader: str  # "keras 3.x", "tf_keras 2.x", "tf.saved_model"
    input_spec: InputSpec
    output_shapes: tuple[tuple[int, ...], ...]  # per output, without the batch axis
    batch1_function: Any  # tf ConcreteFunction at batch 1, for the converter
    _predict: Callable[[np.ndarray], list[np.ndarray]]
    layer_names: tuple[str, ...] = ()
    notes: list[str] = field(default_factory=list)
    # The Keras model or loaded SavedModel: the traced functions only reference its variables,
    # which TF deletes when the object is garbage-collected.
    owner: Any = None

    def keras_model(self, option: str) -> Any:
        """The Keras model behind this one, for transforms that rewrite Keras weights."""
        if self.format == "savedmodel" or self.owner is None:
            raise UsageError(f"{option} needs a Keras model (.keras or .h5), not a SavedModel")
        return self.owner

    def replaced_by(self, model: Any, notes: list[str]) -> "LoadedModel":
        """The same source with a rewritten Keras model (traced anew), notes appended."""
        return from_keras_model(model, Path(self.path), self.format, self.loader,
                                [*self.notes, *notes])

    def layer_scope(self) -> tuple[tuple[str, ...], str | None]:
        """(layer names, model name): what the converter's tensor names are scoped by, so
        that an op can be traced back to its Keras layer."""
        return self.layer_names, getattr(self.owner, "name", None) if self.layer_names else None

    def predict(self, x: np.ndarray) -> list[np.ndarray]:
        """Float outputs for `x` (N, ...), one array per model output."""
        chunks = [self._predict(x[i : i + _PREDICT_BATCH]) for i in range(0, len(x), _PREDICT_BATCH)]
        return [np.concatenate([c[k] for c in chunks]) for k in range(len(chunks[0]))]


def load_model(path: str | Path, *, allow_unsafe: bool = False) -> LoadedModel:
    """Load a float model for conversion.

    Raises:
        ModelFileError: missing, unreadable or corrupt file, unknown format, no static shape.
        UnsafeModelError: a Lambda layer (arbitrary Python), or a SavedModel op that acts
            outside the graph, without ``allow_unsafe``.
    """
    p = Path(path)
    if not p.exists():
        raise ModelFileError(p, "not found", hint="check the path to the model")
    if p.is_dir():
        if not (p / "saved_model.pb").is_file() and not (p / "saved_model.pbtxt").is_file():
            raise ModelFileError(
                p,
                "is a directory without saved_model.pb",
                hint="pass a .keras or .h5 file, or a SavedModel directory",
            )
        check_savedmodel(p, allow_unsafe=allow_unsafe)  # its files and graph, as data
        import_tensorflow_quietly()
        return _load_savedmodel(p)
    suffix = p.suffix.lower()
    if suffix == ".keras":
        config = _keras_zip_config(p)
        _refuse_lambda(p, config, allow_unsafe)
        _refuse_custom_objects(p, config, allow_unsafe)
        import_tensorflow_quietly()  # after the checks: a refused file costs no TF import
        return _load_keras_file(p, "keras", allow_unsafe)
    if suffix in (".h5", ".hdf5"):
        config = _h5_config(p)
        _refuse_lambda(p, config, allow_unsafe)
        _refuse_custom_objects(p, config, allow_unsafe)
        import_tensorflow_quietly()
        return _load_keras_file(p, "h5", allow_unsafe)
    if suffix == ".tflite":
        raise ModelFileError(
            p,
            "is already a TFLite model; convert takes the float Keras model",
            hint="use 'edgeq verify' to check an existing .tflite",
        )
    raise ModelFileError(
        p,
        f"unknown model format '{suffix or p.name}'",
        hint="pass a Keras 3 .keras file, a legacy .h5 file or a SavedModel directory",
    )


# --- safety: find code-carrying layers before Keras deserializes anything ----------------------


def _keras_zip_config(p: Path) -> dict:
    try:
        with zipfile.ZipFile(p) as zf:
            return json.loads(zf.read("config.json"))
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError, OSError) as exc:
        raise ModelFileError(
            p,
            f"not a valid Keras 3 .keras archive ({type(exc).__name__})",
            hint="re-save the model with model.save('model.keras')",
        ) from exc


def _h5_config(p: Path) -> dict:
    with p.open("rb") as fh:
        magic = fh.read(8)
    if magic != _HDF5_MAGIC:
        raise ModelFileError(p, "not an HDF5 file", hint="re-save the model with model.save()")
    import h5py

    try:
        with h5py.File(p, "r") as f:
            raw = f.attrs.get("model_config")
    except OSError as exc:
        raise ModelFileError(p, f"corrupt HDF5 file ({exc})") from exc
    if raw is None:
        raise ModelFileError(
            p,
            "holds weights only, no model architecture",
            hint="save the whole model (model.save), not model.save_weights",
        )
    try:
        return json.loads(raw.decode() if isinstance(raw, bytes) else raw)
    except json.JSONDecodeError as exc:
        raise ModelFileError(p, "its model_config is not valid JSON") from exc


def _lambda_layers(node: Any) -> list[str]:
    found: list[str] = []
    if isinstance(node, dict):
        if node.get("class_name") == "Lambda":
            found.append(str((node.get("config") or {}).get("name", "?")))
        for value in node.values():
            found += _lambda_layers(value)
    elif isinstance(node, list):
        for value in node:
            found += _lambda_layers(value)
    return found


def _refuse_lambda(p: Path, config: dict, allow_unsafe: bool) -> None:
    names = _lambda_layers(config)
    if names and not allow_unsafe:
        raise UnsafeModelError(
            p,
            f"has Lambda layer(s) {', '.join(names)}, which run arbitrary Python code when loaded",
            hint="pass --allow-unsafe only if you trust where this file came from",
        )


def _custom_objects(node: Any) -> list[str]:
    """Serialized objects that are not Keras' own: a class from another Python module, a class
    registered under a custom name, or a serialized lambda. Deserializing them imports or runs
    code that the file names."""
    found: list[str] = []
    if isinstance(node, dict):
        cls, module = node.get("class_name"), node.get("module")
        registered = node.get("registered_name")
        if isinstance(cls, str):
            if cls == "__lambda__":
                found.append("a serialized lambda function")
            elif isinstance(module, str) and not (
                    module == "keras" or module.startswith("keras.") or module == "builtins"):
                found.append(f"class '{cls}' from module '{module}'")
            elif isinstance(registered, str) and registered not in (cls, "function") and not (
                    registered.startswith("keras")):
                found.append(f"custom registered class '{registered}'")
        for value in node.values():
            found += _custom_objects(value)
    elif isinstance(node, list):
        for value in node:
            found += _custom_objects(value)
    return found


def _refuse_custom_objects(p: Path, config: dict, allow_unsafe: bool) -> None:
    found = sorted(set(_custom_objects(config)))
    if found and not allow_unsafe:
        raise UnsafeModelError(
            p,
            f"uses {', '.join(found[:3])}{' and more' if len(found) > 3 else ''}, which is not "
            "part of Keras: loading it would import or run code the file names",
            hint="pass --allow-unsafe only if you trust where this file came from (and make "
            "the class importable)",
        )


# --- loaders -----------------------------------------------------------------------------------


def _load_keras_file(p: Path, fmt: str, allow_unsafe: bool) -> LoadedModel:
    import keras

    notes: list[str] = []
    try:
        model = keras.models.load_model(p, compile=False, safe_mode=not allow_unsafe)
        loader = f"keras {keras.__version__}"
    except Exception as exc:  # Keras raises TypeError/ValueError/... on configs it can't read
        if fmt != "h5":
            raise ModelFileError(p, f"Keras could not load it: {_first_line(exc)}") from exc
        # Legacy .h5 files written by tf.keras 2.x may use configs Keras 3 rejects
        # (DepthwiseConv2D 'groups'); tf_keras reads them as written.
        model, loader = _load_with_tf_keras(p, exc)
        notes.append(f"Keras 3 could not read this .h5 ({_first_line(exc)[:120]}); loaded with {loader}")
    return from_keras_model(model, p, fmt, loader, notes)


def _load_with_tf_keras(p: Path, keras3_error: Exception) -> tuple[Any, str]:
    try:
        import tf_keras
    except ImportError as exc:
        raise ModelFileError(
            p,
            f"Keras 3 cannot load it ({_first_line(keras3_error)}) and tf_keras is not installed",
            hint="pip install tf-keras",
        ) from exc
    try:
        model = tf_keras.models.load_model(p, compile=False)
    except Exception as exc:
        raise ModelFileError(
            p, f"neither Keras 3 nor tf_keras can load it: {_first_line(exc)}"
        ) from exc
    return model, f"tf_keras {tf_keras.__version__}"


def from_keras_model(model: Any, p: Path, fmt: str, loader: str, notes: list[str]) -> LoadedModel:
    """Wrap an in-memory Keras model (Keras 3 or tf_keras) as a LoadedModel."""
    import tensorflow as tf

    inputs = list(model.inputs or [])
    if len(inputs) != 1:
        raise ModelFileError(
            p, f"has {len(inputs)} inputs; edgeq converts single-input models for now"
        )
    _refuse_stateful(model)
    shape = _static_shape(p, tuple(inputs[0].shape[1:]), "input")
    dtype = tf.as_dtype(inputs[0].dtype).name
    name = _tensor_name(getattr(inputs[0], "name", "input"))
    spec = InputSpec(shape=shape, dtype=dtype, name=name)

    def call(x):
        out = model(x, training=False)
        return list(out) if isinstance(out, (list, tuple)) else [out]

    batch1, predict, out_shapes = _trace(call, spec)
    layers = tuple(layer.name for layer in getattr(model, "layers", []))
    return LoadedModel(str(p), fmt, loader, spec, out_shapes, batch1, predict, layers, notes,
                       owner=model)


def _refuse_stateful(model: Any) -> None:
    """A stateful RNN keeps its state in variables it assigns on every call (READ_VARIABLE /
    ASSIGN_VARIABLE in TFLite): the float reference, the calibrator and the edge runtimes all
    fail on it, each differently, so it is refused here, by layer."""
    from edgeq.errors import CalibrationLimitError
    from edgeq.formats.calibration_limits import variable_problem

    stack, seen = [model], set()
    while stack:
        layer = stack.pop()
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        # A tf_keras model reports `stateful` for its layers too; name the layer itself.
        if not hasattr(layer, "layers") and getattr(layer, "stateful", False) is True:
            problem = variable_problem("READ_VARIABLE", f"layer '{layer.name}' (stateful=True)")
            raise CalibrationLimitError(problem.op, problem.where, problem.detail,
                                        hint=problem.fix)
        # Sequential/functional models nest layers; Bidirectional and TimeDistributed wrap one.
        stack += list(getattr(layer, "layers", None) or [])
        stack += [getattr(layer, a, None) for a in ("layer", "forward_layer", "backward_layer")
                  if getattr(layer, a, None) is not None]


def _load_savedmodel(p: Path) -> LoadedModel:
    import tensorflow as tf

    try:
        obj = tf.saved_model.load(str(p))
    except Exception as exc:
        raise ModelFileError(p, f"TensorFlow could not load the SavedModel: {_first_line(exc)}") from exc
    sigs = getattr(obj, "signatures", {})
    if "serving_default" not in sigs:
        raise ModelFileError(
            p,
            "has no 'serving_default' signature",
            hint="export the model with a serving signature (model.export(path))",
        )
    fn = sigs["serving_default"]
    in_specs = fn.structured_input_signature[1]
    if len(in_specs) != 1:
        raise ModelFileError(p, f"has {len(in_specs)} inputs; edgeq converts single-input models for now")
    key, in_spec = next(iter(in_specs.items()))
    shape = _static_shape(p, tuple(in_spec.shape[1:]), f"input '{key}'")
    spec = InputSpec(shape=shape, dtype=in_spec.dtype.name, name=_tensor_name(key))
    out_keys = sorted(fn.structured_outputs)

    def call(x):
        out = fn(**{key: x})
        return [out[k] for k in out_keys]

    batch1, predict, out_shapes = _trace(call, spec)
    return LoadedModel(str(p), "savedmodel", f"tf.saved_model (TF {tf.__version__})", spec,
                       out_shapes, batch1, predict, (), [], owner=obj)


def _trace(call: Callable, spec: InputSpec):
    import tensorflow as tf

    one = tf.TensorSpec((1, *spec.shape), spec.dtype, name=spec.name)
    batch1 = tf.function(call).get_concrete_function(one)
    many = tf.function(call, input_signature=[tf.TensorSpec((None, *spec.shape), spec.dtype)])

    def predict(x: np.ndarray) -> list[np.ndarray]:
        return [np.asarray(t) for t in many(tf.constant(x, dtype=spec.dtype))]

    out_shapes = tuple(tuple(int(d) for d in o.shape[1:]) for o in batch1.outputs)
    return batch1, predict, out_shapes


def _static_shape(p: Path, dims: tuple, what: str) -> tuple[int, ...]:
    if any(d is None for d in dims):
        raise ModelFileError(
            p,
            f"{what} has a dynamic shape {tuple(-1 if d is None else d for d in dims)} beyond the batch",
            hint="build the model with a fixed input shape (keras.Input(shape=(H, W, C)))",
        )
    return tuple(int(d) for d in dims)


def _tensor_name(name: str) -> str:
    clean = re.sub(r"[^A-Za-z0-9_]", "_", name.split(":")[0]) or "input"
    return clean


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:300]
