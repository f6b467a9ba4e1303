"""A SavedModel's serving signature (input shape and dtype, output shapes) read from
`saved_model.pb` as data, with a protobuf wire-format reader of a few fields, before TensorFlow
is imported (TensorFlow's own protobuf classes import all of TensorFlow).

The fields read (tensorflow/core/protobuf/saved_model.proto, meta_graph.proto,
tensor_shape.proto): SavedModel.meta_graphs = 2; MetaGraphDef.signature_def = 5 (a map:
key = 1, value = 2); SignatureDef.inputs = 1, outputs = 2 (maps of TensorInfo);
TensorInfo.dtype = 2, tensor_shape = 3; TensorShapeProto.dim = 2 (Dim.size = 1),
unknown_rank = 3. Everything else is skipped by its length. A file this reader cannot follow
gives None: the data is then checked after loading, as before, and the loaded model decides.
"""

from __future__ import annotations

import math
from pathlib import Path

from edgeq.formats.keras_signature import DeclaredIO

SIGNATURE = "serving_default"
MAX_PB = 512 * 1024 * 1024  # larger graphs are left to TensorFlow (and the policy's limits)
# tensorflow/core/framework/types.proto: DataType -> numpy name
_DTYPES = {1: "float32", 2: "float64", 3: "int32", 4: "uint8", 5: "int16", 6: "int8",
           9: "int64", 10: "bool", 19: "float16"}


class _Stop(Exception):
    """The bytes are not the protobuf this reader expects."""


def savedmodel_io(directory: Path) -> DeclaredIO | None:
    """The serving signature's single input and its first output (in the loader's order, the
    output keys sorted), or None when the file does not state them plainly."""
    pb = directory / "saved_model.pb"
    try:
        if not pb.is_file() or pb.stat().st_size > MAX_PB:
            return None
        data = memoryview(pb.read_bytes())
        signature = None
        for meta in _fields(data, 2):
            for entry in _fields(meta, 5):
                key = next(iter(_fields(entry, 1)), None)
                if key is not None and bytes(key) == SIGNATURE.encode():
                    signature = next(iter(_fields(entry, 2)), None)
            if signature is not None:
                break
        if signature is None:
            return None
        inputs, outputs = _tensor_map(signature, 1), _tensor_map(signature, 2)
    except _Stop:
        return None
    if len(inputs) != 1 or not outputs:
        return None
    (name, (dtype, shape)), = inputs.items()
    if dtype is None or shape is None or len(shape) < 2 or any(d < 1 for d in shape[1:]):
        return None
    _, out_shape = outputs[sorted(outputs)[0]]
    classes = per_sample = None
    if out_shape is not None and len(out_shape) >= 2 and all(d >= 1 for d in out_shape[1:]):
        per_sample = tuple(out_shape[1:])
        classes = math.prod(per_sample)
    return DeclaredIO(tuple(shape[1:]), dtype, name, classes, None, per_sample)


def _tensor_map(signature: memoryview, field: int
                ) -> dict[str, tuple[str | None, list[int] | None]]:
    out = {}
    for entry in _fields(signature, field):
        key = next(iter(_fields(entry, 1)), None)
        info = next(iter(_fields(entry, 2)), None)
        if key is None or info is None:
            raise _Stop
        dtype = next(iter(_varints(info, 2)), None)
        shape_msg = next(iter(_fields(info, 3)), None)
        shape = None
        if shape_msg is not None and not any(_varints(shape_msg, 3)):  # not unknown_rank
            shape = [_signed(next(iter(_varints(dim, 1)), 0)) for dim in _fields(shape_msg, 2)]
        out[bytes(key).decode("utf-8", "replace")] = (_DTYPES.get(dtype), shape)
    return out


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value  # int64 -1: an unknown dimension


def _varint(data: memoryview, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if i >= len(data) or shift > 63:
            raise _Stop
        b = data[i]
        i += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return value, i


def _walk(data: memoryview):
    """(field number, wire type, value) for each field of one message."""
    i = 0
    while i < len(data):
        tag, i = _varint(data, i)
        field, wire = tag >> 3, tag & 7
        if wire == 0:
            value, i = _varint(data, i)
        elif wire == 1:
            value, i = None, i + 8
        elif wire == 5:
            value, i = None, i + 4
        elif wire == 2:
            size, i = _varint(data, i)
            if i + size > len(data):
                raise _Stop
            value, i = data[i:i + size], i + size
        else:  # groups: not in these messages
            raise _Stop
        if i > len(data):
            raise _Stop
        yield field, wire, value


def _fields(data: memoryview, number: int) -> list[memoryview]:
    return [v for f, w, v in _walk(data) if f == number and w == 2]


def _varints(data: memoryview, number: int) -> list[int]:
    return [v for f, w, v in _walk(data) if f == number and w == 0]
