"""The scale rules of edgeq.formats.kernel_limits on ops built in memory (no interpreter, no TF): where
each threshold lies, which runtime it applies to, and the one-line error it gives."""

from __future__ import annotations

import math

import pytest

from edgeq.errors import KernelLimitError
from edgeq.formats.kernel_limits import SOFTMAX_MIN_SCALE, check_scales, scale_problems
from edgeq.formats.tflite import ModelInfo, OpInfo, TensorInfo


def _tensor(index: int, name: str, scale: float, dtype: str = "int8") -> TensorInfo:
    return TensorInfo(index, name, (1, 10), (1, 10), dtype, (scale,), (0,), 0, 0)


def _model(op: str, scales: list[float], options=(), dtype: str = "int8") -> ModelInfo:
    tensors = tuple(_tensor(i, f"t{i}", s, dtype) for i, s in enumerate(scales))
    n = len(scales)
    ops = (OpInfo(0, op, 1, tuple(range(n - 1)), (n - 1,), tuple(options)),)
    return ModelInfo(ops, tensors, (0,), (n - 1,), 1, 100)


@pytest.mark.parametrize("factor, bad", [(0.99, True), (1.0, True), (1.01, False)])
def test_softmax_input_scale_threshold(factor, bad):
    info = _model("SOFTMAX", [SOFTMAX_MIN_SCALE * factor, 1 / 256], [("beta", 1.0)])
    assert bool(scale_problems(info, "tflm")) is bad
    assert scale_problems(info, "litert") == []  # LiteRT's int8 softmax is a lookup table


def test_softmax_beta_scales_the_threshold():
    info = _model("SOFTMAX", [SOFTMAX_MIN_SCALE * 1.5, 1 / 256], [("beta", 0.5)])
    (problem,) = scale_problems(info, "tflm")
    assert "beta 0.5" in problem.detail and problem.tensor == 0
    assert problem.safe_scale * 0.5 > SOFTMAX_MIN_SCALE


@pytest.mark.parametrize("runtime", ["tflm", "litert"])
def test_add_output_rescale_must_stay_below_one(runtime):
    s_in = 8.5e-9
    bound = 2 * s_in / 2**20  # output scales at or below it abort
    assert scale_problems(_model("ADD", [s_in, s_in, bound * 1.01]), runtime) == []
    (problem,) = scale_problems(_model("ADD", [s_in, s_in, bound * 0.99]), runtime)
    assert problem.op == "ADD" and problem.tensor == 2 and problem.safe_scale > bound
    # int16 outputs use a 15-bit left shift
    assert scale_problems(_model("SUB", [s_in, s_in, bound * 1.01], dtype="int16"), runtime)


@pytest.mark.parametrize("scale", [0.0, -1.0, math.nan, math.inf])
def test_non_positive_or_non_finite_scales(scale):
    (problem,) = scale_problems(_model("MUL", [0.1, 0.1, scale]), "litert")
    assert problem.tensor == 2 and "t2" in problem.detail


def test_check_scales_raises_one_line_exit_3():
    info = _model("SOFTMAX", [1e-9, 1 / 256], [("beta", 1.0)])
    with pytest.raises(KernelLimitError) as caught:
        check_scales(info, "m.tflite", "tflm")
    text = str(caught.value)
    assert caught.value.exit_status == 3 and "\n" not in text
    assert text.startswith("model 'm.tflite': op 0 SOFTMAX: input 't0' has scale 1e-09")
    assert "TFLite Micro aborts on it" in text and "is the model trained?" in text
    check_scales(_model("SOFTMAX", [0.1, 1 / 256]), "m.tflite", "tflm")  # a sane one passes
