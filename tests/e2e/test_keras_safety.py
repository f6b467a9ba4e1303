"""Issue 14, item 1: one safe-loading policy for every Keras format and loader. Each entry that
can carry code, in a real .keras and a real .h5, with and without Keras 3's module keys, is
refused by `edgeq convert` with exit 2 and one line naming the layer and the key, and the
payload (which creates a marker file) never runs. The payloads are shown to run when the policy
is bypassed, and ordinary models still load."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest

from edgeq.cli import main
from tests.conftest import FIXTURES, ROOT
from tests.keras_hostile import edited, keras3_lambda, payload_code, read_config, strip_modules

DATA = ROOT / "representative_data" / "digits_calibration.npz"
EVIL_MODULE = "edgeq_evil_module"


@pytest.fixture(scope="module")
def bases(tmp_path_factory) -> dict[str, Path]:
    """Real files: a Keras 3 Sequential CNN as .keras and .h5, and a tf_keras RNN model whose
    cells sit in a ResidualWrapper and a DropoutWrapper (the issue's case), as .h5."""
    import keras
    import tf_keras
    from tf_keras.src.layers.rnn.cell_wrappers import DropoutWrapper, ResidualWrapper

    out = tmp_path_factory.mktemp("bases")
    k3 = keras.Sequential([
        keras.Input((8, 8, 1)),
        keras.layers.Conv2D(4, 3, activation="relu", name="conv2d"),
        keras.layers.BatchNormalization(),
        keras.layers.DepthwiseConv2D(3, activation="gelu"),
        keras.layers.Flatten(),
        keras.layers.Dense(10, activation="softmax"),
    ])
    k3.save(out / "k3.keras")
    k3.save(out / "k3.h5")
    tl = tf_keras.layers
    rnn = tf_keras.Sequential([
        tf_keras.Input((5, 3)),
        tl.RNN(ResidualWrapper(tl.LSTMCell(3)), return_sequences=True, name="rnn"),
        tl.RNN(DropoutWrapper(tl.GRUCell(3)), name="rnn_1"),
    ])
    rnn.save(out / "tfk_rnn.h5")
    return {"keras": out / "k3.keras", "h5": out / "k3.h5", "rnn": out / "tfk_rnn.h5"}


def _layers(c: dict) -> list:
    return c["config"]["layers"]


def _conv(c: dict) -> dict:
    return next(layer for layer in _layers(c) if layer["class_name"] == "Conv2D")


def _set(**values):
    """An edit that sets keys of the Conv2D layer's config; values may use `code`."""
    def edit(c, code, legacy):
        _conv(c)["config"].update({k: (v(code, legacy) if callable(v) else v)
                                   for k, v in values.items()})
    return edit


def _insert(layer):
    def edit(c, code, legacy):
        _layers(c).insert(2, layer(code, legacy))
    return edit


def _lambda_fn(code, legacy):
    return [code, None, None] if legacy else keras3_lambda(code)


def _nested(compile_config):
    """A nested Sequential model with a compile_config (a nested model's is deserialized)."""
    return lambda code, legacy: {
        "module": "keras", "class_name": "Sequential", "registered_name": None,
        "config": {"name": "inner", "layers": []}, "compile_config": compile_config(code)}


def _entry(**values):
    """An edit that sets keys of the Conv2D layer's entry (beside its config)."""
    def edit(c, code, legacy):
        _conv(c).update({k: v(code) for k, v in values.items()})
    return edit


def _wrapper(index: int, fn_key: str):
    """Give the RNN wrapper cell of the tf_keras model a marshalled function under fn_key (the
    issue's case for index 1, the ResidualWrapper); in a .keras, the tf_keras RNN layer is
    first inserted into the Keras 3 model."""
    def edit(c, code, legacy, rnn_config=None):
        if c["config"]["layers"][1]["class_name"] != "RNN":  # the Keras 3 CNN: bring the RNN
            _layers(c).insert(index, copy.deepcopy(rnn_config["config"]["layers"][index]))
        cell = c["config"]["layers"][index]["config"]["cell"]["config"]
        cell.update({fn_key: [code, None, None], f"{fn_key}_type": "lambda"})
    edit.needs_rnn = True
    return edit


# name: (edit(config, code, legacy), key named, layer named, hostile once module keys are gone)
CASES = {
    "Lambda layer": (_insert(lambda code, legacy: {
        "module": "keras.layers", "class_name": "Lambda", "registered_name": None,
        "config": {"name": "payload", "function": _lambda_fn(code, legacy), "arguments": {},
                   **({"function_type": "lambda"} if legacy else {})}}),
        "function", "payload", True),
    "function_type lambda": (_set(function=_lambda_fn, function_type="lambda"), "function",
                             "conv2d", True),
    "output_shape_type lambda": (_set(output_shape=lambda code, legacy: [code, None, None],
                                      output_shape_type="lambda"), "output_shape", "conv2d", True),
    "mask_type function": (_set(mask="payload_fn", mask_type="function"), "mask", "conv2d", True),
    "activation as a lambda": (_set(activation=lambda code, legacy: keras3_lambda(code)),
                               "activation", "conv2d", True),
    "activation by custom name": (_set(activation="payload_fn"), "activation", "conv2d", True),
    "activation from another module": (_set(activation={
        "module": EVIL_MODULE, "class_name": "function", "config": "payload_fn",
        "registered_name": "payload_fn"}), "activation", "conv2d", True),
    "initializer as a lambda": (_set(kernel_initializer=lambda code, legacy: keras3_lambda(code)),
                                "kernel_initializer", "conv2d", True),
    "regularizer from another module": (_set(kernel_regularizer={
        "module": EVIL_MODULE, "class_name": "EvilRegularizer", "config": {},
        "registered_name": "Evil>EvilRegularizer"}), "kernel_regularizer", "conv2d", True),
    "constraint by custom name": (_set(kernel_constraint="payload_constraint"),
                                  "kernel_constraint", "conv2d", True),
    "dtype policy from another module": (_set(dtype={
        "module": EVIL_MODULE, "class_name": "EvilPolicy", "config": {"name": "float32"},
        "registered_name": None}), "dtype", "conv2d", True),
    "passive serialization": (_set(extra={"class_name": "EvilThing", "config": {},
                                          "__passive_serialization__": True}),
                              "extra", "conv2d", True),
    "bytecode under any key": (_set(note=lambda code, legacy: code), "note", "conv2d", True),
    "custom layer class": (_insert(lambda code, legacy: {
        "module": EVIL_MODULE, "class_name": "Backdoor", "registered_name": "Evil>Backdoor",
        "config": {"name": "backdoor"}}), "class_name", "backdoor", True),
    "custom registered name": (_entry(registered_name=lambda code: "Evil>Conv2D"),
                               "class_name", "conv2d", False),
    "TFOpLambda with I/O": (_insert(lambda code, legacy: {
        "class_name": "TFOpLambda", "config": {"name": "tf_op", "function": "io.write_file"}}),
        "function", "tf_op", True),
    "TFSMLayer": (_insert(lambda code, legacy: {
        "module": "keras.layers", "class_name": "TFSMLayer",
        "config": {"name": "tfsm", "filepath": "/tmp/elsewhere"}}), "class_name", "tfsm", True),
    "nested compile_config loss": (_insert(_nested(lambda code: {"loss": keras3_lambda(code)})),
                                   "loss", "inner", True),
    "nested compile_config metric": (_insert(_nested(lambda code: {"metrics": [{
        "class_name": "MeanMetricWrapper", "config": {"name": "m", "fn": "payload_fn"}}]})),
        "fn", "inner", True),
    "call argument": (_entry(inbound_nodes=lambda code: [
        {"args": [], "kwargs": {"mask": keras3_lambda(code)}}]), "mask", "conv2d", True),
    "build_config": (_entry(build_config=lambda code: {"input_shape": keras3_lambda(code)}),
                     "input_shape", "conv2d", True),
    "ResidualWrapper residual_fn": (_wrapper(1, "residual_fn"), "residual_fn",
                                    "rnn/residual_wrapper", True),
    "DropoutWrapper dropout_fn": (_wrapper(2, "dropout_fn"), "dropout_fn",
                                  "rnn_1/dropout_wrapper", True),
}
VARIANTS = [(case, fmt, strip) for case in CASES for fmt in ("keras", "h5")
            for strip in (False, True) if not strip or CASES[case][3]]


def _hostile(bases, tmp_path, case, fmt, strip, marker) -> Path:
    edit, *_ = CASES[case]
    code = payload_code(marker)
    legacy = fmt == "h5"
    src = bases["rnn"] if getattr(edit, "needs_rnn", False) and fmt == "h5" else bases[fmt]
    if getattr(edit, "needs_rnn", False):
        rnn = read_config(bases["rnn"])
        apply = lambda c: edit(c, code, legacy, rnn_config=rnn)  # noqa: E731
    else:
        apply = lambda c: edit(c, code, legacy)  # noqa: E731
    return edited(src, tmp_path / f"hostile.{fmt}", apply, strip=strip)


@pytest.mark.parametrize("case,fmt,strip", VARIANTS, ids=[
    f"{c}-{f}-{'no modules' if s else 'modules'}" for c, f, s in VARIANTS])
def test_code_in_a_keras_config_is_refused_and_never_runs(bases, tmp_path, capsys, case, fmt,
                                                          strip):
    marker = tmp_path / "MARKER"
    model = _hostile(bases, tmp_path, case, fmt, strip, marker)
    code = main(["convert", str(model), "--target", "cortex-m4", "--data", str(DATA),
                 "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    _, key, layer, _ = CASES[case]
    lines = [ln for ln in err.splitlines() if ln.startswith("edgeq: error:")]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert str(model) in lines[0] and f"'{key}'" in lines[0] and layer in lines[0], lines[0]
    assert "--allow-unsafe" in lines[0]
    assert not marker.exists(), f"{case}: the payload ran"
    assert not (tmp_path / "out").exists()


# --- the payloads are real: they run when the policy is bypassed --------------------------------


def _run_python(code: str, cwd: Path, *paths: str) -> subprocess.CompletedProcess:
    import os

    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), *paths]),
               TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def test_the_issue_case_runs_in_tf_keras_and_is_refused_by_edgeq(bases, tmp_path, capsys):
    """The legacy .h5 RNN whose ResidualWrapper cell carries a marshalled residual_fn, with the
    module keys removed: Keras 3 cannot load it, tf_keras' legacy loader runs the bytecode."""
    marker = tmp_path / "MARKER"
    model = _hostile(bases, tmp_path, "ResidualWrapper residual_fn", "h5", True, marker)
    proc = _run_python(f"import tf_keras; tf_keras.models.load_model({str(model)!r}, "
                       "compile=False)", tmp_path)
    assert proc.returncode == 0 and marker.exists(), proc.stderr[-2000:]
    marker.unlink()
    assert main(["analyze", str(model), "--target", "cortex-m4"]) == 2
    assert "key 'residual_fn'" in capsys.readouterr().err and not marker.exists()


