"""Reads and writes TFLite Micro's `OfflineMemoryAllocation` metadata, and reorders operators.

The format (tensorflow/lite/micro/micro_allocation_info.cc GetOfflinePlannedOffsets, and
micro/docs/memory_management.md): a model metadata entry named "OfflineMemoryAllocation" whose
buffer holds little-endian 32-bit words [version (1), subgraph count, tensor count, one offset
per tensor of every subgraph in order]. An offset is the tensor's byte offset in the arena's
planned head; -1 leaves the tensor to TFLM's online planner. TFLM refuses the model when the
count differs from the model's tensor count, and reads the words in place, so the buffer is
written 16-byte aligned, as the schema asks of every buffer (`force_align: 16`).

The flatbuffer is rewritten through the schema's object API (ai_edge_litert's
schema_py_generated, as edgeq reads models): every other field is carried over unchanged.
Operators run in the order the subgraph lists them (micro_interpreter_graph.cc InvokeSubgraph
loops over them), so a new order is a permutation of that list; the tensors keep their indices.
"""

from __future__ import annotations

import struct
from pathlib import Path

from edgeq.errors import ModelFileError

METADATA_NAME = "OfflineMemoryAllocation"
VERSION = 1
ONLINE = -1  # kOnlinePlannedBuffer: TFLM's own planner places the tensor
# edgeq's own metadata (TFLite keeps metadata it does not know): after a reorder, the original
# index of each operator, little-endian uint32s, so the plan can be taken out again.
ORDER_NAME = "edgeq_original_operator_order"
_ALIGN = 16


def read_offline_plan(model: bytes, source: str | Path = "model") -> dict[int, int] | None:
    """The offsets of subgraph 0's tensors that the model's metadata fixes (ONLINE ones left
    out), or None when it has no OfflineMemoryAllocation metadata."""
    from edgeq.formats.tflite import _schema

    m = _schema().Model.GetRootAs(model, 0)
    for k in range(m.MetadataLength()):
        meta = m.Metadata(k)
        if (meta.Name() or b"") != METADATA_NAME.encode():
            continue
        data = m.Buffers(meta.Buffer()).DataAsNumpy()
        raw = bytes(data) if not isinstance(data, int) else b""
        if len(raw) < 12 or len(raw) % 4:
            raise ModelFileError(source, f"its {METADATA_NAME} metadata is {len(raw)} bytes, "
                                 "not a header and 32-bit offsets")
        _, _, count = struct.unpack_from("<3I", raw)
        if len(raw) < 12 + 4 * count:
            raise ModelFileError(source, f"its {METADATA_NAME} metadata lists {count} tensors "
                                 f"but holds {(len(raw) - 12) // 4}")
        offsets = struct.unpack_from(f"<{count}i", raw, 12)
        n0 = m.Subgraphs(0).TensorsLength()
        return {i: o for i, o in enumerate(offsets[:n0]) if o != ONLINE}
    return None


def write_plan(model: bytes, offsets: dict[int, int], order: tuple[int, ...] | None = None
               ) -> bytes:
    """`model` with subgraph 0's operators in `order` and the tensors' arena offsets as
    OfflineMemoryAllocation metadata (replacing any such metadata already there); tensors of
    other subgraphs, and tensors absent from `offsets`, stay ONLINE. A new order is recorded
    (ORDER_NAME metadata: the original index of each operator) so that strip_plan can give
    back the model as it was.

    The same inputs give the same bytes.
    """
    return _rewrite(model, offsets, order)


def strip_plan(model: bytes) -> bytes:
    """`model` without edgeq's plan: no OfflineMemoryAllocation metadata (TFLM plans every
    tensor itself) and, where edgeq reordered the operators, the original order back."""
    return _rewrite(model, None, None)


