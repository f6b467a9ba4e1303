"""Calibration, evaluation and training data (.npz, .npy, image folders) checked against a model."""

from __future__ import annotations

import io
import math
import zipfile
import zlib
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Callable, Iterator

import numpy as np

from edgeq.errors import DataError, TensorSizeError, UsageError
from edgeq.formats.archive import check_header, check_member_count

MAX_BYTES = 4 * 1024**3  # data is held in memory; past this a subset serves calibration better
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
_OPTION_FOR_ROLE = {
    "calibration": "--data", "evaluation": "--eval-data", "training": "--train-data"
}
_STATS_CHUNK = 1 << 22  # elements per float64 pass of _stats
_ROWS_CHUNK = 256  # samples per pass of the value checks
_MAX_NPY_HEADER = 65536
# Data compresses far better than weights: binary masks saved as float32 with
# np.savez_compressed reach 705:1 (78 MiB in 111 KiB). Zeros, what a bomb is made of, deflate
# at 1011-1032:1, so this catches them without refusing sparse data; a file just under it still
# allocates no more than MAX_BYTES, the limit for any data set.
NPZ_MAX_RATIO = 1000
_UINT8_NOTE = "used as 0..255 values; pass --input-scale 1/255 if the model expects 0..1"


@dataclass(frozen=True)
class InputSpec:
    """What the model expects of one sample, built by the caller from the model signature."""

    shape: tuple[int, ...]  # per sample, without the batch axis, e.g. (28, 28, 1)
    dtype: str = "float32"  # numpy name of the model's float input dtype
    name: str = "input"


