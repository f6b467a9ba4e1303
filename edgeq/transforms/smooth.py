"""SmoothQuant outlier smoothing of Keras 3 models: LayerNormalization -> Dense patterns.

Xiao et al. 2023, "SmoothQuant: Accurate and Efficient Post-Training Quantization for Large
Language Models". A few channels of a LayerNorm output can be orders of magnitude larger than
the rest; int8 activations have one scale per tensor, so those channels leave the others a
handful of levels. Per input channel j of the following Dense layers,

    s_j = max|X_j| ** alpha / max|W_j| ** (1 - alpha)

moves the outlier range into the weights, which are quantized per output channel: the
LayerNorm's gamma and beta are divided by s_j (its output X_j becomes X_j / s_j) and every
consumer's kernel row j is multiplied by s_j, which leaves the float function unchanged.
max|X_j| is measured on calibration inputs; max|W_j| is taken over all consumers, so one
LayerNorm feeding several Dense layers (Q, K, V projections) gets one scale they all absorb.

Consumers reached are plain Dense layers and the query/key/value EinsumDense projections inside
keras.layers.MultiHeadAttention (kernel (d_model, heads, head_dim): input axis 0), directly or
through layers that act on each channel alone and commute with s > 0 (Dropout, global 1D
pooling). A residual Add that also reads the output (post-LN, BERT order: every LayerNorm there
feeds the next block's residual) gets s back on that input (edgeq.transforms.layers.ScaledAdd,
one MUL by a constant), so the block still computes what it did. A LayerNorm whose output also
reaches anything else (a model output, a Flatten, another LayerNorm) is left alone with a note:
that consumer would see X / s.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeq.errors import ConversionError, UsageError
from edgeq.transforms.keras_config import (
    clone_with_weights,
    compare_outputs,
    first_line,
    history_names,
)

logger = logging.getLogger(__name__)

_CHECK_BATCH = 256
_RELATIVE_TOLERANCE = 1e-4


@dataclass(frozen=True)
class SmoothResult:
    model: Any  # keras.Model: a new model with smoothed weights; the input is not modified
    smoothed: tuple[str, ...]  # names of the LayerNormalization layers that were smoothed
    skipped: tuple[str, ...]  # human notes: patterns not smoothed and why
    max_abs_diff: float  # float outputs of the new vs old model on the calibration inputs


@dataclass(frozen=True)
class _Target:
    layer: Any  # the LayerNormalization whose gamma and beta are divided by s
    kernels: tuple[Any, ...]  # consumer kernel variables whose input rows (axis 0) are scaled
    # residual Adds that also read the output (post-LN, BERT order): (Add name, producer name);
    # that input of the Add is multiplied by s again (layers.ScaledAdd)
    residuals: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class _Use:
    consumer: str | None  # the consuming layer's name; None = a model output
    slot: str  # which argument of the call: "arg0", "arg1", ... or a keyword name
    filled: frozenset[str] = frozenset()  # every argument of that call that holds a tensor


def smooth_model(model: Any, calibration_inputs: np.ndarray, *, alpha: float = 0.5) -> SmoothResult:
    """Migrate LayerNorm output outliers into the weights of the Dense layers that read them.

    Args:
        model: a Keras 3 Sequential or functional model with one input; it is not modified.
        calibration_inputs: (N, ...) inputs; max|X_j| is measured on them and old and new
            model must agree on them.
        alpha: migration strength in (0, 1]; 0.5 is the paper's default, 1 moves all of the
            activation range into the weights.

    Returns:
        The smoothed copy, the LayerNorm layers smoothed, notes on patterns skipped and the
        output change.

    Raises:
        UsageError: alpha outside (0, 1], no calibration inputs, or a model that cannot be
            cloned (subclassed models).
        ConversionError: the model cannot run the calibration inputs, or the smoothed model
            does not compute what the input model does.
    """
    _check_alpha(alpha)
    x = np.asarray(calibration_inputs)
    if x.ndim == 0 or len(x) == 0:
        raise UsageError("--smooth needs calibration inputs",
                         hint="pass a few hundred representative samples")
    clone = clone_with_weights(model, "--smooth")

    targets, skipped = _find_targets(clone)
    if targets:
        x_max = _activation_ranges(clone, [t.layer for t in targets], x)
        rescale: dict[str, dict[str, np.ndarray]] = {}
        for target, xm in zip(targets, x_max):
            s = _scales(xm, _weight_ranges(target.kernels), float(alpha))
            _apply(target, s)
            for add, producer in target.residuals:
                rescale.setdefault(add, {})[producer] = s
        if rescale:
            clone = _rescale_residuals(clone, rescale)
    elif not skipped:
        skipped.append("no LayerNormalization -> Dense pattern found; nothing to smooth")

    diff, ref = _compare(model, clone, x)
    limit = _RELATIVE_TOLERANCE * max(1.0, ref)
    if not diff <= limit:  # also catches NaN
        raise ConversionError(
            "smooth",
            f"the smoothed model's outputs differ by {diff:.3g} from the original's "
            f"(allowed {limit:.3g}) on the calibration inputs",
            hint="convert without --smooth, and report this model as an edgeq bug",
        )
    return SmoothResult(clone, tuple(t.layer.name for t in targets), tuple(skipped), diff)


def _check_alpha(alpha: Any) -> None:
    try:
        ok = 0.0 < float(alpha) <= 1.0  # False for NaN
    except (TypeError, ValueError):
        ok = False
    if isinstance(alpha, bool) or not ok:
        raise UsageError(
            f"--smooth alpha must be in (0, 1], got {alpha!r}",
            hint="use 0.5 (the SmoothQuant default); larger values move more of the "
            "activation range into the weights",
        )


# --- the graph: who reads each layer's output, and through which argument -----------------------


def _uses(model: Any) -> tuple[dict[str, list[_Use]], dict[str, int]]:
    """The uses of each layer's output and how often each layer is called, read from the
    model's public config (which lists only this model's own calls)."""
    import keras

    config = model.get_config()
    uses: dict[str, list[_Use]] = {}
    if isinstance(model, keras.Sequential):
        names = [layer["config"]["name"] for layer in config["layers"]]
        for producer, consumer in zip(names, names[1:]):
            uses.setdefault(producer, []).append(_Use(consumer, "arg0", frozenset({"arg0"})))
        for name in names[-1:]:
            uses.setdefault(name, []).append(_Use(None, "output"))
        return uses, dict.fromkeys(names, 1)
    for layer in config["layers"]:
        for node in layer["inbound_nodes"]:
            slots = [(f"arg{i}", a) for i, a in enumerate(node.get("args", []))]
            slots += list(node.get("kwargs", {}).items())
            filled = frozenset(slot for slot, value in slots if history_names(value))
            for slot, value in slots:
                for producer in history_names(value):
                    uses.setdefault(producer, []).append(_Use(layer["name"], slot, filled))
    for name in history_names(config["output_layers"]):
        uses.setdefault(name, []).append(_Use(None, "output"))
    calls = {layer["name"]: len(layer["inbound_nodes"]) for layer in config["layers"]}
    return uses, calls


def _find_targets(model: Any) -> tuple[list[_Target], list[str]]:
    import keras

    uses, calls = _uses(model)
    by_name = {layer.name: layer for layer in model.layers}
    targets: list[_Target] = []
    notes: list[str] = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            notes.append(f"{layer.name} is a nested model; its layers are not searched")
            continue
        if not isinstance(layer, keras.layers.LayerNormalization):
            continue
        problems = _layernorm_problems(layer, calls)
        kernels: list[Any] = []
        residuals: list[tuple[str, str]] = []
        if not problems:
            kernels, problems, residuals = _reach(layer.name, uses, calls, by_name,
                                                  layer.gamma.shape[-1])
        if not problems and not kernels:
            problems = ["it feeds no Dense layer"]
        if problems:
            notes.append(f"{layer.name} not smoothed: " + "; ".join(problems))
        else:
            targets.append(_Target(layer, tuple(kernels), tuple(residuals)))
    return targets, notes


def _layernorm_problems(ln: Any, calls: dict[str, int]) -> list[str]:
    if calls.get(ln.name, 1) != 1:
        return [f"it is called {calls[ln.name]} times; one scale would have to suit every call"]
    if ln.gamma is None:
        return ["it has no gamma (scale=False) to absorb the scale"]
    rank = len(ln.input.shape)
    axes = ln.axis if isinstance(ln.axis, (list, tuple)) else [ln.axis]
    if [a % rank for a in axes] != [rank - 1]:
        return [f"it normalizes axes {list(axes)}, not only the last (channel) axis"]
    return []


def _reach(name: str, uses: dict, calls: dict, by_name: dict, channels: int
           ) -> tuple[list[Any], list[str], list[tuple[str, str]]]:
    """The kernels of the weighted layers that `name`'s output reaches through per-channel
    links, the reasons it cannot be smoothed (a use that would see X / s), and the residual
    Adds that read it (they get s back)."""
    import keras

    kernels: list[Any] = []
    problems: list[str] = []
    residuals: list[tuple[str, str]] = []
    for use in uses.get(name, []):
        layer = by_name.get(use.consumer) if use.consumer else None
        if use.consumer is None:
            problems.append("its output is a model output")
        elif layer is None:
            problems.append(f"it feeds {use.consumer}, which is not a layer of the model")
        elif calls.get(layer.name, 1) != 1:
            problems.append(f"it feeds {layer.name}, which is called {calls[layer.name]} times")
        elif type(layer) is keras.layers.Add:
            residuals.append((layer.name, name))
        elif _is_per_channel_link(layer):
            more, why, adds = _reach(layer.name, uses, calls, by_name, channels)
            kernels += more
            problems += why
            residuals += adds
        else:
            more, why = _consumer_kernels(layer, use)
            kernels += more
            problems += why
    for kernel in kernels:
        if kernel.shape[0] != channels:
            problems.append(f"{kernel.path} has {kernel.shape[0]} input rows, not {channels}")
    unique = list({id(k): k for k in kernels}.values())
    return unique, problems, residuals


def _is_per_channel_link(layer: Any) -> bool:
    """Layers that act on each channel alone and commute with a positive per-channel scale."""
    import keras

    L = keras.layers
    if isinstance(layer, L.Dropout):  # the identity at inference
        return True
    if isinstance(layer, (L.GlobalAveragePooling1D, L.GlobalMaxPooling1D)):
        return layer.data_format == "channels_last"
    return False


def _consumer_kernels(layer: Any, use: _Use) -> tuple[list[Any], list[str]]:
    """Kernels (input rows on axis 0) that read the argument `use.slot` of `layer`'s call."""
    import keras

    slot = use.slot
    if isinstance(layer, keras.layers.Dense) and slot in ("arg0", "inputs"):
        return _kernel_of(layer, layer.name)
    if isinstance(layer, keras.layers.MultiHeadAttention):
        # call(query, value, key=None): without a key, the value is also the key.
        projections = {
            "arg0": ("query_dense",), "query": ("query_dense",),
            "arg1": ("value_dense",), "value": ("value_dense",),
            "arg2": ("key_dense",), "key": ("key_dense",),
        }.get(slot)
        if projections is None:
            return [], [f"it is {layer.name}'s '{slot}' argument, not query, key or value"]
        if projections == ("value_dense",) and not use.filled & {"arg2", "key"}:
            projections += ("key_dense",)
        kernels: list[Any] = []
        problems: list[str] = []
        for attr in projections:
            more, why = _kernel_of(getattr(layer, attr), f"{layer.name}.{attr}")
            kernels += more
            problems += why
        return kernels, problems
    return [], [f"it feeds {layer.name} ({type(layer).__name__}), which would see X / s"]


