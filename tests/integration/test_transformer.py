"""Attention models end to end (issue 24): a small transformer (MultiHeadAttention, GELU MLP,
LayerNorm; pre-LN and post-LN/BERT order) trained here on the 8x8 digits in seconds converts
with int8 and a16w8 on arm-cpu, trains with QAT, and runs on TFLite Micro with
`--substitute gelu`; no route exits 1."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgeq.cli import main


def _transformer(order: str):
    """64 pixels -> 16 tokens of 16 (a Dense embedding, position-aware) -> one block ->
    mean over tokens -> 10 classes. Built-in layers only."""
    import keras

    L = keras.layers
    inp = keras.Input((8, 8))
    h = L.Reshape((16, 16))(L.Dense(256, name="embed")(L.Flatten()(inp)))
    if order == "post":  # BERT: LayerNorm after each residual Add
        a = L.MultiHeadAttention(2, 8, name="mha")(h, h)
        h = L.LayerNormalization(name="ln1")(L.Add()([h, a]))
        m = L.Dense(16, name="down")(L.Dense(32, activation="gelu", name="up")(h))
        h = L.LayerNormalization(name="ln2")(L.Add()([h, m]))
    else:
        n = L.LayerNormalization(name="ln1")(h)
        h = L.Add()([h, L.MultiHeadAttention(2, 8, name="mha")(n, n)])
        n = L.LayerNormalization(name="ln2")(h)
        h = L.Add()([h, L.Dense(16, name="down")(L.Dense(32, activation="gelu", name="up")(n))])
        h = L.LayerNormalization(name="ln_f")(h)
    out = L.Dense(10, activation="softmax", name="head")(L.GlobalAveragePooling1D()(h))
    return keras.Model(inp, out)


@pytest.fixture(scope="module")
def transformers(fixtures, tmp_path_factory):
    import keras

    d = np.load(fixtures / "data" / "digits.npz")
    x, y = d["x"].astype(np.float32) / 16.0, d["y"].astype(np.int64)
    order = np.random.default_rng(1).permutation(len(x))
    x, y = x[order], y[order]
    out = tmp_path_factory.mktemp("transformer")
    np.savez(out / "train.npz", x=x[:1400], y=y[:1400])
    np.savez(out / "test.npz", x=x[1400:], y=y[1400:])
    paths = {"train": out / "train.npz", "test": out / "test.npz"}
    for variant in ("pre", "post"):
        keras.utils.set_random_seed(1)
        model = _transformer(variant)
        model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
        model.fit(x[:1400], y[:1400], epochs=10, batch_size=32, verbose=0)
        model.save(out / f"{variant}.keras")
        paths[variant] = out / f"{variant}.keras"
    return paths


def _convert(capsys, paths, variant, out, *args):
    code = main(["convert", str(paths[variant]), "--data", str(paths["train"]), "--eval-data",
                 str(paths["test"]), "--out", str(out), "--no-latency",
                 "--calibration-samples", "200", *args])
    err = capsys.readouterr().err
    report = json.loads((out / "report.json").read_text()) if code in (0, 4) else None
    return code, err, report


@pytest.mark.parametrize("variant", ["pre", "post"])
def test_int8_and_a16w8_on_arm_cpu(transformers, tmp_path, capsys, variant):
    code, err, int8 = _convert(capsys, transformers, variant, tmp_path / "int8",
                               "--target", "arm-cpu")
    assert code == 0, err
    assert int8["accuracy"]["float"] > 0.9  # the model learned the digits
    # 16x8: LayerNorm's SQUARED_DIFFERENCE has no int16 LiteRT kernel; edgeq decomposes it
    code, err, a16 = _convert(capsys, transformers, variant, tmp_path / "a16",
                              "--target", "arm-cpu", "--recipe", "a16w8")
    assert code == 0, err
    assert a16["recipe"]["activations"] == "int16" and a16["output"]["input_dtype"] == "int16"
    ln = {"pre": ["ln1", "ln2", "ln_f"], "post": ["ln1", "ln2"]}[variant]
    assert a16["rewrites"][0]["layers"] == ln and a16["rewrites"][0]["max_abs_diff"] < 1e-4
    assert "SQUARED_DIFFERENCE" not in {o["op"] for o in a16["ops"]}
    # the rewrite is exact: float top-1 unchanged; 16x8 keeps it within a point
    assert a16["rewrites"][0]["float_top1_after"] == a16["rewrites"][0]["float_top1_before"]
    assert a16["accuracy"]["drop_pp"] <= 1.0, a16["accuracy"]


def test_int16_on_a_savedmodel_layernorm_is_exit_3(transformers, tmp_path, capsys):
    """edgeq cannot rewrite a SavedModel's LayerNorm: the one-invoke check names the op."""
    import keras

    keras.models.load_model(transformers["pre"]).export(str(tmp_path / "sm"))
    paths = dict(transformers, sm=tmp_path / "sm")
    code, err, _ = _convert(capsys, paths, "sm", tmp_path / "out", "--target", "arm-cpu",
                            "--int16-activations")
    assert code == 3, err
    assert "SQUARED_DIFFERENCE" in err and "--recipe int8" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_int16_kernel_gap_is_exit_3_naming_the_op(transformers):
    """Without the decomposition (e.g. a SavedModel edgeq cannot rewrite), LiteRT's missing
    int16 SQUARED_DIFFERENCE is found by one invoke and named: a TargetConstraintError."""
    import keras

    from edgeq.adapters.tf_converter import ConverterSettings, convert_int8
    from edgeq.pipeline.load import from_keras_model
    from edgeq.pipeline.runs import int16_problem

    model = keras.models.load_model(transformers["pre"])
    loaded = from_keras_model(model, transformers["pre"], "keras", "keras", [])
    x = np.load(transformers["test"])["x"].astype(np.float32)
    settings = ConverterSettings(input_dtype="int16", output_dtype="int16",
                                 int16_activations=True, float_fallback=True)  # as arm-cpu
    out = convert_int8(loaded.batch1_function, lambda: (x[i : i + 1] for i in range(20)),
                       settings)
    problem = int16_problem(out.model, x, "arm-cpu")
    assert problem is not None and problem.exit_status == 3
    assert problem.ops == ["SQUARED_DIFFERENCE"]
    assert "--recipe int8" in problem.hint and "int16" in problem.hint


