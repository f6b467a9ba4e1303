"""Checks a .tflite flatbuffer's structure before any parser or interpreter reads it.

Native runtimes trust the file: TFLite Micro does not run the flatbuffers verifier, so an
offset or index that points outside the file reads foreign memory and crashes the process, and
the Python flatbuffers runtime raises arbitrary errors (IndexError, struct.error, or silently
reads from the end of the buffer on a negative offset). This module walks the file the way the
flatbuffers verifier does, plus the semantic checks an interpreter relies on:

- file identifier "TFL3", root offset, and every table, vtable, vector and string inside the file
  (4-byte aligned, field sizes within their table);
- at least one subgraph; tensor, operator-code, buffer and subgraph indices within range;
- buffers stored after the flatbuffer (offset/size, for >2 GB models) within the file, and every
  constant tensor's buffer large enough for its shape and type (LiteRT reads such buffers,
  TFLite Micro does not: `external_buffers` lists them for edgeq.adapters.tflm to refuse);
- shapes non-negative (shape signatures may use -1), a sane rank, and an element count a
  TensorFlow shape can hold (at most 2^63 - 1);
- quantization parameters consistent (as many zero points as scales, per-channel counts that
  match the quantized dimension).

Builtin-option tables (a union over ~150 tables) are checked generically: the table and its
vtable must lie inside the file; the vector fields of the three option tables that have them
are checked too. What this cannot know (the number of inputs each kernel expects) is why
interpreters on user files still run in a child process (`edgeq.process.isolation`).

Sizes are Python integers, computed from the shapes in the file, so nothing wraps. A sound
file can still describe tensors that the runtimes cannot address. Every runtime edgeq targets
counts a tensor's elements in a C `int`: `RuntimeShape::FlatSize()`
(tensorflow/lite/kernels/internal/runtime_shape.h), which every kernel uses, and TFLite Micro's
`BytesRequiredForTensor` (tensorflow/lite/micro/memory_helpers.cc, `int element_count`). A
microcontroller's `size_t` is 32 bits. So a tensor with more than 2^31 - 1 elements, or of
4 GiB or more, is refused before any interpreter reads the file. TFLite Micro used to wrap
[1, 65536, 65536] int8 to 0 bytes and reported it as fitting. The file is well formed, so this
is a `TensorSizeError` (exit 3), which names the tensor and its op (see that class for why).

Pure Python and `struct`: no TensorFlow, no flatbuffers runtime.
"""

from __future__ import annotations

import math
import struct
from pathlib import Path

from edgeq.errors import ModelFileError, TensorSizeError

IDENTIFIER = b"TFL3"
MAX_RANK = 16  # TFLite kernels handle up to 6 dims; 16 leaves room without letting a file
# make the check itself quadratic.
MAX_ELEMENTS = 2**31 - 1  # INT32_MAX: kernels and TFLite Micro count elements in a C int
MAX_TENSOR_BYTES = 2**32 - 1  # a 32-bit size_t (every MCU, 32-bit Arm Linux) ends here
# TensorFlow shapes count elements in int64 and refuse products past it (TFSA-2021-198), so a
# file whose dimensions multiply past 2^63 - 1 was not written by a converter: it is damaged.
MAX_SHAPE_ELEMENTS = 2**63 - 1
_HINT = "the file is damaged or not written by a TFLite converter; re-export it"

# TensorType -> bytes per element (None: variable-size types whose buffers are not checked).
# Sub-byte types are packed: the value is bits per element / 8.
_ELEMENT_BYTES: dict[int, float | None] = {
    0: 4, 1: 2, 2: 4, 3: 1, 4: 8, 5: None, 6: 1, 7: 2, 8: 8, 9: 1, 10: 8, 11: 16, 12: 8,
    13: None, 14: None, 15: 4, 16: 2, 17: 0.5, 18: 2, 19: 0.25, 20: 0.5, 21: 1, 22: 1,
}
# TensorType -> name, for messages (the schema's enum without importing it).
_TYPE_NAMES = {0: "float32", 1: "float16", 2: "int32", 3: "uint8", 4: "int64", 5: "string",
               6: "bool", 7: "int16", 8: "complex64", 9: "int8", 10: "float64",
               11: "complex128", 12: "uint64", 13: "resource", 14: "variant", 15: "uint32",
               16: "uint16", 17: "int4", 18: "bfloat16", 19: "int2", 20: "uint4",
               21: "float8e4m3fn", 22: "float8e5m2"}
# BuiltinOptions union members whose tables hold vectors of int32: {type: (field slots)}.
_OPTION_VECTORS = {17: (0,), 30: (0,), 3: (1, 2)}  # Reshape, Squeeze, ConcatEmbeddings


