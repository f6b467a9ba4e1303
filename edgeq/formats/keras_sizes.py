"""What a Keras model config will allocate, estimated from the config alone, before Keras builds
a layer: a 490 KB .keras declaring Conv2D with 10^7 filters, or Dense(300,000) after a wide
layer, otherwise makes Keras allocate (and randomly initialize) gigabytes before any check runs.

The walk follows the config as Keras rebuilds it: Sequential layers in order, functional layers
through their inbound nodes, nested models, and the wrappers (Bidirectional, TimeDistributed).
Output shapes are propagated from the declared inputs with the layers' own shape rules (the
formulas of keras/src/ops/operation_utils.py: conv, pool, transpose output lengths), so a layer's
weights are counted with its real input width, not a width the file claims. Where a layer's
class is not one of those modelled, its output shape is unknown; the next layer then falls back
to the shape its `build_config` (or the serialized tensor) declares, and, failing that, counts
its weights from what its own config alone fixes (an Embedding's input_dim x output_dim, a
convolution's kernel x filters at one input channel): a lower bound, never an overestimate.

Limits, checked as the walk goes, each refusal naming the layer:
- the weights of the whole model, as float32, at most `weights_limit()`: the 2 GiB edgeq
  accepts for stored weights (keras_files.WEIGHTS_MAX, the most a TFLite flatbuffer holds) or a
  quarter of the machine's memory if that is less (Keras holds the initialized weights, then
  the converter copies them). Exit 2, as for stored weights over the limit.
- any one activation of one sample, as float32, at most `activation_limit()`: 1 GiB or a
  sixteenth of the machine's memory (edgeq runs reference batches of up to 256 samples; a
  segmentation model's largest activation is a few hundred MiB). Exit 3, as for a tensor past
  the runtimes' 32-bit sizes (TensorSizeError): the file is well formed but past what any
  edge target could run. Below it, the reference outputs run in batches small enough for that
  activation (`predict_batch`).
- the weights declared against the weights the file stores (`check_stored`, once the weights
  are bounded): Keras builds and initializes every layer before it reads the stored weights
  (a Dense(300,000) after a 512-wide layer cost 2.6 GB and 29 s, then failed to load), and
  model.save stores every variable it builds, so a config declaring more than the file stores
  (past STORED_SLACK) is refused. Exit 2.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeq.errors import ModelFileError, TensorSizeError
from edgeq.formats.keras_shapes import (
    Shape,
    broadcast,
    conv_len,
    declared_shapes,
    dim,
    histories,
    ints,
    output,
    prod,
    reshaping,
    parse_shape,
)

GiB = 1024**3
WEIGHTS_BYTES_MAX = 2 * GiB
ACTIVATION_BYTES_MAX = GiB
_FLOAT = 4
STORED_SLACK = 2**20  # building 4 MiB more than the file stores costs nothing worth refusing


_PASS = frozenset((
    "Activation", "ReLU", "LeakyReLU", "ELU", "Softmax", "ThresholdedReLU", "Dropout",
    "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D", "GaussianNoise",
    "GaussianDropout", "AlphaDropout", "ActivityRegularization", "Masking", "Identity",
    "Rescaling", "UnitNormalization", "BatchNormalization", "LayerNormalization",
    "GroupNormalization", "Normalization", "PReLU", "RandomFlip", "RandomRotation",
    "RandomZoom", "RandomTranslation", "RandomContrast", "RandomBrightness"))
_MERGE = frozenset(("Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum"))
_CONV = re.compile(r"(?:Separable|Depthwise)?Conv([123])D(?:Transpose)?")
_RNN_GATES = {"LSTM": 4, "GRU": 3, "SimpleRNN": 1}


def machine_memory() -> int:
    """Physical memory, or the cgroup's limit when a container sets a lower one."""
    total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    for limit in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(limit) as fh:  # cgroup v2, v1: "max" or a number of bytes
                text = fh.read(64).strip()
        except OSError:
            continue
        if text.isdigit():
            total = min(total, int(text))
    return total


