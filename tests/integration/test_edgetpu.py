"""Coral Edge TPU: edgeq's placement against the real compiler's results, compiled-model
inspection, Keras models that split the graph, and models the compiler refuses outright."""

from __future__ import annotations

import json
import os
from collections import Counter

import numpy as np
import pytest

from edgeq.cli import main


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _pairs(fixtures) -> list[dict]:
    return json.loads((fixtures / "models" / "coral" / "edgetpu_ground_truth.json").read_text())[
        "pairs"]


def test_analyze_matches_the_real_compiler_on_every_pair(fixtures, capsys):
    pairs = _pairs(fixtures)
    assert len(pairs) >= 4
    for pair in pairs:
        code, out, err = run(capsys, "analyze", str(fixtures / pair["model"]), "--target",
                             "coral", "--json")
        assert code == 0, err
        ops = json.loads(out)["ops"]
        cpu = Counter(o["op"] for o in ops if o["placement"] == "cpu")
        assert len(ops) == pair["ops_total"], pair["model"]
        assert sum(o["placement"] == "tpu" for o in ops) == pair["ops_on_tpu"], pair["model"]
        assert sum(cpu.values()) == pair["ops_on_cpu"], pair["model"]
        assert dict(cpu) == pair["cpu_op_counts"], pair["model"]
        edgetpu = json.loads(out)["edgetpu"]
        assert edgetpu["ops_on_tpu"] == pair["ops_on_tpu"]
        assert edgetpu["source"] == "prediction"


def test_deeplab_split_point_is_the_image_pooling_resize(fixtures, capsys):
    model = fixtures / "models" / "coral" / "deeplabv3_mnv2_dm05_pascal_quant.tflite"
    code, out, _ = run(capsys, "analyze", str(model), "--target", "coral", "--json")
    split = json.loads(out)["edgetpu"]["split"]
    assert (split["index"], split["op"]) == (64, "RESIZE_BILINEAR")
    assert "1 -> 33" in split["reason"] and split["fix"]
    assert split["ops_cut_off"] == 7
    later = [o for o in json.loads(out)["ops"] if o["index"] > 64 and o["op"] != "ARG_MAX"]
    # Ops after the split are cut off, except one that would not map on its own anyway: the
    # final 33 -> 513 resize keeps its own (size) status, as the compiler's log does for the
    # oversized ops after the split in the yolov8n pair (fixtures/device_truth).
    own = [o for o in later if o["status"] != "More than one subgraph is not supported"]
    assert [(o["op"], o["index"]) for o in own] == [("RESIZE_BILINEAR", 70)], own
    assert "2,097,152" in own[0]["reason"]


def test_inspect_compiled_models_against_ground_truth(fixtures, capsys):
    for pair in _pairs(fixtures):
        code, out, err = run(capsys, "inspect", str(fixtures / pair["compiled"]), "--json")
        assert code == 0, err
        d = json.loads(out)
        assert d["op_sequence"] == pair["compiled_op_sequence"]
        e = d["edgetpu"]
        assert e["custom_ops"] == 1 and e["executable_bytes"][0] > 0
        assert e["cpu_op_counts"] == pair["cpu_op_counts"]
        # X.tflite lies beside X_edgetpu.tflite: the replaced ops are counted from it
        assert (e["ops_on_tpu"], e["ops_on_cpu"]) == (pair["ops_on_tpu"], pair["ops_on_cpu"])
        assert sum(e["replaced_ops"].values()) == pair["ops_on_tpu"]


def test_inspect_text_lists_cpu_ops_in_order(fixtures, capsys):
    compiled = fixtures / "models" / "coral" / "deeplabv3_mnv2_dm05_pascal_quant_edgetpu.tflite"
    code, out, _ = run(capsys, "inspect", str(compiled))
    assert code == 0
    assert "replaced 64 of the 72 ops" in " ".join(out.split())
    listed = [line.split(": ")[1] for line in out.splitlines() if line.startswith("  ")
              and ": " in line and line.strip()[0].isdigit()]
    assert listed == ["RESIZE_BILINEAR", "QUANTIZE", "CONCATENATION", "CONV_2D", "CONV_2D",
                      "RESIZE_BILINEAR", "RESIZE_BILINEAR", "ARG_MAX"]


def test_inspect_plain_model_and_bad_file(fixtures, tmp_path, capsys):
    code, out, _ = run(capsys, "inspect", str(fixtures / "models" / "coral" /
                                              "split_concat.tflite"), "--json")
    assert code == 0 and json.loads(out)["compiled_for_edgetpu"] is False
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"\x00" * 64)
    code, _, err = run(capsys, "inspect", str(bad))
    assert code == 2 and "bad.tflite" in err and "Traceback" not in err