class _Invalid(Exception):
    """Raised inside the walk; becomes one ModelFileError naming the file."""


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.size = len(data)
        # Aliased tables can make a small file describe huge graphs; bound the total work.
        self.budget = 16 * self.size + 100_000

    def spend(self, n: int) -> None:
        self.budget -= n
        if self.budget < 0:
            raise _Invalid("it references more elements than its size allows (aliased tables)")

    def need(self, pos: int, n: int, what: str) -> None:
        if pos < 0 or n < 0 or pos + n > self.size:
            raise _Invalid(f"{what} at byte {pos} (+{n}) lies outside the {self.size}-byte file")

    def unpack(self, fmt: str, pos: int, what: str):
        self.need(pos, struct.calcsize(fmt), what)
        return struct.unpack_from(fmt, self.data, pos)[0]

    def table(self, pos: int, what: str) -> _Table:
        if pos % 4:
            raise _Invalid(f"{what} at byte {pos} is not 4-byte aligned")
        soffset = self.unpack("<i", pos, what)
        vtable = pos - soffset
        if vtable % 2:
            raise _Invalid(f"{what}: vtable at byte {vtable} is misaligned")
        vsize = self.unpack("<H", vtable, f"{what} vtable")
        tsize = self.unpack("<H", vtable + 2, f"{what} vtable")
        if vsize < 4 or vsize % 2:
            raise _Invalid(f"{what}: vtable size {vsize} is invalid")
        self.need(vtable, vsize, f"{what} vtable")
        if tsize < 4:
            raise _Invalid(f"{what}: table size {tsize} is invalid")
        self.need(pos, tsize, what)
        self.spend(vsize // 2)
        return _Table(self, pos, vtable, vsize, tsize, what)

    def offset_target(self, pos: int, what: str) -> int:
        off = self.unpack("<I", pos, what)
        if off == 0:
            raise _Invalid(f"{what}: null offset")
        target = pos + off
        self.need(target, 4, what)
        return target

    def vector(self, pos: int, elem: int, what: str) -> tuple[int, int]:
        """(first element position, length) of the vector whose length word is at `pos`."""
        if pos % 4:
            raise _Invalid(f"{what} at byte {pos} is not 4-byte aligned")
        n = self.unpack("<I", pos, what)
        self.need(pos + 4, n * elem, f"{what} ({n} elements)")
        return pos + 4, n

    def ints(self, start: int, n: int, fmt: str = "i") -> tuple[int, ...]:
        self.spend(n)
        return struct.unpack_from(f"<{n}{fmt}", self.data, start)


class _Table:
    def __init__(self, r: _Reader, pos: int, vtable: int, vsize: int, tsize: int, what: str):
        self.r, self.pos, self.vtable, self.vsize, self.tsize, self.what = (
            r, pos, vtable, vsize, tsize, what)

    def field(self, slot: int, nbytes: int) -> int | None:
        """Absolute position of field `slot`, or None when absent."""
        entry = 4 + 2 * slot
        if entry + 2 > self.vsize:
            return None
        rel = struct.unpack_from("<H", self.r.data, self.vtable + entry)[0]
        if rel == 0:
            return None
        if rel + nbytes > self.tsize:
            raise _Invalid(f"{self.what}: field {slot} runs past the end of its table")
        return self.pos + rel

    def scalar(self, slot: int, fmt: str, default: int = 0) -> int:
        at = self.field(slot, struct.calcsize(fmt))
        return default if at is None else struct.unpack_from("<" + fmt, self.r.data, at)[0]

    def target(self, slot: int, name: str) -> int | None:
        at = self.field(slot, 4)
        return None if at is None else self.r.offset_target(at, f"{self.what}.{name}")

    def vector(self, slot: int, elem: int, name: str) -> tuple[int, int] | None:
        at = self.target(slot, name)
        return None if at is None else self.r.vector(at, elem, f"{self.what}.{name}")

    def int_vector(self, slot: int, name: str, fmt: str = "i") -> tuple[int, ...] | None:
        vec = self.vector(slot, struct.calcsize(fmt), name)
        return None if vec is None else self.r.ints(vec[0], vec[1], fmt)

    def string(self, slot: int, name: str) -> None:
        vec = self.vector(slot, 1, name)
        if vec is not None:
            self.r.need(vec[0] + vec[1], 1, f"{self.what}.{name} terminator")

    def text(self, slot: int, name: str) -> str:
        """The string field's value (checked by `string` first), for messages."""
        vec = self.vector(slot, 1, name)
        if vec is None:
            return ""
        return self.r.data[vec[0]:vec[0] + min(vec[1], 200)].decode("utf-8", errors="replace")

    def sub_table(self, slot: int, name: str) -> _Table | None:
        at = self.target(slot, name)
        return None if at is None else self.r.table(at, f"{self.what}.{name}")

    def tables(self, slot: int, name: str) -> list[_Table]:
        vec = self.vector(slot, 4, name)
        if vec is None:
            return []
        start, n = vec
        self.r.spend(n)
        return [self.r.table(self.r.offset_target(start + 4 * i, f"{self.what}.{name}[{i}]"),
                             f"{name}[{i}]") for i in range(n)]


def _keras_file(data: bytes, path: str | Path) -> bool:
    """A .keras archive (a zip), a legacy .h5 (HDF5) or a file named like one."""
    return (bytes(data[:4]) == b"PK\x03\x04" or bytes(data[:8]) == b"\x89HDF\r\n\x1a\n"
            or str(path).lower().endswith((".keras", ".h5", ".hdf5")))


def check_model(data: bytes, path: str | Path = "<bytes>") -> None:
    """Return when the file is sound and every tensor is one the runtimes can address.

    Raises:
        ModelFileError: the first defect found, naming `path` (exit 2).
        TensorSizeError: a well-formed tensor too large for 32-bit size arithmetic (exit 3);
            raised only when the file has no defect, which would take precedence.
    """
    if len(data) < 8 or data[4:8] != IDENTIFIER:
        if _keras_file(data, path):
            raise ModelFileError(
                path, "is a Keras model, not a TFLite flatbuffer",
                hint=f"convert it first: edgeq convert {path} --target NAME --data calib.npz "
                     "writes the .tflite this command reads")
        raise ModelFileError(
            path, "not a TFLite flatbuffer (missing the 'TFL3' identifier)",
            hint="pass a .tflite file written by the TFLite converter",
        )
    try:
        oversized = _check(_Reader(bytes(data)))
    except _Invalid as exc:
        raise ModelFileError(path, f"malformed TFLite flatbuffer: {exc}", hint=_HINT) from None
    except (struct.error, IndexError, ValueError, OverflowError) as exc:  # a gap in the walk
        raise ModelFileError(path, f"malformed TFLite flatbuffer ({type(exc).__name__})",
                             hint=_HINT) from None
    if oversized:
        raise _size_error(path, oversized[0], len(oversized) - 1)


def external_buffers(data: bytes) -> tuple[int, ...]:
    """Indices of the buffers whose bytes lie after the flatbuffer (Buffer.offset/size, the
    layout of models over 2 GB) rather than in Buffer.data. Call on a file check_model passed."""
    r = _Reader(bytes(data))
    buffers = r.table(r.offset_target(0, "root offset"), "model").tables(4, "buffers")
    return tuple(i for i, b in enumerate(buffers) if b.scalar(1, "Q") > 1 and b.scalar(2, "Q"))


class _Oversized:
    """A tensor over MAX_ELEMENTS or MAX_TENSOR_BYTES, and the op that first uses it."""

    def __init__(self, subgraph: int, index: int, name: str, shape: tuple[int, ...],
                 dtype: int, elements: int, nbytes: int | None) -> None:
        self.subgraph, self.index, self.name, self.shape = subgraph, index, name, shape
        self.dtype, self.elements, self.nbytes = dtype, elements, nbytes
        self.op: str | None = None  # "output of op 3 CONV_2D", filled in by the operator walk


def _size_error(path: str | Path, t: _Oversized, more: int) -> TensorSizeError:
    where = f"subgraph {t.subgraph} tensor {t.index}" if t.subgraph else f"tensor {t.index}"
    what = f"{where} '{t.name}'" + (f" ({t.op})" if t.op else "")
    size = f"{t.elements} elements" + (f", {t.nbytes} bytes ({t.nbytes / 2**30:.1f} GiB)"
                                       if t.nbytes is not None else "")
    if t.elements > MAX_ELEMENTS:
        limit = (f"over the {MAX_ELEMENTS} (2^31 - 1) elements TFLite's kernels and TFLite "
                 "Micro can count (a 32-bit int)")
    else:
        limit = "4 GiB or more, past what a 32-bit size_t (a microcontroller's) can hold"
    extra = f"; {more} more tensor(s) like it" if more else ""
    return TensorSizeError(
        path, f"{what} of shape {list(t.shape)} {_TYPE_NAMES.get(t.dtype, t.dtype)} has {size}: "
        f"{limit}{extra}", tensor=t.index, tensor_name=t.name, op=t.op,
        hint="no TFLite runtime can run it; shrink the layer (input resolution, channels, "
             "sequence length) or split the model")


def _op_name(code: _Table) -> str:
    builtin = max(code.scalar(3, "i"), code.scalar(0, "b"))
    if builtin == 32:  # CUSTOM
        return f"CUSTOM:{code.text(1, 'custom_code')}"
    try:  # the schema module ships with ai-edge-litert; a name is a nicety, not a need
        from edgeq.formats.tflite_schema import enum_names

        return enum_names("BuiltinOperator").get(builtin, f"BUILTIN_{builtin}")
    except Exception:  # noqa: BLE001 - any import problem falls back to the number
        return f"BUILTIN_{builtin}"


def _check(r: _Reader) -> list[_Oversized]:
    """Walk the file; return the oversized tensors (raising _Invalid on any defect)."""
    model = r.table(r.offset_target(0, "root offset"), "model")
    codes = model.tables(1, "operator_codes")
    for i, code in enumerate(codes):
        code.string(1, "custom_code")
    subgraphs = model.tables(2, "subgraphs")
    if not subgraphs:
        raise _Invalid("it has no subgraph")
    model.string(3, "description")
    buffers = model.tables(4, "buffers")
    sizes = [_check_buffer(r, i, b) for i, b in enumerate(buffers)]
    for b in model.int_vector(5, "metadata_buffer") or ():
        _index(b, len(buffers), "metadata_buffer", "buffer")
    for i, meta in enumerate(model.tables(6, "metadata")):
        meta.string(0, "name")
        _index(meta.scalar(1, "I"), len(buffers), f"metadata[{i}]", "buffer")
    oversized: list[_Oversized] = []
    tensor_counts = [_check_subgraph(r, k, sg, codes, sizes, oversized)
                     for k, sg in enumerate(subgraphs)]
    for i, sig in enumerate(model.tables(7, "signature_defs")):
        k = sig.scalar(4, "I")
        _index(k, len(subgraphs), f"signature_defs[{i}]", "subgraph")
        sig.string(2, "signature_key")
        for slot, name in ((0, "inputs"), (1, "outputs")):
            for j, tmap in enumerate(sig.tables(slot, name)):
                tmap.string(0, "name")
                _index(tmap.scalar(1, "I"), tensor_counts[k], f"signature_defs[{i}].{name}[{j}]",
                       "tensor")
    return oversized


def _check_buffer(r: _Reader, i: int, buf: _Table) -> int:
    """Bytes of data the buffer holds, inside the flatbuffer or after it."""
    vec = buf.vector(0, 1, "data")
    offset, size = buf.scalar(1, "Q"), buf.scalar(2, "Q")
    if offset > 1:
        if offset + size > r.size:
            raise _Invalid(f"buffer {i} claims {size} bytes at offset {offset}, past the end of "
                           f"the {r.size}-byte file")
        return size
    return vec[1] if vec is not None else 0


def _index(value: int, count: int, where: str, what: str, *, optional: bool = False) -> None:
    if optional and value == -1:
        return
    if not 0 <= value < count:
        raise _Invalid(f"{where} refers to {what} {value}, but there are {count}")


def _check_subgraph(r: _Reader, k: int, sg: _Table, codes: list[_Table], sizes: list[int],
                    oversized: list[_Oversized]) -> int:
    tensors = sg.tables(0, "tensors")
    n = len(tensors)
    mine: dict[int, _Oversized] = {}
    for i, t in enumerate(tensors):
        found = _check_tensor(r, f"subgraph {k} tensor {i}", t, sizes)
        if found is not None:
            mine[i] = _Oversized(k, i, t.text(3, "name"), *found)
    for slot, name in ((1, "inputs"), (2, "outputs")):
        for j, idx in enumerate(sg.int_vector(slot, name) or ()):
            _index(idx, n, f"subgraph {k} {name}[{j}]", "tensor")
    for j, op in enumerate(sg.tables(3, "operators")):
        where = f"subgraph {k} operator {j}"
        code = op.scalar(0, "I")
        _index(code, len(codes), where, "operator code")
        for slot, name in ((1, "inputs"), (2, "outputs"), (8, "intermediates")):
            for idx in op.int_vector(slot, name) or ():
                _index(idx, n, f"{where} {name}", "tensor", optional=True)
                big = mine.get(idx)
                # Name the op that makes the tensor, else the first that reads it.
                if big is not None and (big.op is None or (slot == 2 and "output" not in big.op)):
                    role = {1: "input", 2: "output", 8: "intermediate"}[slot]
                    big.op = f"{role} of op {j} {_op_name(codes[code])}"
        _check_options(op, op.scalar(3, "B"), 4, where)
        _check_options(op, op.scalar(11, "B"), 12, where)
        op.vector(5, 1, "custom_options")
        op.vector(7, 1, "mutating_variable_inputs")
        large_off, large_size = op.scalar(9, "Q"), op.scalar(10, "Q")
        if large_off and large_off + large_size > r.size:
            raise _Invalid(f"{where}: custom options at offset {large_off} (+{large_size}) lie "
                           "past the end of the file")
    sg.string(4, "name")
    oversized.extend(mine.values())
    return n


def _check_options(op: _Table, kind: int, slot: int, where: str) -> None:
    table = op.sub_table(slot, "builtin_options")
    if table is None or kind == 0:
        return
    for vslot in _OPTION_VECTORS.get(kind, ()) if slot == 4 else ():
        table.vector(vslot, 4, f"builtin_options field {vslot}")


def _check_tensor(r: _Reader, where: str, t: _Table,
                  sizes: list[int]) -> tuple[tuple[int, ...], int, int, int | None] | None:
    """Check one tensor; return (shape, type, elements, bytes) when it is too large to run."""
    shape_vec = t.vector(0, 4, "shape")
    if shape_vec is not None and shape_vec[1] > MAX_RANK:
        raise _Invalid(f"{where} has rank {shape_vec[1]}, over {MAX_RANK}")
    shape = r.ints(*shape_vec) if shape_vec is not None else ()
    if any(d < 0 for d in shape):
        raise _Invalid(f"{where} has a negative dimension in its shape {list(shape)}")
    sig_vec = t.vector(7, 4, "shape_signature")
    if sig_vec is not None:
        if sig_vec[1] != len(shape):
            raise _Invalid(f"{where}: shape signature rank {sig_vec[1]} differs from shape rank "
                           f"{len(shape)}")
        sig = r.ints(*sig_vec)
        if any(s != d and s != -1 for s, d in zip(sig, shape)):
            raise _Invalid(f"{where}: shape signature {list(sig)} does not match shape "
                           f"{list(shape)}")
    dtype = t.scalar(1, "b")
    if dtype not in _ELEMENT_BYTES:
        raise _Invalid(f"{where} has unknown type {dtype}")
    t.string(3, "name")
    elements = math.prod(shape)  # a Python int: exact, whatever the dimensions
    if elements > MAX_SHAPE_ELEMENTS:
        raise _Invalid(f"{where} has shape {list(shape)}, whose {elements} elements are more "
                       "than any TensorFlow shape holds (2^63 - 1)")
    per = _ELEMENT_BYTES[dtype]
    # In integers, exact for the packed sub-byte types too (per is a multiple of 1/4): a float
    # product would round once elements pass 2^53.
    need = -(-elements * int(per * 4) // 4) if per is not None else 0
    buffer = t.scalar(2, "I")
    _index(buffer, max(len(sizes), 1), where, "buffer")
    sparse = t.sub_table(6, "sparsity") is not None
    held = sizes[buffer] if buffer < len(sizes) else 0
    if held and not sparse and per is not None and held < need:
        raise _Invalid(f"{where} of shape {list(shape)} needs {need} bytes of data, but its "
                       f"buffer {buffer} holds {held}")
    for v in t.tables(9, "variant_tensors"):
        v.vector(0, 4, "shape")
    q = t.sub_table(4, "quantization")
    if q is not None:
        _check_quantization(r, where, q, shape)
    if elements > MAX_ELEMENTS or need > MAX_TENSOR_BYTES:
        return shape, dtype, elements, (need if per is not None else None)
    return None


def _check_quantization(r: _Reader, where: str, q: _Table, shape: tuple[int, ...]) -> None:
    q.vector(0, 4, "min")
    q.vector(1, 4, "max")
    scales = q.vector(2, 4, "scale")
    zps = q.vector(3, 8, "zero_point")
    if q.scalar(4, "B"):
        q.sub_table(5, "details")
    n_scale = scales[1] if scales else 0
    n_zp = zps[1] if zps else 0
    if n_scale and n_zp and n_scale != n_zp:
        raise _Invalid(f"{where} has {n_scale} quantization scale(s) but {n_zp} zero point(s)")
    if n_scale > 1:
        # A dimension past the rank is tolerated: converters copy the weights' dimension to
        # 1-D biases (person_detect), and runtimes ignore it there.
        dim = q.scalar(6, "i")
        if dim < 0 or (dim < len(shape) and shape[dim] != n_scale):
            raise _Invalid(f"{where} has {n_scale} per-channel scales on dimension {dim} of "
                           f"shape {list(shape)}")