def test_allow_unsafe_loads_what_the_policy_refuses(bases, tmp_path):
    """--allow-unsafe reaches the loaders (tf_keras outside its safe-mode scope): the issue's
    file runs its payload, as a trusted file with a lambda should load."""
    from edgeq.pipeline.load import load_model

    marker = tmp_path / "MARKER"
    model = _hostile(bases, tmp_path, "ResidualWrapper residual_fn", "h5", True, marker)
    loaded = load_model(model, allow_unsafe=True)
    assert marker.exists() and loaded.loader.startswith("tf_keras")


def test_tf_keras_fallback_keeps_its_safe_mode_if_the_policy_were_bypassed(bases, tmp_path,
                                                                          monkeypatch):
    """The second lock: with the policy switched off, the tf_keras fallback still refuses the
    lambda, because it runs inside tf_keras' safe-mode scope."""
    from edgeq.errors import ModelFileError
    from edgeq.formats import keras_config_policy
    from edgeq.pipeline.load import load_model

    marker = tmp_path / "MARKER"
    model = _hostile(bases, tmp_path, "ResidualWrapper residual_fn", "h5", True, marker)
    monkeypatch.setattr(keras_config_policy, "find_code", lambda config: [])
    with pytest.raises(ModelFileError, match="neither Keras 3 nor tf_keras can load it"):
        load_model(model)
    assert not marker.exists()


