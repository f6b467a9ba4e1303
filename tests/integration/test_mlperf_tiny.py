"""The MLPerf Tiny reference networks convert for cortex-m4 and arm-cpu with the op list of
the int8 models MLPerf Tiny publishes, and the reported arena is what TFLite Micro's
recording allocator reports for the output model."""

from __future__ import annotations

import re

import numpy as np
import pytest

from edgeq.api import ConvertOptions, convert
from edgeq.data import Preprocess
from edgeq.formats.tflite import read_model, read_model_file

pytestmark = pytest.mark.slow

# name -> (model path, reference, per-sample shape, how to make calibration data)
NETWORKS = {
    "ic_resnet8": ("ic_resnet8.h5", "ic_resnet8_int8_reference.tflite"),
    "vww_mobilenet_96": ("vww_mobilenet_96.h5", "vww_mobilenet_96_int8_reference.tflite"),
    "kws_dscnn": ("kws_dscnn_savedmodel", "kws_dscnn_int8_reference.tflite"),
}
# TF 2.21's converter folds the Flatten before a Dense into FULLY_CONNECTED (which flattens its
# input itself); the reference models, converted with an older TF, keep it as a RESHAPE.
FOLDED_BY_NEWER_CONVERTER = {"RESHAPE"}


def _calibration(name: str, fixtures, tmp_path) -> tuple[str, Preprocess]:
    if name in ("ic_resnet8", "vww_mobilenet_96"):
        # The three real photos of the fixtures, resized to the model input by the image loader.
        scale = 1.0 if name == "ic_resnet8" else 1 / 255  # ResNet-8 takes raw 0..255 pixels
        return str(fixtures / "data" / "images"), Preprocess(scale=scale)
    x = np.random.default_rng(0).normal(0.0, 1.0, size=(16, 49, 10, 1)).astype(np.float32)
    np.savez(tmp_path / "kws.npz", x=x)
    return str(tmp_path / "kws.npz"), Preprocess()


def _tflm_arena(model_path, capfd) -> dict[str, int]:
    """Arena figures straight from the tflite-micro package, independent of edgeq's adapter."""
    from tflite_micro.python.tflite_micro import runtime

    capfd.readouterr()
    interp = runtime.Interpreter.from_file(str(model_path), arena_size=16 << 20)
    interp.print_allocations()
    err = capfd.readouterr().err
    return {k: int(v) for k, v in re.findall(r"Arena allocation (\w+) (\d+) bytes", err)}


@pytest.mark.parametrize("target", ["cortex-m4", "arm-cpu"])
@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_mlperf_network_converts_like_reference(name, target, fixtures, tmp_path, capfd):
    model_file, reference = NETWORKS[name]
    data, pre = _calibration(name, fixtures, tmp_path)
    out = tmp_path / "out"
    result = convert(ConvertOptions(
        model=str(fixtures / "models" / "mlperf_tiny" / model_file), target=target, data=data,
        out=str(out), preprocess=pre, measure_latency=False,
    ))
    assert result.ok, result.gate_error
    produced = next(out.glob("*.tflite"))
    info = read_model_file(produced)
    ref = read_model_file(fixtures / "models" / "mlperf_tiny" / reference)

    ours, theirs = set(info.op_names), set(ref.op_names)
    assert ours <= theirs, f"ops the reference lacks: {ours - theirs}"
    assert theirs - ours <= FOLDED_BY_NEWER_CONVERTER, f"missing ops: {theirs - ours}"
    assert not {"SHAPE", "STRIDED_SLICE", "PACK"} & ours, "dynamic-batch ops leaked in"
    assert not info.dynamic_tensors
    assert [op["op"] for op in result.report.ops] == list(info.op_names)

    if target == "cortex-m4":
        measured = _tflm_arena(produced, capfd)
        mem = result.report.memory
        assert (mem["arena_bytes"], mem["arena_head_bytes"], mem["arena_tail_bytes"]) == (
            measured["total"], measured["head"], measured["tail"])
        assert result.report.accuracy["runtime"] == "tflm"
    else:
        assert result.report.memory["arena_bytes"] is None


def test_reference_models_parse_with_dynamic_batch(fixtures):
    """Sanity check of the reader: the published references keep a dynamic batch (-1), which
    is exactly what edgeq's outputs must not have."""
    info = read_model((fixtures / "models/mlperf_tiny/ic_resnet8_int8_reference.tflite").read_bytes())
    assert info.input_tensors[0].shape_signature[0] == -1
    assert "CONV_2D" in info.op_names
