"""Reads a .tflite flatbuffer into plain values (ops, tensors, I/O) without TensorFlow.

Uses the flatbuffer schema module that ships with ai-edge-litert, so `edgeq analyze` and the
report can list ops and quantization parameters without importing TensorFlow or running an
interpreter.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

from edgeq.errors import ModelFileError
from edgeq.formats.tflite_check import check_model
from edgeq.formats.tflite_schema import enum_names as _enum_names
from edgeq.formats.tflite_schema import schema as _schema

_SMALL_CONSTANT_BYTES = 64
_INT_TYPES = {2: 4, 4: 8, 9: 1, 7: 2}  # TensorType INT32, INT64, INT8, INT16 -> bytes
_ITEM_BYTES = {"int8": 1, "uint8": 1, "int16": 2, "float16": 2, "int32": 4, "float32": 4,
               "int64": 8, "bool": 1}


@dataclass(frozen=True)
class TensorInfo:
    index: int
    name: str
    shape: tuple[int, ...]
    shape_signature: tuple[int, ...]
    dtype: str  # lower-case numpy-style name: "int8", "float32", ...
    scales: tuple[float, ...]
    zero_points: tuple[int, ...]
    quantized_dimension: int
    constant_bytes: int  # bytes of constant data held in the model (weights), 0 for activations
    # The stored value every element of a constant tensor holds, when they are all the same
    # (zero-padding constants); None otherwise or for activations.
    constant_fill: int | None = None
    # A variable tensor (e.g. SVDF's state): TFLM keeps it out of the planned arena.
    is_variable: bool = False

    @property
    def is_quantized(self) -> bool:
        return bool(self.scales)


@dataclass(frozen=True)
class OpInfo:
    index: int
    op: str  # builtin name (CONV_2D) or CUSTOM:<custom_code>
    version: int
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    # The op's builtin options as (name, value) pairs of plain values, in the schema's camelCase
    # (fusedActivationFunction, dilationWFactor, keepNumDims, alignCorners, ...).
    options: tuple[tuple[str, object], ...] = ()
    custom_options_bytes: int = 0  # e.g. the Edge TPU executable inside edgetpu-custom-op

    def option(self, name: str, default: object = None) -> object:
        return dict(self.options).get(name, default)


@dataclass(frozen=True)
class ModelInfo:
    ops: tuple[OpInfo, ...]
    tensors: tuple[TensorInfo, ...]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    subgraphs: int
    size_bytes: int
    # Values of small integer constant tensors (axes, paddings, strides, new shapes), by tensor
    # index: the placement rules need them and they cost nothing to keep.
    values: dict[int, tuple[int, ...]] = field(default_factory=dict)
    # A Vela-compiled model: the accelerator each ethos-u op's command stream was compiled for
    # ("ethos-u65-256"; "unknown" when the stream does not say), edgeq.formats.ethos_u.
    npu_configs: tuple[str, ...] = ()

    @property
    def op_names(self) -> tuple[str, ...]:
        return tuple(o.op for o in self.ops)

    @property
    def input_tensors(self) -> tuple[TensorInfo, ...]:
        return tuple(self.tensors[i] for i in self.inputs)

    @property
    def output_tensors(self) -> tuple[TensorInfo, ...]:
        return tuple(self.tensors[i] for i in self.outputs)

    @property
    def dynamic_tensors(self) -> tuple[TensorInfo, ...]:
        """Tensors whose shape signature has an unknown (-1) dimension."""
        return tuple(t for t in self.tensors if any(d < 0 for d in t.shape_signature))

    @property
    def weight_bytes(self) -> int:
        return sum(t.constant_bytes for t in self.tensors)

    def float_op_tensors(self) -> tuple[TensorInfo, ...]:
        """Float32 tensors that ops compute on (a full-integer model has none inside)."""
        used = {i for op in self.ops for i in (*op.inputs, *op.outputs) if i >= 0}
        return tuple(self.tensors[i] for i in sorted(used) if self.tensors[i].dtype == "float32")


def activation_bytes(shape: tuple[int, ...], dtype: str) -> int:
    """The bytes a tensor of this shape and dtype occupies in an interpreter's memory."""
    count = 1
    for d in shape:
        count *= max(d, 1)
    return count * _ITEM_BYTES.get(dtype, 4)


def builtin_op_names() -> tuple[str, ...]:
    """Every TFLite builtin op name the schema knows (for validating target profiles)."""
    return tuple(sorted(_enum_names("BuiltinOperator").values()))


def read_model(data: bytes, path: str | Path = "<bytes>") -> ModelInfo:
    """Parse a TFLite flatbuffer.

    Raises:
        ModelFileError: not a TFLite flatbuffer, or a malformed one (edgeq.formats.tflite_check).
    """
    check_model(data, path)  # every offset and index in range before the parser reads any
    try:
        return _model_info(data)
    except ModelFileError:
        raise
    except Exception as exc:  # the generated parser raises anything on corrupt data
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise ModelFileError(
            path, f"corrupt TFLite flatbuffer ({type(exc).__name__}: {first})"
        ) from exc


