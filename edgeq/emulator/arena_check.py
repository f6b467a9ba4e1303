"""`edgeq emulate` on a model that carries an offline arena plan (OfflineMemoryAllocation
metadata, as `convert`/`embed` write): the same firmware is also built from the model without
the plan (TFLM's own planner, and the operators back in their original order when edgeq
reordered them) and run on the same inputs, so the report
says whether the planned model's device outputs are byte-identical to the unplanned model's,
and whether the device arena shrank by what the plan predicts for this build's kernels
(edgeq.pipeline.arena_plan: the persistent tail is the same for both, so the difference of
arena_used_bytes() is the difference of the planned heads)."""

from __future__ import annotations

from typing import Any

from edgeq.formats.tflite import ModelInfo


def plan_check(data: bytes, info: ModelInfo, x: Any, planned_run: Any, build: Any,
               core_name: str) -> dict[str, Any] | None:
    """None for a model without a plan; else the comparison (see the module docstring).

    `build(model_bytes)` builds and runs the firmware for a model on `x` and returns the run
    (edgeq.emulator.qemu.run_firmware's result)."""
    from edgeq.formats.tflite import read_model
    from edgeq.formats.tflite_metadata import read_offline_plan, strip_plan
    from edgeq.pipeline import arena_plan
    from edgeq.pipeline.arena_scratch import kernels_for

    offsets = read_offline_plan(data)
    if offsets is None:
        return None
    unplanned = strip_plan(data)  # TFLM's own plan, edgeq's operator order undone
    run = build(unplanned)
    kernels = kernels_for(core_name)
    try:
        planned = arena_plan.realise(info, tuple(range(len(info.ops))), offsets, kernels)
        original = read_model(unplanned)
        own = arena_plan.realise(original, tuple(range(len(original.ops))), {}, kernels)
    except arena_plan.NotPlannable as exc:
        planned = own = None
        note = str(exc)
    else:
        note = ""
    used = int(planned_run.report.get("arena_used", 0))
    used_own = int(run.report.get("arena_used", 0))
    return {
        "kernels": kernels.name,
        "outputs_identical_to_unplanned": run.outputs == planned_run.outputs,
        "device_arena_bytes": used, "device_arena_unplanned_bytes": used_own,
        "predicted_head_bytes": planned, "predicted_tflm_head_bytes": own,
        "arena_matches_plan": None if planned is None else used_own - used == own - planned,
        "note": note,
    }