def read_original_order(model: bytes) -> tuple[int, ...] | None:
    """The original index of each operator, when edgeq reordered them (ORDER_NAME)."""
    from edgeq.formats.tflite import _schema

    m = _schema().Model.GetRootAs(model, 0)
    for k in range(m.MetadataLength()):
        meta = m.Metadata(k)
        if (meta.Name() or b"") == ORDER_NAME.encode():
            raw = bytes(m.Buffers(meta.Buffer()).DataAsNumpy())
            return struct.unpack(f"<{len(raw) // 4}I", raw[: len(raw) // 4 * 4])
    return None


def _rewrite(model: bytes, offsets: dict[int, int] | None, order: tuple[int, ...] | None
             ) -> bytes:
    import flatbuffers

    from edgeq.formats.tflite import _schema

    schema = _schema()
    m = schema.ModelT.InitFromPackedBuf(model, 0)
    m.buffers = [_Aligned(b) for b in (m.buffers or [])]
    ops = m.subgraphs[0].operators or []
    original = read_original_order(model)
    kept = []
    for md in m.metadata or []:
        if _text(md.name) in (METADATA_NAME, ORDER_NAME):
            m.buffers[md.buffer].data = None  # the old plan's words: an empty buffer now
        else:
            kept.append(md)
    if offsets is None:  # strip: the original order back
        if original is not None and sorted(original) == list(range(len(ops))):
            restored = [None] * len(ops)
            for position, index in enumerate(original):
                restored[index] = ops[position]
            m.subgraphs[0].operators = restored
        m.metadata = kept or None
    else:
        counts = [len(sg.tensors or []) for sg in m.subgraphs]
        words = [ONLINE] * sum(counts)
        for i, off in offsets.items():
            if not 0 <= i < counts[0] or off < 0 or off % _ALIGN:
                raise ValueError(f"bad offline offset {off} for tensor {i}")
            words[i] = off
        entries = [(METADATA_NAME, struct.pack(f"<3I{len(words)}i", VERSION, len(counts),
                                               len(words), *words))]
        if order is not None and tuple(order) != tuple(range(len(ops))):
            if sorted(order) != list(range(len(ops))):
                raise ValueError("the operator order is not a permutation of the operators")
            m.subgraphs[0].operators = [ops[k] for k in order]
            base = original if original is not None else tuple(range(len(ops)))
            original = tuple(base[k] for k in order)
        if original is not None:
            entries.append((ORDER_NAME, struct.pack(f"<{len(original)}I", *original)))
        for name, blob in entries:
            meta = schema.MetadataT()
            meta.name = name
            meta.buffer = len(m.buffers)
            m.buffers.append(_Aligned(None, blob))
            kept.append(meta)
        m.metadata = kept
    builder = flatbuffers.Builder(len(model) + 4 * sum(len(sg.tensors or []) + len(
        sg.operators or []) for sg in m.subgraphs) + 1024)
    builder.Finish(m.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


class _Aligned:
    """A buffer packed with its data 16-byte aligned (the Python object API aligns to 4)."""

    def __init__(self, buffer, data: bytes | None = None) -> None:
        if buffer is not None:
            raw = buffer.data
            data = None if raw is None else bytes(bytearray(raw))
            self.offset, self.size = int(buffer.offset or 0), int(buffer.size or 0)
        else:
            self.offset = self.size = 0
        self.data = data

    def Pack(self, builder):  # the name ModelT.Pack calls
        from edgeq.formats.tflite import _schema

        schema = _schema()
        vector = None
        if self.data is not None:
            builder.StartVector(1, len(self.data), _ALIGN)
            builder.head -= len(self.data)
            builder.Bytes[builder.head:builder.head + len(self.data)] = self.data
            vector = builder.EndVector()
        schema.BufferStart(builder)
        if vector is not None:
            schema.BufferAddData(builder, vector)
        if self.offset:
            schema.BufferAddOffset(builder, self.offset)
        if self.size:
            schema.BufferAddSize(builder, self.size)
        return schema.BufferEnd(builder)


def _text(value) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value or "")