def read_model_file(path: str | Path) -> ModelInfo:
    from edgeq.formats.input_files import TFLITE_MAX, read_file

    p = Path(path)
    return read_model(read_file(p, "model", TFLITE_MAX, error=ModelFileError,
                                hint="check the path"), p)


def _model_info(data: bytes) -> ModelInfo:
    """The first subgraph's ops and tensors, read straight from the flatbuffer's tables.

    Not the schema's object API (`ModelT.InitFromPackedBuf`): it unpacks every field of every
    subgraph and buffer through the pure-Python flatbuffers runtime, 2.5-6 ms per op (a
    20,000-op model took over a minute; 10,000 subgraphs, half a minute), for the few fields
    read here. `check_model` has verified every table, vector and index this walk reads, so it
    reads with `struct` directly; the work is linear in the first subgraph's ops and tensors,
    and the other subgraphs are only counted (tools/bench_analyze.py measures it). Only the
    builtin-option tables (a union of ~150 tables) go through the schema's classes."""
    from flatbuffers.table import Table

    schema = _schema()
    ops_by_code = _enum_names("BuiltinOperator")
    types = _enum_names("TensorType")
    fb = _Flat(data)
    root = fb.u32(0)
    subgraphs = fb.tables(root, 2)
    sg = subgraphs[0]
    buffers = fb.tables(root, 4)

    tensors = []
    tensor_buffers: list[int] = []
    values: dict[int, tuple[int, ...]] = {}
    for i, at in enumerate(fb.tables(sg, 0)):
        q = fb.table(at, 4)
        scales = tuple(float(v) for v in fb.numbers(q, 2, "f")) if q else ()
        zps = tuple(fb.numbers(q, 3, "q")) if q else ()
        shape = tuple(fb.numbers(at, 0, "i"))
        sig = tuple(fb.numbers(at, 7, "i")) if fb.has(at, 7) else shape
        kind, index = fb.scalar(at, 1, "b", 0), fb.scalar(at, 2, "I", 0)
        tensor_buffers.append(index)
        nbytes, fill = 0, None
        if 0 < index < len(buffers):
            buf = buffers[index]
            if not fb.has(buf, 0):
                nbytes = fb.scalar(buf, 2, "Q", 0)  # stored after the flatbuffer (offset/size)
            else:
                raw = fb.blob(buf, 0)
                nbytes = len(raw)
                if 0 < nbytes <= _SMALL_CONSTANT_BYTES and kind in _INT_TYPES:
                    width = _INT_TYPES[kind]
                    values[i] = tuple(
                        int.from_bytes(raw[k:k + width], "little", signed=True)
                        for k in range(0, nbytes - nbytes % width, width))
                if nbytes:
                    fill = _uniform_fill(raw, kind)
        tensors.append(
            TensorInfo(
                index=i,
                name=_text(fb.blob(at, 3)),
                shape=shape,
                shape_signature=sig,
                dtype=types.get(kind, str(kind)).lower(),
                scales=scales,
                zero_points=zps,
                quantized_dimension=fb.scalar(q, 6, "i", 0) if q else 0,
                constant_bytes=nbytes,
                constant_fill=fill,
                is_variable=bool(fb.scalar(at, 5, "B", 0)),
            )
        )

    codes = []
    for at in fb.tables(root, 1):
        # Codes above 127 live in builtinCode; deprecatedBuiltinCode keeps old readers working.
        builtin = max(fb.scalar(at, 3, "i", 0), fb.scalar(at, 0, "b", 0))
        name = ops_by_code.get(builtin, f"BUILTIN_{builtin}")
        if name == "CUSTOM":
            name = f"CUSTOM:{_text(fb.blob(at, 1))}"
        codes.append((name, fb.scalar(at, 2, "i", 1)))
    ops = []
    npu_configs = []
    for i, at in enumerate(fb.tables(sg, 3)):
        name, version = codes[fb.scalar(at, 0, "I", 0)]
        kind, options = fb.scalar(at, 3, "B", 0), fb.table(at, 4)
        ops.append(
            OpInfo(
                index=i,
                op=name,
                version=version,
                inputs=tuple(fb.numbers(at, 1, "i")),
                outputs=tuple(fb.numbers(at, 2, "i")),
                options=_plain_options(schema.BuiltinOptionsCreator(kind, Table(data, options))
                                       if kind and options else None),
                custom_options_bytes=len(fb.blob(at, 5)),
            )
        )
        if name == "CUSTOM:ethos-u":
            npu_configs.append(_npu_config(fb, at, tensor_buffers, buffers))
    return ModelInfo(
        ops=tuple(ops),
        tensors=tuple(tensors),
        inputs=tuple(fb.numbers(sg, 1, "i")),
        outputs=tuple(fb.numbers(sg, 2, "i")),
        subgraphs=len(subgraphs),
        size_bytes=len(data),
        values=values,
        npu_configs=tuple(npu_configs),
    )


