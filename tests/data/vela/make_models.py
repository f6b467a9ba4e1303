"""Makes the two small models of this folder that Vela cannot map in full (run once, by hand).

mixed_int8.tflite: full int8 with ops Ethos-U leaves on the CPU: a CONV_2D with stride 4, an
L2_NORMALIZATION and a GATHER, between ops it maps (CONV_2D, RESHAPE, a per-channel
FULLY_CONNECTED, SOFTMAX). float32.tflite: a float model, which Vela leaves on the CPU entirely.

    .venv/bin/python tests/data/vela/make_models.py   # TensorFlow 2.21, Keras 3
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

HERE = Path(__file__).resolve().parent


def _mixed() -> keras.Model:
    inp = keras.Input((16, 16, 3), batch_size=1)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inp)
    x = keras.layers.Conv2D(8, 5, strides=4, padding="same")(x)
    x = keras.layers.Lambda(lambda t: tf.math.l2_normalize(t, axis=-1))(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Lambda(lambda t: tf.gather(t, [3, 1, 2, 0, 5, 4, 7, 6] * 4, axis=1))(x)
    x = keras.layers.Dense(10)(x)
    return keras.Model(inp, keras.layers.Softmax()(x))


def _float() -> keras.Model:
    inp = keras.Input((8, 8, 3), batch_size=1)
    x = keras.layers.Conv2D(4, 3, activation="relu")(inp)
    x = keras.layers.Flatten()(x)
    return keras.Model(inp, keras.layers.Dense(5, activation="softmax")(x))


def main() -> None:
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    converter = tf.lite.TFLiteConverter.from_keras_model(_mixed())
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: (
        [rng.normal(size=(1, 16, 16, 3)).astype(np.float32)] for _ in range(16)
    )
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = converter.inference_output_type = tf.int8
    (HERE / "mixed_int8.tflite").write_bytes(converter.convert())
    float_model = tf.lite.TFLiteConverter.from_keras_model(_float()).convert()
    (HERE / "float32.tflite").write_bytes(float_model)


if __name__ == "__main__":
    main()
