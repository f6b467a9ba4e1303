"""The Dataset type and `load_dataset`: calibration, evaluation and training data (.npz, .npy,
image folders) checked against a model's input before any conversion."""

from __future__ import annotations

import math
import stat
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from edgeq.data.arrays import load_arrays
from edgeq.data.context import MAX_BYTES, InputSpec, LoadContext
from edgeq.data.images import IMAGE_SUFFIXES, load_image_dir
from edgeq.data.labels import class_coverage
from edgeq.data.preprocess import Preprocess, check_preprocess
from edgeq.errors import TensorSizeError, UsageError

_STATS_CHUNK = 1 << 22  # elements per float64 pass of stats



ROWS_CHUNK = 256  # samples per pass of the value checks



UINT8_NOTE = "used as 0..255 values; pass --input-scale 1/255 if the model expects 0..1"



@dataclass(frozen=True, eq=False)  # eq on arrays is ambiguous; compare fields explicitly
class Dataset:
    """Samples ready for the model, with what was done to them."""

    x: np.ndarray  # (N, *spec.shape), float32 (or a float spec.dtype), C-contiguous, preprocessed
    y: np.ndarray | None  # (N,) int64 class indices
    source: str  # the path given
    notes: tuple[str, ...]  # what was done, in words, for the report
    stats: dict[str, float]  # n, min, max, mean, std of x after preprocessing
    classes: tuple[str, ...] | None = None  # class folder names, label i = classes[i]

    @property
    def n(self) -> int:
        return int(self.x.shape[0])

    def take(self, n: int) -> Dataset:
        """The first ``n`` samples (deterministic); the whole set when it has no more."""
        if n < 1:
            raise ValueError(f"take() needs n >= 1, got {n}")
        if n >= self.n:
            return self
        x = self.x[:n]
        y = None if self.y is None else self.y[:n]
        notes = [f"kept the first {n} of {self.n} samples"]
        notes += [] if self.y is None else class_coverage(self.y, n)
        return replace(self, x=x, y=y, notes=(*self.notes, *notes), stats=stats(x))

    def spread(self, n: int) -> Dataset:
        """``n`` samples evenly spaced through the set (deterministic). Data files are often
        sorted by class; the first n would calibrate on one class only."""
        if n < 1:
            raise ValueError(f"spread() needs n >= 1, got {n}")
        if n >= self.n:
            return self
        idx = np.linspace(0, self.n - 1, n).round().astype(np.int64)
        x = np.ascontiguousarray(self.x[idx])
        y = None if self.y is None else self.y[idx]
        notes = [f"used {n} of {self.n} samples, evenly spaced through the file"]
        return replace(self, x=x, y=y, notes=(*self.notes, *notes), stats=stats(x))



def load_dataset(
    path: str | Path,
    spec: InputSpec,
    preprocess: Preprocess | None = None,
    *,
    role: str = "calibration",
    max_samples: int | None = None,
    require_labels: bool = False,
    max_bytes: int = MAX_BYTES,
    classes: int | None = None,
) -> Dataset:
    """Load a data set and check it against the model input before any conversion.

    Args:
        path: an ``.npz`` (``x``, optional ``y``), an ``.npy`` (inputs only) or a folder of
            images, flat or with one sub-folder per class (label = sorted folder index).
        spec: the model's per-sample input shape, dtype and name.
        preprocess: scale/mean/std applied after conversion to float32; identity when None.
        role: "calibration", "evaluation" or "training"; named in every error.
        max_samples: keep only the first N samples (only those rows are read from the file).
        require_labels: fail when the data has no labels.
        max_bytes: refuse data that needs more memory than this.
        classes: how many classes a label may name (`output_classes` of the model's first
            output); labels outside [0, classes) are refused. None: only negative labels and
            labels past int64 are.

    Returns:
        The samples in the model's layout, labels when present, notes and value statistics.

    Raises:
        DataError: the data is missing, corrupt, or does not fit the model.
        UsageError: max_samples < 1, or --mean/--std do not match the model's channels.
    """
    preprocess = preprocess or Preprocess()
    check_preprocess(preprocess, spec)
    if max_samples is not None and max_samples < 1:
        raise UsageError(f"the number of {role} samples must be at least 1, got {max_samples}")
    ctx = LoadContext(str(path), role, spec, max_samples, max_bytes, require_labels, classes)
    p = Path(path)
    st = ctx.check_path(p)
    classes = None
    if stat.S_ISDIR(st.st_mode):
        x, y, classes, notes = load_image_dir(p, ctx)
        if preprocess.is_identity():
            notes.append(f"image pixels {UINT8_NOTE}")
    elif p.suffix.lower() in (".npz", ".npy"):
        raw, y, notes = load_arrays(p, ctx)
        x = _to_float32(raw, ctx, notes, preprocess)
    else:
        raise ctx.error(
            f"unsupported data format '{p.suffix or p.name}'",
            hint="give an .npz with arrays x (and y), an .npy, or a folder of images "
            f"({' '.join(IMAGE_SUFFIXES)}), optionally one sub-folder per class",
        )
    if not preprocess.is_identity():
        with np.errstate(over="ignore"):  # values pushed past float32 are reported below
            preprocess.apply(x)
        check_finite(x, ctx, f" after {preprocess.describe()}")
        notes.append(f"preprocessed {preprocess.describe()}")
    if spec.dtype in ("float16", "float64"):  # integer model inputs are quantized by the caller
        x = x.astype(spec.dtype)
        notes.append(f"cast to the model's input dtype {spec.dtype}")
    return Dataset(np.ascontiguousarray(x), y, str(path), tuple(notes), stats(x), classes)



