"""Stage 1, load: a Keras 3 `.keras`, legacy `.h5` or SavedModel directory, fixed to batch 1.

Safety: a Keras file is read as data before any Keras loader sees it, and one policy
(edgeq.formats.keras_config_policy) decides for every loader (Keras 3, and tf_keras for .h5
files Keras 3 cannot read): a config that would run or import code (Lambda layers, serialized
lambdas and functions, RNN cell wrapper functions, unknown or non-Keras classes, custom
objects, non-built-in function names) is refused with exit 2, naming the layer and the key,
unless `--allow-unsafe`. A file the policy refused never reaches a loader; the loaders then run
in their own safe modes too (Keras 3 `safe_mode`, tf_keras' safe-mode scope, which its legacy
.h5 loader ignores otherwise). Resources are bounded before loading as well
(edgeq.formats.keras_files): archive members, the config and HDF5 weights are checked for
declared and actual size, so a decompression bomb is refused before TensorFlow is imported.
Pickles are never unpickled (data is read with `allow_pickle=False` semantics, see edgeq.data).
A SavedModel runs no Python from the file, but TensorFlow runs its graph when loading and
calling it, so its files and graph are read as data first (edgeq.formats.savedmodel_policy):
ops that act outside the graph (files, Python, network) are refused unless `--allow-unsafe`.

Returns a `LoadedModel` holding two traced functions over the same weights: a batch-1 function
for the converter (edge compilers reject dynamic dimensions, and converting a Keras model
directly keeps a dynamic batch that adds SHAPE/STRIDED_SLICE/PACK ops), and a dynamic-batch
function that computes the float reference outputs quickly.
"""

from __future__ import annotations

import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, NamedTuple

import numpy as np

from edgeq.adapters.native import import_tensorflow_quietly
from edgeq.data import InputSpec
from edgeq.errors import ModelFileError, UsageError
from edgeq.formats.input_files import check_file_or_dir
from edgeq.transforms.keras_config import first_line
from edgeq.formats.savedmodel_policy import check_savedmodel

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
    # Samples per reference batch: fewer when a sample's activations are large (from the
    # config's estimate, edgeq.formats.keras_sizes.predict_batch), so a batch stays in memory.
    predict_batch: int = _PREDICT_BATCH

    def keras_model(self, option: str) -> Any:
        """The Keras model behind this one, for transforms that rewrite Keras weights."""
        if self.format == "savedmodel" or self.owner is None:
            raise UsageError(f"{option} needs a Keras model (.keras or .h5), not a SavedModel")
        return self.owner

    def replaced_by(self, model: Any, notes: list[str]) -> "LoadedModel":
        """The same source with a rewritten Keras model (traced anew), notes appended."""
        loaded = from_keras_model(model, Path(self.path), self.format, self.loader,
                                  [*self.notes, *notes])
        loaded.predict_batch = self.predict_batch
        return loaded

    def layer_scope(self) -> tuple[tuple[str, ...], str | None]:
        """(layer names, model name): what the converter's tensor names are scoped by, so
        that an op can be traced back to its Keras layer."""
        return self.layer_names, getattr(self.owner, "name", None) if self.layer_names else None

    def predict(self, x: np.ndarray) -> list[np.ndarray]:
        """Float outputs for `x` (N, ...), one array per model output."""
        step = self.predict_batch
        chunks = [self._predict(x[i : i + step]) for i in range(0, len(x), step)]
        return [np.concatenate([c[k] for c in chunks]) for k in range(len(chunks[0]))]


