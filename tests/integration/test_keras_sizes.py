"""Issue 22, item 3: the weights and shapes edgeq estimates from a Keras config before
building (edgeq.formats.keras_sizes) are what Keras itself builds: the estimate of every model
here, read from the config.json model.save() wrote, equals model.count_params() and the
model's output shape. A layer edgeq does not model only ever lowers the estimate (the checks
refuse from a lower bound, never from an overestimate)."""

from __future__ import annotations

import json
import zipfile

import pytest

from tests.conftest import FIXTURES


def _models():
    import keras
    from keras import layers as L

    i = keras.Input((20,))
    x = L.Embedding(1000, 16)(i)
    x = L.LSTM(8, return_sequences=True)(x)
    x = L.Bidirectional(L.GRU(6))(x)
    yield "recurrent", keras.Model(i, L.Dense(3)(x))

    i = keras.Input((17, 19, 3))
    x = L.SeparableConv2D(8, 3, strides=2, padding="valid")(i)
    x = L.Conv2DTranspose(5, 3, strides=2, padding="same")(x)
    x = L.DepthwiseConv2D(5, depth_multiplier=2, padding="same")(x)
    x = L.MaxPooling2D(3)(x)
    x = L.Concatenate()([x, L.Conv2D(10, 1, groups=2)(x)])
    x = L.BatchNormalization()(x)
    x = L.ZeroPadding2D(((1, 2), (3, 4)))(x)
    x = L.UpSampling2D(2)(x)
    x = L.Cropping2D(1)(x)
    x = L.PReLU(shared_axes=[1, 2])(x)
    yield "convolutions", keras.Model(i, L.Dense(4)(L.GlobalAveragePooling2D()(x)))

    i = keras.Input((10, 32))
    x = L.MultiHeadAttention(4, 8)(i, i)
    x = L.LayerNormalization()(x)
    x = L.Reshape((20, -1))(L.Flatten()(x))
    x = L.Conv1D(6, 3, padding="causal", dilation_rate=2)(x)
    x = L.TimeDistributed(L.Dense(7))(x)
    yield "attention", keras.Model(i, L.Add()([x, x]))

    inner = keras.Sequential([keras.Input((8,)), L.Dense(5)])
    i = keras.Input((8,))
    yield "nested", keras.Model(i, L.Dense(2)(inner(i)))

    yield "sequential", keras.Sequential([
        keras.Input((28, 28, 1)), L.Conv2D(8, 3), L.AveragePooling2D(2),
        L.Conv2DTranspose(4, 3, strides=3), L.Flatten(), L.Dense(10)])


def test_estimates_equal_what_keras_builds(tmp_path):
    from edgeq.formats.keras_sizes import _Walk

    for name, model in _models():
        path = tmp_path / f"{name}.keras"
        model.save(path)
        with zipfile.ZipFile(path) as zf:
            config = json.loads(zf.read("config.json"))
        walk = _Walk(path, "config.json", 2**62, 2**62)
        out = walk.model(config, [])
        assert walk.params == model.count_params(), name
        assert out == [tuple(model.output_shape[1:])], name


@pytest.mark.parametrize("name", ["ic_resnet8.h5", "ad_autoencoder.h5"])
def test_estimates_of_mlperf_tiny_h5_configs(name):
    """tf.keras 2 configs (the legacy inbound-node format) as Keras 3 loads them."""
    import keras

    from edgeq.formats.keras_files import h5_config
    from edgeq.formats.keras_sizes import check_sizes

    path = FIXTURES / "models" / "mlperf_tiny" / name
    estimate = check_sizes(path, h5_config(path), "model_config")
    assert estimate.params == keras.models.load_model(path, compile=False).count_params()


def test_reference_batches_shrink_for_large_activations(tmp_path):
    """A model whose activation of one sample is 256 MiB computes its reference outputs in
    batches that fit the machine's memory, not edgeq's usual 256 samples (64 GiB here)."""
    import keras
    import numpy as np

    from edgeq.formats.keras_sizes import machine_memory
    from edgeq.pipeline.load import load_model

    path = tmp_path / "wide.keras"
    keras.Sequential([keras.Input((1024, 1024, 3)), keras.layers.Conv2D(64, 1),
                      keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(2)]).save(path)
    loaded = load_model(path)
    per_sample = 1024 * 1024 * 64 * 4
    assert loaded.predict_batch < 256
    assert loaded.predict_batch * 4 * per_sample <= max(machine_memory() // 8, 4 * per_sample)
    out = loaded.predict(np.zeros((3, 1024, 1024, 3), np.float32))
    assert out[0].shape == (3, 2)
