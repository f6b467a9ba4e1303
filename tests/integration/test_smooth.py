"""SmoothQuant on a transformer-style MNIST model with real outlier channels after LayerNorm:
float outputs unchanged, and full-int8 accuracy on held-out digits improves."""

from __future__ import annotations

import numpy as np
import pytest

from edgeq.api import ConvertOptions, convert
from edgeq.data import Preprocess
from edgeq.errors import UsageError
from edgeq.smooth import smooth_model

pytestmark = pytest.mark.slow
OUTLIERS = [3, 17, 40, 51]  # LayerNorm channels made huge (x80), function-preserving


@pytest.fixture(scope="module")
def outlier_model(fixtures, tmp_path_factory):
    import keras

    keras.utils.set_random_seed(2)
    d = np.load(fixtures / "data" / "mnist_5k.npz")
    order = np.random.default_rng(2).permutation(len(d["x"]))  # the file is sorted by label
    x, y = d["x"][order], d["y"][order].astype(np.int64)
    inp = keras.Input((28, 28))
    h = keras.layers.Dense(64, name="embed")(inp)
    n = keras.layers.LayerNormalization(name="ln")(h)
    m = keras.layers.Dense(64, activation="gelu", name="mlp_in")(n)
    m = keras.layers.Dense(64, name="mlp_out")(m)
    h = keras.layers.GlobalAveragePooling1D()(keras.layers.Add()([h, m]))  # pre-norm residual
    model = keras.Model(inp, keras.layers.Dense(10, activation="softmax")(h))
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x[:4000] / 255.0, y[:4000], epochs=12, batch_size=64, verbose=0)
    # Outlier channels as LLMs show them: huge LayerNorm outputs on a few channels, the
    # consumer's weights for those channels scaled down so the float function is the same.
    ln, mlp = model.get_layer("ln"), model.get_layer("mlp_in")
    gamma, beta = ln.get_weights()
    k, b = mlp.get_weights()
    gamma[OUTLIERS] *= 80.0
    beta[OUTLIERS] *= 80.0
    k[OUTLIERS] /= 80.0
    ln.set_weights([gamma, beta])
    mlp.set_weights([k, b])
    out = tmp_path_factory.mktemp("smooth")
    model.save(out / "outliers.keras")
    np.savez(out / "train.npz", x=x[:4000], y=y[:4000])
    np.savez(out / "test.npz", x=x[4000:], y=y[4000:])
    return out


def test_smoothing_keeps_float_and_improves_int8(outlier_model, tmp_path):
    import keras

    model = keras.models.load_model(outlier_model / "outliers.keras")
    test = np.load(outlier_model / "test.npz")
    result = smooth_model(model, test["x"][:256].astype(np.float32) / 255.0, alpha=0.5)
    assert result.smoothed == ("ln",)
    assert result.max_abs_diff <= 1e-4

    acc = {}
    for alpha in (None, 0.5):
        r = convert(ConvertOptions(model=str(outlier_model / "outliers.keras"), target="arm-cpu",
                                   data=str(outlier_model / "train.npz"),
                                   eval_data=str(outlier_model / "test.npz"),
                                   out=str(tmp_path / str(alpha)), smooth=alpha,
                                   preprocess=Preprocess(scale=1 / 255), measure_latency=False))
        acc[alpha] = r.report.accuracy
    assert acc[0.5]["float"] == acc[None]["float"]
    print("int8 top-1 plain, smoothed:", acc[None]["quantized"], acc[0.5]["quantized"],
          "float", acc[None]["float"], "max diff", result.max_abs_diff)
    assert acc[0.5]["quantized"] > acc[None]["quantized"], acc


def test_smoothing_leaves_models_without_the_pattern(tmp_path):
    import keras

    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4)])
    result = smooth_model(model, np.ones((4, 8), np.float32))
    assert result.smoothed == () and result.skipped
    with pytest.raises(UsageError):
        smooth_model(model, np.ones((4, 8), np.float32), alpha=0.0)
