"""Shapes read from a Keras model config without Keras: the tensors a serialized node refers
to, what the file declares beside them, and the output shapes of the layers that move values
without weights (reshape, pad, crop, upsample, merge). Shapes are per sample (no batch axis);
None stands for an unknown dimension or shape. Used by edgeq.formats.keras_sizes."""

from __future__ import annotations

import math
from typing import Any

Shape = tuple  # per sample (no batch axis); an entry of None is an unknown dimension


DIM_MAX = 2**63  # no tensor dimension is larger; a config's larger number is clamped to it


def dim(v: Any) -> int | None:
    """A dimension or count from a config: a non-negative int (clamped to DIM_MAX, so that
    products stay printable), else None."""
    if isinstance(v, int) and not isinstance(v, bool) and v >= 0:
        return min(v, DIM_MAX)
    return None


def parse_shape(v: Any, batch: bool = True) -> Shape | None:
    if not isinstance(v, (list, tuple)) or (batch and not v):
        return None
    return tuple(dim(d) for d in (v[1:] if batch else v))


def ints(v: Any, rank: int, default: int = 1) -> tuple[int | None, ...]:
    if isinstance(v, (list, tuple)):
        return tuple(dim(d) for d in v[:rank]) + (default,) * max(0, rank - len(v))
    return (dim(v) if v is not None else default,) * rank


def prod(dims: Any) -> int | None:
    return None if any(d is None for d in dims) else math.prod(dims)


def conv_len(n: int | None, k: int | None, s: int | None, d: int | None, padding: str,
              transpose: bool = False) -> int | None:
    if n is None or k is None or not s or d is None:
        return None
    span = (k - 1) * d + 1
    if transpose:
        return n * s if padding == "same" else (n - 1) * s + max(span - s, 0) + s
    if padding in ("same", "causal"):
        return -(-n // s)
    return max((n - span) // s + 1, 0)


def reshaping(cls: str, c: dict, x: Shape | None, shapes: list[Shape | None]) -> Shape | None:
    """Output shapes of the layers that move values without weights; None when unknown."""
    if cls == "Concatenate":
        if any(s is None for s in shapes) or len({len(s) for s in shapes}) != 1 or not shapes:
            return None
        axis = c.get("axis", -1)
        axis = axis if isinstance(axis, int) else -1
        rank = len(shapes[0])
        axis = axis - 1 if axis > 0 else axis  # the config's axis counts the batch
        if not -rank <= axis < rank:
            return None
        dims = [s[axis] for s in shapes]
        out = list(shapes[0])
        out[axis] = None if any(d is None for d in dims) else sum(dims)
        return tuple(out)
    if x is None:
        return None
    if cls == "Flatten":
        return (prod(x),)
    if cls == "Reshape":
        raw = c.get("target_shape")
        target = parse_shape(raw, batch=False) if raw else None
        if target is None or (any(d is None for d in target) and prod(x) is None):
            return None
        if list(c.get("target_shape")).count(-1) == 1:
            known = math.prod(d for d in target if d is not None)
            return tuple((prod(x) // known if known else 0) if d is None else d for d in target)
        return target
    if cls == "RepeatVector":
        return (dim(c.get("n")), *x)
    if cls == "Permute" and isinstance(c.get("dims"), list) and len(c["dims"]) == len(x):
        dims = c["dims"]
        return tuple(x[d - 1] if isinstance(d, int) and 1 <= d <= len(x) else None for d in dims)
    if cls.startswith(("UpSampling", "ZeroPadding", "Cropping")) and cls[-2:] in ("1D", "2D", "3D"):
        return spatial(cls, c, x)
    if cls in ("Resizing", "CenterCrop"):
        return (dim(c.get("height")), dim(c.get("width")), x[-1])
    return None


def spatial(cls: str, c: dict, x: Shape) -> Shape | None:
    rank = int(cls[-2])
    first = c.get("data_format") == "channels_first"
    spatial = list(x[1:] if first else x[:-1])
    if len(spatial) != rank:
        return None
    if cls.startswith("UpSampling"):
        key = "length" if rank == 1 else "size"
        size = ints(c.get(key, 2), rank, 2)
        spatial = [None if n is None or f is None else n * f for n, f in zip(spatial, size)]
    else:
        raw = c.get("padding" if cls.startswith("Zero") else "cropping", 1)
        sign = 1 if cls.startswith("Zero") else -1
        pairs = raw if isinstance(raw, list) and len(raw) == rank else [raw] * rank
        for i, pair in enumerate(pairs):
            both = pair if isinstance(pair, list) else [pair, pair]
            total = sum(dim(p) or 0 for p in both[:2])
            spatial[i] = None if spatial[i] is None else max(spatial[i] + sign * total, 0)
    return (x[0], *spatial) if first else (*spatial, x[-1])


def broadcast(shapes: list[Shape | None]) -> Shape | None:
    if not shapes or any(s is None for s in shapes) or len({len(s) for s in shapes}) != 1:
        return None
    return tuple(None if any(s[i] is None for s in shapes) else max(s[i] for s in shapes)
                 for i in range(len(shapes[0])))


def histories(node: Any) -> list[tuple[str, int, int]]:
    """(layer, node index, tensor index) of every tensor a serialized node refers to, in
    order: Keras 3 writes {"keras_history": [name, node, tensor]}, tf.keras [name, node,
    tensor, kwargs] lists (and bare triples for a model's inputs and outputs)."""
    found: list[tuple[str, int, int]] = []
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            history = item.get("keras_history")
            if isinstance(history, list) and len(history) == 3 and triple(history):
                found.append((history[0], history[1], history[2]))
                continue
            stack += reversed(list(item.values()))
        elif isinstance(item, list):
            if len(item) in (3, 4) and triple(item[:3]):
                found.append((item[0], item[1], item[2]))
                continue
            stack += reversed(item)
    return found


def output(outputs: dict[tuple[str, int], list[Shape | None]],
            history: tuple[str, int, int]) -> Shape | None:
    name, node, tensor = history
    found = outputs.get((name, node))
    return found[tensor] if found is not None and tensor < len(found) else None


def triple(v: list) -> bool:
    return isinstance(v[0], str) and dim(v[1]) is not None and dim(v[2]) is not None


def declared_shapes(node: Any) -> list[Shape | None]:
    """The shapes Keras 3 serialized beside each tensor of a node ({"class_name":
    "__keras_tensor__", "config": {"shape": ...}}): what the file declares, used only where
    the walk could not compute a shape itself."""
    found: list[Shape | None] = []
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if item.get("class_name") == "__keras_tensor__" and isinstance(item.get("config"), dict):
                found.append(parse_shape(item["config"].get("shape")))
                continue
            stack += reversed(list(item.values()))
        elif isinstance(item, list):
            stack += reversed(item)
    return found
