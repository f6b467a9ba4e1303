"""`edgeq analyze` on TFLite Micro targets for models from the wild (issue 13): every model of
device_truth/tflm gets the arena its manifest records (float I/O, uint8 I/O, int32 shape
bookkeeping, float ops inside); a model over the RAM budget exits 3 with every figure in
--json; a model already compiled by Vela is named; an arena bigger than the first try is still
measured exactly; and scales TFLite Micro aborts on are refused by name before it runs."""

from __future__ import annotations

import json
import re
from dataclasses import replace
import subprocess
import sys

import numpy as np
import pytest

from edgeq.cli import main
from edgeq.formats.kernel_limits import SOFTMAX_MIN_SCALE, scale_problems, with_safe_scales
from edgeq.formats.tflite import read_model_file
from tests.conftest import ROOT

VELA_COMPILED = ROOT / "tests" / "data" / "vela" / "mixed_int8.ethos-u55-128_vela.tflite"


def _manifest(fixtures) -> list[dict]:
    manifest = json.loads((fixtures / "device_truth" / "tflm" / "manifest.json").read_text())
    assert manifest["n_models"] == len(manifest["models"]) >= 4
    return manifest["models"]


def _analyze(capsys, *argv: str) -> tuple[int, dict | None, str]:
    code = main(["analyze", *argv, "--json"])
    captured = capsys.readouterr()
    return code, (json.loads(captured.out) if captured.out.strip() else None), captured.err


def _arena(report: dict) -> tuple[int, int, int]:
    mem = report["memory"]
    return mem["arena_bytes"], mem["arena_head_bytes"], mem["arena_tail_bytes"]


@pytest.mark.parametrize("target", ["cortex-m7", "cortex-m4"])
def test_device_truth_models_get_the_manifest_arena(fixtures, target, capsys):
    for ref in _manifest(fixtures):
        path = fixtures / "device_truth" / "tflm" / ref["stored"]
        code, report, err = _analyze(capsys, str(path), "--target", target)
        assert report is not None, (ref["stored"], err)
        assert _arena(report) == (ref["total"], ref["head"], ref["tail"]), ref["stored"]
        assert report["memory"]["flash_bytes"] == ref["bytes"]
        assert {op["placement"] for op in report["ops"]} == {"mcu"}, ref["stored"]
        budget = report["memory"]["budget_ram_bytes"]
        if ref["total"] <= budget:
            assert code == 0, (ref["stored"], err)
        else:  # over the budget: exit 3, one line, and the JSON above still has the figures
            assert code == 3 and report["summary"]["fits"] is False, ref["stored"]
            line = err.strip()
            assert line.startswith("edgeq: error:") and "\n" not in line
            assert f"({ref['total']} B) > RAM budget" in line


def test_float_io_runs_on_the_mcu_and_says_what_it_costs(fixtures, capsys):
    ref = next(m for m in _manifest(fixtures) if m["inputs"][0][0] == "FLOAT32"
               and m["outputs"][0][0] == "FLOAT32")
    path = fixtures / "device_truth" / "tflm" / ref["stored"]
    info = read_model_file(path)
    code, report, err = _analyze(capsys, str(path), "--target", "cortex-m7")
    assert code == 0, err
    ops = report["ops"]
    first, last = ops[0], ops[-1]
    assert (first["op"], last["op"]) == ("QUANTIZE", "DEQUANTIZE")
    assert first["placement"] == last["placement"] == "mcu"
    assert "float I/O" in first["reason"] and "float I/O" in last["reason"]
    # The integer ops between them (int32 shape bookkeeping included) are plain MCU ops.
    assert all("float" not in op["reason"] for op in ops[1:-1])
    inp = info.input_tensors[0]
    floats = int(np.prod(inp.shape)) * 4
    note = next(n for n in report["notes"] if f"input '{inp.name}'" in n)
    assert f"{floats} B in the arena instead of {floats // 4} B as int8" in note
    assert "QUANTIZE (op 0)" in note and "MCU core" in note