def _kernel_of(layer: Any, label: str) -> tuple[list[Any], list[str]]:
    import keras

    if getattr(layer, "lora_enabled", False) or getattr(layer, "quantization_mode", None):
        return [], [f"{label} is LoRA-enabled or already quantized"]
    kernel = getattr(layer, "kernel", None)
    if not isinstance(kernel, keras.Variable):
        return [], [f"{label} has no plain kernel variable"]
    return [kernel], []


# --- the arithmetic -------------------------------------------------------------------------------


def _activation_ranges(model: Any, layers: list[Any], x: np.ndarray) -> list[np.ndarray]:
    """max |X_j| of each layer's output over the calibration inputs, reduced over every axis
    but the last, in inference mode."""
    import keras

    probe = keras.Model(model.inputs, [layer.output for layer in layers])
    ranges = [np.zeros(layer.gamma.shape[-1], dtype=np.float64) for layer in layers]
    try:
        for i in range(0, len(x), _CHECK_BATCH):
            # A list, as the probe was built from model.inputs (a bare tensor makes Keras warn).
            outputs = keras.tree.flatten(probe([x[i : i + _CHECK_BATCH]], training=False))
            for r, out in zip(ranges, outputs):
                out = np.abs(np.asarray(keras.ops.convert_to_numpy(out), dtype=np.float64))
                np.maximum(r, out.reshape(-1, out.shape[-1]).max(axis=0), out=r)
    except Exception as exc:  # TF raises many types for a wrong input shape or dtype
        raise _cannot_run(x, exc) from exc
    return ranges


