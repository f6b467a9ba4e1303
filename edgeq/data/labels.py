"""Labels: integer class indices checked against the model's classes, and the words for them."""

from __future__ import annotations

import math

import numpy as np

from edgeq.data.context import LoadContext
from edgeq.errors import DataError

def output_classes(shape: tuple[int | None, ...]) -> int | None:
    """How many classes a label can name for a model whose first output has ``shape`` per
    sample (without the batch axis): the number of values in it. edgeq's top-1 is the argmax
    over a sample's flattened first output (edgeq.pipeline.verify.compare_accuracy,
    edgeq.commands.verify, edgeq.emulator), so it can only ever predict 0 .. that number - 1.
    For a classifier that is its class count. A regression, detection or other output has no
    classes, so a label can never be right there. None when a dimension is unknown."""
    if any(d is None or d < 0 for d in shape):
        return None
    return math.prod(int(d) for d in shape)  # Python int: no overflow



def to_labels(y: np.ndarray, ctx: LoadContext) -> np.ndarray:
    """Labels as int64 class indices: whole numbers (integer dtypes, or floats holding whole
    numbers) in [0, ctx.classes), or in int64 when the classes are not known. Out-of-range
    labels are refused, not counted as misses: 50 on a 10-class model (or every label 99)
    would give top-1 0 % for the float and the integer model alike, which reads as a result."""
    if y.dtype.kind == "f":
        bad = ~np.isfinite(y) | (y != np.round(y))
        if bad.any():
            i = int(np.argmax(bad))
            raise ctx.error(
                f"y must hold integer class indices, but sample {i} has label {y[i]}",
                hint="save y as integers, e.g. y.astype(np.int64)",
            )
    if y.size and y.min() < 0:
        i = int(np.argmin(y))
        raise ctx.error(
            f"y holds a negative label {y[i]} (sample {i})", hint="labels are class indices from 0"
        )
    # Compared in y's own dtype, before any cast: uint64 2^64 - 1 or a float 1e30 would wrap
    # or be undefined as int64.
    limit = ctx.classes if ctx.classes is not None else 2**63
    if y.dtype.kind == "f":
        high = y >= float(limit)
    elif limit > np.iinfo(y.dtype).max:
        high = np.zeros(y.shape, dtype=bool)  # no value of this dtype reaches it
    else:
        high = y >= limit
    if high.any():
        raise _labels_out_of_range(y[high], len(y), limit, ctx)
    return y.astype(np.int64, order="C")



def _labels_out_of_range(bad: np.ndarray, n: int, limit: int, ctx: LoadContext) -> DataError:
    values = sorted({int(v) for v in np.unique(bad)})  # Python ints: exact for any dtype
    shown = _values(values)
    count = f"{len(bad)} of {n} labels"
    if ctx.classes is None:
        return ctx.error(f"y holds labels too large to be class indices: {count} are {shown}",
                         hint="labels are class indices from 0, one per sample")
    if ctx.classes == 1:
        return ctx.error(
            f"the model's first output has 1 value per sample, so its top-1 (argmax) is always "
            f"class 0, and {count} are {shown}",
            hint="a single-value output (sigmoid, regression) has no classes for labels to "
                 "name; for a classifier, give it one output per class")
    return ctx.error(
        f"y holds labels outside the model's {limit} classes (0..{limit - 1}): {count} are "
        f"{shown}",
        hint=f"labels are indices into the model's first output ({limit} values per sample), "
             "in its order; check that the file belongs to this model")



def _values(values: list[int], shown: int = 5) -> str:
    """'50, 99 or 4611686018427387904'; past `shown`, the smallest few, '...', the largest."""
    if len(values) == 1:
        return str(values[0])
    if len(values) <= shown:
        return ", ".join(map(str, values[:-1])) + f" or {values[-1]}"
    return (", ".join(map(str, values[:shown - 1])) + f", ... or {values[-1]} "
            f"({len(values)} distinct values)")



def class_coverage(y: np.ndarray, k: int) -> list[str]:
    # Files sorted by label are common; their first rows would calibrate on one class only.
    kept, total = len(np.unique(y[:k])), len(np.unique(y))
    if kept == total:
        return []
    return [
        f"warning: the first {k} samples hold only {kept} of the {total} classes in y (the file "
        "looks sorted by label); shuffle it so the kept samples represent all classes"
    ]
