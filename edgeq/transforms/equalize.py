"""Cross-layer equalization (CLE) of Keras 3 models, so per-tensor int8 weights stay accurate.

Nagel et al. 2019, "Data-Free Quantization Through Weight Equalization and Bias Correction",
section 4.1. For layers A -> B joined only by operations that commute with a positive
per-channel scale (ReLU, pooling, zero padding), dividing A's output channel i by s_i and
multiplying B's input channel i by s_i leaves the float function unchanged. With
s_i = (1 / r2_i) * sqrt(r1_i * r2_i) both channel ranges become sqrt(r1_i * r2_i), which evens
out the per-channel ranges of depthwise kernels that one per-tensor scale must cover.

A BatchNormalization directly after A is folded into A first: the converter folds it into the
kernel anyway, so the folded ranges are the ones that get quantized. The BN layer stays in the
graph as an identity (gamma=1, moving_mean=0, moving_variance=1-epsilon) whose beta holds the
folded shift when A has no bias of its own (beta is 0 otherwise); keeping the graph means the
equalized model has the same layers, names and config as the input.
"""

from __future__ import annotations

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

_CHECK_BATCH = 256
_RELU6_NOTE = "ReLU6 clips at 6; replace it with ReLU to equalize"
# Activations f with f(s * x) = s * f(x) for s > 0 (positively homogeneous).
_HOMOGENEOUS = ("linear", "relu", "leaky_relu")


@dataclass(frozen=True)
class EqualizeResult:
    model: Any  # keras.Model: a new model with equalized weights; the input is not modified
    pairs: tuple[tuple[str, str], ...]  # (first layer, second layer) names that were equalized
    skipped: tuple[str, ...]  # human notes: layer pairs that were not equalized and why
    max_abs_diff: float  # float outputs of the new vs old model on the check inputs


@dataclass(frozen=True)
class _Pair:
    a: Any  # its output channel i is divided by s_i
    b: Any  # its input channel i is multiplied by s_i
    bn: Any = None  # a BatchNormalization folded into `a`


def equalize_model(
    model: Any, check_inputs: np.ndarray, *, iterations: int = 20, tolerance: float = 1e-4
) -> EqualizeResult:
    """Equalize the weight ranges of consecutive Conv2D/DepthwiseConv2D/Dense layers.

    Args:
        model: a Keras 3 Sequential or functional model; it is not modified.
        check_inputs: (N, ...) inputs on which old and new model must agree.
        iterations: most sweeps over all pairs; chains (A -> B -> C) need several.
        tolerance: stop once every scale of a sweep is within this of 1.

    Returns:
        The equalized copy, the pairs equalized, notes on pairs skipped and the output change.

    Raises:
        UsageError: no check inputs, or a model that cannot be cloned (subclassed models).
        ConversionError: the equalized model does not compute what the input model does.
    """
    x = np.asarray(check_inputs)
    if x.ndim == 0 or len(x) == 0:
        raise UsageError("equalize needs check inputs", hint="pass a few representative samples")
    clone = clone_with_weights(model, "--equalize")
    consumers, calls = _graph(clone)
    pairs, skipped = _find_pairs(clone, consumers, calls)
    arrays = _Arrays()
    for pair in pairs:
        if pair.bn is not None:
            _fold_bn(pair, arrays)
    _equalize(pairs, arrays, iterations, tolerance)
    arrays.write_back()

    diff, ref = _compare(model, clone, x)
    limit = 1e-3 * max(1.0, ref)
    if not diff <= limit:  # also catches NaN
        raise ConversionError(
            "equalize",
            f"the equalized model's outputs differ by {diff:.3g} from the original's "
            f"(allowed {limit:.3g}) on the check inputs",
            hint="convert without equalization, and report this model as an edgeq bug",
        )
    names = tuple((p.a.name, p.b.name) for p in pairs)
    return EqualizeResult(clone, names, tuple(skipped), diff)


# --- the graph: who consumes each layer's output --------------------------------------------------


def _graph(model: Any) -> tuple[dict[str, list[Any]], dict[str, int]]:
    """Consumers of each layer's output (None = a model output) and how often each layer is
    called, read from the model's public config (which lists only this model's own calls)."""
    import keras

    config = model.get_config()
    if isinstance(model, keras.Sequential):
        names = [layer["config"]["name"] for layer in config["layers"]]
        edges = list(zip(names, names[1:])) + [(name, None) for name in names[-1:]]
        calls = dict.fromkeys(names, 1)
    else:
        edges = [(producer, layer["name"]) for layer in config["layers"]
                 for node in layer["inbound_nodes"] for producer in history_names(node)]
        edges += [(name, None) for name in history_names(config["output_layers"])]
        calls = {layer["name"]: len(layer["inbound_nodes"]) for layer in config["layers"]}
    by_name = {layer.name: layer for layer in model.layers}
    consumers: dict[str, list[Any]] = {}
    for producer, consumer in edges:
        consumers.setdefault(producer, []).append(by_name.get(consumer))
    return consumers, calls