def _weight_ranges(kernels: tuple[Any, ...]) -> np.ndarray:
    """max |W_j| per input row j (axis 0) over all the consumers' kernels."""
    rows = [np.abs(np.asarray(k.numpy(), dtype=np.float64)).reshape(k.shape[0], -1).max(axis=1)
            for k in kernels]
    return np.max(rows, axis=0)


def _scales(x_max: np.ndarray, w_max: np.ndarray, alpha: float) -> np.ndarray:
    """s_j = max|X_j|^alpha / max|W_j|^(1 - alpha); 1 for a dead channel or an all-zero row,
    where the formula would give 0 or infinity."""
    s = np.ones_like(x_max)
    ok = (x_max > 0) & (w_max > 0) & np.isfinite(x_max) & np.isfinite(w_max)
    s[ok] = x_max[ok] ** alpha / w_max[ok] ** (1.0 - alpha)
    ok &= np.isfinite(s) & (s > 0)
    s[~ok] = 1.0
    return s


def _apply(target: _Target, s: np.ndarray) -> None:
    """X_j / s_j through gamma and beta, W_j * s_j in every consumer, computed in float64."""
    ln = target.layer
    for var in (ln.gamma, ln.beta):
        if var is not None:
            var.assign((np.asarray(var.numpy(), dtype=np.float64) / s).astype(var.dtype))
    for kernel in target.kernels:
        k = np.asarray(kernel.numpy(), dtype=np.float64)
        k *= s.reshape((-1,) + (1,) * (k.ndim - 1))
        kernel.assign(k.astype(kernel.dtype))
    logger.debug("%s: s in [%.3g, %.3g] for %d consumer kernel(s)", ln.name, float(s.min()),
                 float(s.max()), len(target.kernels))


