"""A Keras 3 CNN trained on MNIST converts for every target and keeps its accuracy, measured
on the target's own runtime (TFLite Micro for microcontrollers, LiteRT otherwise)."""

from __future__ import annotations

import pytest

from edgeq.api import ConvertOptions, convert
from edgeq.data import Preprocess
from edgeq.formats.tflite import read_model

pytestmark = pytest.mark.slow

RUNTIME = {"arm-cpu": "litert", "coral": "litert", "cortex-m4": "tflm", "cortex-m7": "tflm"}
IO_DTYPE = {"arm-cpu": "int8", "coral": "uint8", "cortex-m4": "int8", "cortex-m7": "int8"}


@pytest.mark.parametrize("target", sorted(RUNTIME))
def test_mnist_cnn_keeps_heldout_accuracy(mnist_model, target, tmp_path):
    result = convert(ConvertOptions(
        model=str(mnist_model["model"]), target=target, data=str(mnist_model["train"]),
        eval_data=str(mnist_model["test"]), out=str(tmp_path / "out"),
        preprocess=Preprocess(scale=1 / 255), calibration_samples=500,
    ))
    report = result.report
    acc = report.accuracy
    assert result.ok, result.gate_error
    assert acc["n"] == 1000
    assert acc["runtime"] == RUNTIME[target]
    assert acc["float"] > 0.95, "the test model itself must be good for the check to mean much"
    assert acc["drop_pp"] <= 1.0, acc
    assert acc["agreement"] > 0.98

    model_bytes = (tmp_path / "out" / "mnist_cnn_int8.tflite").read_bytes()
    info = read_model(model_bytes)
    assert not info.dynamic_tensors, "edge compilers need a static batch-1 signature"
    assert info.input_tensors[0].shape[0] == 1
    assert info.input_tensors[0].dtype == IO_DTYPE[target]
    assert info.output_tensors[0].dtype == IO_DTYPE[target]
    assert not info.float_op_tensors(), "a full-integer model computes nothing in float"
    assert report.output["bytes"] == len(model_bytes)
    assert report.latency_ms["median"] > 0 and report.latency_ms["host"] is True
    if RUNTIME[target] == "tflm":
        assert report.memory["arena_bytes"] > 0
        assert report.memory["arena_bytes"] <= report.memory["budget_ram_bytes"]
    placements = {op["placement"] for op in report.ops}
    assert placements == {"tpu" if target == "coral" else
                          "mcu" if target.startswith("cortex") else "cpu"}
