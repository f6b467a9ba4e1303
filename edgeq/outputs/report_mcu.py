"""The microcontroller parts of the report: the arena plan (TFLM's head next to edgeq's and the
lower bound) and, after `convert --emulate`, the emulated device's estimated cycles per op,
named by the user's layer. Markdown here; the HTML section is report_html's (`_emulator`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def arena_plan_rows(memory: dict[str, Any]) -> list[tuple[str, str]]:
    """Summary rows: TFLM's planned head, edgeq's, and the lower bound, host and device."""
    plan = memory.get("arena_plan")
    if not plan or plan.get("tflm_head_bytes") is None:
        return [("arena plan", plan["reason"])] if plan else []
    dev = plan.get("device") or {}
    state = "written into the model" if plan.get("written") else "not written"
    host = (f"head: TFLM {plan['tflm_head_bytes']:,} B, edgeq {plan['planned_head_bytes']:,} B, "
            f"lower bound {plan['lower_bound_head_bytes']:,} B (host, reference kernels)")
    device = (f"; {dev['kernels']}: TFLM {dev['tflm_head_bytes']:,} B, edgeq "
              f"{dev['planned_head_bytes']:,} B, lower bound {dev['lower_bound_head_bytes']:,} B"
              if dev else "")
    return [("arena plan", f"{host}{device}; {state} ({plan['reason']})")]


def layer_of(ops: Sequence[dict[str, Any]], index: int) -> str:
    """The user's layer for op `index` (from the placement records), else ''."""
    for o in ops:
        if o.get("index") == index:
            return o.get("layer") or ""
    return ""


def per_op_rows(emu: dict[str, Any], ops: Sequence[dict[str, Any]]
                ) -> list[tuple[int, str, str, int, int, float]]:
    """(index, op, layer, instructions, estimated cycles, share) per op, in execution order."""
    return [(o["index"], o["op"], layer_of(ops, o["index"]) or o.get("layer") or "",
             o["instructions"], o["estimated_cycles"], o["share"])
            for o in emu.get("per_op", [])]


def emulator_markdown(emu: dict[str, Any], ops: Sequence[dict[str, Any]]) -> list[str]:
    """The emulated-device section of report.md, with the cycles of every op."""
    same = ("byte-identical to" if emu["outputs_identical"] else
            f"{emu['mismatched_samples']} of {emu['samples']} samples differ from")
    est = emu["estimate"]
    lines = ["", f"## Emulated device ({emu['core']}, QEMU {emu['machine']})", "",
             (f"- TFLite Micro + CMSIS-NN firmware, {emu['samples']} samples: outputs {same} "
              "the TFLM interpreter's")]
    if emu.get("top1"):
        lines.append(f"- top-1 on the emulated device: {100 * emu['top1']['device']:.2f}%")
    lines += [(f"- {emu['instructions_per_inference']:,} instructions per inference; "
               f"estimated {emu['estimated_cycles']:,} cycles = {emu['estimated_ms']:.2f} ms at "
               f"{emu['clock_hz'] / 1e6:g} MHz (an estimate: CPI "
               f"{est['cycles_per_instruction']}, "
               f"{'calibrated' if est['calibrated'] else 'uncalibrated'})"),
              (f"- arena on the device: {emu['arena_bytes']:,} B (embed recommends "
               f"{emu['arena_declared']:,} B)")]
    plan = emu.get("arena_plan")
    if plan:
        same = "byte-identical to" if plan["outputs_identical_to_unplanned"] else "DIFFER from"
        lines.append(f"- offline arena plan on the device: outputs {same}"
                     f" the unplanned model's; arena {plan['device_arena_bytes']:,} B vs "
                     f"{plan['device_arena_unplanned_bytes']:,} B unplanned ("
                     f"{'as' if plan['arena_matches_plan'] else 'NOT as'} the plan predicts for "
                     f"{plan['kernels']})")
    rows = per_op_rows(emu, ops)
    if rows:
        lines += ["", "### Estimated cycles per op (emulated device)", "",
                  "| # | op | layer | instructions | est. cycles | share |",
                  "|---|---|---|---|---|---|"]
        from edgeq.outputs.text import markdown

        lines += [f"| {i} | {markdown(op)} | {markdown(layer)} | {n:,} | {c:,} | "
                  f"{100 * sh:.1f}% |" for i, op, layer, n, c, sh in rows]
    return lines