def check_input_spec(spec: InputSpec, model: str | Path) -> None:
    """One sample of the model's input must be a tensor the runtimes can address: at most
    2^31 - 1 elements and under 4 GiB (the limits of edgeq.formats.tflite_check). This is
    checked before any sample is read, generated or converted. Otherwise a Keras model that
    declares a (65536, 65536, 3) input reaches numpy or the converter and runs out of memory
    instead of failing with a message.

    Raises:
        TensorSizeError: naming the input, its shape and size (exit 3: the model is past
            what the targets can run, not a bad file).
    """
    from edgeq.formats.tflite_check import MAX_ELEMENTS, MAX_TENSOR_BYTES

    elements = math.prod(spec.shape)  # Python int: exact
    nbytes = elements * np.dtype(spec.dtype).itemsize
    if elements <= MAX_ELEMENTS and nbytes <= MAX_TENSOR_BYTES:
        return
    limit = (f"over the {MAX_ELEMENTS} (2^31 - 1) elements TFLite's kernels can count"
             if elements > MAX_ELEMENTS else "4 GiB or more, past a 32-bit size_t")
    raise TensorSizeError(
        model, f"input '{spec.name}' of shape {spec.shape} {spec.dtype} has {elements} elements "
        f"per sample, {nbytes} bytes ({nbytes / 2**30:.1f} GiB): {limit}",
        tensor_name=spec.name,
        hint="no TFLite runtime can run it; give the model a smaller input (resolution, "
             "channels, sequence length)")



def _to_float32(raw: np.ndarray, ctx: LoadContext, notes: list[str], prep: Preprocess) -> np.ndarray:
    if raw.dtype.kind in "iu":
        notes.append(f"converted {raw.dtype} data to float32")
        # MLPerf-style models take raw 0..255 pixels, so this is only worth a note.
        if raw.dtype == np.uint8 and prep.is_identity() and raw.size and int(raw.max()) > 1:
            notes.append(f"uint8 data {UINT8_NOTE}")
    with np.errstate(over="ignore"):  # float64 values past float32's range are reported below
        x = raw.astype(np.float32, order="C")
    check_finite(x, ctx, " (or too large for float32)" if raw.dtype.itemsize > 4 else "")
    return x



def check_finite(x: np.ndarray, ctx: LoadContext, how: str) -> None:
    """NaN or infinity in any sample is an error, naming the samples: one NaN in calibration
    data makes the ranges NaN (a model that outputs garbage), one in evaluation data a
    prediction that means nothing."""
    flat = x.reshape(len(x), -1) if x.ndim else x.reshape(1, -1)
    nans = infs = 0
    rows: list[np.ndarray] = []
    for start in range(0, len(flat), ROWS_CHUNK):  # bounded temporaries on large sets
        part = flat[start:start + ROWS_CHUNK]
        bad = ~np.isfinite(part)
        if bad.any():
            n_nan = int(np.isnan(part).sum())
            nans, infs = nans + n_nan, infs + int(bad.sum()) - n_nan
            rows.append(start + np.flatnonzero(bad.any(axis=1)))
    if not rows:
        return
    where = np.concatenate(rows)
    raise ctx.error(
        f"x holds {nans} NaN and {infs} infinite value(s){how} in {samples_text(where, len(flat))}",
        hint="remove or repair those samples",
    )



def samples_text(indices: np.ndarray, n: int, shown: int = 5) -> str:
    """'sample 4' or 'samples 4, 17 and 250 (3 of 500)', the first `shown` indices named."""
    idx = [int(i) for i in indices[:shown]]
    if len(indices) == 1:
        return f"sample {idx[0]}"
    listed = ", ".join(map(str, idx[:-1])) + f" and {idx[-1]}" if len(indices) <= shown \
        else ", ".join(map(str, idx)) + ", ..."
    return f"samples {listed} ({len(indices)} of {n})"



def stats(x: np.ndarray) -> dict[str, float]:
    # Two passes over float64 chunks: exact statistics without a float64 copy of a large array.
    flat = x.reshape(-1)
    chunks = [flat[i : i + _STATS_CHUNK] for i in range(0, flat.size, _STATS_CHUNK)]
    size = max(flat.size, 1)
    mean = sum(float(c.sum(dtype=np.float64)) for c in chunks) / size
    var = sum(float(np.square(c.astype(np.float64) - mean).sum()) for c in chunks) / size
    lo, hi = (float(flat.min()), float(flat.max())) if flat.size else (0.0, 0.0)
    return {"n": int(x.shape[0]), "min": lo, "max": hi, "mean": mean, "std": math.sqrt(var)}