def _find_pairs(model: Any, consumers: dict, calls: dict) -> tuple[list[_Pair], list[str]]:
    pairs: list[_Pair] = []
    notes: list[str] = []
    for a in model.layers:
        if not _is_weighted(a) or calls.get(a.name) != 1:
            continue  # a shared layer's scale would have to suit every call
        found = _follow(a, consumers, calls)
        if found is None:
            continue
        b, bn, problems = found
        problems += _role_problems(a, b)
        if problems:
            notes.append(f"{a.name} -> {b.name} not equalized: " + "; ".join(problems))
        else:
            pairs.append(_Pair(a, b, bn))
    return pairs, notes


def _follow(a: Any, consumers: dict, calls: dict) -> tuple[Any, Any, list[str]] | None:
    """The layer B that A's output reaches through single-consumer links, the BN to fold and
    the reasons the pair cannot be equalized; None when no such B exists (nothing to report)."""
    import keras

    act = _activation(a)
    problems = [] if act in _HOMOGENEOUS else [_activation_problem(a.name, act)]
    bn, cur = None, a
    while True:
        users = consumers.get(cur.name, [])
        if len(users) != 1 or users[0] is None or calls.get(users[0].name) != 1:
            return None  # fans out, is a model output, or feeds a shared layer
        nxt = users[0]
        if _is_weighted(nxt):
            return nxt, bn, problems
        if isinstance(nxt, keras.layers.BatchNormalization):
            if cur is not a or act != "linear":
                problems.append(f"{nxt.name} is not directly after {a.name}'s linear output")
            else:
                bn = nxt
                problems += _bn_problems(a, bn)
        else:
            problem = _link_problem(nxt)
            if problem is None:
                return None
            if problem:
                problems.append(problem)
        cur = nxt


def _link_problem(layer: Any) -> str | None:
    """'' when `layer` commutes with a positive per-channel scale, the reason when it does not,
    None when the path ends here (a merge, a non-per-channel op)."""
    import keras

    L = keras.layers
    # Pooling and zero padding act on each channel alone and commute with s > 0.
    if isinstance(layer, (L.MaxPooling2D, L.AveragePooling2D, L.GlobalAveragePooling2D,
                          L.GlobalMaxPooling2D, L.ZeroPadding2D, L.Dropout, L.LeakyReLU)):
        return ""
    if isinstance(layer, L.ReLU):
        if layer.max_value is not None:
            if float(layer.max_value) == 6.0:
                return f"{layer.name}: {_RELU6_NOTE}"
            return f"{layer.name} clips at {layer.max_value:g}; replace it with ReLU to equalize"
        if layer.threshold:
            return f"{layer.name} has threshold {layer.threshold:g}, which scaling would move"
        return ""
    if isinstance(layer, L.Activation):
        act = _activation(layer)
        return "" if act in _HOMOGENEOUS else _activation_problem(layer.name, act)
    if isinstance(layer, (L.Flatten, L.Reshape)):
        return (f"{layer.name} ({type(layer).__name__}) changes how channels map to B's inputs; "
                "only direct connections are equalized")
    return None


def _role_problems(a: Any, b: Any) -> list[str]:
    import keras

    problems = []
    for layer in (a, b):
        if isinstance(layer, keras.layers.DepthwiseConv2D) and layer.depth_multiplier != 1:
            problems.append(f"{layer.name} has depth_multiplier {layer.depth_multiplier} (only 1)")
    # A grouped B reads each input channel with a different slice of its kernel.
    if isinstance(b, keras.layers.Conv2D) and getattr(b, "groups", 1) != 1:
        problems.append(f"{b.name} is a grouped convolution (groups={b.groups})")
    if not problems:
        n_out, n_in = a.kernel.shape[_out_axis(a)], b.kernel.shape[_in_axis(b)]
        if n_out != n_in:
            problems.append(f"{a.name} has {n_out} output channels but {b.name} {n_in} inputs")
    return problems


def _bn_problems(a: Any, bn: Any) -> list[str]:
    rank = len(bn.input.shape)
    channels_first = a.get_config().get("data_format") == "channels_first"
    if bn.axis % rank != (1 if channels_first else rank - 1):
        return [f"{bn.name} normalizes axis {bn.axis}, not {a.name}'s channel axis"]
    if a.bias is None and bn.beta is None:
        return [f"neither {a.name} (use_bias=False) nor {bn.name} (center=False) can hold a bias"]
    return []


def _is_weighted(layer: Any) -> bool:
    import keras

    return isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D,
                              keras.layers.Dense))


def _activation(layer: Any) -> str:
    return str(layer.get_config().get("activation", "linear"))


