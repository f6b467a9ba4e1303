"""Unit tests of the small value-computing pieces: I/O quantization, fidelity and accuracy
metrics, memory budgets, atomic outputs and the flatbuffer reader. No TensorFlow."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from edgeq.adapters.io_quant import dequantize, quantize
from edgeq.adapters.tflm import ArenaUsage, parse_allocations
from edgeq.errors import AccuracyGateError, ConversionError, ModelFileError, OutputExistsError
from edgeq.outputs.atomic import write_outputs
from edgeq.pipeline import gate
from edgeq.pipeline.verify import Accuracy, compare_accuracy, compare_fidelity
from edgeq.targets import load_target
from edgeq.formats.tflite import read_model

FIXTURES = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures"


def _detail(dtype, scale, zp):
    return {"dtype": dtype, "quantization_parameters": {"scales": np.array([scale]),
                                                        "zero_points": np.array([zp])}}


def test_quantize_rounds_clips_and_roundtrips():
    det = _detail(np.int8, 0.5, -10)
    q = quantize(np.array([0.0, 1.0, 1.24, 1000.0, -1000.0]), det)
    assert q.dtype == np.int8
    assert q.tolist() == [-10, -8, -8, 127, -128]
    assert dequantize(q[:2], det).tolist() == [0.0, 1.0]


def test_float_io_passes_through():
    det = {"dtype": np.float32, "quantization_parameters": {"scales": np.array([]),
                                                            "zero_points": np.array([])}}
    x = np.array([0.25, -3.0], np.float32)
    assert quantize(x, det).tolist() == x.tolist()
    assert dequantize(x, det).tolist() == x.tolist()


def test_fidelity_known_noise():
    f = np.ones((4, 10))
    q = f + 0.1  # noise power 0.01 per value against signal power 1 -> 20 dB
    fid = compare_fidelity([f], [q])
    assert math.isclose(fid.sqnr_db, 20.0, rel_tol=1e-9)
    assert fid.cosine == pytest.approx(1.0)
    assert compare_fidelity([f], [f]).sqnr_db is None  # identical: no noise to measure


def test_accuracy_and_agreement():
    f = np.eye(4)[[0, 1, 2, 3]]
    q = np.eye(4)[[0, 1, 3, 3]]
    acc = compare_accuracy(f, q, np.array([0, 1, 2, 2]), "tflm")
    assert acc.float == 0.75 and acc.quantized == 0.5
    assert acc.drop_pp == 25.0 and acc.agreement == 0.75 and acc.runtime == "tflm"
    assert compare_accuracy(f, q, None, "litert").float is None


def test_accuracy_gate():
    acc = Accuracy(0.9, 0.85, 5.0, 0.9, 100, "tflm")
    gate.enforce_accuracy(acc, None)
    gate.enforce_accuracy(acc, 5.0)
    with pytest.raises(AccuracyGateError) as err:
        gate.enforce_accuracy(acc, 1.0)
    assert err.value.exit_status == 4
    unlabelled = Accuracy(None, None, None, 0.97, 100, "tflm")
    with pytest.raises(AccuracyGateError, match="disagreement"):
        gate.enforce_accuracy(unlabelled, 2.0)


def test_memory_budget_against_profile():
    target = load_target("cortex-m4")  # 1 MiB flash, 256 KiB RAM
    ok = gate.check_memory(target, 100_000, ArenaUsage(50_000, 40_000, 10_000, ""))
    assert ok.overruns == () and ok.budget_ram_bytes == 262144
    over = gate.check_memory(target, 2 << 20, ArenaUsage(300_000, 250_000, 50_000, ""))
    assert len(over.overruns) == 2
    assert "flash" in over.overruns[0] and "RAM" in over.overruns[1]
    no_budget = gate.check_memory(load_target("arm-cpu"), 10 << 20, None)
    assert no_budget.overruns == () and no_budget.budget_flash_bytes is None


def test_parse_allocations():
    text = ("[RecordingMicroAllocator] Arena allocation total 9568 bytes\n"
            "[RecordingMicroAllocator] Arena allocation head 7744 bytes\n"
            "[RecordingMicroAllocator] Arena allocation tail 1824 bytes\n")
    usage = parse_allocations(text)
    assert (usage.total, usage.head, usage.tail) == (9568, 7744, 1824)
    with pytest.raises(ConversionError):
        parse_allocations("nothing here")


def test_outputs_are_written_together(tmp_path):
    out = tmp_path / "new"
    written = write_outputs(out, {"a.bin": b"1", "b.txt": b"2"}, overwrite=False)
    assert sorted(p.name for p in written.values()) == ["a.bin", "b.txt"]
    with pytest.raises(OutputExistsError):
        write_outputs(out, {"a.bin": b"3"}, overwrite=False)
    assert (out / "a.bin").read_bytes() == b"1"
    write_outputs(out, {"a.bin": b"3"}, overwrite=True)
    assert (out / "a.bin").read_bytes() == b"3"
    assert [p.name for p in tmp_path.iterdir()] == ["new"]  # no staging directory left


def test_reader_rejects_non_tflite():
    with pytest.raises(ModelFileError, match="TFL3"):
        read_model(b"\x00" * 64)


def test_reader_lists_ops_of_a_real_model():
    info = read_model((FIXTURES / "models/tflm/hello_world_int8.tflite").read_bytes())
    assert info.op_names == ("FULLY_CONNECTED",) * 3
    assert info.input_tensors[0].dtype == "int8" and info.input_tensors[0].is_quantized
    assert info.weight_bytes > 0 and info.subgraphs == 1