def _rescale_residuals(model: Any, rescale: dict[str, dict[str, np.ndarray]]) -> Any:
    """`model` with each named Add replaced by a ScaledAdd that multiplies the inputs coming
    from the named producers by their s."""
    from edgeq.transforms.layers import scaled_add_class
    from edgeq.transforms.rewrite import rewrite

    cls = scaled_add_class()

    def replace(layer: Any) -> Any:
        by_producer = rescale.get(layer.name)
        if by_producer is None:
            return None
        inputs = layer._inbound_nodes[0].input_tensors
        scales = {i: by_producer[t._keras_history.operation.name] for i, t in enumerate(inputs)
                  if t._keras_history.operation.name in by_producer}
        return cls(scales, name=layer.name, dtype=layer.dtype_policy)

    return rewrite(model, replace, "--smooth")[0]


def _compare(old: Any, new: Any, x: np.ndarray) -> tuple[float, float]:
    try:
        return compare_outputs(old, new, x, batch=_CHECK_BATCH)
    except Exception as exc:  # TF raises many types for a wrong input shape or dtype
        raise _cannot_run(x, exc) from exc


def _cannot_run(x: np.ndarray, exc: Exception) -> ConversionError:
    return ConversionError(
        "smooth",
        f"the model could not run the calibration inputs of shape {x.shape}: {first_line(exc)}",
        hint="pass calibration inputs shaped like the model input, with the batch axis first",
    )
