"""Mutations of .tflite files for the robustness tests: random bit flips and truncations, and
targeted ones that inflate the fields native code trusts (tensor buffer indices, operator input
indices, opcode indices, vector lengths, shape dimensions, buffer sizes)."""

from __future__ import annotations

import random
import struct

from ai_edge_litert import schema_py_generated as schema


def _field_pos(table, slot_offset: int) -> int | None:
    rel = table._tab.Offset(slot_offset)
    return table._tab.Pos + rel if rel else None


def _vector_len_pos(table, slot_offset: int) -> int | None:
    rel = table._tab.Offset(slot_offset)
    return table._tab.Vector(rel) - 4 if rel else None


def targets(data: bytes) -> dict[str, list[int]]:
    """Byte positions of u32/i32 fields worth inflating, by kind."""
    model = schema.Model.GetRootAs(data, 0)
    found: dict[str, list[int]] = {k: [] for k in (
        "tensor_buffer", "op_input", "opcode_index", "vector_length", "shape_dim", "buffer_size")}
    for s in range(model.SubgraphsLength()):
        sg = model.Subgraphs(s)
        found["vector_length"] += [p for p in (_vector_len_pos(sg, 4), _vector_len_pos(sg, 10)) if p]
        for i in range(sg.TensorsLength()):
            t = sg.Tensors(i)
            if (p := _field_pos(t, 8)) is not None:
                found["tensor_buffer"].append(p)
            if (p := _vector_len_pos(t, 4)) is not None:
                found["vector_length"].append(p)
                found["shape_dim"] += [p + 4 + 4 * k for k in range(t.ShapeLength())]
        for j in range(sg.OperatorsLength()):
            op = sg.Operators(j)
            if (p := _field_pos(op, 4)) is not None:
                found["opcode_index"].append(p)
            if (p := _vector_len_pos(op, 6)) is not None:
                found["vector_length"].append(p)
                found["op_input"] += [p + 4 + 4 * k for k in range(op.InputsLength())]
    for b in range(model.BuffersLength()):
        if (p := _vector_len_pos(model.Buffers(b), 4)) is not None:
            found["buffer_size"].append(p)
    return found


_BIG = (1 << 31) - 1, 0xFFFFFFFF, 1 << 20, 1 << 16


def mutate(data: bytes, rng: random.Random, spots: dict[str, list[int]]) -> tuple[str, bytes]:
    """One mutant and the name of what was done."""
    buf = bytearray(data)
    kind = rng.choice(("bitflip", "truncate", "word", "inflate", "inflate", "inflate"))
    if kind == "bitflip":
        for _ in range(rng.randint(1, 8)):
            pos = rng.randrange(len(buf))
            buf[pos] ^= 1 << rng.randrange(8)
        return kind, bytes(buf)
    if kind == "truncate":
        return kind, bytes(buf[: rng.randrange(len(buf))])
    if kind == "word":
        pos = rng.randrange(0, len(buf) - 4) & ~3
        struct.pack_into("<I", buf, pos, rng.choice((*_BIG, rng.getrandbits(32))))
        return kind, bytes(buf)
    field = rng.choice([k for k, v in spots.items() if v])
    pos = rng.choice(spots[field])
    old = struct.unpack_from("<I", buf, pos)[0]
    if field == "shape_dim":
        value = rng.choice((0xFFFFFFFF, 0xFFFFFFFE, 1 << 30, old * 1000 + 7))
    else:
        value = rng.choice((*_BIG, old + 1, old + 17))
    struct.pack_into("<I", buf, pos, value & 0xFFFFFFFF)
    return f"inflate:{field}", bytes(buf)