def _activation_problem(name: str, act: str) -> str:
    if act == "relu6":
        return f"{name}: {_RELU6_NOTE}"
    return f"{name}'s activation '{act}' does not commute with per-channel scaling"


# --- the arithmetic -------------------------------------------------------------------------------


def _out_axis(layer: Any) -> int:
    """A's output-channel axis: DepthwiseConv2D (kh, kw, C, 1) -> 2; Conv2D and Dense -> last."""
    import keras

    return 2 if isinstance(layer, keras.layers.DepthwiseConv2D) else -1


def _in_axis(layer: Any) -> int:
    """B's input-channel axis: Dense (Cin, Cout) -> 0; the convolutions (kh, kw, C, .) -> 2."""
    return 0 if len(layer.kernel.shape) == 2 else 2


def _along(v: np.ndarray, axis: int, ndim: int) -> np.ndarray:
    shape = [1] * ndim
    shape[axis] = -1
    return v.reshape(shape)


def _ranges(kernel: np.ndarray, axis: int) -> np.ndarray:
    """max |w| per channel along `axis`."""
    return np.abs(np.moveaxis(kernel, axis, 0)).reshape(kernel.shape[axis], -1).max(axis=1)


class _Arrays:
    """float64 copies of the variables being changed, written back once at the end. A layer in
    the middle of a chain (B of one pair, A of the next) thus shares one array in both roles."""

    def __init__(self) -> None:
        self._vars: dict[int, Any] = {}
        self._vals: dict[int, np.ndarray] = {}

    def __getitem__(self, var: Any) -> np.ndarray:
        if id(var) not in self._vals:
            self._vars[id(var)] = var
            self._vals[id(var)] = np.array(var.numpy(), dtype=np.float64)
        return self._vals[id(var)]

    def __setitem__(self, var: Any, value: np.ndarray) -> None:
        self[var]  # noqa: B018 - registers the variable
        self._vals[id(var)] = np.asarray(value, dtype=np.float64)

    def write_back(self) -> None:
        for key, value in self._vals.items():
            var = self._vars[key]
            var.assign(value.astype(var.dtype))


def _fold_bn(pair: _Pair, arrays: _Arrays) -> None:
    a, bn = pair.a, pair.bn
    gamma = arrays[bn.gamma] if bn.gamma is not None else 1.0
    beta = arrays[bn.beta] if bn.beta is not None else 0.0
    mean, var = arrays[bn.moving_mean], arrays[bn.moving_variance]
    factor = gamma / np.sqrt(var + bn.epsilon)
    kernel = arrays[a.kernel]
    kernel *= _along(factor, _out_axis(a), kernel.ndim)
    shift = beta - mean * factor
    if a.bias is not None:
        arrays[a.bias] = arrays[a.bias] * factor + shift
        shift = np.zeros_like(shift)
    if bn.beta is not None:
        arrays[bn.beta] = shift
    if bn.gamma is not None:
        arrays[bn.gamma] = np.ones_like(mean)
    arrays[bn.moving_mean] = np.zeros_like(mean)
    # 1/sqrt(var + eps) is then 1: the layer passes its input through (plus beta).
    arrays[bn.moving_variance] = np.full_like(var, 1.0 - bn.epsilon)


def _equalize(pairs: list[_Pair], arrays: _Arrays, iterations: int, tolerance: float) -> None:
    """Sweep over the pairs until no scale moves by `tolerance`: in a chain, balancing B -> C
    changes B's ranges that A -> B was balanced against."""
    for _ in range(max(iterations, 0)):
        worst = 0.0
        for pair in pairs:
            ka, kb = arrays[pair.a.kernel], arrays[pair.b.kernel]
            oa, ib = _out_axis(pair.a), _in_axis(pair.b)
            r1, r2 = _ranges(ka, oa), _ranges(kb, ib)
            s = np.ones_like(r1)
            ok = (r1 > 0) & (r2 > 0)  # a dead channel keeps s = 1 rather than 0 or inf
            s[ok] = np.sqrt(r1[ok] * r2[ok]) / r2[ok]
            ka /= _along(s, oa, ka.ndim)
            kb *= _along(s, ib, kb.ndim)
            bias = pair.a.bias if pair.a.bias is not None else getattr(pair.bn, "beta", None)
            if bias is not None:
                arrays[bias] /= s
            worst = max(worst, float(np.max(np.abs(s - 1.0), initial=0.0)))
        if worst < tolerance:
            return


def _compare(old: Any, new: Any, x: np.ndarray) -> tuple[float, float]:
    try:
        return compare_outputs(old, new, x, batch=_CHECK_BATCH)
    except Exception as exc:  # TF raises many types for a wrong input shape or dtype
        raise ConversionError(
            "equalize",
            f"the model could not run the check inputs of shape {x.shape}: {first_line(exc)}",
            hint="pass check inputs shaped like the model input, with the batch axis first",
        ) from exc
