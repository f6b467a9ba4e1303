"""The float model's first layer as evidence of how the data was prepared (edgeq.data.
first_layer), on real models edgeq did not make: the MLPerf Tiny ResNet-8 was trained on raw
0..255 pixels, the VWW MobileNet on 0..1, and each has a BatchNormalization after its first
convolution whose moving statistics say so."""

from __future__ import annotations

import numpy as np
import pytest

from edgeq.data import Dataset
from edgeq.data.first_layer import first_layer_warnings

pytestmark = pytest.mark.slow


def _ds(x: np.ndarray, source: str) -> Dataset:
    return Dataset(np.ascontiguousarray(x, dtype=np.float32), None, source, (), {})


@pytest.mark.parametrize("name,shape,trained_on", [
    ("ic_resnet8.h5", (32, 32, 3), 255.0),
    ("vww_mobilenet_96.h5", (96, 96, 3), 1.0),
])
def test_batchnorm_statistics_tell_the_training_range(fixtures, name, shape, trained_on):
    import tf_keras

    model = tf_keras.models.load_model(fixtures / "models" / "mlperf_tiny" / name,
                                       compile=False)
    rng = np.random.default_rng(0)
    right = _ds(rng.uniform(0, trained_on, (16, *shape)), "right.npz")
    wrong_top = 1.0 if trained_on == 255.0 else 255.0
    wrong = _ds(rng.uniform(0, wrong_top, (16, *shape)), "wrong.npz")
    assert first_layer_warnings(model, [("calibration", right)]) == []
    (warning,) = first_layer_warnings(model, [("calibration", right), ("evaluation", wrong)])
    assert "wrong.npz" in warning and "BatchNormalization" in warning, warning
    assert ("narrower" if trained_on == 255.0 else "wider") in warning, warning


def test_a_saturated_and_a_dead_first_layer():
    import keras

    x = np.random.default_rng(1).uniform(0, 1, (64, 28, 28, 1))
    inp = keras.Input((28, 28, 1))
    relu6 = keras.Model(inp, keras.layers.Conv2D(4, 3, activation="relu6", name="c6",
                                                 kernel_initializer="ones")(inp))
    (warning,) = first_layer_warnings(relu6, [("calibration", _ds(x * 255, "raw.npz"))])
    assert "saturated" in warning and "'c6'" in warning and "raw.npz" in warning
    assert first_layer_warnings(relu6, [("calibration", _ds(x, "ok.npz"))]) == []
    relu = keras.Model(inp, keras.layers.Conv2D(4, 3, activation="relu", name="c",
                                                kernel_initializer="ones")(inp))
    (warning,) = first_layer_warnings(relu, [("calibration", _ds(-x - 0.1, "neg.npz"))])
    assert "dead" in warning and "neg.npz" in warning
