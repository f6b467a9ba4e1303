"""edgeq.transforms.equalize: cross-layer equalization keeps the float function of a MobileNet-style model,
evens out its depthwise channel ranges, and makes its per-tensor int8 conversion accurate."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from edgeq.transforms import equalize
from edgeq.transforms.equalize import equalize_model
from edgeq.errors import ConversionError
from tests.conftest import ROOT

# Channels blown up by 100 (and the next layer's inputs shrunk by 100): same float function,
# but one per-tensor scale must now cover ranges 100x apart.
DW1_CHANNELS = (0, 3, 5)
DW2_CHANNELS = (1, 7, 12)
EXPECTED_PAIRS = {("conv1", "dw1"), ("dw1", "pw1"), ("pw1", "dw2"), ("dw2", "pw2"),
                  ("pw2", "logits")}


def _mobilenet(unbalanced: bool):
    import keras

    keras.utils.set_random_seed(0)
    L = keras.layers
    inp = keras.Input((28, 28, 1))
    x = L.Conv2D(8, 3, activation="relu", name="conv1")(inp)
    x = L.DepthwiseConv2D(3, activation="relu", name="dw1")(x)
    x = L.Conv2D(16, 1, use_bias=False, name="pw1")(x)  # MobileNet's conv -> BN -> ReLU
    x = L.BatchNormalization(name="bn1")(x)
    x = L.ReLU(name="relu1")(x)
    x = L.DepthwiseConv2D(3, strides=2, activation="relu", name="dw2")(x)
    x = L.Conv2D(32, 1, activation="relu", name="pw2")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    model = keras.Model(inp, L.Dense(10, name="logits")(x))

    rng = np.random.default_rng(0)
    for layer in model.layers:
        if getattr(layer, "bias", None) is not None:  # Keras starts biases at 0: too easy
            layer.bias.assign(rng.normal(0, 0.05, layer.bias.shape).astype("float32"))
    # BN statistics as training would leave them: without them the random network damps the
    # input so much that its output hardly depends on it, and an output SQNR measures only the
    # constant from the biases.
    pw1 = keras.Model(inp, model.get_layer("pw1").output).predict(_inputs(100, seed=7), verbose=0)
    bn = model.get_layer("bn1")
    bn.gamma.assign(rng.uniform(0.5, 2.0, 16).astype("float32"))
    bn.beta.assign(rng.normal(0, 0.1, 16).astype("float32"))
    bn.moving_mean.assign(pw1.mean(axis=(0, 1, 2)))
    bn.moving_variance.assign(pw1.var(axis=(0, 1, 2)))
    if unbalanced:
        _unbalance(model, "dw1", "pw1", DW1_CHANNELS)
        _unbalance(model, "dw2", "pw2", DW2_CHANNELS)
    return model


def _unbalance(model, dw_name: str, next_name: str, channels: tuple[int, ...]) -> None:
    """relu(100 z) / 100 = relu(z): the function is unchanged, the ranges are not."""
    dw, nxt = model.get_layer(dw_name), model.get_layer(next_name)
    k, b, kn = dw.kernel.numpy(), dw.bias.numpy(), nxt.kernel.numpy()
    for c in channels:
        k[:, :, c, :] *= 100.0
        b[c] *= 100.0
        kn[:, :, c, :] /= 100.0
    dw.kernel.assign(k)
    dw.bias.assign(b)
    nxt.kernel.assign(kn)


def _channel_ratio(kernel: np.ndarray) -> float:
    """max/min over the channels of a depthwise kernel (kh, kw, C, 1) of max |w|."""
    r = np.abs(kernel).max(axis=(0, 1, 3))
    return float(r.max() / r.min())


def _inputs(n: int, seed: int) -> np.ndarray:
    """Random images in [0, 1], each with its own brightness (u ** k): white noise alone looks
    the same to a network that ends in global average pooling, whatever the sample."""
    rng = np.random.default_rng(seed)
    k = np.exp(rng.uniform(-2, 2, (n, 1, 1, 1)))
    return (rng.uniform(0, 1, (n, 28, 28, 1)) ** k).astype("float32")


@pytest.fixture(scope="module")
def unbalanced():
    return _mobilenet(unbalanced=True)


@pytest.fixture(scope="module")
def equalized(unbalanced):
    return equalize_model(unbalanced, _inputs(64, seed=1))


def test_pairs_found_and_float_function_kept(equalized):
    assert set(equalized.pairs) == EXPECTED_PAIRS
    assert equalized.skipped == ()
    assert equalized.max_abs_diff < 1e-4
    # Independent of the module's own check: fresh inputs, the model's own predict.
    x = _inputs(32, seed=2)
    old = _mobilenet(unbalanced=True).predict(x, verbose=0)
    new = equalized.model.predict(x, verbose=0)
    assert np.max(np.abs(new - old)) < 1e-3 * max(1.0, np.max(np.abs(old)))


def test_depthwise_ranges_become_uniform(unbalanced, equalized):
    for name in ("dw1", "dw2"):
        before = _channel_ratio(unbalanced.get_layer(name).kernel.numpy())
        after = _channel_ratio(equalized.model.get_layer(name).kernel.numpy())
        assert after * 10 <= before, (name, before, after)


def test_batchnorm_is_folded_to_identity(equalized):
    bn = equalized.model.get_layer("bn1")
    np.testing.assert_array_equal(bn.gamma.numpy(), 1.0)
    np.testing.assert_array_equal(bn.moving_mean.numpy(), 0.0)
    np.testing.assert_allclose(bn.moving_variance.numpy() + bn.epsilon, 1.0, atol=1e-7)
    assert np.any(bn.beta.numpy() != 0), "pw1 has no bias, so BN's beta holds the folded shift"


def test_input_model_is_not_modified():
    model = _mobilenet(unbalanced=True)
    before = [w.copy() for w in model.get_weights()]
    result = equalize_model(model, _inputs(8, seed=3))
    assert result.model is not model
    for w0, w1 in zip(before, model.get_weights()):
        np.testing.assert_array_equal(w0, w1)


def test_relu6_pairs_are_skipped_with_a_note():
    import keras

    L = keras.layers
    model = keras.Sequential([
        keras.Input((12, 12, 3)),
        L.Conv2D(8, 3, activation="relu6", name="c1"),
        L.DepthwiseConv2D(3, name="d1"),
        L.ReLU(max_value=6.0, name="r6"),
        L.Conv2D(8, 1, activation="relu", name="c2"),
        L.Conv2D(4, 1, name="c3"),
    ])
    result = equalize_model(model, np.random.default_rng(0).uniform(0, 1, (8, 12, 12, 3)))
    assert result.pairs == (("c2", "c3"),)
    assert len(result.skipped) == 2
    for note, names in zip(result.skipped, (("c1", "d1"), ("d1", "c2"))):
        assert all(n in note for n in names) and "ReLU6" in note, note
        assert "replace it with ReLU" in note


def test_flatten_before_dense_is_skipped_with_a_note():
    import keras

    model = keras.Sequential([
        keras.Input((6, 6, 2)),
        keras.layers.Conv2D(4, 3, activation="relu", name="conv"),
        keras.layers.Flatten(name="flat"),
        keras.layers.Dense(3, name="fc"),
    ])
    result = equalize_model(model, np.ones((2, 6, 6, 2), "float32"))
    assert result.pairs == ()
    assert len(result.skipped) == 1 and "flat" in result.skipped[0] and "conv" in result.skipped[0]


def test_a_changed_function_raises(monkeypatch):
    real = equalize._equalize

    def broken(pairs, arrays, iterations, tolerance):
        real(pairs, arrays, iterations, tolerance)
        arrays[pairs[-1].b.kernel] *= 10.0  # B no longer undoes A's scaling

    monkeypatch.setattr(equalize, "_equalize", broken)
    with pytest.raises(ConversionError) as info:
        equalize_model(_mobilenet(unbalanced=False), _inputs(8, seed=4))
    assert info.value.stage == "equalize"


def test_module_imports_without_tensorflow():
    code = ("import sys; sys.modules['tensorflow'] = None; sys.modules['keras'] = None; "
            "import edgeq.transforms.equalize")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


# --- the point of it: per-tensor int8 --------------------------------------------------------


def _int8_per_tensor(model) -> bytes:
    import tensorflow as tf

    fn = tf.function(lambda x: model(x, training=False))
    concrete = fn.get_concrete_function(tf.TensorSpec((1, 28, 28, 1), tf.float32))
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete])
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    calibration = _inputs(100, seed=5)
    converter.representative_dataset = lambda: ([x[None]] for x in calibration)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    converter._experimental_disable_per_channel = True  # what per-tensor targets require
    return converter.convert()


def _run_int8(model_bytes: bytes, x: np.ndarray) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=model_bytes)
    interp.allocate_tensors()
    for t in interp.get_tensor_details():
        if t["dtype"] == np.int8:
            # FULLY_CONNECTED may list one scale per row, but they must all be equal.
            scales = t["quantization_parameters"]["scales"]
            assert len(np.unique(scales)) <= 1, f"per-channel: {t['name']}"
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    (s_in, z_in), (s_out, z_out) = inp["quantization"], out["quantization"]
    ys = []
    for sample in x:
        q = np.clip(np.round(sample[None] / s_in + z_in), -128, 127).astype(np.int8)
        interp.set_tensor(inp["index"], q)
        interp.invoke()
        ys.append((interp.get_tensor(out["index"]).astype(np.float32) - z_out) * s_out)
    return np.concatenate(ys)


def _sqnr_db(reference: np.ndarray, approx: np.ndarray) -> float:
    return float(10 * np.log10(np.sum(reference**2) / np.sum((reference - approx) ** 2)))


@pytest.mark.slow
def test_equalization_rescues_per_tensor_int8(unbalanced, equalized):
    x = _inputs(200, seed=6)
    sqnr = {}
    for name, model in (("unbalanced", unbalanced), ("equalized", equalized.model)):
        reference = model.predict(x, verbose=0)
        sqnr[name] = _sqnr_db(reference, _run_int8(_int8_per_tensor(model), x))
    print(f"per-tensor int8 output SQNR: {sqnr}")  # shown with pytest -s
    assert sqnr["equalized"] > sqnr["unbalanced"] + 6.0, sqnr