def test_a_module_named_by_the_config_is_imported_by_keras_even_in_safe_mode(bases, tmp_path,
                                                                            capsys):
    """Keras 3's safe_mode does not stop it importing a module a config names under the
    keras_hub/keras_cv/keras_nlp packages; a planted package of that name (where Python looks
    for modules) runs. The policy refuses any module outside keras and tf_keras."""
    marker = tmp_path / "MARKER"
    plant = tmp_path / "plant" / "keras_hub"
    plant.mkdir(parents=True)
    (plant / "__init__.py").write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\n")
    model = edited(bases["keras"], tmp_path / "planted.keras", lambda c: _layers(c).insert(2, {
        "module": "keras_hub.layers", "class_name": "Backdoor", "registered_name": None,
        "config": {"name": "backdoor"}}))
    proc = _run_python(f"import keras\ntry:\n    keras.models.load_model({str(model)!r}, "
                       "compile=False, safe_mode=True)\nexcept Exception as e:\n    print(e)",
                       tmp_path, str(plant.parent))
    assert marker.exists(), proc.stdout[-2000:] + proc.stderr[-2000:]
    marker.unlink()
    assert main(["analyze", str(model), "--target", "cortex-m4"]) == 2
    assert "from module 'keras_hub.layers'" in capsys.readouterr().err and not marker.exists()


def test_a_lambda_layer_runs_in_keras_3_without_safe_mode(bases, tmp_path):
    from edgeq.pipeline.load import load_model

    marker = tmp_path / "MARKER"
    model = _hostile(bases, tmp_path, "Lambda layer", "keras", False, marker)
    load_model(model, allow_unsafe=True)  # the payload returns its input: the model works
    assert marker.exists()


