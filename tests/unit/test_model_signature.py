"""The model's input and class count read from the file as data, before TensorFlow
(edgeq.formats.keras_signature, savedmodel_signature): checked against the int8 models MLPerf
Tiny publishes for the same networks (their I/O shapes come from another converter run)."""

from __future__ import annotations

import math

import pytest

from edgeq.formats import keras_files
from edgeq.formats.keras_signature import declared_io
from edgeq.formats.savedmodel_signature import savedmodel_io
from edgeq.formats.tflite import read_model
from tests.conftest import EXAMPLE


@pytest.mark.parametrize("name", ["ad_autoencoder", "ic_resnet8", "streaming_wakeword",
                                  "vww_mobilenet_96", "kws_dscnn"])
def test_mlperf_tiny_models_state_their_io(fixtures, name):
    d = fixtures / "models" / "mlperf_tiny"
    if name == "kws_dscnn":
        declared = savedmodel_io(d / "kws_dscnn_savedmodel")
    else:
        declared = declared_io(keras_files.h5_config(d / f"{name}.h5"))
    reference = read_model((d / f"{name}_int8_reference.tflite").read_bytes(), name)
    assert declared is not None
    assert declared.input_shape == tuple(reference.input_tensors[0].shape[1:])
    assert declared.input_dtype == "float32"
    assert declared.classes == math.prod(reference.output_tensors[0].shape[1:])


def test_bundled_example_and_what_the_config_cannot_state():
    config = keras_files.keras_config(EXAMPLE / "digits_cnn.keras")
    declared = declared_io(config)
    assert declared is not None
    assert (declared.input_shape, declared.classes, declared.input_name) == ((8, 8, 1), 10,
                                                                             "pixels")
    # A Dense on a rank-3 input (a sequence) has (T, units) outputs: not stated, so None.
    layers = config["config"]["layers"]
    seq = {**config, "config": {**config["config"], "layers": [
        {"class_name": "InputLayer", "config": {"batch_shape": [None, 5, 4], "name": "x"}},
        {"class_name": "Dense", "config": {"name": "d", "units": 3}}]}}
    assert declared_io(seq).classes is None and declared_io(seq).input_shape == (5, 4)
    # A dynamic dimension, several inputs or a nested model: nothing stated.
    dynamic = {**config, "config": {**config["config"], "layers": [
        {**layers[0], "config": {**layers[0]["config"], "batch_shape": [None, None, 8, 1]}},
        *layers[1:]]}}
    assert declared_io(dynamic) is None
    assert declared_io({"class_name": "Functional", "config": {
        "layers": layers, "input_layers": [["a", 0, 0], ["b", 0, 0]],
        "output_layers": [["dense_1", 0, 0]]}}) is None
    assert declared_io([1, 2]) is None and declared_io({"class_name": "Custom"}) is None


def test_a_damaged_saved_model_pb_is_left_to_tensorflow(tmp_path):
    (tmp_path / "saved_model.pb").write_bytes(b"\x12\xff\xff\xff\xff\x0f garbage")
    assert savedmodel_io(tmp_path) is None
    assert savedmodel_io(tmp_path / "missing") is None