def test_supported_ops_table_comes_from_the_constraint_functions(capsys):
    from edgeq.edgetpu.rules import RULES

    code, out, _ = run(capsys, "targets", "coral", "--supported-ops", "--json")
    assert code == 0
    rows = {r["op"]: r for r in json.loads(out)}
    assert "LEAKY_RELU" not in rows and "UNIDIRECTIONAL_SEQUENCE_LSTM" in rows
    softmax = next(r for r in RULES if r.name == "softmax_axis")
    assert softmax.message in rows["SOFTMAX"]["limitations"]
    assert rows["FULLY_CONNECTED"]["max_version"] == 4
    every = rows["(every op)"]["limitations"]
    assert any("3 innermost" in m for m in every)
    code, out, _ = run(capsys, "targets", "coral", "--supported-ops")
    assert code == 0 and "16,000" in out


@pytest.fixture(scope="module")
def splitting_models(tmp_path_factory):
    """Two Keras 3 models the Edge TPU cannot map whole: a LeakyReLU, and a Dense on a 3-D
    input (converted as FULLY_CONNECTED with keep_num_dims)."""
    import keras

    keras.utils.set_random_seed(0)
    out = tmp_path_factory.mktemp("coral_keras")
    leaky = keras.Sequential([
        keras.Input((16, 16, 3)), keras.layers.Conv2D(8, 3, name="conv_a"),
        keras.layers.LeakyReLU(name="leaky"), keras.layers.Conv2D(8, 3, name="conv_b"),
        keras.layers.GlobalAveragePooling2D(name="gap"),
        keras.layers.Dense(4, activation="softmax", name="head")], name="leaky_net")
    leaky.save(out / "leaky.keras")
    dense3d = keras.Sequential([
        keras.Input((10, 12)), keras.layers.Dense(16, activation="relu", name="dense_3d"),
        keras.layers.Flatten(name="flat"),
        keras.layers.Dense(4, activation="softmax", name="head")], name="seq_net")
    dense3d.save(out / "dense3d.keras")
    rng = np.random.default_rng(0)
    np.savez(out / "img.npz", x=rng.uniform(0, 1, (24, 16, 16, 3)).astype("float32"),
             y=rng.integers(0, 4, 24))
    np.savez(out / "seq.npz", x=rng.uniform(0, 1, (24, 10, 12)).astype("float32"),
             y=rng.integers(0, 4, 24))
    return out


@pytest.mark.parametrize("name,data,op,layer,fix_words", [
    ("leaky", "img.npz", "LEAKY_RELU", "leaky", "ReLU"),
    ("dense3d", "seq.npz", "FULLY_CONNECTED", "dense_3d", "Flatten or Reshape to 2-D"),
])
def test_keras_split_reported_in_text_and_json(splitting_models, tmp_path, capsys, name, data,
                                              op, layer, fix_words):
    d = splitting_models
    code, out, err = run(capsys, "convert", str(d / f"{name}.keras"), "--target", "coral",
                         "--data", str(d / data), "--out", str(tmp_path / "out"), "--no-latency")
    assert code == 0, err
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    split = report["edgetpu"]["split"]
    assert (split["op"], split["layer"]) == (op, layer)
    assert fix_words in split["fix"]
    assert split["ops_cut_off"] >= 1 and report["edgetpu"]["ops_on_cpu"] > split["ops_cut_off"] - 1
    flat = " ".join(out.split())
    assert f"Keras layer '{layer}'" in flat and "Edge TPU split" in flat
    assert fix_words in flat
    md = (tmp_path / "out" / "report.md").read_text()
    assert f"Keras layer '{layer}'" in md
    # the compiler is absent here: one plain note says so and how to install it
    assert any("edgetpu_compiler is not installed" in n for n in report["notes"])
    assert report["compiler"]["version"] == "not installed"
    # analyzing the Keras model directly gives the same split
    code, out, err = run(capsys, "analyze", str(d / f"{name}.keras"), "--target", "coral",
                         "--json")
    assert code == 0, err
    assert json.loads(out)["edgetpu"]["split"]["layer"] == layer


