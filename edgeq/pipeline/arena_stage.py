"""The arena-plan stage: plan a model's TFLite Micro arena for its target, write the plan into
the flatbuffer only when it is smaller than TFLM's own plan, and check the planned model on the
host's TFLM interpreter (outputs byte-identical to the model as given, head as predicted).

Used by `convert` and `embed` (which ship the planned model) and `analyze` (which reports the
figures). The planner and its exact model of TFLM are in edgeq.pipeline.arena_plan.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from edgeq.formats.tflite import ModelInfo, read_model
from edgeq.pipeline import arena_plan
from edgeq.pipeline.arena_scratch import REFERENCE, Kernels, kernels_for

CHECK_SAMPLES = 4  # seeded random inputs the planned and the given model are compared on


@dataclass(frozen=True)
class ArenaPlanResult:
    model: bytes  # what ships: the planned model, or the model as given
    applied: bool
    reason: str  # why the plan was or was not written
    host: dict[str, int] = field(default_factory=dict)  # reference kernels: tflm/planned/bound
    device: dict[str, Any] = field(default_factory=dict)  # the target build's kernels
    heuristic: str = ""
    reordered: bool = False
    check: dict[str, Any] = field(default_factory=dict)  # the host interpreter's verdict
    # (host, device) figures of the model as given: what ships when a written plan is undone
    as_given: tuple[dict[str, int], dict[str, Any]] | None = None

    def to_dict(self, *, written: bool | None = None) -> dict[str, Any]:
        """The report's `memory.arena_plan`; `written` says whether this run wrote the plan
        into the model (analyze only reports: False)."""
        return {
            "written": self.applied if written is None else written,
            "smaller_than_tflm": bool(self.host) and (
                self.host["planned"] < self.host["as_given"]
                or self.device["planned_head_bytes"] < self.device["as_given_head_bytes"]),
            "reason": self.reason,
            "tflm_head_bytes": self.host.get("tflm"),
            "as_given_head_bytes": self.host.get("as_given"),
            "planned_head_bytes": self.host.get("planned"),
            "lower_bound_head_bytes": self.host.get("lower_bound"),
            "kernels": REFERENCE.name,
            "device": dict(self.device),
            "heuristic": self.heuristic, "reordered_operators": self.reordered,
            "host_check": dict(self.check),
        }


def target_kernels(target: Any) -> Kernels:
    """The kernels of the target's firmware build (its [emulator] core), else reference."""
    emulator = getattr(target, "emulator", None)
    return kernels_for(emulator.core if emulator is not None else None)


def plan_model(model: bytes, kernels: Kernels, *, source: str = "model",
               info: ModelInfo | None = None, also: tuple[Kernels, ...] = ()) -> ArenaPlanResult:
    """The best plan for `kernels` that is no larger than TFLM's own plan on the host's
    reference kernels (nor on the builds in `also`) either; the model rewritten with it when it
    is smaller on one of them. Pure computation: nothing runs."""
    from edgeq.formats.tflite_metadata import read_offline_plan, write_plan

    info = info or read_model(model, source)
    given = read_offline_plan(model, source)
    try:
        dev = arena_plan.plan(info, kernels, given)
        host = dev if kernels is REFERENCE else arena_plan.plan(info, REFERENCE, given)
    except arena_plan.NotPlannable as exc:
        return ArenaPlanResult(model, False, f"not planned: {exc}")
    # The plan made for the target's kernels, or the host's, whichever is no worse on both.
    best = None
    for cand in (dev, host):
        on_dev = arena_plan.realise(info, cand.order, cand.offsets, kernels)
        on_host = arena_plan.realise(info, cand.order, cand.offsets, REFERENCE)
        if any(arena_plan.realise(info, cand.order, cand.offsets, k)
               > arena_plan.realise(info, tuple(range(len(info.ops))), given or {}, k)
               for k in also):
            continue
        if on_dev <= dev.as_given_head and on_host <= host.as_given_head and (
                best is None or (on_dev, on_host) < best[1:]):
            best = (cand, on_dev, on_host)
    as_given = tuple(range(len(info.ops)))
    host_figures, device = _figures(info, host, dev, kernels, as_given, host.as_given_head,
                                    dev.as_given_head)
    if best is None:
        return ArenaPlanResult(model, False, "no plan found that is no larger on every build",
                               host_figures, device)
    cand, on_dev, on_host = best
    if on_dev >= dev.as_given_head and on_host >= host.as_given_head:
        why = ("the model's own offline plan is already the smallest found" if given else
               "TFLM's own plan is already the smallest found")
        return ArenaPlanResult(model, False, why, host_figures, device)
    planned = write_plan(model, cand.offsets, cand.order if cand.reordered else None)
    saved = dev.as_given_head - on_dev
    host_figures, device = _figures(info, host, dev, kernels, cand.order, on_host, on_dev)
    return ArenaPlanResult(planned, True, f"{saved} B smaller than TFLM's plan on "
                           f"{kernels.name} ({host.as_given_head - on_host} B on the host)",
                           host_figures, device, cand.heuristic, cand.reordered,
                           as_given=(_figures(info, host, dev, kernels, as_given,
                                              host.as_given_head, dev.as_given_head)))


