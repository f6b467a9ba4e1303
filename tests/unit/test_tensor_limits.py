"""Sizes from .tflite shapes in Python integers (issue 14, item 4): tensors past 32-bit
arithmetic are refused by edgeq.formats.tflite_check before any interpreter reads the file,
naming the tensor and its op; TFLite Micro's planner limit is edgeq.formats.kernel_limits'.

The hostile files are hello_world rebuilt with one tensor's shape changed (the flatbuffers
object API; no TensorFlow, no interpreter)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgeq.errors import ModelFileError, TensorSizeError
from edgeq.formats.kernel_limits import PLANNER_MAX_BYTES, activation_total, check_arena_sizes
from edgeq.formats.tflite import read_model
from edgeq.formats.tflite_check import MAX_ELEMENTS, MAX_TENSOR_BYTES
from edgeq.status import ExitStatus
from tests.conftest import FIXTURES

HELLO = FIXTURES / "models" / "tflm" / "hello_world_int8.tflite"
INPUT = "serving_default_dense_input:0"  # tensor 0, read by op 0 FULLY_CONNECTED
OUTPUT = "StatefulPartitionedCall:0"  # tensor 9, made by op 2 FULLY_CONNECTED
FLOAT32 = 0


def hostile(shape: list[int], tensor: int = 0, dtype: int | None = None) -> bytes:
    """hello_world with tensor ``tensor`` given ``shape`` (and ``dtype``), written by the
    flatbuffers builder: the file is well formed, only the sizes are extreme."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(HELLO.read_bytes(), 0)
    t = model.subgraphs[0].tensors[tensor]
    t.shape, t.shapeSignature = list(shape), None
    if dtype is not None:
        t.type = dtype
    builder = flatbuffers.Builder(4096)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


@pytest.mark.parametrize("shape, dtype, elements, nbytes, why", [
    # exactly 2^32 bytes: TFLite Micro's int element count wrapped it to a 0-byte arena
    ([1, 65536, 65536], None, 2**32, 2**32, "2^31 - 1"),
    ([3, 5, 17, 257, 65537], None, 2**32 - 1, 2**32 - 1, "2^31 - 1"),  # 2^32 - 1 bytes
    ([2, 2**30], None, 2**31, 2**31, "2^31 - 1"),  # 2^31 elements of int8
    ([1, 2**30], FLOAT32, 2**30, 2**32, "4 GiB or more"),  # elements fit, bytes do not
])
def test_tensor_past_32_bit_sizes_is_refused_naming_tensor_and_op(shape, dtype, elements,
                                                                  nbytes, why):
    with pytest.raises(TensorSizeError) as caught:
        read_model(hostile(shape, dtype=dtype), "m.tflite")
    err = caught.value
    assert err.exit_status == ExitStatus.TARGET_CONSTRAINT
    assert (err.tensor, err.tensor_name, err.op) == (0, INPUT, "input of op 0 FULLY_CONNECTED")
    text = str(err)
    assert "\n" not in text and text.startswith("model 'm.tflite': tensor 0 ")
    assert f"{shape}" in text and f"{elements} elements, {nbytes} bytes" in text and why in text


def test_the_op_that_makes_a_tensor_is_named():
    with pytest.raises(TensorSizeError, match="output of op 2 FULLY_CONNECTED") as caught:
        read_model(hostile([1, 65536, 65536], tensor=9), "m.tflite")
    assert caught.value.tensor == 9 and caught.value.tensor_name == OUTPUT


def test_the_largest_sizes_that_fit_pass():
    # 2^31 - 1 elements of int8, and float32 just under 4 GiB: every runtime counts them.
    for shape, dtype in (([MAX_ELEMENTS], None), ([1, 2**30 - 1], FLOAT32)):
        info = read_model(hostile(shape, dtype=dtype))
        assert info.tensors[0].shape == tuple(shape)
    assert MAX_ELEMENTS == 2**31 - 1 and MAX_TENSOR_BYTES == 2**32 - 1


def test_element_counts_past_int64_are_a_damaged_file():
    """2^64 elements: numpy's int64 product wraps to 0 and would call the tensor empty; no
    TensorFlow shape holds it, so the file is damaged (exit 2), not too big for a target."""
    shape = [65536, 65536, 65536, 65536]
    assert int(np.prod(np.array(shape, dtype=np.int64))) == 0  # the trap this guards against
    with pytest.raises(ModelFileError, match=r"18446744073709551616 elements are more than any "
                       r"TensorFlow shape holds \(2\^63 - 1\)") as caught:
        read_model(hostile(shape), "m.tflite")
    assert caught.value.exit_status == ExitStatus.BAD_INPUT
    assert "tensor 0" in str(caught.value)


def test_negative_dimension_is_a_damaged_file():
    with pytest.raises(ModelFileError, match=r"tensor 0 has a negative dimension in its shape "
                       r"\[1, -65536\]"):
        read_model(hostile([1, -65536]), "m.tflite")


def test_a_defect_elsewhere_takes_precedence_over_size():
    """A file that is both damaged and oversized is reported as damaged (exit 2)."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(hostile([1, 65536, 65536]), 0)
    op = model.subgraphs[0].operators[1]
    op.inputs = [77, *list(op.inputs)[1:]]
    builder = flatbuffers.Builder(4096)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    with pytest.raises(ModelFileError, match="refers to tensor 77"):
        read_model(bytes(builder.Output()), "m.tflite")


# --- TFLite Micro's planner: sizes and offsets are C ints ----------------------------------------


def test_tflm_planner_limit_names_the_largest_activation():
    # 2^31 - 1 int8 elements pass every tensor rule, but aligned to 16 bytes that one buffer is
    # 2^31 bytes: the planner's int size would wrap.
    info = read_model(hostile([1, MAX_ELEMENTS]))
    assert activation_total(info) > PLANNER_MAX_BYTES
    with pytest.raises(TensorSizeError) as caught:
        check_arena_sizes(info, "m.tflite")
    err = caught.value
    assert err.exit_status == ExitStatus.TARGET_CONSTRAINT and err.tensor == 0
    text = str(err)
    assert f"add up to {activation_total(info)} bytes" in text
    assert f"tensor 0 '{INPUT}' (input of op 0 FULLY_CONNECTED)" in text
    assert "32-bit int" in text and "\n" not in text


def test_tflm_planner_accepts_a_large_arena_under_2_gib():
    info = read_model(hostile([1, 2**30]))  # 1 GiB of int8: the arena is measured
    check_arena_sizes(info, "m.tflite")
    total = activation_total(info)
    assert 2**30 < total <= PLANNER_MAX_BYTES
    assert total == sum(math.ceil(max(math.prod(t.shape), 1) / 16) * 16
                        for t in info.tensors if t.constant_bytes == 0)


def test_first_arena_stays_below_what_tflm_can_hold():
    """The host build of TFLite Micro crashes (SIGSEGV) when handed an arena between 2^31 and
    2^32 bytes, even for hello_world: the first arena and its retries stay below 2^31."""
    from edgeq.adapters.tflm import _MAX_ARENA, first_arena_size

    info = read_model(hostile([1, 2**30]))
    assert first_arena_size(info) == _MAX_ARENA < 2**31
    assert first_arena_size(read_model(HELLO.read_bytes())) == 8 << 20  # small models: as before