def test_cortex_m4_with_substitute_gelu_on_tflm(transformers, tmp_path, capsys):
    code, err, _ = _convert(capsys, transformers, "pre", tmp_path / "refused",
                            "--target", "cortex-m4")
    assert code == 3 and "GELU" in err and "--substitute gelu" in err, err
    assert not (tmp_path / "refused").exists()
    # pre-LN with --substitute gelu; post-LN with --method auto, which substitutes by itself
    for variant, args in (("pre", ["--substitute", "gelu"]),
                          ("post", ["--method", "auto", "--max-drop", "1"])):
        code, err, rep = _convert(capsys, transformers, variant, tmp_path / variant,
                                  "--target", "cortex-m4", *args)
        assert code == 0, err
        ops = {o["op"] for o in rep["ops"]}
        assert "GELU" not in ops and "LOGISTIC" in ops
        assert rep["accuracy"]["runtime"] == "tflm"
        rw = rep["rewrites"][0]
        assert rw["rewrite"] == "substitute gelu" and rw["layers"] == ["up"]
        assert rw["automatic"] == (variant == "post")
        # measured against the original float model, not only the rewritten one
        assert rw["float_top1_before"] - rep["accuracy"]["quantized"] <= 0.01, (rw, rep["accuracy"])
        assert "Model rewrites" in (tmp_path / variant / "report.md").read_text()


def test_qat_through_multiheadattention(transformers, tmp_path, capsys):
    code, err, rep = _convert(capsys, transformers, "pre", tmp_path / "qat", "--target",
                              "arm-cpu", "--method", "qat", "--train-data",
                              str(transformers["train"]), "--epochs", "1")
    assert code == 0, err
    assert rep["method"] == "qat" and rep["qat"]["bridge"]["rebuilt_in_tf_keras"]
    note = next(n for n in rep["notes"] if "no quantization for" in n)
    assert "mha (MultiHeadAttention)" in note and "ln1 (LayerNormalization)" in note
    ptq = rep["qat"]["ptq_baseline"]["accuracy"]["quantized"]
    assert rep["accuracy"]["quantized"] >= ptq, (rep["accuracy"], ptq)


OUTLIER_CHANNELS = (2, 7, 11)


def _with_outliers(path, out, factor=80.0):
    """LLM/BERT-style outlier channels in every LayerNorm output, function-preserving: gamma
    and beta of a few channels times `factor`, the reading rows divided by it (as
    tools/bench_transformer.py and test_smooth.py construct them; not tuned to a result)."""
    import keras

    model = keras.models.load_model(path)
    mha = model.get_layer("mha")
    readers = {"ln1": [mha.query_dense.kernel, mha.key_dense.kernel, mha.value_dense.kernel],
               "ln2": [model.get_layer("up").kernel], "ln_f": [model.get_layer("head").kernel]}
    idx = list(OUTLIER_CHANNELS)
    for name, kernels in readers.items():
        ln = model.get_layer(name)
        for var in (ln.gamma, ln.beta):
            v = var.numpy()
            v[idx] *= factor
            var.assign(v)
        for kernel in kernels:
            k = kernel.numpy()
            k[idx] /= factor
            kernel.assign(k)
    model.save(out)
    return out


