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
from edgeq.formats.tflite_metadata import (
    METADATA_NAME,
    read_offline_plan,
    read_original_order,
    strip_plan,
    write_plan,
)
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
    # taking the plan out gives back TFLM's plan and the operators in their original order
    stripped = strip_plan(result.model)
    assert read_offline_plan(stripped) is None and read_original_order(stripped) is None
    assert [(o.op, o.inputs, o.outputs) for o in read_model(stripped).ops] == \
        [(o.op, o.inputs, o.outputs) for o in read_model(data).ops]


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


@pytest.mark.slow
def test_planned_model_on_the_emulated_device(fixtures, tmp_path):
    """The VWW model as `embed`/`convert` ship it, on TFLM + CMSIS-NN firmware (QEMU, Cortex-M4):
    outputs byte-identical to the same firmware without the plan and to the interpreter, and
    the device arena shrinks by exactly what the plan predicts for CMSIS-NN's DSP kernels."""
    from edgeq.emulator.emulate import emulate
    from tests.conftest import emulator_toolchain

    emulator_toolchain()  # a skip where it is absent; a failure in CI
    tree = fixtures.parent / "third_party" / "tflm_tree_cmsis_nn.tar.gz"
    planned = tmp_path / "vww_planned.tflite"
    planned.write_bytes(plan_model((fixtures / VWW).read_bytes(), CMSIS_DSP).model)
    result = emulate(planned, "cortex-m4", tflm_tree=str(tree), eval_samples=1)
    assert result.outputs_identical
    plan = result.arena_plan
    assert plan["outputs_identical_to_unplanned"] is True
    assert plan["arena_matches_plan"] is True
    assert plan["predicted_head_bytes"] <= VWW_GOAL < plan["predicted_tflm_head_bytes"]
    assert plan["device_arena_unplanned_bytes"] - plan["device_arena_bytes"] == \
        plan["predicted_tflm_head_bytes"] - plan["predicted_head_bytes"]


@pytest.fixture(scope="module")
def branching_block(tmp_path_factory):
    """A MobileNetV2-style block with a 1x1 projection shortcut (untrained: sizes and the
    order of ops do not depend on the weights), and 8 inputs."""
    import keras
    import numpy as np
    from keras import layers

    keras.utils.set_random_seed(0)
    inp = keras.Input((24, 24, 16))
    short = layers.Conv2D(8, 1, name="shortcut")(inp)
    y = layers.Conv2D(48, 1, activation="relu", name="expand")(inp)
    y = layers.DepthwiseConv2D(3, padding="same", activation="relu", name="dw")(y)
    y = layers.Conv2D(8, 1, name="project")(y)
    x = layers.GlobalAveragePooling2D()(layers.Add()([short, y]))
    model = keras.Model(inp, layers.Dense(4, activation="softmax")(x))
    d = tmp_path_factory.mktemp("branch")
    model.save(d / "block.keras")
    np.savez(d / "x.npz", x=np.random.default_rng(0).uniform(0, 1, (8, 24, 24, 16))
             .astype("float32"))
    return d


def test_convert_writes_reordered_plan_and_no_arena_plan_opts_out(branching_block, capsys):
    d = branching_block
    reports = {}
    for name, extra in (("planned", []), ("plain", ["--no-arena-plan"])):
        code = main(["convert", str(d / "block.keras"), "--target", "cortex-m4", "--data",
                     str(d / "x.npz"), "--no-latency", "--out", str(d / name), "--json",
                     *extra])
        assert code == 0
        reports[name] = json.loads(capsys.readouterr().out)
    planned, plain = reports["planned"], reports["plain"]
    plan = planned["memory"]["arena_plan"]
    assert plan["written"] and plan["reordered_operators"]
    assert plan["host_check"]["outputs_identical"] is True
    assert planned["memory"]["arena_head_bytes"] == plan["planned_head_bytes"] \
        < plan["tflm_head_bytes"] == plain["memory"]["arena_head_bytes"]
    assert "arena_plan" not in plain["memory"]
    # the same integer model: the same figures on the TFLM interpreter, op for op
    assert planned["accuracy"] == plain["accuracy"] and planned["fidelity"] == plain["fidelity"]
    assert sorted(o["op"] for o in planned["ops"]) == sorted(o["op"] for o in plain["ops"])
    model = (d / "planned" / "block_int8.tflite").read_bytes()
    assert read_offline_plan(model) is not None
    assert read_offline_plan((d / "plain" / "block_int8.tflite").read_bytes()) is None
    md = (d / "planned" / "report.md").read_text()
    assert f"TFLM {plan['tflm_head_bytes']:,} B, edgeq {plan['planned_head_bytes']:,} B" in md