def weights_limit() -> int:
    return min(WEIGHTS_BYTES_MAX, machine_memory() // 4)


def activation_limit() -> int:
    return min(ACTIVATION_BYTES_MAX, machine_memory() // 16)


@dataclass(frozen=True)
class Estimate:
    """What a config declares, as far as the walk could tell (lower bounds)."""

    params: int  # weights of the whole model
    largest: str  # the layer declaring the most weights, in words
    activation_bytes: int  # the largest activation of one sample, as float32


def predict_batch(activation_bytes: int, most: int) -> int:
    """Samples per reference batch such that a batch's largest activation, a few times over
    (the tensors alive around it), takes at most an eighth of the machine's memory."""
    per_sample = 4 * max(activation_bytes, 1)
    return max(1, min(most, machine_memory() // 8 // per_sample))


def check_sizes(path: str | Path, config: Any, where: str) -> Estimate:
    """Refuse a Keras config whose weights or activations would exceed the limits above;
    returns what it declares.

    Raises:
        ModelFileError: the weights over `weights_limit()` (exit 2), or a config nested too
            deeply to walk.
        TensorSizeError: one sample's activation over `activation_limit()` (exit 3).
    """
    walk = _Walk(Path(path), where, weights_limit(), activation_limit())
    try:
        walk.model(config, [])
    except RecursionError as exc:
        raise ModelFileError(path, f"its {where} nests models too deeply to be read") from exc
    return Estimate(walk.params, walk.largest[1], walk.activation_bytes)


def check_stored(path: str | Path, declared: Estimate, stored: int, where: str) -> None:
    """Keras builds (allocates and initializes) every layer before it reads the stored weights,
    and every variable it builds is stored by model.save. A config declaring more weights than
    the file stores cannot load, but would cost the memory first: refused past STORED_SLACK.

    Raises:
        ModelFileError: naming the layer declaring the most weights.
    """
    params, layer = declared.params, declared.largest
    if params <= stored + STORED_SLACK:
        return
    raise ModelFileError(
        path, f"its {where} declares at least {params:,} weights, {layer}, but the file "
        f"stores {stored:,}: Keras would build the layers and then fail to load them",
        hint="re-save the model with model.save(); check the layer's units, filters or "
             "input_dim")


class _Walk:
    def __init__(self, path: Path, where: str, weights_max: int, activation_max: int) -> None:
        self.path, self.where = path, where
        self.weights_max, self.activation_max = weights_max, activation_max
        self.params = 0
        self.largest = (0, "no layer")
        self.activation_bytes = 0
        self.counted: set[int] = set()  # layers counted once however often they are called

    # --- models ------------------------------------------------------------------------------

    def model(self, cfg: Any, inputs: list[Shape | None]) -> list[Shape | None]:
        c = cfg.get("config") if isinstance(cfg, dict) else None
        if not isinstance(c, dict) or not isinstance(c.get("layers"), list):
            return [None]
        if "input_layers" in c or any(isinstance(la, dict) and "inbound_nodes" in la
                                      for la in c["layers"]):
            return self._functional(c, inputs)
        shape = inputs[0] if inputs else parse_shape(c.get("build_input_shape"))
        for layer in c["layers"]:
            if not isinstance(layer, dict):
                continue
            declared = self._declared_input(layer)
            if layer.get("class_name") == "InputLayer" or shape is None:
                shape = declared if declared is not None else shape
            if layer.get("class_name") != "InputLayer":
                shape = self.layer(layer, [shape])[0]
        return [shape]

    def _functional(self, c: dict, inputs: list[Shape | None]) -> list[Shape | None]:
        outputs: dict[tuple[str, int], list[Shape | None]] = {}
        given = dict(zip((h[0] for h in histories(c.get("input_layers"))), inputs))
        for layer in c["layers"]:
            if not isinstance(layer, dict):
                continue
            name = str(layer.get("name") or (layer.get("config") or {}).get("name"))
            if layer.get("class_name") == "InputLayer":
                outputs[(name, 0)] = [given.get(name) or self._declared_input(layer)]
                continue
            nodes = layer.get("inbound_nodes")
            for k, node in enumerate(nodes if isinstance(nodes, list) else []):
                declared = declared_shapes(node)
                shapes = [output(outputs, h) for h in histories(node)]
                shapes = [s if s is not None or j >= len(declared) else declared[j]
                          for j, s in enumerate(shapes)]
                outputs[(name, k)] = self.layer(layer, shapes or [None])
        return [output(outputs, h) for h in histories(c.get("output_layers"))] or [None]

    def _declared_input(self, layer: dict) -> Shape | None:
        c = layer.get("config") if isinstance(layer.get("config"), dict) else {}
        for key in ("batch_shape", "batch_input_shape"):
            if key in c:
                return parse_shape(c[key])
        if "shape" in c and layer.get("class_name") == "InputLayer":
            return parse_shape(c["shape"], batch=False)
        build = layer.get("build_config")
        if isinstance(build, dict):
            return parse_shape(build.get("input_shape"))
        return None

    # --- layers ------------------------------------------------------------------------------

    def layer(self, layer: dict, shapes: list[Shape | None]) -> list[Shape | None]:
        cls = str(layer.get("class_name"))[:100]
        c = layer.get("config") if isinstance(layer.get("config"), dict) else {}
        name = str(c.get("name") or layer.get("name") or cls)[:200]
        if isinstance(c.get("layers"), list):  # a nested model
            return self.model(layer, shapes)
        x = shapes[0] if shapes else None
        if x is None and cls not in _MERGE and cls != "Concatenate":
            x = self._declared_input(layer)
        try:
            out, params = self._rule(cls, c, x or None, shapes)
        except (IndexError, TypeError, ValueError, ZeroDivisionError):
            # A config Keras itself could not build (a rank the layer cannot take, a value of
            # the wrong type): nothing is known of it, and loading will fail with Keras' error.
            out, params = [None], 0
        if id(layer) not in self.counted:
            self.counted.add(id(layer))
            self._add(name, cls, params)
        for o in out:
            self._activation(name, cls, o)
        return out

    def _rule(self, cls: str, c: dict, x: Shape | None, shapes: list[Shape | None]
              ) -> tuple[list[Shape | None], int]:
        last = x[-1] if x else None
        if cls == "Dense":
            units = dim(c.get("units")) or 0
            bias = units if c.get("use_bias", True) else 0
            return [None if x is None else (*x[:-1], units)], (last or 1) * units + bias
        if cls == "Embedding":
            i, o = dim(c.get("input_dim")) or 0, dim(c.get("output_dim")) or 0
            return [None if x is None else (*x, o)], i * o
        if cls in _RNN_GATES:
            return self._rnn(cls, c, x)
        if cls == "Bidirectional" and isinstance(c.get("layer"), dict):
            return self._bidirectional(c, x)
        if cls == "TimeDistributed" and isinstance(c.get("layer"), dict):
            inner = self.layer(c["layer"], [None if x is None else x[1:]])[0]
            return [None if x is None or inner is None else (x[0], *inner)], 0
        conv = _CONV.fullmatch(cls)
        if conv:
            return self._conv(cls, int(conv.group(1)), c, x)
        if "Pooling" in cls:
            return [self._pool(cls, c, x)], 0
        if cls == "MultiHeadAttention":
            heads, kd = dim(c.get("num_heads")) or 0, dim(c.get("key_dim")) or 0
            vd = dim(c.get("value_dim")) or kd
            d = last or 1
            return [x], heads * (2 * d * kd + 2 * d * vd + 2 * kd + vd) + d
        if cls in _PASS:
            params = {"BatchNormalization": 4, "LayerNormalization": 2, "GroupNormalization": 2,
                      "Normalization": 2}.get(cls, 0) * (last or 0)
            if cls == "PReLU" and x is not None:
                shared = c.get("shared_axes") if isinstance(c.get("shared_axes"), list) else []
                params = prod([1 if i + 1 in shared else d for i, d in enumerate(x)]) or 0
            return [x], params
        if cls in _MERGE:
            return [broadcast(shapes)], 0
        return [reshaping(cls, c, x, shapes)], 0

    def _conv(self, cls: str, rank: int, c: dict, x: Shape | None
              ) -> tuple[list[Shape | None], int]:
        first = c.get("data_format") == "channels_first"
        chans = None if x is None else (x[0] if first else x[-1])
        spatial = None if x is None else (x[1:] if first else x[:-1])
        k = ints(c.get("kernel_size"), rank)
        s = ints(c.get("strides"), rank)
        d = ints(c.get("dilation_rate"), rank)
        kp = prod(k) or 1
        filters = dim(c.get("filters")) or 0
        m = dim(c.get("depth_multiplier")) or 1
        groups = dim(c.get("groups")) or 1
        cin = chans or 1
        bias = c.get("use_bias", True)
        if cls.startswith("Depthwise"):
            out_c, params = cin * m, kp * cin * m + (cin * m if bias else 0)
        elif cls.startswith("Separable"):
            out_c = filters
            params = kp * cin * m + cin * m * filters + (filters if bias else 0)
        else:
            out_c = filters
            params = kp * max(cin // groups, 1) * filters + (filters if bias else 0)
        if spatial is None or len(spatial) != rank:
            return [None], params
        padding = str(c.get("padding", "valid")).lower()
        lens = tuple(conv_len(n, k[i], s[i], d[i], padding, "Transpose" in cls)
                     for i, n in enumerate(spatial))
        return [(out_c, *lens) if first else (*lens, out_c)], params

    def _pool(self, cls: str, c: dict, x: Shape | None) -> Shape | None:
        if x is None:
            return None
        first = c.get("data_format") == "channels_first"
        chans, spatial = (x[0], x[1:]) if first else (x[-1], x[:-1])
        if cls.startswith("Global"):
            keep = c.get("keepdims") is True
            ones = (1,) * len(spatial)
            return ((chans, *ones) if first else (*ones, chans)) if keep else (chans,)
        rank = len(spatial)
        size = ints(c.get("pool_size"), rank, 2)
        strides = ints(c.get("strides"), rank) if c.get("strides") is not None else size
        padding = str(c.get("padding", "valid")).lower()
        lens = tuple(conv_len(n, size[i], strides[i], 1, padding) for i, n in enumerate(spatial))
        return (chans, *lens) if first else (*lens, chans)

    def _rnn(self, cls: str, c: dict, x: Shape | None) -> tuple[list[Shape | None], int]:
        units = dim(c.get("units")) or 0
        d = (x[-1] if x else None) or 1
        gates = _RNN_GATES[cls]
        params = gates * (d * units + units * units + units)
        if cls == "GRU" and c.get("reset_after", True):
            params += gates * units
        steps = x[0] if x and len(x) > 1 else None
        out: Shape | None = (steps, units) if c.get("return_sequences") else (units,)
        states = (2 if cls == "LSTM" else 1) if c.get("return_state") else 0
        return [out, *[(units,)] * states], params

    def _bidirectional(self, c: dict, x: Shape | None) -> tuple[list[Shape | None], int]:
        before = self.params
        inner = self.layer(c["layer"], [x])[0]
        self.params += self.params - before  # the backward layer: a copy of the forward one
        self._add(str(c.get("name", "bidirectional")), "Bidirectional", 0)
        concat = c.get("merge_mode", "concat") == "concat"
        if inner is None or not inner or inner[-1] is None:
            return [None], 0
        return [(*inner[:-1], inner[-1] * (2 if concat else 1))], 0

    # --- limits ------------------------------------------------------------------------------

    def _add(self, name: str, cls: str, params: int) -> None:
        self.params += params
        if params > self.largest[0]:
            self.largest = (params, f"layer '{name}' ({cls}) {params:,} of them")
        if self.params * _FLOAT <= self.weights_max:
            return
        raise ModelFileError(
            self.path, f"layer '{name}' ({cls}) in its {self.where} declares {params:,} weights; "
            f"with the layers before it the model holds {self.params:,} "
            f"({_gib(self.params * _FLOAT)} as float32), over the {_gib(self.weights_max)} "
            "edgeq builds (checked before any layer is built)",
            hint="an edge model's weights are megabytes; check the layer's units, filters or "
                 "input_dim")

    def _activation(self, name: str, cls: str, shape: Shape | None) -> None:
        n = prod(shape) if shape is not None else None
        if n is not None:
            self.activation_bytes = max(self.activation_bytes, n * _FLOAT)
        if n is None or n * _FLOAT <= self.activation_max:
            return
        raise TensorSizeError(
            self.path, f"layer '{name}' ({cls}) in its {self.where} outputs {shape} per sample, "
            f"{n:,} values ({_gib(n * _FLOAT)} as float32), over the "
            f"{_gib(self.activation_max)} per activation edgeq runs (checked before any layer "
            "is built)", tensor_name=name,
            hint="no edge target holds such a tensor; check the layer's filters, units or the "
                 "model's input size")


def _gib(n: int) -> str:
    return f"{n / GiB:.1f} GiB" if n >= GiB // 10 else f"{n / 1024**2:.1f} MiB"
