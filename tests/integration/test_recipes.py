"""Precision recipes: the name decoder, targets that refuse what they cannot run (exit 3
before converting), and the converter-built recipes verified on LiteRT."""

from __future__ import annotations

import pytest

from edgeq.api import ConvertOptions, convert
from edgeq.cli import main
from edgeq.data import Preprocess
from edgeq.errors import UsageError
from edgeq.recipes import KNOWN, decode
from edgeq.formats.tflite import read_model
from tests.conftest import EXAMPLE

MODEL = str(EXAMPLE / "digits_cnn.keras")
CALIB = str(EXAMPLE / "digits_calibration.npz")
EVAL = str(EXAMPLE / "digits_eval.npz")


def test_decoder_vocabulary():
    assert decode("int8").canonical == "static_wi8_ai8"
    r = decode("wi4_block32_afp32")
    assert (r.weights, r.granularity, r.block_size, r.activations, r.static) == (
        "int4", "blockwise", 32, "float32", False)
    assert decode("a16w8").activations == "int16" and decode("a16w8").full_integer
    assert decode("dynamic_wi8_afp32").engine == "tflite-converter"
    assert decode("wi4_afp32").engine == "ai-edge-quantizer"
    assert decode("float16").weights == "float16"
    for name in KNOWN:
        assert decode(name).name == name
    for bad in ("int7", "wi8_ai4", "dynamic_wi8_ai8", "wi4_block33_afp32", "wi4_block16_afp32",
                "wi8_block32_afp32"):
        with pytest.raises(UsageError):
            decode(bad)


@pytest.mark.parametrize("target,recipe", [("cortex-m4", "dynamic_wi8_afp32"),
                                           ("coral", "float16"), ("cortex-m7", "a16w8"),
                                           ("coral", "wi4_afp32")])
def test_a_recipe_the_target_cannot_run_exits_3_before_converting(tmp_path, capsys, target,
                                                                   recipe):
    out = tmp_path / "out"
    code = main(["convert", MODEL, "--target", target, "--data", CALIB, "--recipe", recipe,
                 "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 3, err
    assert f"cannot run recipe '{recipe}'" in err and "Traceback" not in err
    assert not out.exists()


@pytest.mark.slow
@pytest.mark.parametrize("recipe,weights", [("dynamic_wi8_afp32", "int8"),
                                            ("float16", "float16"), ("a16w8", "int8"),
                                            ("wi4_afp32", "int4"),
                                            ("wi4_block32_afp32", "int4")])
def test_converter_recipes_verified_on_litert(tmp_path, recipe, weights):
    result = convert(ConvertOptions(model=MODEL, target="arm-cpu", data=CALIB, eval_data=EVAL,
                                    out=str(tmp_path / "o"), recipe=recipe,
                                    preprocess=Preprocess(scale=1 / 16)))
    report = result.report
    assert report.recipe["name"] == recipe and report.accuracy["runtime"] == "litert"
    assert report.accuracy["drop_pp"] <= 1.0 and report.latency_ms["median"] > 0
    assert report.accuracy["agreement"] > 0.97
    info = read_model((tmp_path / "o" / f"digits_cnn_{recipe}.tflite").read_bytes())
    stored = {t.dtype for t in info.tensors if t.constant_bytes > 0}
    assert weights in stored  # float16 weights sit behind DEQUANTIZE ops
    assert report.output["weight_bytes"] == info.weight_bytes
