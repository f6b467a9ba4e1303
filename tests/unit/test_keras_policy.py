"""The Keras config policy as a function of plain data (edgeq.formats.keras_config_policy): what
it accepts, what it refuses and how it names the place; no Keras, no files."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest

from edgeq.errors import ModelFileError, UnsafeModelError
from edgeq.formats.keras_config_policy import (
    MAX_DEPTH,
    MAX_VALUES,
    ConfigTooComplexError,
    check_config,
    describe,
    find_code,
)
from tests.conftest import FIXTURES, ROOT
from tests.keras_hostile import keras3_lambda, payload_code, read_config, strip_modules

CODE = payload_code(Path("/nonexistent/MARKER"))


def _model(*layers: dict) -> dict:
    return {"module": "keras", "class_name": "Sequential", "registered_name": None,
            "config": {"name": "m", "layers": [
                {"module": "keras.layers", "class_name": "InputLayer", "registered_name": None,
                 "config": {"name": "in", "batch_shape": [None, 4]}}, *layers]},
            "compile_config": None}


def _dense(**config) -> dict:
    return {"module": "keras.layers", "class_name": "Dense", "registered_name": None,
            "config": {"name": "dense", "units": 2, **config}}


def _one(config: dict):
    found = find_code(config)
    assert found, config
    return found[0]


def test_built_in_objects_functions_and_names_are_accepted():
    config = _model(_dense(
        activation={"module": "keras.activations", "class_name": "function", "config": "gelu",
                    "registered_name": "gelu"},
        kernel_initializer="he_normal", bias_initializer={
            "module": "keras.initializers", "class_name": "Zeros", "config": {},
            "registered_name": None},
        kernel_regularizer={"module": "keras.regularizers", "class_name": "L2",
                            "config": {"l2": 0.01}, "registered_name": None},
        kernel_constraint="max_norm", dtype={"module": "keras", "class_name": "DTypePolicy",
                                             "config": {"name": "mixed_float16"},
                                             "registered_name": None}),
        {"class_name": "TFOpLambda", "config": {"name": "add", "function": "__operators__.add"}},
        {"class_name": "Activation", "config": {"name": "a", "activation": "relu6"}})
    config["compile_config"] = {"loss": "my_custom_loss", "metrics": ["f1_custom"]}
    assert find_code(config) == []
    assert find_code(strip_modules(copy.deepcopy(config))) == []


def test_every_real_config_is_accepted():
    files = [*FIXTURES.rglob("*.h5"), *(ROOT / "representative_data").glob("*.keras")]
    for path in files:
        assert find_code(read_config(path)) == [], path


@pytest.mark.parametrize("layer,key,what", [
    (_dense(activation=keras3_lambda(CODE)), "activation", "serialized lambda function"),
    (_dense(activation="evil"), "activation", "names 'evil'"),
    (_dense(kernel_initializer="evil_init"), "kernel_initializer", "names 'evil_init'"),
    (_dense(note=CODE), "note", "marshalled Python bytecode"),
    (_dense(function=[CODE, None, None], function_type="lambda"), "function", "lambda"),
    (_dense(mask="f", mask_type="function"), "mask", "looked up by name"),
    (_dense(residual_fn=["x", None, None]), "residual_fn", "residual function"),
    (_dense(dropout_fn="x"), "dropout_fn", "state filter"),
    ({**_dense(), "module": "evil.layers"}, "class_name", "from module 'evil.layers'"),
    ({**_dense(), "registered_name": "Pkg>Dense"}, "class_name", "'Pkg>Dense'"),
    ({**_dense(), "class_name": "Backdoor"}, "class_name", "unknown class 'Backdoor'"),
    ({**_dense(), "class_name": 7}, "class_name", "not a class name"),
    ({"class_name": "TFOpLambda", "config": {"name": "w", "function": "io.write_file"}},
     "function", "'io.write_file'"),
    ({"class_name": "TFOpLambda", "config": {"name": "w", "function": "raw_ops.WriteFile"}},
     "function", "'raw_ops.WriteFile'"),
    ({"class_name": "TFSMLayer", "config": {"name": "t"}}, "class_name", "loads another model"),
    ({"class_name": "TorchModuleWrapper", "config": {"name": "t"}}, "class_name", "unpickles"),
    (_dense(activation={"module": "os", "class_name": "function", "config": "relu"}),
     "activation", "from module 'os'"),
    (_dense(activation={"class_name": "function", "config": "system"}), "activation",
     "'system'"),
    (_dense(extra={"class_name": "Evil", "config": {}, "__passive_serialization__": True}),
     "extra", "unknown class 'Evil'"),
    (_dense(spec={"class_name": "__typespec__", "spec_name": "system", "module": "os"}), "spec",
     "type spec"),
])
def test_code_carriers_are_found_with_their_key(layer, key, what):
    found = _one(_model(layer))
    assert found.key == key and what in found.what, found


def test_the_message_names_the_file_layer_path_and_key(tmp_path):
    cell = {"class_name": "ResidualWrapper", "config": {
        "name": "residual_wrapper", "residual_fn": [CODE, None, None],
        "residual_fn_type": "lambda", "cell": {"class_name": "LSTMCell",
                                               "config": {"name": "c", "units": 3}}}}
    config = _model({"class_name": "RNN", "config": {"name": "rnn", "cell": cell}})
    with pytest.raises(UnsafeModelError) as info:
        check_config(tmp_path / "m.h5", config, "model_config", allow_unsafe=False)
    text = str(info.value)
    assert "\n" not in text and text.startswith(f"model '{tmp_path / 'm.h5'}': layer "
                                                f"'rnn/residual_wrapper' (model_config: ")
    assert "config.layers[1].config.cell.config.residual_fn): key 'residual_fn'" in text
    assert "--allow-unsafe" in text and "more finding" not in text  # one place, said once
    check_config(tmp_path / "m.h5", config, "model_config", allow_unsafe=True)


def test_lambda_layers_are_listed_together():
    lam = {"class_name": "Lambda", "config": {"name": "one", "function": [CODE, None, None],
                                              "function_type": "lambda"}}
    config = _model(lam, {**lam, "config": {**lam["config"], "name": "two"}},
                    _dense(activation="evil"))
    text = describe(find_code(config), "config.json")
    assert text.startswith("has Lambda layer(s) one, two (config.json: config.layers[1], key "
                           "'function')") and text.endswith("(and 1 more finding)")


def test_nested_models_and_their_compile_config_are_walked():
    inner = {**_model(_dense(activation="evil")), "compile_config": {
        "loss": keras3_lambda(CODE)}}
    inner["config"]["name"] = "inner"
    found = find_code(_model(inner))
    assert [(f.owner, f.key) for f in found] == [("inner/dense", "activation"), ("inner", "loss")]


def test_top_level_compile_config_is_left_to_keras_which_drops_it():
    config = _model()
    config["compile_config"] = {"loss": keras3_lambda(CODE)}
    assert find_code(config) == []


@pytest.mark.parametrize("config", [[], "model", 3, None, {"config": {}}])
def test_a_config_that_is_not_an_object_is_malformed(tmp_path, config):
    with pytest.raises(ModelFileError, match="not a Keras model config") as info:
        check_config(tmp_path / "m.keras", config, "config.json", allow_unsafe=True)
    assert not isinstance(info.value, UnsafeModelError)


def test_deep_nesting_is_refused_without_recursion(tmp_path):
    value: object = "relu"
    for _ in range(MAX_DEPTH * 50):  # far past Python's recursion limit
        value = [value]
    config = _model(_dense(activation=value))
    assert sys.getrecursionlimit() < MAX_DEPTH * 50
    with pytest.raises(ConfigTooComplexError):
        find_code(config)
    with pytest.raises(ModelFileError, match=f"nested deeper than {MAX_DEPTH} levels"):
        check_config(tmp_path / "m.keras", config, "config.json", allow_unsafe=False)


def test_builtins_are_not_imported_with_edgeq():
    import subprocess

    code = ("import sys, edgeq.pipeline.load, edgeq.formats.keras_config_policy; "
            "print(any(m in sys.modules for m in ('tensorflow', 'keras', 'tf_keras', "
            "'edgeq.formats.keras_builtins')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={"PYTHONPATH": str(ROOT)}, check=True)
    assert out.stdout.strip() == "False"


def test_a_config_of_millions_of_values_is_refused_before_it_is_walked(tmp_path):
    config = _model(_dense(activation=[{}] * (MAX_VALUES + 1)))
    with pytest.raises(ModelFileError, match="holds more than 2,000,000 values"):
        check_config(tmp_path / "m.keras", config, "config.json", allow_unsafe=False)