def resource_variable_names(data: bytes) -> set[bytes | None]:
    """The shared names of the VAR_HANDLE ops in every subgraph of a checked model: what TFLite
    Micro's Python interpreter counts (`count_resource_variables`) to size its resource
    variables, read here in linear time (its own count unpacks the whole model with the
    object API, seconds for a large one: edgeq.adapters.tflm)."""
    fb = _Flat(data)
    root = fb.u32(0)
    var_handle = {k for k, at in enumerate(fb.tables(root, 1))
                  if max(fb.scalar(at, 3, "i", 0), fb.scalar(at, 0, "b", 0)) == _VAR_HANDLE}
    names: set[bytes | None] = set()
    if not var_handle:
        return names
    for sg in fb.tables(root, 2):
        for at in fb.tables(sg, 3):
            if fb.scalar(at, 0, "I", 0) in var_handle:
                options = fb.table(at, 4)  # VarHandleOptions { container; shared_name }
                names.add(fb.blob(options, 1) if options and fb.has(options, 1) else None)
    return names


_VAR_HANDLE = 142  # BuiltinOperator.VAR_HANDLE


class _Flat:
    """Field reads on a flatbuffer that `check_model` has verified (positions are absolute)."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def u32(self, pos: int) -> int:
        return _U32.unpack_from(self.data, pos)[0]

    def _field(self, table: int, slot: int) -> int:
        """Absolute position of field `slot` of the table at `table`; 0 when absent."""
        vtable = table - _I32.unpack_from(self.data, table)[0]
        entry = 4 + 2 * slot
        if entry >= _U16.unpack_from(self.data, vtable)[0]:
            return 0
        off = _U16.unpack_from(self.data, vtable + entry)[0]
        return table + off if off else 0

    def has(self, table: int, slot: int) -> bool:
        return self._field(table, slot) != 0

    def scalar(self, table: int, slot: int, fmt: str, default: int) -> int:
        at = self._field(table, slot)
        return struct.unpack_from("<" + fmt, self.data, at)[0] if at else default

    def table(self, table: int, slot: int) -> int:
        at = self._field(table, slot)
        return at + self.u32(at) if at else 0

    def _vector(self, table: int, slot: int) -> tuple[int, int]:
        at = self._field(table, slot)
        if not at:
            return 0, 0
        at += self.u32(at)
        return at + 4, self.u32(at)

    def tables(self, table: int, slot: int) -> list[int]:
        """The positions of the tables a vector of offsets points to."""
        start, n = self._vector(table, slot)
        offsets = struct.unpack_from(f"<{n}I", self.data, start) if n else ()
        return [start + 4 * k + off for k, off in enumerate(offsets)]

    def numbers(self, table: int, slot: int, fmt: str) -> tuple:
        start, n = self._vector(table, slot)
        return struct.unpack_from(f"<{n}{fmt}", self.data, start) if n else ()

    def blob(self, table: int, slot: int) -> bytes:
        """A string's or a byte vector's bytes (b"" when absent)."""
        start, n = self._vector(table, slot)
        return bytes(self.data[start:start + n])


_U32, _I32, _U16 = struct.Struct("<I"), struct.Struct("<i"), struct.Struct("<H")
def _npu_config(fb: _Flat, op: int, tensor_buffers: list[int], buffers: list[int]) -> str:
    """The accelerator an ethos-u op's command stream (its first input's buffer) was compiled
    for; "unknown" when the stream does not say (edgeq.formats.ethos_u)."""
    from edgeq.formats.ethos_u import compiled_for

    inputs = fb.numbers(op, 1, "i")
    first = inputs[0] if inputs else -1
    index = tensor_buffers[first] if 0 <= first < len(tensor_buffers) else 0
    buf = buffers[index] if 0 < index < len(buffers) else 0
    found = compiled_for(fb.blob(buf, 0)) if buf and fb.has(buf, 0) else None
    return found.accelerator if found is not None else "unknown"


def _uniform_fill(data: bytes, tensor_type: int) -> int | None:
    if data.count(data[:1]) != len(data):
        return None
    if tensor_type == 9:  # INT8
        return int.from_bytes(data[:1], "little", signed=True)
    if tensor_type == 3:  # UINT8
        return data[0]
    return 0 if data[0] == 0 else None


def _plain_options(options) -> tuple[tuple[str, object], ...]:
    if options is None:
        return ()
    return tuple(sorted((k, v) for k, v in vars(options).items()
                        if isinstance(v, (bool, int, float))))


def _text(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)