def load_model(path: str | Path, *, allow_unsafe: bool = False,
               checked: KerasFileCheck | None = None) -> LoadedModel:
    """Load a float model for conversion.

    ``checked``: what `check_keras_file` returned for this Keras file (run by the caller with
    the same ``allow_unsafe``), so its sizes and config are not read a second time.

    Raises:
        ModelFileError: missing, unreadable or corrupt file, unknown format, no static shape,
            a member, config or weights over the size limits.
        UnsafeModelError: a config that would run or import code, or a SavedModel op that
            acts outside the graph, without ``allow_unsafe``.
    """
    p = Path(path)
    st = check_file_or_dir(p, "model", error=ModelFileError, hint="check the path to the model")
    if stat.S_ISDIR(st.st_mode):
        if not (p / "saved_model.pb").is_file() and not (p / "saved_model.pbtxt").is_file():
            raise ModelFileError(
                p,
                "is a directory without saved_model.pb",
                hint="pass a .keras or .h5 file, or a SavedModel directory",
            )
        # TF's own protobuf classes parse the graph, so TF is imported (quietly) first.
        import_tensorflow_quietly()
        check_savedmodel(p, allow_unsafe=allow_unsafe)  # its files and graph, as data
        return _load_savedmodel(p)
    suffix = p.suffix.lower()
    if suffix in (".keras", ".h5", ".hdf5"):
        from edgeq.formats.keras_sizes import predict_batch

        check = checked or check_keras_file(p, allow_unsafe=allow_unsafe)
        import_tensorflow_quietly()  # after the checks: a refused file costs no TF import
        loaded = _load_keras_file(p, "keras" if suffix == ".keras" else "h5", allow_unsafe)
        loaded.predict_batch = predict_batch(check.estimate.activation_bytes, _PREDICT_BATCH)
        return loaded
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


# --- safety: the file is read as data before any loader runs ----------------------------------


class KerasFileCheck(NamedTuple):
    """What `check_keras_file` read: the model config (plain JSON data) and what its layers
    would allocate (edgeq.formats.keras_sizes.Estimate)."""

    config: Any
    estimate: Any


def check_keras_file(p: Path, *, allow_unsafe: bool = False) -> KerasFileCheck:
    """The checks a .keras or .h5 file passes before TensorFlow is imported: sizes bounded,
    then the config judged by the safe-loading policy, then what its layers would allocate
    estimated from the config (edgeq.formats.keras_sizes), then the weights bounded.

    Returns:
        The model config, as plain JSON data, and the size estimate.

    Raises:
        ModelFileError: not a readable Keras file, or over a size limit.
        UnsafeModelError: the config would run or import code, without ``allow_unsafe``.
    """
    from edgeq.formats import keras_files
    from edgeq.formats.keras_config_policy import check_config
    from edgeq.formats.keras_sizes import check_sizes, check_stored

    if p.suffix.lower() == ".keras":
        config = keras_files.keras_config(p)
        check_config(p, config, "config.json", allow_unsafe=allow_unsafe)
        estimate = check_sizes(p, config, "config.json")
        check_stored(p, estimate, keras_files.check_keras_members(p), "config.json")
    else:
        config = keras_files.h5_config(p)
        check_config(p, config, "model_config", allow_unsafe=allow_unsafe)
        estimate = check_sizes(p, config, "model_config")
        check_stored(p, estimate, keras_files.check_h5_weights(p), "model_config")
    return KerasFileCheck(config, estimate)


# --- loaders -----------------------------------------------------------------------------------


def _load_keras_file(p: Path, fmt: str, allow_unsafe: bool) -> LoadedModel:
    import keras

    notes: list[str] = []
    try:
        model = keras.models.load_model(p, compile=False, safe_mode=not allow_unsafe)
        loader = f"keras {keras.__version__}"
    except Exception as exc:  # Keras raises TypeError/ValueError/... on configs it can't read
        if fmt != "h5":
            raise ModelFileError(p, f"Keras could not load it: {first_line(exc)}") from exc
        # Legacy .h5 files written by tf.keras 2.x may use configs Keras 3 rejects
        # (DepthwiseConv2D 'groups'); tf_keras reads them as written.
        model, loader = _load_with_tf_keras(p, exc, allow_unsafe)
        notes.append(f"Keras 3 could not read this .h5 ({first_line(exc)[:120]}); loaded with {loader}")
    return from_keras_model(model, p, fmt, loader, notes)


