"""ai-edge-quantizer adapter: the MLPerf Tiny VWW MobileNet with int4 weights (per channel and
in blocks of 32) is at most 0.6x the int8 model's weight bytes, runs on LiteRT with float
input close to the float model, and quantizes to the same bytes every time."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from edgeq.adapters import aeq
from edgeq.errors import ConversionError, MissingDependencyError
from edgeq.formats.tflite import read_model

pytestmark = pytest.mark.slow

RECIPES = {"wi4_afp32": None, "wi4_block32_afp32": 32}  # recipe -> block size
SAMPLES = 20
ACCEPTED_WEIGHT_RATIO = 0.6  # int4 weight bytes over int8 weight bytes


def _batch1(model, shape):
    import tensorflow as tf

    return tf.function(lambda x: model(x, training=False)).get_concrete_function(
        tf.TensorSpec(shape, tf.float32)
    )


@pytest.fixture(scope="module")
def vww(fixtures) -> dict[str, bytes]:
    """The float and full-int8 TFLite models of the VWW MobileNet (96x96x3, inputs in [0, 1])."""
    import tensorflow as tf
    import tf_keras  # the .h5 is a tf.keras model Keras 3 cannot load

    m = tf_keras.models.load_model(
        fixtures / "models" / "mlperf_tiny" / "vww_mobilenet_96.h5", compile=False
    )
    fn = _batch1(m, (1, 96, 96, 3))
    float_model = tf.lite.TFLiteConverter.from_concrete_functions([fn]).convert()

    rng = np.random.default_rng(0)
    conv = tf.lite.TFLiteConverter.from_concrete_functions([fn])
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: (
        [rng.random((1, 96, 96, 3), dtype=np.float32)] for _ in range(20)
    )
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    return {"float": float_model, "int8": conv.convert()}


@pytest.fixture(scope="module")
def int4(vww) -> dict[str, bytes]:
    return {r: aeq.quantize_weights(vww["float"], block_size=b) for r, b in RECIPES.items()}


def _run(model: bytes, x: np.ndarray) -> np.ndarray:
    """Outputs for each sample of x, with LiteRT's default resolver (XNNPACK on CPU)."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=model)
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    assert inp["dtype"] == np.float32, "activations must stay float"
    ys = []
    for sample in x:
        interp.set_tensor(inp["index"], sample[None])
        interp.invoke()
        ys.append(interp.get_tensor(out["index"])[0].copy())
    return np.stack(ys)


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_int4_weights_are_at_most_0_6x_int8(recipe, vww, int4):
    q = read_model(int4[recipe])
    ratio = q.weight_bytes / read_model(vww["int8"]).weight_bytes
    print(f"\n{recipe}: weight bytes {q.weight_bytes} ({ratio:.3f}x int8 "
          f"{read_model(vww['int8']).weight_bytes}); file {q.size_bytes} B "
          f"(int8 {len(vww['int8'])} B, float {len(vww['float'])} B)")
    assert ratio <= ACCEPTED_WEIGHT_RATIO
    # Every CONV_2D, DEPTHWISE_CONV_2D and the FULLY_CONNECTED hold int4 weights.
    assert aeq.quantized_op_counts(int4[recipe]) == {"int4": 28, "float32": 0}
    assert {t.dtype for t in q.tensors if t.constant_bytes} <= {"int4", "float32", "float16"}


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_int4_model_runs_on_litert_close_to_float(recipe, vww, int4):
    x = np.random.default_rng(1).random((SAMPLES, 96, 96, 3), dtype=np.float32)
    ref, got = _run(vww["float"], x), _run(int4[recipe], x)
    cos = np.sum(ref * got, axis=1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1))
    agree = float(np.mean(ref.argmax(1) == got.argmax(1)))
    print(f"\n{recipe}: max |diff| {np.abs(ref - got).max():.4f}, cosine min {cos.min():.5f} "
          f"mean {cos.mean():.5f}, argmax agreement {agree:.0%}")
    assert cos.min() > 0.9
    assert agree >= 0.9


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_quantizing_twice_gives_the_same_bytes(recipe, vww, int4):
    assert aeq.quantize_weights(vww["float"], block_size=RECIPES[recipe]) == int4[recipe]


def test_fully_connected_that_does_not_split_in_blocks_stays_per_channel():
    import tensorflow as tf

    rng = np.random.default_rng(2)
    w1 = tf.constant(rng.normal(size=(100, 64)).astype(np.float32))  # 100 % 32 != 0
    w2 = tf.constant(rng.normal(size=(64, 8)).astype(np.float32))
    fn = tf.function(lambda x: tf.matmul(tf.nn.relu(tf.matmul(x, w1)), w2)).get_concrete_function(
        tf.TensorSpec((1, 100), tf.float32)
    )
    float_model = tf.lite.TFLiteConverter.from_concrete_functions([fn]).convert()
    assert read_model(float_model).op_names == ("FULLY_CONNECTED", "FULLY_CONNECTED")

    recipe = aeq.build_recipe(float_model, block_size=32)
    assert [e["op_config"]["weight_tensor_config"]["granularity"] for e in recipe
            if e["regex"] != ".*"] == ["CHANNELWISE"]
    q = aeq.quantize_weights(float_model, block_size=32)
    assert aeq.quantized_op_counts(q) == {"int4": 2, "float32": 0}
    x = rng.normal(size=(4, 100)).astype(np.float32)
    ref, got = _run(float_model, x), _run(q, x)
    cos = np.sum(ref * got, axis=1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1))
    assert cos.min() > 0.9


def test_aeq_failure_is_a_conversion_error(vww, monkeypatch):
    class Broken:
        def __init__(self, model, recipe):
            raise ValueError("Unsupported operation FOO for Algorithm: x.\nsecond line")

    monkeypatch.setattr(aeq, "_quantizer_module", lambda: type("M", (), {"Quantizer": Broken}))
    with pytest.raises(ConversionError) as err:
        aeq.quantize_weights(vww["float"])
    assert err.value.stage == "quantize (ai-edge-quantizer)"
    assert str(err.value).endswith("Unsupported operation FOO for Algorithm: x.")


def test_missing_package_says_how_to_install(vww, monkeypatch):
    monkeypatch.setitem(sys.modules, "ai_edge_quantizer", None)  # import raises ImportError
    with pytest.raises(MissingDependencyError, match="pip install ai-edge-quantizer"):
        aeq.quantize_weights(vww["float"])
