"""Ops of a SavedModel's graph that allocate a tensor whose shape the graph fixes as constants:
`tf.fill([30000, 30000], 1.0)` in a 40 KB SavedModel makes TensorFlow allocate 3.4 GiB the
first time edgeq traces or calls the signature. The graph is read as data (the parsed
saved_model_pb2.SavedModel of edgeq.formats.savedmodel_policy), before TensorFlow loads it.

For each op below, the shape input is followed back through the nodes that compute it from
constants (Const, and the few ops TF uses to assemble a shape: Identity, Cast, Pack, ConcatV2,
Mul, Add, Maximum), and the output size is the product of that shape (times the input's size
for Tile, which is at least one element; `tf.zeros`/`tf.ones` of a large constant shape are a
Fill in the graph); a Range of constant integers is as long as it counts. An allocation over keras_sizes.activation_limit()
(1 GiB, or a sixteenth of the machine's memory) is refused with exit 3 naming the function (or
graph node) and the op, as for a Keras layer whose activation is too large. A shape computed
from the model's input is left to the runtime checks: only constant shapes are known here.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Iterable

from edgeq.errors import TensorSizeError

# op -> index of the input holding the output's shape (or the multiples, for Tile)
SHAPE_INPUT = {
    "Fill": 0, "Empty": 0, "RandomUniform": 0, "RandomStandardNormal": 0,
    "TruncatedNormal": 0, "RandomUniformInt": 0, "StatelessRandomUniform": 0,
    "StatelessRandomNormal": 0, "StatelessTruncatedNormal": 0, "StatelessRandomUniformInt": 0,
    "StatelessRandomUniformV2": 0, "StatelessRandomNormalV2": 0,
    "StatelessTruncatedNormalV2": 0, "StatelessRandomUniformIntV2": 0,
    "StatelessRandomUniformFullIntV2": 0, "StatelessRandomUniformFullInt": 0,
    "StatelessRandomBinomial": 0, "RandomPoissonV2": 0, "BroadcastTo": 1, "Tile": 1,
    "ScatterNd": 2, "SparseToDense": 1, "Conv2DBackpropInput": 0, "Conv3DBackpropInputV2": 0,
    "ResizeBilinear": 1, "ResizeNearestNeighbor": 1, "ResizeBicubic": 1, "ResizeArea": 1,
}
_FOLD_DEPTH = 16  # shape arithmetic is a handful of nodes deep
_CLAMP = 2**63
_MAX_CONST = 64  # a shape vector has a few entries; a larger Const is not a shape
_BYTES = {1: 4, 2: 8, 3: 4, 4: 1, 5: 2, 6: 1, 9: 8, 10: 1, 14: 2, 17: 2, 19: 2, 22: 4, 23: 8}


def check_allocations(path: str | Path, saved: Any, limit: int) -> None:
    """Refuse a parsed SavedModel with an op allocating more than `limit` bytes from a
    constant shape, anywhere in its graphs or function library.

    Raises:
        TensorSizeError: naming where the op sits, the op, its shape and size (exit 3).
    """
    for meta in saved.meta_graphs:
        scopes = [("graph node", meta.graph_def.node)]
        scopes += [(f"function '{f.signature.name}'", f.node_def)
                   for f in meta.graph_def.library.function]
        for where, nodes in scopes:
            _check_nodes(path, where, list(nodes), limit)


def _check_nodes(path: str | Path, where: str, nodes: list[Any], limit: int) -> None:
    by_name = {n.name: n for n in nodes}
    fold = _Folder(by_name)
    for n in nodes:
        index = SHAPE_INPUT.get(n.op)
        data_inputs = [i for i in n.input if not i.startswith("^")]
        if n.op == "Range":
            shape = _range_length(fold, data_inputs)
        elif index is None or index >= len(data_inputs):
            continue
        else:
            shape = fold.value(data_inputs[index])
        if shape is None or any(d < 0 for d in shape):
            continue
        elements = math.prod(shape)
        nbytes = elements * _itemsize(n)
        if nbytes <= limit:
            continue
        place = f"graph node '{n.name}'" if where == "graph node" else \
            f"{where}, node '{n.name}'"
        what = "multiplies its input by" if n.op == "Tile" else "allocates"
        raise TensorSizeError(
            path, f"{place} runs {n.op}, which {what} a constant shape {tuple(shape)}: "
            f"{elements:,} values, {nbytes / 2**30:.1f} GiB, over the {limit / 2**30:.1f} GiB "
            "edgeq lets one tensor take (checked before loading)", tensor_name=n.name, op=n.op,
            hint="no edge target holds such a tensor; re-export the model without it")


def _range_length(fold: "_Folder", inputs: list[str]) -> list[int] | None:
    """tf.range(start, limit, delta) of constant integers: [its length]."""
    values = [fold.value(i) for i in inputs[:3]]
    if len(values) != 3 or any(v is None or len(v) != 1 for v in values):
        return None
    start, limit, delta = (v[0] for v in values)  # type: ignore[index]
    if delta == 0:
        return None
    return [max(0, -(-(limit - start) // delta))]


def _itemsize(node: Any) -> int:
    for key in ("dtype", "T", "Tout", "Tidx"):
        if key in node.attr and node.attr[key].WhichOneof("value") == "type":
            return _BYTES.get(node.attr[key].type, 4)
    return 4


class _Folder:
    """Integer vectors computed from constants, by tensor name ("node", "node:0",
    "node:output:0"); None when a value depends on anything else."""

    def __init__(self, nodes: dict[str, Any]) -> None:
        self.nodes = nodes
        self.ops: dict[str, Callable[[Any, int], list[int] | None]] = {
            "Const": self._const, "Identity": self._first, "Cast": self._first,
            "StopGradient": self._first, "Pack": self._pack, "ConcatV2": self._concat,
            "Mul": self._binary(lambda a, b: a * b), "Add": self._binary(lambda a, b: a + b),
            "AddV2": self._binary(lambda a, b: a + b), "Maximum": self._binary(max)}

    def value(self, tensor: str, depth: int = 0) -> list[int] | None:
        node = self.nodes.get(tensor.lstrip("^").split(":")[0])
        if node is None or depth > _FOLD_DEPTH or node.op not in self.ops:
            return None
        return self.ops[node.op](node, depth + 1)

    def _inputs(self, node: Any, depth: int) -> Iterable[list[int] | None]:
        return (self.value(i, depth) for i in node.input if not i.startswith("^"))

    def _const(self, node: Any, depth: int) -> list[int] | None:
        t = node.attr["value"].tensor if "value" in node.attr else None
        if t is None:
            return None
        dims = [d.size for d in t.tensor_shape.dim]
        if len(dims) > 1 or any(d < 0 for d in dims) or math.prod(dims) > _MAX_CONST:
            return None
        values = list(t.int_val) or list(t.int64_val)
        if not values and t.tensor_content:
            width = 8 if t.dtype == 9 else 4  # DT_INT64 or DT_INT32
            raw = t.tensor_content[: width * _MAX_CONST]
            values = [int.from_bytes(raw[i:i + width], "little", signed=True)
                      for i in range(0, len(raw), width)]
        if not values:
            return None
        count = math.prod(dims) if dims else 1
        return (values + values[-1:] * count)[:count]  # TF repeats the last value

    def _first(self, node: Any, depth: int) -> list[int] | None:
        return next(iter(self._inputs(node, depth)), None)

    def _pack(self, node: Any, depth: int) -> list[int] | None:
        parts = list(self._inputs(node, depth))
        if any(p is None or len(p) != 1 for p in parts):
            return None
        return [p[0] for p in parts]  # type: ignore[index]

    def _concat(self, node: Any, depth: int) -> list[int] | None:
        parts = list(self._inputs(node, depth))[:-1]  # the last input is the axis
        if not parts or any(p is None for p in parts):
            return None
        return [v for p in parts for v in p]  # type: ignore[union-attr]

    def _binary(self, fn: Callable[[int, int], int]):
        def fold(node: Any, depth: int) -> list[int] | None:
            parts = list(self._inputs(node, depth))
            if len(parts) != 2 or parts[0] is None or parts[1] is None:
                return None
            a, b = parts
            if len(a) == 1:
                a = a * len(b)
            if len(b) == 1:
                b = b * len(a)
            if len(a) != len(b):
                return None
            # Clamped: a chain of Mul could otherwise build integers of a million digits.
            return [max(-_CLAMP, min(_CLAMP, fn(x, y))) for x, y in zip(a, b)]

        return fold