def test_float_op_inside_an_integer_model_runs_on_the_mcu(fixtures, capsys):
    ref = next(m for m in _manifest(fixtures) if "EXP" in m["op_counts"])
    path = fixtures / "device_truth" / "tflm" / ref["stored"]
    code, report, err = _analyze(capsys, str(path), "--target", "cortex-m7")
    assert code == 0, err
    exp = [op for op in report["ops"] if op["op"] == "EXP"]
    assert len(exp) == ref["op_counts"]["EXP"]
    assert all(op["placement"] == "mcu" and "float32 kernel" in op["reason"] for op in exp)


def test_vela_compiled_model_names_the_op_and_the_target(capsys):
    code, report, err = _analyze(capsys, str(VELA_COMPILED), "--target", "cortex-m7")
    assert code == 3
    line = err.strip()
    assert line.startswith("edgeq: error:") and "\n" not in line and "Traceback" not in err
    assert "op 0 CUSTOM:ethos-u is the Ethos-U NPU's command stream" in line
    assert "already compiled by Vela" in line and "--target ethos-u55-128" in line
    assert report["memory"]["arena_bytes"] is None

    code, report, err = _analyze(capsys, str(VELA_COMPILED), "--target", "ethos-u55-128")
    assert code == 0, err
    placements = {(op["op"], op["placement"]) for op in report["ops"]}
    assert ("CUSTOM:ethos-u", "npu") in placements
    assert all(p == "cpu" for op, p in placements if op != "CUSTOM:ethos-u")
    assert any("already compiled by Vela" in n for n in report["notes"])


# --- models built here ----------------------------------------------------------------------


def _convert(model, x: np.ndarray, path) -> None:
    """Full-int8 conversion with plain TFLiteConverter, calibrated on ``x``."""
    import tensorflow as tf

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([x[i:i + 1]] for i in range(len(x)))
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    path.write_bytes(conv.convert())


@pytest.fixture(scope="module")
def tiny_softmax(tmp_path_factory):
    """Dense(10, softmax) calibrated on inputs around 3e-8: the logits get a scale ~1e-8."""
    import keras

    keras.utils.set_random_seed(0)
    out = tmp_path_factory.mktemp("tiny")
    x = (np.random.default_rng(0).normal(size=(32, 16)) * 3e-8).astype(np.float32)
    model = keras.Sequential([keras.Input((16,)), keras.layers.Dense(10, activation="softmax")])
    model.save(out / "tiny.keras")
    np.savez(out / "tiny.npz", x=x)
    _convert(model, x, out / "tiny.tflite")
    return out


def _softmax_input(path):
    info = read_model_file(path)
    (op,) = [op for op in info.ops if op.op == "SOFTMAX"]
    return op, info.tensors[op.inputs[0]]


@pytest.mark.slow
def test_tiny_scales_exit_3_naming_the_op_and_scales(tiny_softmax, capsys):
    path = tiny_softmax / "tiny.tflite"
    op, logits = _softmax_input(path)
    assert logits.scales[0] < SOFTMAX_MIN_SCALE  # what the calibration at 3e-8 produced
    code = main(["analyze", str(path), "--target", "cortex-m7"])
    err = capsys.readouterr().err
    assert code == 3
    line = err.strip()
    assert line.startswith("edgeq: error:") and "\n" not in line
    assert f"op {op.index} SOFTMAX" in line and logits.name in line
    assert f"{logits.scales[0]:.3g}" in line and "is the model trained?" in line
    for wrong in ("crashed", "Traceback", "malformed", "re-export"):
        assert wrong not in err

    # The Keras model calibrated on the same data: the same refusal, after conversion.
    code = main(["analyze", str(tiny_softmax / "tiny.keras"), "--target", "cortex-m7",
                 "--data", str(tiny_softmax / "tiny.npz")])
    err = capsys.readouterr().err
    assert code == 3 and "SOFTMAX" in err and "crashed" not in err


_RAW_TFLM = """
import sys
from tflite_micro.python.tflite_micro import runtime
runtime.Interpreter.from_bytes(open(sys.argv[1], 'rb').read(), arena_size=1 << 20)
print('allocated')
"""