def _float_models(tmp_path):
    """A float model with static shapes, and the same with a dynamic batch whose flattening
    reshape takes its shape from SHAPE/STRIDED_SLICE/PACK at run time, as TF's converter emits
    for a Keras model with a dynamic batch. Plain TF ops: `tf.keras` may be tf_keras here."""
    import tensorflow as tf

    w = tf.constant(np.ones((8, 4), np.float32))

    def flat_dense(x):
        return tf.matmul(tf.reshape(x, tf.stack([tf.shape(x)[0], 8])), w)

    for name, batch in (("dynamic", None), ("float", 1)):
        fn = tf.function(flat_dense).get_concrete_function(
            tf.TensorSpec([batch, 4, 2], tf.float32))
        model = tf.lite.TFLiteConverter.from_concrete_functions([fn]).convert()
        (tmp_path / f"{name}.tflite").write_bytes(model)


def test_models_the_compiler_refuses_exit_3(tmp_path, capsys):
    _float_models(tmp_path)
    code, _, err = run(capsys, "analyze", str(tmp_path / "float.tflite"), "--target", "coral")
    assert code == 3, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Model not quantized" in lines[0] and "float32" in lines[0]
    assert "edgeq convert" in lines[0]
    code, _, err = run(capsys, "analyze", str(tmp_path / "dynamic.tflite"), "--target", "coral")
    assert code == 3, err
    assert "static shapes" in err and "dynamic-sized tensors" in err and "Traceback" not in err


def test_compiler_absent_is_said_plainly(fixtures, capsys, monkeypatch):
    monkeypatch.setenv("PATH", os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep)
                                               if not (p and os.path.exists(
                                                   os.path.join(p, "edgetpu_compiler")))))
    model = fixtures / "models" / "coral" / "mobilenet_v1_0.25_128_quant.tflite"
    code, out, _ = run(capsys, "analyze", str(model), "--target", "coral", "--json")
    assert code == 0
    notes = json.loads(out)["compiler_notes"]
    assert len(notes) == 1 and "not installed" in notes[0] and "apt-get install" in notes[0]


def test_compiler_on_path_is_run_and_its_verdict_used(fixtures, tmp_path, capsys, monkeypatch):
    """A stand-in for edgetpu_compiler that replays the real compiler's outputs for the deeplab
    fixture (its compiled model, and a log in the compiler's format with the fixture's counts):
    it checks the wiring (arguments, output directory, log and model read back, per-op
    verdict), not the compiler."""
    coral = fixtures / "models" / "coral"
    compiled = coral / "deeplabv3_mnv2_dm05_pascal_quant_edgetpu.tflite"
    calls = tmp_path / "calls.txt"
    script = tmp_path / "bin" / "edgetpu_compiler"
    script.parent.mkdir()
    script.write_text(f"""#!/bin/sh
echo "$@" >> {calls}
out=""; prev=""
for a in "$@"; do [ "$prev" = "-o" ] && out="$a"; prev="$a"; src="$a"; done
stem=$(basename "$src" .tflite)
cp {compiled} "$out/${{stem}}_edgetpu.tflite"
cat <<'LOG'
Edge TPU Compiler version 16.0.384591198
Started a compilation timeout timer of 180 seconds.

Model compiled successfully in 900 ms.

Input model: deeplab.tflite
Input size: 743.07KiB
Output model: deeplab_edgetpu.tflite
Output size: 1.06MiB
On-chip memory used for caching model parameters: 640.00KiB
On-chip memory remaining for caching model parameters: 7.00MiB
Off-chip memory used for streaming uncached model parameters: 0.00B
Number of Edge TPU subgraphs: 1
Total number of operations: 72
Operation log: deeplab_edgetpu.log

Number of operations that will run on Edge TPU: 64
Number of operations that will run on CPU: 8

Operator                       Count      Status

RESIZE_BILINEAR                3          More than one subgraph is not supported
ARG_MAX                        1          Operation not supported
Compilation child process completed within timeout period.
Compilation succeeded!
LOG
""")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{script.parent}{os.pathsep}{os.environ['PATH']}")
    code, out, err = run(capsys, "analyze", str(coral / "deeplabv3_mnv2_dm05_pascal_quant.tflite"),
                         "--target", "coral", "--json")
    assert code == 0, err
    args = calls.read_text().split()
    assert "-s" in args and args[args.index("-m") + 1] == "14" and "-o" in args
    d = json.loads(out)
    e = d["edgetpu"]
    assert e["source"] == "edgetpu_compiler" and e["disagreements"] == []
    assert (e["ops_on_tpu"], e["ops_on_cpu"]) == (64, 8)
    assert e["compiler"]["version"] == "16.0.384591198"
    assert e["compiler"]["on_chip_used_bytes"] == 640 * 1024
    by_index = {o["index"]: o for o in d["ops"]}
    assert by_index[71]["status"] == "Operation not supported"
    assert by_index[69]["status"] == "More than one subgraph is not supported"