def test_analyze_refuses_like_convert_and_takes_allow_unsafe(bases, tmp_path, capsys):
    """analyze converts a Keras model first, so it applies the same policy and the same flag."""
    marker = tmp_path / "MARKER"
    model = _hostile(bases, tmp_path, "Lambda layer", "keras", False, marker)
    assert main(["analyze", str(model), "--target", "cortex-m4"]) == 2
    err = capsys.readouterr().err
    assert "Lambda layer" in err and "--allow-unsafe" in err and not marker.exists()
    assert main(["analyze", str(model), "--target", "arm-cpu", "--allow-unsafe"]) == 0
    assert marker.exists()  # the flag did reach the loader: the trusted file's code ran


# --- ordinary models load -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def ordinary(tmp_path_factory) -> list[Path]:
    import keras
    import tf_keras
    from tf_keras.src.layers.rnn.cell_wrappers import DropoutWrapper, ResidualWrapper

    out = tmp_path_factory.mktemp("ordinary")
    L = keras.layers
    inner = keras.Sequential([keras.Input((6, 6, 4)), L.Conv2D(4, 1, activation="swish")],
                             name="inner")
    x_in = keras.Input((6, 6, 3))
    x = L.Conv2D(4, 3, padding="same", activation="relu6", kernel_regularizer="l2",
                 kernel_constraint="max_norm", kernel_initializer="he_normal")(x_in)
    x = L.BatchNormalization()(x)
    y = L.DepthwiseConv2D(3, padding="same", activation=keras.activations.hard_sigmoid)(x)
    x = L.Add()([x, inner(y)])
    x = L.Reshape((6, 24))(x)
    x = L.Bidirectional(L.LSTM(4, return_sequences=True))(x)
    x = L.TimeDistributed(L.Dense(3, activation="gelu"))(x)
    x = L.GRU(3, return_sequences=True)(x)
    x = L.SimpleRNN(3)(x)
    functional = keras.Model(x_in, L.Dense(2, activation="softmax")(x))
    functional.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    o_in = keras.Input((4,))  # keras.ops in a functional model serialize as Operation classes
    ops = keras.Model(o_in, L.Dense(2)(keras.ops.add(keras.ops.multiply(o_in, 2.0), 1.0)))
    models = {"functional": functional, "ops": ops,
              "sequential": keras.Sequential([keras.Input((4,)), L.Dense(3, activation="tanh"),
                                              L.Dropout(0.1), L.Dense(2)])}
    paths = []
    for name, model in models.items():
        # Keras 3's legacy .h5 writer saves keras.ops calls in a form its reader rejects.
        for suffix in (".keras",) if name == "ops" else (".keras", ".h5"):
            model.save(out / f"{name}{suffix}")
            paths.append(out / f"{name}{suffix}")
    tl = tf_keras.layers
    t_in = tf_keras.Input((5, 3))
    t = tl.RNN(ResidualWrapper(tl.LSTMCell(3)), return_sequences=True)(t_in)
    t = tl.RNN(DropoutWrapper(tl.GRUCell(3), input_keep_prob=0.9))(t)
    t = t * 2.0 + 1.0  # TFOpLambda layers: __operators__.mul / math.multiply, add
    t = tf_keras.activations.relu(t)
    tfk = tf_keras.Model(t_in, tl.Dense(2, activation="softmax")(t))
    tfk.compile("adam", "categorical_crossentropy", metrics=["accuracy"])
    tfk.save(out / "tf_keras_rnn.h5")
    paths.append(out / "tf_keras_rnn.h5")
    return paths


def test_ordinary_models_pass_the_policy_and_load(ordinary):
    from edgeq.pipeline.load import check_keras_file, load_model

    for path in ordinary:
        check_keras_file(path)
        loaded = load_model(path)
        assert loaded.output_shapes[0][-1] == 2, path


def test_no_fixture_model_is_refused():
    """Every .keras/.h5 under ../shared/fixtures and the bundled example passes the checks."""
    from edgeq.errors import InputError
    from edgeq.pipeline.load import check_keras_file

    files = sorted([*FIXTURES.rglob("*.keras"), *FIXTURES.rglob("*.h5"),
                    *(ROOT / "representative_data").glob("*.keras")])
    assert len(files) >= 5
    refused = {}
    for path in files:
        try:
            check_keras_file(path)
        except InputError as err:
            refused[str(path)] = str(err)
    assert not refused, refused


def test_stripping_module_keys_from_ordinary_models_keeps_them_acceptable(ordinary, tmp_path):
    """Legacy .h5 configs have no module keys; the policy then goes by class name alone."""
    from edgeq.pipeline.load import check_keras_file

    for path in ordinary:
        check_keras_file(edited(path, tmp_path / path.name, strip_modules))