def test_auto_meets_the_budget_on_outlier_activations_and_names_the_stage(transformers,
                                                                           tmp_path, capsys):
    paths = dict(transformers, outlier=_with_outliers(transformers["pre"],
                                                      tmp_path / "outlier.keras"))
    code, err, rep = _convert(capsys, paths, "outlier", tmp_path / "auto", "--target",
                              "arm-cpu", "--method", "auto", "--max-drop", "1")
    assert code == 0, err
    stages = rep["autopilot"]["stages"]
    assert stages[0]["stage"] == "ptq" and not stages[0]["met_budget"], stages[0]  # the premise
    winner = rep["autopilot"]["winner"]
    assert winner["met_budget"] and winner["stage"] == "smooth", winner
    assert rep["accuracy"]["drop_pp"] <= 1.0
    alphas = [s["alpha"] for s in stages if s["stage"] == "smooth"]
    assert len(alphas) > 1  # searched, not fixed
    assert any(f"auto: {winner['name']} meets" in n for n in rep["notes"])


def test_clip_transform_bounds_the_activation_and_is_the_verified_float(transformers):
    import keras

    from edgeq.errors import UsageError
    from edgeq.transforms.clip import clip_activations, parse

    model = keras.models.load_model(transformers["pre"])
    x = np.load(transformers["test"])["x"].astype(np.float32)
    probe = keras.Model(model.inputs, model.get_layer("up").output)
    top = float(np.max(probe(x)))
    bound = top / 2
    result = clip_activations(model, x, str(bound))
    assert [c["layer"] for c in result.clipped] == ["up"]
    assert result.clipped[0]["hi"] == bound and result.clipped[0]["max_seen"] == top
    clipped = keras.Model(result.model.inputs, result.model.get_layer("up").output)
    assert float(np.max(clipped(x))) <= bound + 1e-6
    assert result.max_abs_diff > 0  # it changes the function: the report measures the cost
    searched = clip_activations(model, x, "auto")  # MSE bound per unbounded activation
    for c in searched.clipped:
        assert c["hi"] < c["max_seen"] and 0 < c["clipped_fraction"] < 0.5
    for bad in ("0", "-1", "x", "inf"):
        with pytest.raises(UsageError):
            parse(bad)


def test_bridge_carries_embedding_attention_layernorm_gelu_and_refuses_math_changes():
    import keras

    from edgeq.transforms.bridge import BridgeError, to_tf_keras

    def model(**mha_options):
        L = keras.layers
        inp = keras.Input((12,), dtype="int32")
        h = L.Embedding(50, 16, name="emb")(inp)
        a = L.MultiHeadAttention(2, 8, name="mha", **mha_options)(h, h)
        h = L.LayerNormalization(name="ln")(L.Add()([h, a]))
        h = L.Activation("gelu")(L.Dense(32, activation="gelu")(h))
        return keras.Model(inp, L.Dense(3)(L.GlobalAveragePooling1D()(h)))

    keras.utils.set_random_seed(0)
    x = np.random.default_rng(0).integers(0, 50, (8, 12)).astype("int32")
    result = to_tf_keras(model(), x)  # use_gate=False, sliding_window=None: tf_keras' math
    assert result.bridged and result.max_abs_diff <= 1e-5
    with pytest.raises(BridgeError, match="mha.*use_gate=True"):
        to_tf_keras(model(use_gate=True), x)  # a gated attention: tf_keras has none


def test_rewrites_compose(transformers):
    """A substituted GELU survives the next rewrite's clone: LayerNorm decomposition (a16w8
    with --substitute gelu) and SmoothQuant (auto after substituting) on the same model."""
    import keras

    from edgeq.transforms.smooth import smooth_model
    from edgeq.transforms.substitute import decompose_layernorms, substitute

    model = keras.models.load_model(transformers["post"])
    x = np.load(transformers["test"])["x"].astype(np.float32)[:64]
    gelu = substitute(model, x, ("gelu",))
    smoothed = smooth_model(gelu.model, x, alpha=0.5)
    assert "ln1" in smoothed.smoothed  # post-LN: its residual Add gets s back
    both = decompose_layernorms(smoothed.model, x)
    assert both.replaced == ("ln1", "ln2") and both.max_abs_diff < 1e-4
    names = {type(layer).__name__ for layer in both.model.layers}
    assert {"ScaledAdd", "DecomposedLayerNorm"} <= names
    assert both.model.get_layer("up").activation.__name__ == "gelu_sigmoid"