def _figures(info: ModelInfo, host: arena_plan.Plan, dev: arena_plan.Plan, kernels: Kernels,
             order: tuple[int, ...], on_host: int, on_dev: int
             ) -> tuple[dict[str, int], dict[str, Any]]:
    """The report's figures for the model that ships (operators in `order`)."""
    return ({"tflm": host.tflm_head, "as_given": host.as_given_head, "planned": on_host,
             "lower_bound": arena_plan.realise_bound(info, order, REFERENCE)},
            {"kernels": kernels.name, "tflm_head_bytes": dev.tflm_head,
             "as_given_head_bytes": dev.as_given_head, "planned_head_bytes": on_dev,
             "lower_bound_head_bytes": arena_plan.realise_bound(info, order, kernels)})


def checked(result: ArenaPlanResult, original: bytes, *, samples: int = CHECK_SAMPLES
            ) -> ArenaPlanResult:
    """`result` after the host's TFLM interpreter ran the planned and the given model on the
    same seeded inputs: kept when the outputs are byte-identical and the head is the one
    predicted, else the model as given with the reason."""
    if not result.applied:
        return result
    return _judged(result, original, compare_on_host(original, result.model, samples))


def _judged(result: ArenaPlanResult, original: bytes, check: dict[str, Any]) -> ArenaPlanResult:
    check = {**check, "predicted_head_bytes": result.host["planned"]}
    ok = check["outputs_identical"] and check["head_bytes"] == result.host["planned"]
    if ok:
        return _replace(result, check=check)
    why = ("outputs differ" if not check["outputs_identical"] else
           f"TFLM's head is {check['head_bytes']} B, not the {result.host['planned']} B planned")
    host, device = result.as_given or (result.host, result.device)
    return _replace(result, model=original, applied=False, check=check, host=host,
                    device=device, heuristic="", reordered=False,
                    reason=f"plan not written: on the host interpreter its {why}")


def embed_plan(path: Any, model: bytes, target: Any | None) -> ArenaPlanResult:
    """`edgeq embed`: the plan for the target's build (without --target: one no larger on
    the reference kernels nor on CMSIS-NN's DSP and MVE builds), checked in a child process
    (a user's file) on the host's TFLM interpreter."""
    from edgeq.pipeline.arena_scratch import CMSIS_DSP, CMSIS_MVE
    from edgeq.process.isolation import run_in_child

    if target is not None:
        result = plan_model(model, target_kernels(target), source=str(path))
    else:
        result = plan_model(model, CMSIS_DSP, source=str(path), also=(CMSIS_MVE,))
    if not result.applied:
        return result
    check = run_in_child("arena_plan_check", result.model, stage="TFLite Micro (arena plan)",
                         source=path, args={"original": str(path.resolve()),
                                            "samples": CHECK_SAMPLES},
                         samples=2 * CHECK_SAMPLES)  # both models run: the time limit's work
    return _judged(result, model, check)


def planned_arena(arena: Any, result: ArenaPlanResult) -> Any:
    """The host arena figures of the planned model, from the given model's (same tail)."""
    from edgeq.adapters.tflm import ArenaUsage

    head = result.check["head_bytes"]
    return ArenaUsage(arena.tail + head, head, arena.tail, arena.log)


def plan_and_check(model: bytes, target: Any, *, source: str = "model") -> ArenaPlanResult:
    """plan_model for the target's kernels, then checked on the host interpreter (convert)."""
    return checked(plan_model(model, target_kernels(target), source=source), model)


def compare_on_host(original: bytes, planned: bytes, samples: int) -> dict[str, Any]:
    """Run both models on TFLM's interpreter on seeded random inputs; compare the raw output
    bytes, and measure the planned model's head."""
    import numpy as np

    from edgeq.adapters.native import capture_fds
    from edgeq.adapters.tflm import _runtime, first_arena_size, parse_allocations

    info = read_model(original)
    rng = np.random.default_rng(0)
    feeds = []
    for _ in range(samples):
        row = []
        for t in info.input_tensors:
            dt = np.dtype(t.dtype)
            if np.issubdtype(dt, np.integer):
                lim = np.iinfo(dt)
                row.append(rng.integers(lim.min, int(lim.max) + 1, size=t.shape).astype(dt))
            else:
                row.append(rng.standard_normal(t.shape).astype(dt))
        feeds.append(row)
    runtime = _runtime()
    outs, head = [], None
    for k, model in enumerate((original, planned)):
        got = []
        with capture_fds((1, 2)):
            interp = runtime.Interpreter.from_bytes(model, arena_size=first_arena_size(info))
            for row in feeds:
                for j, x in enumerate(row):
                    interp.set_input(x, j)
                interp.invoke()
                got.append(b"".join(np.ascontiguousarray(interp.get_output(j)).tobytes()
                                    for j in range(len(info.outputs))))
        if k == 1:
            with capture_fds((2,)) as alloc:
                interp.print_allocations()
            head = parse_allocations(alloc.text).head
        outs.append(got)
    return {"samples": samples, "outputs_identical": outs[0] == outs[1], "head_bytes": head}


def _replace(result: ArenaPlanResult, **changes: Any) -> ArenaPlanResult:
    import dataclasses

    return dataclasses.replace(result, **changes)
