"""edgeq.transforms.smooth: SmoothQuant keeps the float function of a small MNIST transformer whose
LayerNorm outputs have LLM-style outlier channels, and makes its full-int8 TFLite model more
accurate on held-out digits."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from edgeq.transforms import smooth
from edgeq.errors import ConversionError, UsageError
from edgeq.transforms.smooth import smooth_model
from tests.conftest import ROOT

# LayerNorm output channels made huge by FACTOR, function-preserving: gamma and beta times
# FACTOR, the consumers' input rows divided by it. Not tuned to the result.
OUTLIER_CHANNELS = (3, 17, 40, 51)
FACTOR = 80.0
ALPHA = 0.5  # the paper's default; deliberately not tuned per test
LAYERNORMS = ("ln1", "ln2", "ln_f")


def _add_position_class():
    import keras

    class AddPosition(keras.layers.Layer):
        """A learned position embedding: without it a transformer sees a bag of rows."""

        def build(self, input_shape):
            self.pos = self.add_weight(
                shape=tuple(input_shape[1:]), name="pos",
                initializer=keras.initializers.RandomNormal(stddev=0.02))

        def call(self, x):
            return x + self.pos

    return AddPosition


def _transformer():
    """28 row tokens -> Dense(64) + position -> one pre-LN block (attention, MLP) -> LN ->
    mean over tokens -> Dense(10)."""
    import keras

    L = keras.layers
    inp = keras.Input((28, 28))
    h = _add_position_class()(name="pos")(L.Dense(64, name="embed")(inp))
    n = L.LayerNormalization(name="ln1")(h)
    h = L.Add(name="res1")([h, L.MultiHeadAttention(4, 16, name="mha")(n, n)])
    n = L.LayerNormalization(name="ln2")(h)
    m = L.Dense(128, activation="gelu", name="mlp_up")(n)
    h = L.Add(name="res2")([h, L.Dense(64, name="mlp_down")(m)])
    n = L.LayerNormalization(name="ln_f")(h)
    return keras.Model(inp, L.Dense(10, name="head")(L.GlobalAveragePooling1D(name="pool")(n)))


def _consumer_kernels(model, ln_name: str) -> list:
    """The kernels that read each LayerNorm in _transformer(), input rows on axis 0."""
    if ln_name == "ln1":
        mha = model.get_layer("mha")
        return [mha.query_dense.kernel, mha.key_dense.kernel, mha.value_dense.kernel]
    return [model.get_layer({"ln2": "mlp_up", "ln_f": "head"}[ln_name]).kernel]


def _add_outliers(model) -> None:
    """LLM-style outlier channels: (FACTOR g) * norm + FACTOR b, read by rows W / FACTOR."""
    for name in LAYERNORMS:
        ln = model.get_layer(name)
        gamma, beta = ln.gamma.numpy(), ln.beta.numpy()
        gamma[list(OUTLIER_CHANNELS)] *= FACTOR
        beta[list(OUTLIER_CHANNELS)] *= FACTOR
        ln.gamma.assign(gamma)
        ln.beta.assign(beta)
        for kernel in _consumer_kernels(model, name):
            k = kernel.numpy()
            k[list(OUTLIER_CHANNELS)] /= FACTOR
            kernel.assign(k)


@pytest.fixture(scope="module")
def mnist(fixtures):
    d = np.load(fixtures / "data" / "mnist_5k.npz")
    order = np.random.default_rng(3).permutation(len(d["x"]))  # the file is sorted by label
    x = (d["x"][order] / 255.0).astype(np.float32)
    y = d["y"][order].astype(np.int64)
    return {"train_x": x[:4000], "train_y": y[:4000], "test_x": x[4000:], "test_y": y[4000:]}


@pytest.fixture(scope="module")
def trained(mnist):
    import keras

    keras.utils.set_random_seed(3)
    model = _transformer()
    model.compile(keras.optimizers.Adam(2e-3),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    model.fit(mnist["train_x"], mnist["train_y"], epochs=8, batch_size=64, verbose=0)
    return model


@pytest.fixture(scope="module")
def outliers(trained, mnist):
    import keras

    model = keras.models.clone_model(trained)
    model.set_weights(trained.get_weights())
    _add_outliers(model)
    return model


@pytest.fixture(scope="module")
def smoothed(outliers, mnist):
    return smooth_model(outliers, mnist["test_x"], alpha=ALPHA)


def _accuracy(logits: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(np.argmax(logits, axis=-1) == y))


def test_outliers_are_real_and_function_preserving(trained, outliers, mnist):
    import keras

    x = mnist["test_x"]
    before, after = trained.predict(x, verbose=0), outliers.predict(x, verbose=0)
    assert _accuracy(after, mnist["test_y"]) == _accuracy(before, mnist["test_y"])
    assert _accuracy(before, mnist["test_y"]) > 0.85, "the transformer did not learn"
    np.testing.assert_allclose(after, before, atol=1e-3 * max(1.0, np.max(np.abs(before))))
    probe = keras.Model(outliers.inputs, outliers.get_layer("ln2").output)
    ranges = np.abs(probe.predict(x[:200], verbose=0)).max(axis=(0, 1))
    normal = np.delete(ranges, OUTLIER_CHANNELS)
    assert ranges[list(OUTLIER_CHANNELS)].min() > 10 * np.median(normal), ranges


def test_layernorms_found_and_float_function_kept(outliers, smoothed, mnist):
    assert smoothed.smoothed == LAYERNORMS
    assert smoothed.skipped == ()
    old = outliers.predict(mnist["test_x"], verbose=0)
    new = smoothed.model.predict(mnist["test_x"], verbose=0)
    limit = 1e-4 * max(1.0, float(np.max(np.abs(old))))
    assert smoothed.max_abs_diff <= limit
    assert float(np.max(np.abs(new - old))) <= limit


def test_outlier_channels_are_tamed(outliers, smoothed, mnist):
    import keras

    for name in LAYERNORMS:
        ratios = []
        for model in (outliers, smoothed.model):
            probe = keras.Model(model.inputs, model.get_layer(name).output)
            r = np.abs(probe.predict(mnist["test_x"][:200], verbose=0)).reshape(-1, 64).max(0)
            ratios.append(r.max() / np.median(r))
        assert ratios[1] * 5 < ratios[0], (name, ratios)


def test_scales_follow_the_formula(outliers, smoothed, mnist):
    """s_j = max|X_j|^a / max|W_j|^(1-a), read back from gamma; all of Q, K, V scaled by it."""
    import keras

    probe = keras.Model(outliers.inputs, outliers.get_layer("ln1").output)
    x_max = np.abs(probe.predict(mnist["test_x"], verbose=0)).reshape(-1, 64).max(0)
    w_max = np.max([np.abs(k.numpy()).reshape(64, -1).max(1)
                    for k in _consumer_kernels(outliers, "ln1")], axis=0)
    expected = x_max**ALPHA / w_max ** (1 - ALPHA)
    got = outliers.get_layer("ln1").gamma.numpy() / smoothed.model.get_layer("ln1").gamma.numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4)
    for old, new in zip(_consumer_kernels(outliers, "ln1"),
                        _consumer_kernels(smoothed.model, "ln1")):
        np.testing.assert_allclose(new.numpy(), old.numpy() * expected[:, None, None],
                                   rtol=1e-4, atol=1e-7)


def test_input_model_is_not_modified(trained, mnist):
    import keras

    model = keras.models.clone_model(trained)
    model.set_weights(trained.get_weights())
    before = [w.copy() for w in model.get_weights()]
    result = smooth_model(model, mnist["test_x"][:64])
    assert result.model is not model
    for w0, w1 in zip(before, model.get_weights()):
        np.testing.assert_array_equal(w0, w1)


def test_model_without_the_pattern_gets_a_note():
    import keras

    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4), keras.layers.Dense(2)])
    result = smooth_model(model, np.ones((4, 8), np.float32))
    assert result.smoothed == ()
    assert len(result.skipped) == 1 and "nothing to smooth" in result.skipped[0]
    assert result.max_abs_diff == 0.0


def test_post_ln_residual_gets_the_scale_back_and_other_uses_are_skipped():
    """Post-LN (BERT order): the LayerNorm's output feeds a Dense and a residual Add. The Dense
    rows absorb s, the Add's input from the LayerNorm is multiplied by s again (ScaledAdd), so
    the function holds and the LayerNorm's own output range shrinks. A LayerNorm whose output
    is a model output is left alone with a note."""
    import keras

    L = keras.layers
    inp = keras.Input((5, 8))
    n = L.LayerNormalization(name="post_ln")(L.Dense(8, name="d0")(inp))
    n2 = L.LayerNormalization(name="ok_ln")(L.Dense(8, name="d4")(inp))
    out = L.Add(name="res")([L.Dense(8, name="d1")(n), n])
    n3 = L.LayerNormalization(name="out_ln")(out)
    model = keras.Model(inp, [n3, L.Dense(3, name="d2")(L.Dropout(0.1)(n2)),
                              L.Dense(2, name="d3")(n3)])
    post = model.get_layer("post_ln")
    gamma = post.gamma.numpy()
    gamma[[1, 6]] *= 50.0  # outlier channels, as trained transformers grow them
    post.gamma.assign(gamma)
    x = np.random.default_rng(0).normal(size=(16, 5, 8)).astype(np.float32)
    result = smooth_model(model, x)
    assert set(result.smoothed) == {"post_ln", "ok_ln"}
    assert len(result.skipped) == 1 and "out_ln" in result.skipped[0]
    assert "model output" in result.skipped[0], result.skipped
    assert type(result.model.get_layer("res")).__name__ == "ScaledAdd"
    assert result.max_abs_diff <= 1e-4 * 50
    before = keras.Model(model.inputs, model.get_layer("post_ln").output)(x)
    after = keras.Model(result.model.inputs, result.model.get_layer("post_ln").output)(x)
    assert np.abs(np.asarray(after)).max() < 0.5 * np.abs(np.asarray(before)).max()


@pytest.mark.parametrize("alpha", [0.0, -0.5, 1.5, float("nan"), "0.5x"])
def test_bad_alpha_raises(alpha):
    import keras

    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4)])
    with pytest.raises(UsageError, match="--smooth"):
        smooth_model(model, np.ones((4, 8), np.float32), alpha=alpha)


def test_a_changed_function_raises(monkeypatch, trained, mnist):
    real = smooth._apply

    def broken(target, s):
        real(target, s)
        target.kernels[0].assign(target.kernels[0] * 2.0)  # no longer undoes the 1 / s

    monkeypatch.setattr(smooth, "_apply", broken)
    with pytest.raises(ConversionError) as info:
        smooth_model(trained, mnist["test_x"][:64])
    assert info.value.stage == "smooth"


def test_attention_projections_follow_the_call_arguments():
    """mha(query=a, value=b, key=a): a's scale goes into Q and K, b's into V only; Sequential
    models are walked too."""
    import keras

    L = keras.layers
    inp = keras.Input((6, 8))
    a = L.LayerNormalization(name="ln_a")(L.Dense(8, name="da")(inp))
    b = L.LayerNormalization(name="ln_b")(L.Dense(8, name="db")(inp))
    out = L.MultiHeadAttention(2, 4, name="mha")(a, b, key=a)
    model = keras.Model(inp, out)
    rng = np.random.default_rng(1)
    for ln in (model.get_layer("ln_a"), model.get_layer("ln_b")):
        ln.gamma.assign(rng.uniform(0.5, 40.0, 8).astype("float32"))
    result = smooth_model(model, rng.normal(size=(32, 6, 8)).astype("float32"))
    assert result.smoothed == ("ln_a", "ln_b")
    s_a = model.get_layer("ln_a").gamma.numpy() / result.model.get_layer("ln_a").gamma.numpy()
    s_b = model.get_layer("ln_b").gamma.numpy() / result.model.get_layer("ln_b").gamma.numpy()
    old, new = model.get_layer("mha"), result.model.get_layer("mha")
    for attr, s in (("query_dense", s_a), ("key_dense", s_a), ("value_dense", s_b)):
        np.testing.assert_allclose(getattr(new, attr).kernel.numpy(),
                                   getattr(old, attr).kernel.numpy() * s[:, None, None],
                                   rtol=1e-5, atol=1e-7)

    seq = keras.Sequential([keras.Input((5, 8)), L.LayerNormalization(name="ln"),
                            L.Dense(4, name="fc")])
    assert smooth_model(seq, rng.normal(size=(8, 5, 8))).smoothed == ("ln",)


def test_module_imports_without_tensorflow():
    code = ("import sys; sys.modules['tensorflow'] = None; sys.modules['keras'] = None; "
            "import edgeq.transforms.smooth")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


# --- the point of it: full-int8 accuracy --------------------------------------------------------


def _int8(model, calibration: np.ndarray) -> bytes:
    import tensorflow as tf

    fn = tf.function(lambda x: model(x, training=False))
    concrete = fn.get_concrete_function(tf.TensorSpec((1, 28, 28), tf.float32))
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete])
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([x[None]] for x in calibration)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    return converter.convert()


def _int8_accuracy(model_bytes: bytes, x: np.ndarray, y: np.ndarray) -> float:
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=model_bytes)
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    s_in, z_in = inp["quantization"]
    correct = 0
    for sample, label in zip(x, y):
        q = np.clip(np.round(sample[None] / s_in + z_in), -128, 127).astype(np.int8)
        interp.set_tensor(inp["index"], q)
        interp.invoke()
        # The output scale is positive, so the argmax of the int8 logits is the prediction.
        correct += int(np.argmax(interp.get_tensor(out["index"])[0]) == label)
    return correct / len(y)


@pytest.mark.slow
def test_smoothing_improves_full_int8_accuracy(outliers, smoothed, mnist):
    calibration = mnist["train_x"][:200]
    x, y = mnist["test_x"], mnist["test_y"]
    acc = {"float": _accuracy(outliers.predict(x, verbose=0), y)}
    for name, model in (("int8", outliers), ("int8 smoothed", smoothed.model)):
        acc[name] = _int8_accuracy(_int8(model, calibration), x, y)
    print(f"top-1 on {len(y)} test digits: {acc}; "
          f"smoothing max abs diff {smoothed.max_abs_diff:.2e}")  # shown with pytest -s
    assert acc["int8 smoothed"] > acc["int8"], acc
    assert acc["int8 smoothed"] >= acc["float"] - 0.03, acc
