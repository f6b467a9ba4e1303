""".npy / .npz data read from their headers first and then bounded: object arrays, bombs,
oversized or misshapen arrays are refused before any allocation."""

from __future__ import annotations

import io
import math
import stat
import zipfile
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Callable, Iterator

import numpy as np

from edgeq.data.context import MAX_BYTES, InputSpec, LoadContext
from edgeq.data.labels import class_coverage, to_labels
from edgeq.formats.archive import check_header, check_member_count

_MAX_NPY_HEADER = 65536



# Data compresses far better than weights: binary masks saved as float32 with
# np.savez_compressed reach 705:1 (78 MiB in 111 KiB). Zeros, what a bomb is made of, deflate
# at 1011-1032:1, so this catches them without refusing sparse data; a file just under it still
# allocates no more than MAX_BYTES, the limit for any data set.
NPZ_MAX_RATIO = 1000



@dataclass(frozen=True)
class Header:
    shape: tuple[int, ...]
    dtype: np.dtype
    fortran: bool



def precheck(path: str | Path, role: str = "calibration", *, max_bytes: int = MAX_BYTES) -> None:
    """Header-only checks that need no model: a corrupt, pickled or oversized .npy/.npz is
    refused before anything heavy (TensorFlow, the model) is loaded. `load_dataset` checks the
    rest against the model's input.

    Raises:
        DataError: the file is not a readable .npy/.npz, holds object arrays, or would need more
            than ``max_bytes`` of memory.
    """
    p = Path(path)
    ctx = LoadContext(str(path), role, InputSpec(shape=()), None, max_bytes, False)
    if stat.S_ISDIR(ctx.check_path(p).st_mode) or p.suffix.lower() not in (".npz", ".npy"):
        return
    try:
        with open_members(p, p.suffix.lower() == ".npz") as members:
            for name, open_member in members.items():
                with open_member() as fp:
                    header = read_header(fp)
                check_dtype(header.dtype, name, ctx)
                ctx.check_size(header.dtype.itemsize * math.prod(header.shape),
                               f"{name} of shape {header.shape} and dtype {header.dtype}")
    except PermissionError as err:
        raise ctx.error("cannot be read (permission denied)") from err
    except (zipfile.BadZipFile, zlib.error, EOFError, ValueError, OSError) as err:
        raise ctx.error(
            f"not a valid {p.suffix.lower()} file ({err})",
            hint="write it with numpy: np.savez(path, x=inputs, y=labels) or np.save(path, inputs)",
        ) from err



def load_arrays(path: Path, ctx: LoadContext) -> tuple[np.ndarray, np.ndarray | None, list[str]]:
    kind = path.suffix.lower()
    try:
        with open_members(path, kind == ".npz") as members:
            return _read_xy(members, ctx)
    except PermissionError as err:
        raise ctx.error("cannot be read (permission denied)") from err
    except (zipfile.BadZipFile, zlib.error, EOFError, ValueError, OSError) as err:
        raise ctx.error(
            f"not a valid {kind} file ({err})",
            hint="write it with numpy: np.savez(path, x=inputs, y=labels) or np.save(path, inputs)",
        ) from err



@contextmanager
def open_members(path: Path, is_npz: bool) -> Iterator[dict[str, Callable[[], IO[bytes]]]]:
    if not is_npz:
        yield {"x": lambda: open(path, "rb")}
        return
    with zipfile.ZipFile(path) as zf:
        # Headers first (ArchiveError is a ValueError): a bomb, a false header or a method
        # zipfile inflates without bound is refused before a byte is inflated. zipfile then
        # returns no more than each header declares, and read_rows reads no more than the
        # .npy header declares.
        check_member_count(zf)
        for info in zf.infolist():
            check_header(info, max_ratio=NPZ_MAX_RATIO)
        names = [n for n in zf.namelist() if n.endswith(".npy")]
        yield {n[: -len(".npy")]: (lambda n=n: zf.open(n)) for n in names}



def _read_xy(
    members: dict[str, Callable[[], IO[bytes]]], ctx: LoadContext
) -> tuple[np.ndarray, np.ndarray | None, list[str]]:
    # Everything is decided from the headers, so a bad or huge file fails before any allocation.
    headers = {}
    for name, open_member in members.items():
        with open_member() as fp:
            headers[name] = read_header(fp)
    _check_keys(sorted(headers), ctx)
    hx, hy = headers["x"], headers.get("y")
    check_dtype(hx.dtype, "x", ctx)
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
        x = read_rows(fp, rows)
    y = None
    if hy is not None:
        with members["y"]() as fp:
            y = to_labels(read_rows(fp, None).reshape(-1), ctx)
    if single:
        notes.append(f"x {hx.shape} is a single sample without a batch axis; used as N=1")
        x = x[np.newaxis]
    if add_channel:
        notes.append(f"added a trailing channel axis: {x.shape} -> {(*x.shape, 1)}")
        x = x[..., np.newaxis]
    if k < n_full:
        notes.append(f"kept the first {k} of {n_full} samples")
        if y is not None:
            notes.extend(class_coverage(y, k))
            y = y[:k]
    return x, y, notes



def read_header(fp: IO[bytes]) -> Header:
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
    return Header(tuple(int(d) for d in shape), dtype, bool(fortran))



def read_rows(fp: IO[bytes], rows: int | None) -> np.ndarray:
    """Read an array, or its first ``rows`` rows, without unpickling (object dtypes are refused
    from the header before this runs, the equivalent of ``np.load(allow_pickle=False)``)."""
    header = read_header(fp)
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



def _check_keys(keys: list[str], ctx: LoadContext) -> None:
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



def check_dtype(dtype: np.dtype, name: str, ctx: LoadContext, to: str = "float32") -> None:
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



def _plan_shape(shape: tuple[int, ...], ctx: LoadContext) -> tuple[int, bool, bool]:
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



def _check_label_header(hy: Header, n: int, single: bool, ctx: LoadContext) -> None:
    check_dtype(hy.dtype, "y", ctx, to="int64")
    if hy.shape == (n,) or (single and hy.shape == ()):
        return
    if len(hy.shape) == 2 and hy.shape[0] == n:
        hint = "y looks one-hot; save class indices: y.argmax(axis=1)"
    else:
        hint = "save one integer class index per sample of x"
    raise ctx.error(f"y has shape {hy.shape} but x has {n} sample(s); y must be ({n},)", hint)