@dataclass(frozen=True)
class Preprocess:
    """Applied to every sample, in float32: ``x = (x * scale - mean) / std``.

    ``mean`` and ``std`` hold one value, or one per channel (the last axis).
    """

    scale: float = 1.0
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)

    @classmethod
    def parse(
        cls, scale: str | float | None, mean: str | float | None, std: str | float | None
    ) -> Preprocess:
        """Build from the CLI strings: ``--input-scale 1/255 --mean 127.5 --std 0.5,0.5,0.5``.

        Raises:
            UsageError: a value is not a number or fraction, or a scale/std is not positive.
        """
        value = 1.0 if scale is None else _parse_number(str(scale), "--input-scale")
        if value <= 0:
            raise UsageError(f"--input-scale must be greater than 0, got '{scale}'")
        means = (0.0,) if mean is None else _parse_list(str(mean), "--mean")
        stds = (1.0,) if std is None else _parse_list(str(std), "--std")
        if any(s <= 0 for s in stds):
            raise UsageError(f"--std values must be greater than 0, got '{std}'")
        return cls(scale=value, mean=means, std=stds)

    def is_identity(self) -> bool:
        return self.scale == 1 and all(m == 0 for m in self.mean) and all(s == 1 for s in self.std)

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Preprocess a float32 array in place (channels on the last axis) and return it."""
        if self.scale != 1.0:
            x *= np.float32(self.scale)
        if any(m != 0 for m in self.mean):
            x -= np.asarray(self.mean, dtype=np.float32)
        if any(s != 1 for s in self.std):
            x /= np.asarray(self.std, dtype=np.float32)
        return x

    def describe(self) -> str:
        mean = ",".join(f"{m:g}" for m in self.mean)
        std = ",".join(f"{s:g}" for s in self.std)
        return f"x = (x * {self.scale:g} - {mean}) / {std}"


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
        notes += [] if self.y is None else _class_coverage(self.y, n)
        return replace(self, x=x, y=y, notes=(*self.notes, *notes), stats=_stats(x))

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
        return replace(self, x=x, y=y, notes=(*self.notes, *notes), stats=_stats(x))


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
    _check_preprocess(preprocess, spec)
    if max_samples is not None and max_samples < 1:
        raise UsageError(f"the number of {role} samples must be at least 1, got {max_samples}")
    ctx = _Ctx(str(path), role, spec, max_samples, max_bytes, require_labels, classes)
    p = Path(path)
    if not p.exists():
        raise ctx.error("no such file or folder", hint=f"check the path given to {ctx.option}")
    classes = None
    if p.is_dir():
        x, y, classes, notes = _load_image_dir(p, ctx)
        if preprocess.is_identity():
            notes.append(f"image pixels {_UINT8_NOTE}")
    elif p.is_file() and p.suffix.lower() in (".npz", ".npy"):
        raw, y, notes = _load_arrays(p, ctx)
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
        _check_finite(x, ctx, f" after {preprocess.describe()}")
        notes.append(f"preprocessed {preprocess.describe()}")
    if spec.dtype in ("float16", "float64"):  # integer model inputs are quantized by the caller
        x = x.astype(spec.dtype)
        notes.append(f"cast to the model's input dtype {spec.dtype}")
    return Dataset(np.ascontiguousarray(x), y, str(path), tuple(notes), _stats(x), classes)


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


def precheck(path: str | Path, role: str = "calibration", *, max_bytes: int = MAX_BYTES) -> None:
    """Header-only checks that need no model: a corrupt, pickled or oversized .npy/.npz is
    refused before anything heavy (TensorFlow, the model) is loaded. `load_dataset` checks the
    rest against the model's input.

    Raises:
        DataError: the file is not a readable .npy/.npz, holds object arrays, or would need more
            than ``max_bytes`` of memory.
    """
    p = Path(path)
    if not (p.is_file() and p.suffix.lower() in (".npz", ".npy")):
        return
    ctx = _Ctx(str(path), role, InputSpec(shape=()), None, max_bytes, False)
    try:
        with _open_members(p, p.suffix.lower() == ".npz") as members:
            for name, open_member in members.items():
                with open_member() as fp:
                    header = _read_header(fp)
                _check_dtype(header.dtype, name, ctx)
                ctx.check_size(header.dtype.itemsize * math.prod(header.shape),
                               f"{name} of shape {header.shape} and dtype {header.dtype}")
    except PermissionError as err:
        raise ctx.error("cannot be read (permission denied)") from err
    except (zipfile.BadZipFile, zlib.error, EOFError, ValueError, OSError) as err:
        raise ctx.error(
            f"not a valid {p.suffix.lower()} file ({err})",
            hint="write it with numpy: np.savez(path, x=inputs, y=labels) or np.save(path, inputs)",
        ) from err


# --- checks shared by the loaders ----------------------------------------------------------------


@dataclass(frozen=True)
class _Ctx:
    """What every loader needs: where the data came from and what it must fit."""

    source: str
    role: str
    spec: InputSpec
    max_samples: int | None
    max_bytes: int
    require_labels: bool
    classes: int | None = None  # labels must lie in [0, classes) when known

    @property
    def option(self) -> str:
        return _OPTION_FOR_ROLE.get(self.role, "the data option")

    def error(self, message: str, hint: str | None = None) -> DataError:
        return DataError(self.source, f"({self.role}) {message}", hint=hint)

    def rows(self, n: int) -> int:
        return n if self.max_samples is None else min(n, self.max_samples)

    def check_labels(self, has_labels: bool, hint: str) -> None:
        # Checked before reading any samples, so a large file fails fast.
        if self.require_labels and not has_labels:
            raise self.error(f"{self.role} data needs labels `y`, and this data has none", hint)

    def check_size(self, nbytes: int, what: str) -> None:
        if nbytes > self.max_bytes:
            raise self.error(
                f"{what} needs {nbytes / 1024**3:.1f} GiB in memory, over the "
                f"{self.max_bytes / 1024**3:.1f} GiB limit",
                hint="use a subset: a few hundred samples calibrate a model and a few thousand "
                "evaluate it",
            )


def _to_float32(raw: np.ndarray, ctx: _Ctx, notes: list[str], prep: Preprocess) -> np.ndarray:
    if raw.dtype.kind in "iu":
        notes.append(f"converted {raw.dtype} data to float32")
        # MLPerf-style models take raw 0..255 pixels, so this is only worth a note.
        if raw.dtype == np.uint8 and prep.is_identity() and raw.size and int(raw.max()) > 1:
            notes.append(f"uint8 data {_UINT8_NOTE}")
    with np.errstate(over="ignore"):  # float64 values past float32's range are reported below
        x = raw.astype(np.float32, order="C")
    _check_finite(x, ctx, " (or too large for float32)" if raw.dtype.itemsize > 4 else "")
    return x


def _check_finite(x: np.ndarray, ctx: _Ctx, how: str) -> None:
    """NaN or infinity in any sample is an error, naming the samples: one NaN in calibration
    data makes the ranges NaN (a model that outputs garbage), one in evaluation data a
    prediction that means nothing."""
    flat = x.reshape(len(x), -1) if x.ndim else x.reshape(1, -1)
    nans = infs = 0
    rows: list[np.ndarray] = []
    for start in range(0, len(flat), _ROWS_CHUNK):  # bounded temporaries on large sets
        part = flat[start:start + _ROWS_CHUNK]
        bad = ~np.isfinite(part)
        if bad.any():
            n_nan = int(np.isnan(part).sum())
            nans, infs = nans + n_nan, infs + int(bad.sum()) - n_nan
            rows.append(start + np.flatnonzero(bad.any(axis=1)))
    if not rows:
        return
    where = np.concatenate(rows)
    raise ctx.error(
        f"x holds {nans} NaN and {infs} infinite value(s){how} in {_samples(where, len(flat))}",
        hint="remove or repair those samples",
    )


def _samples(indices: np.ndarray, n: int, shown: int = 5) -> str:
    """'sample 4' or 'samples 4, 17 and 250 (3 of 500)', the first `shown` indices named."""
    idx = [int(i) for i in indices[:shown]]
    if len(indices) == 1:
        return f"sample {idx[0]}"
    listed = ", ".join(map(str, idx[:-1])) + f" and {idx[-1]}" if len(indices) <= shown \
        else ", ".join(map(str, idx)) + ", ..."
    return f"samples {listed} ({len(indices)} of {n})"


def _check_preprocess(prep: Preprocess, spec: InputSpec) -> None:
    channels = spec.shape[-1] if spec.shape else 1
    for option, values in (("--mean", prep.mean), ("--std", prep.std)):
        if len(values) not in (1, channels):
            raise UsageError(
                f"{option} has {len(values)} values but the model input '{spec.name}' has "
                f"{channels} channel(s) on its last axis {spec.shape}",
                hint="give one value for all channels, or one per channel",
            )


def _stats(x: np.ndarray) -> dict[str, float]:
    # Two passes over float64 chunks: exact statistics without a float64 copy of a large array.
    flat = x.reshape(-1)
    chunks = [flat[i : i + _STATS_CHUNK] for i in range(0, flat.size, _STATS_CHUNK)]
    size = max(flat.size, 1)
    mean = sum(float(c.sum(dtype=np.float64)) for c in chunks) / size
    var = sum(float(np.square(c.astype(np.float64) - mean).sum()) for c in chunks) / size
    lo, hi = (float(flat.min()), float(flat.max())) if flat.size else (0.0, 0.0)
    return {"n": int(x.shape[0]), "min": lo, "max": hi, "mean": mean, "std": math.sqrt(var)}


def _parse_number(text: str, option: str) -> float:
    try:
        numbers = [float(part) for part in text.split("/")]
    except ValueError:
        numbers = []
    if len(numbers) == 1:
        value = numbers[0]
    elif len(numbers) == 2 and numbers[1] != 0:
        value = numbers[0] / numbers[1]
    else:
        value = math.nan
    if not math.isfinite(value):
        raise UsageError(
            f"{option} '{text}' is not a number", hint="use a number or fraction: 0.5, 127.5, 1/255"
        )
    return value


def _parse_list(text: str, option: str) -> tuple[float, ...]:
    return tuple(_parse_number(part, option) for part in text.split(","))


# --- .npy / .npz ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Header:
    shape: tuple[int, ...]
    dtype: np.dtype
    fortran: bool


def _load_arrays(path: Path, ctx: _Ctx) -> tuple[np.ndarray, np.ndarray | None, list[str]]:
    kind = path.suffix.lower()
    try:
        with _open_members(path, kind == ".npz") as members:
            return _read_xy(members, ctx)
    except PermissionError as err:
        raise ctx.error("cannot be read (permission denied)") from err
    except (zipfile.BadZipFile, zlib.error, EOFError, ValueError, OSError) as err:
        raise ctx.error(
            f"not a valid {kind} file ({err})",
            hint="write it with numpy: np.savez(path, x=inputs, y=labels) or np.save(path, inputs)",
        ) from err


@contextmanager
def _open_members(path: Path, is_npz: bool) -> Iterator[dict[str, Callable[[], IO[bytes]]]]:
    if not is_npz:
        yield {"x": lambda: open(path, "rb")}
        return
    with zipfile.ZipFile(path) as zf:
        # Headers first (ArchiveError is a ValueError): a bomb, a false header or a method
        # zipfile inflates without bound is refused before a byte is inflated. zipfile then
        # returns no more than each header declares, and _read_rows reads no more than the
        # .npy header declares.
        check_member_count(zf)
        for info in zf.infolist():
            check_header(info, max_ratio=NPZ_MAX_RATIO)
        names = [n for n in zf.namelist() if n.endswith(".npy")]
        yield {n[: -len(".npy")]: (lambda n=n: zf.open(n)) for n in names}


def _read_xy(
    members: dict[str, Callable[[], IO[bytes]]], ctx: _Ctx
) -> tuple[np.ndarray, np.ndarray | None, list[str]]:
    # Everything is decided from the headers, so a bad or huge file fails before any allocation.
    headers = {}
    for name, open_member in members.items():
        with open_member() as fp:
            headers[name] = _read_header(fp)
    _check_keys(sorted(headers), ctx)
    hx, hy = headers["x"], headers.get("y")
    _check_dtype(hx.dtype, "x", ctx)
    n_full, single, add_channel = _plan_shape(hx.shape, ctx)
    if n_full == 0:
        raise ctx.error(f"x has shape {hx.shape}: zero samples", hint="save at least one sample")
    if hy is not None:
        _check_label_header(hy, n_full, single, ctx)
    ctx.check_labels(hy is not None, "save an .npz with x and y (integer class indices)")
    k = ctx.rows(n_full)
    rows = None if single else k  # a single sample has no batch axis to take rows from
    full = hx.fortran or rows is None
    read_bytes = hx.dtype.itemsize * math.prod(hx.shape if full else (k, *hx.shape[1:]))
    out_bytes = 4 * k * math.prod(ctx.spec.shape)
    ctx.check_size(max(read_bytes, out_bytes), f"x of shape {hx.shape} and dtype {hx.dtype}")

    extra = sorted(set(headers) - {"x", "y"})
    notes = [f"ignored arrays: {', '.join(extra)}"] if extra else []
    with members["x"]() as fp:
        x = _read_rows(fp, rows)
    y = None
    if hy is not None:
        with members["y"]() as fp:
            y = _labels(_read_rows(fp, None).reshape(-1), ctx)
    if single:
        notes.append(f"x {hx.shape} is a single sample without a batch axis; used as N=1")
        x = x[np.newaxis]
    if add_channel:
        notes.append(f"added a trailing channel axis: {x.shape} -> {(*x.shape, 1)}")
        x = x[..., np.newaxis]
    if k < n_full:
        notes.append(f"kept the first {k} of {n_full} samples")
        if y is not None:
            notes.extend(_class_coverage(y, k))
            y = y[:k]
    return x, y, notes


def _class_coverage(y: np.ndarray, k: int) -> list[str]:
    # Files sorted by label are common; their first rows would calibrate on one class only.
    kept, total = len(np.unique(y[:k])), len(np.unique(y))
    if kept == total:
        return []
    return [
        f"warning: the first {k} samples hold only {kept} of the {total} classes in y (the file "
        "looks sorted by label); shuffle it so the kept samples represent all classes"
    ]


def _read_header(fp: IO[bytes]) -> _Header:
    version = np.lib.format.read_magic(fp)
    if version not in ((1, 0), (2, 0), (3, 0)):
        raise ValueError(f"unsupported .npy format version {version}")
    # numpy reads the whole header before it checks its 10,000-byte limit, and a version 2
    # header may declare 4 GiB: the length is checked here, before anything is read.
    length = fp.read(2 if version == (1, 0) else 4)
    size = int.from_bytes(length, "little")
    if size > _MAX_NPY_HEADER:
        raise ValueError(f".npy header of {size} bytes (real headers are under 10,000)")
    header = io.BytesIO(length + fp.read(size))
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(header)
    else:
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(header)
    if any(d < 0 for d in shape):
        raise ValueError(f"negative dimension in shape {shape}")
    return _Header(tuple(int(d) for d in shape), dtype, bool(fortran))


def _read_rows(fp: IO[bytes], rows: int | None) -> np.ndarray:
    """Read an array, or its first ``rows`` rows, without unpickling (object dtypes are refused
    from the header before this runs, the equivalent of ``np.load(allow_pickle=False)``)."""
    header = _read_header(fp)
    shape = header.shape
    if rows is not None and not header.fortran:
        shape = (rows, *shape[1:])  # C order: the first rows are the first bytes
    count = math.prod(shape)
    data = fp.read(count * header.dtype.itemsize)
    if len(data) != count * header.dtype.itemsize:
        raise ValueError(f"truncated: {len(data)} of {count * header.dtype.itemsize} data bytes")
    array = np.frombuffer(data, dtype=header.dtype, count=count)
    if header.fortran:
        array = array.reshape(shape[::-1]).transpose()
        return array if rows is None else array[:rows]
    return array.reshape(shape)


def _check_keys(keys: list[str], ctx: _Ctx) -> None:
    if "x" in keys:
        return
    if not keys:
        raise ctx.error("holds no arrays", hint="save the inputs as x: np.savez(path, x=inputs)")
    if len(keys) == 1:
        raise ctx.error(
            f"holds one array named '{keys[0]}', but edgeq reads the inputs from 'x'",
            hint=f"name the array x: np.savez(path, x=data['{keys[0]}'])",
        )
    raise ctx.error(
        f"holds arrays {', '.join(repr(k) for k in keys)} but no 'x'",
        hint="name the inputs x and the labels y: np.savez(path, x=inputs, y=labels)",
    )


_KIND_NAMES = {"b": "boolean", "c": "complex", "U": "text", "S": "bytes", "V": "structured",
               "M": "datetime", "m": "timedelta"}


def _check_dtype(dtype: np.dtype, name: str, ctx: _Ctx, to: str = "float32") -> None:
    if dtype.hasobject:
        raise ctx.error(
            f"{name} is an object array; pickled/object arrays are refused for safety "
            "(loading them can run code)",
            hint=f"save {name} as a numeric array: np.asarray({name}, dtype=np.{to})",
        )
    if dtype.kind not in "iuf":
        raise ctx.error(
            f"{name} has dtype {dtype} ({_KIND_NAMES.get(dtype.kind, 'not numeric')}); only "
            "integer and floating-point data can be used",
            hint=f"convert it: np.asarray({name}, dtype=np.{to})",
        )


def _plan_shape(shape: tuple[int, ...], ctx: _Ctx) -> tuple[int, bool, bool]:
    """Return (number of samples, single sample without batch axis, add a channel axis)."""
    want = ctx.spec.shape
    if shape and shape[1:] == want:
        return shape[0], False, False
    if shape and (*shape[1:], 1) == want:
        return shape[0], False, True
    if shape == want or (*shape, 1) == want:
        return 1, True, shape != want
    sample = shape[1:]
    if len(sample) == len(want) == 3 and sample[0] == want[-1] and sample[1:] == want[:-1]:
        hint = "the samples look channels-first; save x.transpose(0, 2, 3, 1)"
    elif math.prod(sample) == math.prod(want):
        dims = ", ".join(str(d) for d in want)
        hint = f"the sizes match; if the layout is right, save x.reshape(-1, {dims})"
    else:
        hint = f"save samples of shape {want}, prepared the way the model was trained"
    raise ctx.error(
        f"x has shape {shape}: samples have shape {sample} but the model input "
        f"'{ctx.spec.name}' expects {want}",
        hint=hint,
    )


def _check_label_header(hy: _Header, n: int, single: bool, ctx: _Ctx) -> None:
    _check_dtype(hy.dtype, "y", ctx, to="int64")
    if hy.shape == (n,) or (single and hy.shape == ()):
        return
    if len(hy.shape) == 2 and hy.shape[0] == n:
        hint = "y looks one-hot; save class indices: y.argmax(axis=1)"
    else:
        hint = "save one integer class index per sample of x"
    raise ctx.error(f"y has shape {hy.shape} but x has {n} sample(s); y must be ({n},)", hint)


def output_classes(shape: tuple[int | None, ...]) -> int | None:
    """How many classes a label can name for a model whose first output has ``shape`` per
    sample (without the batch axis): the number of values in it. edgeq's top-1 is the argmax
    over a sample's flattened first output (edgeq.pipeline.verify.compare_accuracy,
    edgeq.regression, edgeq.emulator), so it can only ever predict 0 .. that number - 1.
    For a classifier that is its class count. A regression, detection or other output has no
    classes, so a label can never be right there. None when a dimension is unknown."""
    if any(d is None or d < 0 for d in shape):
        return None
    return math.prod(int(d) for d in shape)  # Python int: no overflow


def _labels(y: np.ndarray, ctx: _Ctx) -> np.ndarray:
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


def _labels_out_of_range(bad: np.ndarray, n: int, limit: int, ctx: _Ctx) -> DataError:
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


# --- image folders -------------------------------------------------------------------------------


def _load_image_dir(
    root: Path, ctx: _Ctx
) -> tuple[np.ndarray, np.ndarray | None, tuple[str, ...] | None, list[str]]:
    mode, size = _image_layout(ctx)
    try:
        files, labels, classes, notes = _list_images(root, ctx)
    except PermissionError as err:
        raise ctx.error(f"cannot be read ({err})") from err
    ctx.check_labels(labels is not None, "put the images in one sub-folder per class")
    if labels is not None and classes is not None:
        _check_class_folders(classes, labels, ctx)
    k = ctx.rows(len(files))
    ctx.check_size(4 * k * math.prod(ctx.spec.shape), f"{k} images of {ctx.spec.shape}")
    x = np.empty((k, *ctx.spec.shape), dtype=np.float32)
    for i, file in enumerate(files[:k]):
        x[i] = _decode_image(file, mode, size, root, ctx).reshape(ctx.spec.shape)
    notes.append(f"images decoded as {mode} and resized to {size[1]}x{size[0]} (bilinear)")
    if k < len(files):
        notes.append(f"kept the first {k} of {len(files)} images")
    y = None if labels is None else np.asarray(labels[:k], dtype=np.int64)
    return x, y, classes, notes


def _check_class_folders(names: tuple[str, ...], labels: list[int], ctx: _Ctx) -> None:
    """More class folders than the model has classes: the images in the folders past the
    model's last class carry labels it can never predict (see `_labels`)."""
    if ctx.classes is None or len(names) <= ctx.classes:
        return
    extra = names[ctx.classes:]
    held = sum(1 for label in labels if label >= ctx.classes)
    if not held:
        return  # the extra folders are empty: no label is out of range
    listed = ", ".join(f"'{n}'" for n in extra[:5]) + (", ..." if len(extra) > 5 else "")
    raise ctx.error(
        f"holds {len(names)} class folders but the model's first output has {ctx.classes} "
        f"classes: folder(s) {listed} (labels {ctx.classes}..{len(names) - 1}) hold {held} of "
        f"{len(labels)} images",
        hint="keep one sub-folder per model class, named so that their sorted order is the "
             "model's output order")


