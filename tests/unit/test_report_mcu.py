"""The Cortex-M parts of the report (issue 25): a report with an emulator section shows every
op's estimated cycles and share, named by the user's layer, in report.md and report.html (a
chart); the arena plan row puts TFLM's head, edgeq's and the lower bound side by side."""

from __future__ import annotations

import re

import pytest

from edgeq.outputs.report import Report
from edgeq.outputs.report_html import render

pytest.importorskip("matplotlib")

_EMU = {
    "core": "cortex-m4", "machine": "mps2-an386", "samples": 2, "outputs_identical": True,
    "mismatched_samples": 0, "top1": None, "instructions_per_inference": 3000,
    "estimated_cycles": 4668, "estimated_ms": 0.07, "clock_hz": 64_000_000,
    "estimate": {"cycles_per_instruction": 1.556, "calibrated": True},
    "arena_bytes": 4212, "arena_declared": 5616,
    "per_op": [
        {"index": 0, "op": "CONV_2D", "layer": "model/conv/Relu", "instructions": 2000,
         "estimated_cycles": 3112, "share": 0.6667},
        {"index": 1, "op": "SOFTMAX", "layer": "Identity", "instructions": 1000,
         "estimated_cycles": 1556, "share": 0.3333},
    ],
}
_PLAN = {"written": True, "reason": "18432 B smaller", "tflm_head_bytes": 73728,
         "planned_head_bytes": 55296, "lower_bound_head_bytes": 55296,
         "device": {"kernels": "cmsis-nn-dsp", "tflm_head_bytes": 73728,
                    "planned_head_bytes": 55296, "lower_bound_head_bytes": 55296}}


def _report(**changes) -> Report:
    fields = {
        "target": "cortex-m4", "method": "ptq", "calibration": "minmax",
        "model": {"path": "m.keras"},
        "output": {"path": "out/m_int8.tflite", "bytes": 1234, "weight_bytes": 1000},
        "ops": [{"index": 0, "op": "CONV_2D", "placement": "mcu", "reason": "ok",
                 "layer": "conv_block_1"},
                {"index": 1, "op": "SOFTMAX", "placement": "mcu", "reason": "ok"}],
        "accuracy": {"float": 0.9, "quantized": 0.9, "drop_pp": 0.0, "agreement": 1.0,
                     "n": 10, "runtime": "tflm"},
        "fidelity": {"sqnr_db": 30.0, "cosine": 0.999}, "latency_ms": None,
        "memory": {"flash_bytes": 1234, "budget_flash_bytes": None, "arena_bytes": 80000,
                   "arena_head_bytes": 55296, "arena_tail_bytes": 24704,
                   "recommended_arena_bytes": 90000, "budget_ram_bytes": 262144,
                   "arena_plan": _PLAN},
        "data": {}, "stages": [{"name": "load", "seconds": 1.0}], "versions": {}}
    fields.update(changes)
    return Report(**fields)


def test_per_op_cycles_by_layer_in_markdown_and_html():
    report = _report(emulator=_EMU)
    md = report.to_markdown()
    assert "| 0 | CONV_2D | conv_block_1 | 2,000 | 3,112 | 66.7% |" in md  # the Keras layer
    assert "| 1 | SOFTMAX | Identity | 1,000 | 1,556 | 33.3% |" in md  # else the tensor's
    page = render(report)
    section = page[page.index('id="cycles"'):]
    assert "Estimated cycles per layer" in page and "conv_block_1" in section
    assert len(re.findall(r'<img class="figure"', section)) == 1
    assert report.to_dict()["emulator"]["per_op"][0]["estimated_cycles"] == 3112


def test_no_emulator_key_without_emulation_and_arena_plan_row():
    report = _report()
    assert "emulator" not in report.to_dict()
    assert 'id="cycles"' not in render(report)
    row = dict(report.summary_rows())["arena plan"]
    assert "TFLM 73,728 B, edgeq 55,296 B, lower bound 55,296 B" in row
    assert "written into the model" in row
