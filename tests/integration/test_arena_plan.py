"""The offline arena plan (issue 25): edgeq's model of TFLite Micro's planner gives the head the
interpreter's recording allocator measured on every TFLM model of the fixtures; edgeq's plan is
never larger than TFLM's, on the reference kernels and on CMSIS-NN's (DSP and MVE); a written
plan is what the real interpreter allocates, with byte-identical outputs; the metadata has
TFLM's format; `analyze --json` reports the figures; the per-op cycles of `convert --emulate`
reach report.md and report.html."""

from __future__ import annotations

import json
import struct

import pytest

from edgeq.cli import main
from edgeq.formats.tflite import read_model, read_model_file
from edgeq.formats.tflite_metadata import METADATA_NAME, read_offline_plan, write_plan
from edgeq.pipeline import arena_plan
from edgeq.pipeline.arena_scratch import CMSIS_DSP, CMSIS_MVE, REFERENCE
from edgeq.pipeline.arena_stage import checked, plan_model

VWW = "models/mlperf_tiny/vww_mobilenet_96_int8_reference.tflite"
SEEED = "device_truth/tflm/Seeed-Studio__ModelAssistant/test_int8.tflite"  # branches
VWW_GOAL = 55_296  # issue 25: a plan of this size exists for the VWW model


def _measured(fixtures) -> dict[str, int]:
    """Every TFLM fixture with the head the recording allocator measured (from the fixtures'
    own records, not from edgeq)."""
    out = {}
    ref = json.loads((fixtures / "models" / "tflm" / "arena_reference.json").read_text())
    for m in ref["models"]:
        out[m["model"]] = m["arena_head_bytes"]
    manifest = json.loads((fixtures / "device_truth" / "tflm" / "manifest.json").read_text())
    for m in manifest["models"]:
        out[f"device_truth/tflm/{m['stored']}"] = m["head"]
    return out


def _all_tflm_models(fixtures) -> list[str]:
    paths = [*(fixtures / "models" / "tflm").glob("*.tflite"),
             *(fixtures / "models" / "mlperf_tiny").glob("*.tflite"),
             *(fixtures / "device_truth" / "tflm").rglob("*.tflite")]
    return sorted(str(p.relative_to(fixtures)) for p in paths)


def test_simulated_tflm_head_equals_the_recording_allocator(fixtures):
    measured = _measured(fixtures)
    assert len(measured) >= 10
    for rel, head in measured.items():
        info = read_model_file(fixtures / rel)
        assert arena_plan.plan(info, REFERENCE).tflm_head == head, rel


def test_plan_never_larger_than_tflm_on_any_fixture_and_vww_reaches_the_goal(fixtures):
    models = _all_tflm_models(fixtures)
    assert len(models) >= 12
    improved = []
    for rel in models:
        data = (fixtures / rel).read_bytes()
        for kernels in (CMSIS_DSP, CMSIS_MVE):
            r = plan_model(data, kernels, source=rel)
            assert r.host["planned"] <= r.host["tflm"], (rel, kernels.name)
            assert r.device["planned_head_bytes"] <= r.device["tflm_head_bytes"], rel
            assert r.host["lower_bound"] <= r.host["planned"], rel
            assert r.device["lower_bound_head_bytes"] <= r.device["planned_head_bytes"], rel
            if r.applied:
                improved.append(rel)
            else:
                assert r.model == data  # never written unless smaller
    vww = plan_model((fixtures / VWW).read_bytes(), CMSIS_DSP)
    assert vww.host["tflm"] > VWW_GOAL and vww.host["planned"] <= VWW_GOAL
    assert vww.device["planned_head_bytes"] <= VWW_GOAL
    assert VWW in improved and SEEED in improved


@pytest.mark.parametrize("rel", [VWW, SEEED])
def test_written_plan_is_what_tflm_allocates_with_identical_outputs(fixtures, rel):
    data = (fixtures / rel).read_bytes()
    result = checked(plan_model(data, CMSIS_DSP, source=rel), data)
    assert result.applied, result.reason
    assert result.check["outputs_identical"] is True
    assert result.check["head_bytes"] == result.host["planned"] < result.host["tflm"]
    if rel == SEEED:  # the branching graph gains from running the ops in another order
        assert result.reordered
        assert [op.op for op in read_model(result.model).ops] != \
            [op.op for op in read_model(data).ops]


def test_metadata_has_tflm_format_and_is_aligned(fixtures):
    data = (fixtures / VWW).read_bytes()
    info = read_model(data)
    plan = arena_plan.plan(info, REFERENCE)
    planned = write_plan(data, plan.offsets)
    assert read_offline_plan(data) is None
    assert read_offline_plan(planned) == plan.offsets
    assert write_plan(data, plan.offsets) == planned  # same inputs, same bytes
    from ai_edge_litert import schema_py_generated as schema

    m = schema.Model.GetRootAs(planned, 0)
    meta = [m.Metadata(k) for k in range(m.MetadataLength())
            if m.Metadata(k).Name() == METADATA_NAME.encode()]
    assert len(meta) == 1
    buf = m.Buffers(meta[0].Buffer())
    raw = bytes(buf.DataAsNumpy())
    version, subgraphs, count = struct.unpack_from("<3I", raw)
    assert (version, subgraphs, count) == (1, 1, len(info.tensors))
    words = struct.unpack_from(f"<{count}i", raw, 12)
    assert all(words[i] == -1 for i in range(count) if i not in plan.offsets)
    # TFLM reads the words in place: the data starts 16-byte aligned in the file
    start = buf._tab.Vector(buf._tab.Offset(4))
    assert start % 16 == 0
    # weights are carried over unchanged
    again = read_model(planned)
    assert [t.constant_bytes for t in again.tensors] == [t.constant_bytes for t in info.tensors]


def test_analyze_reports_tflm_planned_and_lower_bound(fixtures, tmp_path, capsys):
    src = fixtures / VWW
    code = main(["analyze", str(src), "--target", "cortex-m7", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0
    mem = report["memory"]
    plan = mem["arena_plan"]
    assert plan["tflm_head_bytes"] == mem["arena_head_bytes"]  # the file as given
    assert plan["planned_head_bytes"] <= VWW_GOAL < plan["tflm_head_bytes"]
    assert plan["lower_bound_head_bytes"] <= plan["planned_head_bytes"]
    assert plan["written"] is False and plan["device"]["kernels"] == "cmsis-nn-dsp"
    # a planned file reports the arena TFLM allocates for it: the planned head
    planned = tmp_path / "vww_planned.tflite"
    planned.write_bytes(plan_model(src.read_bytes(), CMSIS_DSP).model)
    code = main(["analyze", str(planned), "--target", "cortex-m7", "--json"])
    again = json.loads(capsys.readouterr().out)["memory"]
    assert again["arena_head_bytes"] == plan["planned_head_bytes"]
    assert again["arena_tail_bytes"] == mem["arena_tail_bytes"]
    assert again["arena_plan"]["as_given_head_bytes"] == plan["planned_head_bytes"]