def _image_layout(ctx: _Ctx) -> tuple[str, tuple[int, int]]:
    """PIL mode and (width, height) for the model input, which must be channels-last."""
    shape = ctx.spec.shape
    if len(shape) == 3 and shape[-1] in (1, 3):
        return ("RGB" if shape[-1] == 3 else "L"), (shape[1], shape[0])
    if len(shape) == 2:
        return "L", (shape[1], shape[0])
    raise ctx.error(
        f"the model input '{ctx.spec.name}' expects {shape}, which is not an image of "
        "(height, width, 1 or 3 channels)",
        hint="prepare the images yourself and save them as .npz with x in the model's layout",
    )


def _is_image(p: Path) -> bool:
    # Hidden files include macOS '._name.jpg' resource forks, which are not images.
    return p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".") and p.is_file()


def _visible(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if not p.name.startswith(".")), key=lambda p: p.name)


def _list_images(
    root: Path, ctx: _Ctx
) -> tuple[list[Path], list[int] | None, tuple[str, ...] | None, list[str]]:
    entries = _visible(root)
    top = [p for p in entries if _is_image(p)]
    folders = {d.name: _visible(d) for d in entries if d.is_dir()}
    per_class = {name: [p for p in files if _is_image(p)] for name, files in folders.items()}
    if top and any(per_class.values()):
        raise ctx.error(
            "holds images both directly and in sub-folders",
            hint="use either a flat folder of images (no labels) or only one sub-folder per class",
        )
    if not top and not any(per_class.values()):
        raise ctx.error(
            f"holds no images ({' '.join(IMAGE_SUFFIXES)}), directly or in class sub-folders",
            hint=f"check the folder given to {ctx.option}",
        )
    others = sum(1 for p in entries if p.is_file() and not _is_image(p))
    others += sum(1 for fs in folders.values() for p in fs if p.is_file() and not _is_image(p))
    notes = [f"ignored {others} file(s) that are not images"] if others else []
    if top:
        return top, None, None, [f"{len(top)} images, no class sub-folders (no labels)", *notes]
    classes = tuple(per_class)
    # Round-robin over the classes, so any prefix (max_samples, take) stays class-balanced.
    order = [
        (files[i], label)
        for i in range(max(len(files) for files in per_class.values()))
        for label, files in enumerate(per_class.values())
        if i < len(files)
    ]
    notes.append(
        f"{len(order)} images in {len(classes)} class folders (label = sorted folder index), "
        "ordered round-robin over the classes"
    )
    empty = [name for name, files in per_class.items() if not files]
    if empty:
        notes.append(f"class folder(s) with no images: {', '.join(empty)}")
    return [f for f, _ in order], [label for _, label in order], classes, notes


def _decode_image(
    file: Path, mode: str, size: tuple[int, int], root: Path, ctx: _Ctx
) -> np.ndarray:
    from PIL import Image  # imported here: only image folders need Pillow

    try:
        with Image.open(file) as image:
            converted = image.convert(mode)  # first frame of a GIF; drops alpha
        if converted.size != size:
            converted = converted.resize(size, Image.Resampling.BILINEAR)
        return np.asarray(converted, dtype=np.float32)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise ctx.error(
            f"image '{file.relative_to(root)}' could not be decoded ({err})",
            hint="remove or replace that file",
        ) from err
