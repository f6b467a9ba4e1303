"""Edge TPU placement against the real compiler on models edgeq did not make: every compiled
pair in fixtures/device_truth/edgetpu (detectors with custom post-processing, pose models,
MoveNet's float tail, YOLOv5/v8 heads, a temporal conv net, float models)."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from edgeq.cli import main
from edgeq.edgetpu import placement
from edgeq.targets import load_target
from edgeq.formats.tflite import read_model_file


def _pairs(fixtures) -> list[dict]:
    root = fixtures / "device_truth" / "edgetpu"
    return [dict(p, path=root / p["stored_plain"])
            for p in json.loads((root / "manifest.json").read_text())["pairs"]]


def test_the_corpus_is_all_there(fixtures):
    pairs = _pairs(fixtures)
    assert len(pairs) >= 13 and all(p["path"].is_file() for p in pairs)


@pytest.mark.parametrize("k", range(13))
def test_placement_matches_the_compiled_model(fixtures, capsys, k):
    pair = _pairs(fixtures)[k]
    truth = pair["ground_truth"]
    code = main(["analyze", str(pair["path"]), "--target", "coral", "--json"])
    out, err = capsys.readouterr()
    if truth["ops_on_tpu"] == 0:
        # Nothing integer to map: the compiler's whole-model verdict, one line, exit 3.
        assert code == 3, err
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1 and "Model not quantized" in lines[0], err
        target = load_target("coral")
        plan = placement.plan(read_model_file(pair["path"]), target.ops.allowed,
                              dict(target.ops.max_versions))
        assert len(plan.ops) == truth["plain_ops_total"]
        assert Counter(r.op for r in plan.ops if r.placement == "cpu") == Counter(
            truth["cpu_op_counts"])
        return
    assert code == 0, err
    ops = json.loads(out)["ops"]
    cpu = [o for o in ops if o["placement"] == "cpu"]
    assert len(ops) == truth["plain_ops_total"], pair["id"]
    assert sum(o["placement"] == "tpu" for o in ops) == truth["ops_on_tpu"], pair["id"]
    assert dict(Counter(o["op"] for o in cpu)) == truth["cpu_op_counts"], pair["id"]
    for o in cpu:  # every CPU op says which rule put it there, and why
        assert o["rule"] and o["reason"] and o["status"], o


def test_custom_and_float_ops_stay_on_the_cpu_beside_integer_ones(fixtures, capsys):
    pairs = {p["id"].split("/")[-1]: p for p in _pairs(fixtures)}
    face = pairs["thermal_face_automl_edge_fast"]
    assert main(["analyze", str(face["path"]), "--target", "coral", "--json"]) == 0
    ops = json.loads(capsys.readouterr().out)["ops"]
    (post,) = [o for o in ops if o["op"] == "CUSTOM:TFLite_Detection_PostProcess"]
    assert post["placement"] == "cpu" and post["rule"] == "op_table"
    assert post["status"] == "Operation is working on an unsupported data type"
    movenet = pairs["movenet_single_pose_lightning_ptq"]
    assert main(["analyze", str(movenet["path"]), "--target", "coral", "--json"]) == 0
    ops = json.loads(capsys.readouterr().out)["ops"]
    casts = [o for o in ops if o["op"] == "CAST"]
    assert casts and all(o["placement"] == "cpu" for o in casts)
    floats = [o for o in ops if "integer_tensors" in o.get("rule", "")]
    assert floats and all(o["status"] == "Operation is working on an unsupported data type"
                          for o in floats)


def test_an_already_compiled_model_is_named_as_such(fixtures, capsys):
    compiled = fixtures / "models" / "coral" / "mobilenet_v1_0.25_128_quant_edgetpu.tflite"
    assert main(["analyze", str(compiled), "--target", "coral"]) == 3
    err = capsys.readouterr().err
    assert "edgetpu-custom-op" in err and "edgeq inspect" in err and "Traceback" not in err


def test_log_reader_on_every_published_compiler_log(fixtures):
    """198 real edgetpu_compiler logs (compiler 1.0 to 16): the per-op table read back gives
    the manifest's TPU/CPU counts and CPU ops."""
    from edgeq.edgetpu.compiler import parse_log

    root = fixtures / "device_truth" / "edgetpu_logs"
    logs = json.loads((root / "manifest.json").read_text())["logs"]
    assert len(logs) >= 198
    for entry in logs:
        log = parse_log((root / entry["stored"]).read_text(errors="replace"))
        cpu: Counter = Counter()
        for op, n, status in log.rows:
            if status != "Mapped to Edge TPU":
                cpu[op] += n
        assert sum(n for _, n, s in log.rows if s == "Mapped to Edge TPU") == entry[
            "log_ops_tpu"], entry["stored"]
        assert dict(cpu) == entry["log_cpu_op_counts"], entry["stored"]
        assert log.version == entry["compiler_version"], entry["stored"]
