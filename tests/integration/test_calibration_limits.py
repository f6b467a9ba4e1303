"""Float-model constructs TF's full-integer calibrator crashes on (issue 14, item 7), found before
it runs: edgeq.formats.calibration_limits and the converter adapter's check."""

from __future__ import annotations

import numpy as np
import pytest

from edgeq.adapters.tf_converter import ConverterSettings, _explain, convert_int8
from edgeq.errors import CalibrationLimitError
from edgeq.formats.calibration_limits import calibration_problem

SPEC = ((1, 8, 4), "float32")


def _float_model(fn, trackable=None) -> bytes:
    import tensorflow as tf

    return bytes(tf.lite.TFLiteConverter.from_concrete_functions([fn], trackable).convert())


def _loop(pass_through: bool):
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec(*SPEC)])
    def f(t):
        y = t * 2.0
        if pass_through:  # y is a loop value the body only reads, as in a Keras RNN
            _, out, _ = tf.while_loop(lambda i, a, y: i < 3,
                                      lambda i, a, y: (i + 1, a * 0.5 + y, y),
                                      [tf.constant(0), t, y])
        else:
            _, out = tf.while_loop(lambda i, a: i < 3, lambda i, a: (i + 1, a * 0.5 + 1.0),
                                   [tf.constant(0), t])
        return out

    return f.get_concrete_function()


def _rnn(kind: str, unroll: bool):
    import keras

    keras.utils.set_random_seed(3)
    layer = getattr(keras.layers, kind)(6, unroll=unroll)
    model = keras.Sequential([keras.Input(SPEC[0][1:]), layer, keras.layers.Dense(3)])
    import tensorflow as tf

    return model, tf.function(lambda t: model(t, training=False)).get_concrete_function(
        tf.TensorSpec(*SPEC))


def test_a_loop_passing_a_value_through_is_found():
    problem = calibration_problem(_float_model(_loop(pass_through=True)))
    assert problem is not None and problem.op == "WHILE"
    assert "75140" in problem.detail and "unroll=True" in problem.fix


def test_a_loop_whose_values_all_change_is_left_alone():
    # TF's calibrator runs these (checked by hand with the plain converter, TF 2.21).
    assert calibration_problem(_float_model(_loop(pass_through=False))) is None


@pytest.mark.parametrize("kind", ["SimpleRNN", "LSTM", "GRU"])
def test_a_keras_rnn_not_unrolled_is_found_with_its_layer(kind):
    _, fn = _rnn(kind, unroll=False)
    problem = calibration_problem(_float_model(fn))
    assert problem is not None and problem.op == "WHILE"
    assert f"{kind.lower().replace('simplernn', 'simple_rnn')}" in problem.where


def test_resource_variable_ops_are_found():
    import tensorflow as tf

    class Counter(tf.Module):
        def __init__(self):
            self.v = tf.Variable(tf.zeros(SPEC[0]))

        @tf.function(input_signature=[tf.TensorSpec(*SPEC)])
        def __call__(self, t):
            self.v.assign_add(t)  # state kept between calls
            return t + self.v

    m = Counter()
    # With the module given, the converter keeps the assigned variable (VAR_HANDLE ...).
    problem = calibration_problem(_float_model(m.__call__.get_concrete_function(), m))
    assert problem is not None and problem.op in ("VAR_HANDLE", "READ_VARIABLE", "ASSIGN_VARIABLE")
    assert "stateful" in problem.where


def test_the_calibrators_variable_failure_is_named():
    exc = RuntimeError("tensorflow/lite/kernels/read_variable.cc:67 variable != nullptr was not "
                       "true.Node number 5 (READ_VARIABLE) failed to invoke.")
    err = _explain(exc, "", ConverterSettings(), "cortex-m4")
    assert isinstance(err, CalibrationLimitError) and err.exit_status == 3
    assert str(err).startswith("op READ_VARIABLE (stateful RNN")


@pytest.mark.parametrize("kind", ["SimpleRNN", "LSTM", "GRU"])
def test_unrolled_rnns_quantize_to_int8(kind):
    _, fn = _rnn(kind, unroll=True)
    x = np.random.default_rng(0).normal(size=(8, *SPEC[0][1:])).astype("float32")
    out = convert_int8(fn, lambda: (x[i:i + 1] for i in range(len(x))), ConverterSettings())
    from edgeq.formats.tflite import read_model

    info = read_model(out.model)
    assert "WHILE" not in info.op_names and info.input_tensors[0].dtype == "int8"


@pytest.mark.parametrize("body, where", [
    ("sequential_1/simple_rnn_1/while_body", "the loop in 'sequential_1/simple_rnn_1'"),
    ("while;sequential/lstm/PartitionedCall/while_body", "the loop in 'sequential/lstm'"),
    ("while_body", "the loop 'while_body'"),
])
def test_the_loop_is_named_by_its_layer_scope(body, where):
    from edgeq.formats.calibration_limits import _loop_problem

    assert _loop_problem(body).where.startswith(where)