@pytest.mark.slow
def test_softmax_limit_is_where_tflm_aborts(tiny_softmax, tmp_path, capsys):
    """The rule's threshold against TFLite Micro itself, without edgeq in between: just below
    2^-26 it aborts, just above it allocates (and edgeq measures it)."""
    path = tiny_softmax / "tiny.tflite"
    _, logits = _softmax_input(path)
    model = path.read_bytes()
    problem = scale_problems(read_model_file(path), "tflm")[0]
    results = {}
    for factor in (0.95, 1.05):
        variant = tmp_path / f"x{factor}.tflite"
        variant.write_bytes(with_safe_scales(
            model, [replace(problem, safe_scale=SOFTMAX_MIN_SCALE * factor)]))
        assert _softmax_input(variant)[1].scales[0] == pytest.approx(SOFTMAX_MIN_SCALE * factor)
        run = subprocess.run([sys.executable, "-c", _RAW_TFLM, str(variant)],
                             capture_output=True, text=True)
        results[factor] = run.returncode
        code = main(["analyze", str(variant), "--target", "cortex-m7"])
        assert code == (3 if factor < 1 else 0), capsys.readouterr().err
    assert results[0.95] < 0 and results[1.05] == 0  # SIGABRT below the limit, fine above
    assert logits.index == problem.tensor


@pytest.mark.slow
def test_untrained_keras_model_is_sized_on_synthetic_inputs(tmp_path, capsys):
    """Sizing before training: an untrained network's logits are tiny on synthetic inputs, yet
    analyze gives flash and arena figures, and says it raised the scales to measure them."""
    import keras

    keras.utils.set_random_seed(0)
    tiny = keras.initializers.RandomNormal(stddev=1e-9)
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3),
                              keras.layers.Flatten(),
                              keras.layers.Dense(10, activation="softmax",
                                                 kernel_initializer=tiny)])
    model.save(tmp_path / "untrained.keras")
    code, report, err = _analyze(capsys, str(tmp_path / "untrained.keras"), "--target",
                                 "cortex-m7")
    assert code == 0, err
    total, head, tail = _arena(report)
    assert total == head + tail and head > 0 and tail > 0
    assert report["memory"]["flash_bytes"] > 0
    assert any("SOFTMAX" in n and "raised" in n for n in report["notes"])


@pytest.mark.slow
def test_arena_over_the_first_try_is_measured_exactly(tmp_path, capfd):
    """Activations of ~12 MiB: more than the old fixed 8 MiB arena and than 10x the model."""
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((512, 512, 8)),
                              keras.layers.Conv2D(16, 1, activation="relu"),
                              keras.layers.Conv2D(16, 1)])
    x = np.random.default_rng(0).uniform(0, 1, (4, 512, 512, 8)).astype(np.float32)
    path = tmp_path / "big.tflite"
    _convert(model, x, path)
    from tflite_micro.python.tflite_micro import runtime

    capfd.readouterr()
    interp = runtime.Interpreter.from_file(str(path), arena_size=64 << 20)
    interp.print_allocations()
    truth = {k: int(v) for k, v in re.findall(r"Arena allocation (\w+) (\d+) bytes",
                                              capfd.readouterr().err)}
    assert truth["total"] > 8 << 20
    code = main(["analyze", str(path), "--target", "cortex-m7", "--json"])
    captured = capfd.readouterr()
    assert code == 3  # 12 MiB of arena on a 1 MiB part
    report = json.loads(captured.out)
    assert _arena(report) == (truth["total"], truth["head"], truth["tail"])


def test_arena_too_small_is_retried_until_the_model_fits(fixtures, monkeypatch):
    """The retry path on its own: a 1 KiB first try still ends in the reference figures."""
    from edgeq.adapters import tflm

    ref = next(m for m in json.loads((fixtures / "models" / "tflm" / "arena_reference.json")
                                     .read_text())["models"] if "person_detect" in m["model"])
    monkeypatch.setattr(tflm, "first_arena_size", lambda info: 1024)
    arena = tflm.TFLMRunner((fixtures / ref["model"]).read_bytes()).arena
    assert (arena.total, arena.head, arena.tail) == (
        ref["arena_total_bytes"], ref["arena_head_bytes"], ref["arena_tail_bytes"])
    assert arena.total > 1024