def _load_with_tf_keras(p: Path, keras3_error: Exception, allow_unsafe: bool
                        ) -> tuple[Any, str]:
    try:
        import tf_keras
    except ImportError as exc:
        raise ModelFileError(
            p,
            f"Keras 3 cannot load it ({first_line(keras3_error)}) and tf_keras is not installed",
            hint="pip install tf-keras",
        ) from exc
    try:
        # tf_keras' legacy .h5 loader takes no safe_mode and would unmarshal a lambda; its
        # safe-mode scope makes it refuse them. The policy has refused them already (a file it
        # refused never gets here); this is the second lock.
        with _tf_keras_safe_mode(not allow_unsafe):
            model = tf_keras.models.load_model(p, compile=False)
    except Exception as exc:
        raise ModelFileError(
            p, f"neither Keras 3 nor tf_keras can load it: {first_line(exc)}"
        ) from exc
    return model, f"tf_keras {tf_keras.__version__}"


def _tf_keras_safe_mode(safe: bool) -> Any:
    # Not exported by tf_keras' public API; pinned by tf-keras>=2.21,<2.22 in pyproject.
    from tf_keras.src.saving.serialization_lib import SafeModeScope

    return SafeModeScope(safe)


def from_keras_model(model: Any, p: Path, fmt: str, loader: str, notes: list[str]) -> LoadedModel:
    """Wrap an in-memory Keras model (Keras 3 or tf_keras) as a LoadedModel."""
    import tensorflow as tf

    inputs = list(model.inputs or [])
    if len(inputs) != 1:
        raise ModelFileError(
            p, f"has {len(inputs)} inputs; edgeq converts single-input models for now"
        )
    _refuse_stateful(model)
    _refuse_scope_names(model, p)
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

    for layer in _all_layers(model):
        # A tf_keras model reports `stateful` for its layers too; name the layer itself.
        if not hasattr(layer, "layers") and getattr(layer, "stateful", False) is True:
            problem = variable_problem("READ_VARIABLE", f"layer '{layer.name}' (stateful=True)")
            raise CalibrationLimitError(problem.op, problem.where, problem.detail,
                                        hint=problem.fix)


# TensorFlow's name rules (tensorflow/python/framework/ops.py, _VALID_OP_NAME_REGEX and
# _VALID_SCOPE_NAME_REGEX): Keras opens a name scope per layer while tracing, and TensorFlow
# raises a ValueError deep inside the trace for a name outside them ('dense 1': a space).
_TF_OP_NAME = re.compile(r"[A-Za-z0-9.][A-Za-z0-9_.\\/>-]*")
_TF_SCOPE_NAME = re.compile(r"[A-Za-z0-9_.\\/>-]*")


def _refuse_scope_names(model: Any, p: Path) -> None:
    """Exit 2 naming the first layer (or the model) whose name TensorFlow cannot trace."""
    from edgeq.outputs.text import terminal

    for layer in _all_layers(model):
        name = str(getattr(layer, "name", ""))
        rule = _TF_OP_NAME if layer is model else _TF_SCOPE_NAME  # the model's scope is first
        if not rule.fullmatch(name):
            what = "model" if layer is model else "layer"
            fixed = re.sub(r"[^A-Za-z0-9_.-]", "_", name)
            fixed = fixed if _TF_OP_NAME.fullmatch(fixed) else f"x{fixed}"
            raise ModelFileError(
                p, f"{what} name '{terminal(name)}' is not a valid TensorFlow name scope "
                "(letters, digits and _ . - / \\ > only), so TensorFlow cannot trace it",
                hint=f"rename the {what} (e.g. '{fixed}') and save the model again")


def _all_layers(model: Any) -> Any:
    """The model and every layer in it, nested models and wrapped layers included."""
    stack, seen = [model], set()
    while stack:
        layer = stack.pop()
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        yield layer
        # Sequential/functional models nest layers; Bidirectional and TimeDistributed wrap one.
        stack += list(getattr(layer, "layers", None) or [])
        stack += [getattr(layer, a, None) for a in ("layer", "forward_layer", "backward_layer")
                  if getattr(layer, a, None) is not None]


def _load_savedmodel(p: Path) -> LoadedModel:
    import tensorflow as tf

    try:
        obj = tf.saved_model.load(str(p))
    except Exception as exc:
        raise ModelFileError(p, f"TensorFlow could not load the SavedModel: {first_line(exc)}") from exc
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
