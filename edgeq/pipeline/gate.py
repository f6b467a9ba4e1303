"""Stage 7, gate: the target's flash/RAM budgets and the user's accuracy budget."""

from __future__ import annotations

from dataclasses import dataclass

from edgeq.adapters.tflm import ArenaUsage
from edgeq.errors import AccuracyGateError, BudgetExceededError
from edgeq.pipeline.verify import Accuracy
from edgeq.targets import Target
from edgeq.formats.tflite import ModelInfo, activation_bytes



@dataclass(frozen=True)
class Memory:
    flash_bytes: int
    arena_bytes: int | None
    arena_head_bytes: int | None
    arena_tail_bytes: int | None
    budget_flash_bytes: int | None  # None: the target sets no budget
    budget_ram_bytes: int | None
    ram_reserve_bytes: int
    overruns: tuple[str, ...]
    # kTensorArenaSize to declare on the device: measured + alignment + kernel scratch margin.
    recommended_arena_bytes: int | None = None


def check_memory(target: Target, model_bytes: int, arena: ArenaUsage | None,
                 info: ModelInfo | None = None) -> Memory:
    """Compare model size with flash and the TFLM arena (plus the profile's reserve) with RAM."""
    mem = target.memory
    flash = mem.flash_bytes or None
    ram = mem.ram_bytes or None
    overruns = []
    if flash is not None and model_bytes > flash:
        overruns.append(f"model {_kib(model_bytes)} > flash budget {_kib(flash)}")
    if ram is not None and arena is not None and arena.total + mem.ram_reserve_bytes > ram:
        reserve = f" + reserve {_kib(mem.ram_reserve_bytes)}" if mem.ram_reserve_bytes else ""
        overruns.append(f"tensor arena {_kib(arena.total)}{reserve} > RAM budget {_kib(ram)}")
    return Memory(
        flash_bytes=model_bytes,
        arena_bytes=arena.total if arena else None,
        arena_head_bytes=arena.head if arena else None,
        arena_tail_bytes=arena.tail if arena else None,
        budget_flash_bytes=flash,
        budget_ram_bytes=ram,
        ram_reserve_bytes=mem.ram_reserve_bytes,
        overruns=tuple(overruns),
        recommended_arena_bytes=_recommended(arena, info, target),
    )


def _recommended(arena: ArenaUsage | None, info: ModelInfo | None, target: Target
                 ) -> int | None:
    if arena is None:
        return None
    from edgeq.outputs.embed import kernel_variant, recommended_arena

    extra = 0
    if info is not None:  # the buffers the device's CMSIS-NN kernels add (embed does the same)
        from edgeq.formats.cmsis_nn_buffers import kernel_buffers

        extra = kernel_buffers(info, kernel_variant(target)).total
    return recommended_arena(arena.total, extra)


ARENA_MARGIN_NOTE = (
    "recommended kTensorArenaSize = measured arena + 16 B (TFLM's alignment slack) + "
    "the scratch and persistent buffers the target core's CMSIS-NN kernels request (DSP or "
    "Helium paths) + max(1 KiB, 10%) planner margin, rounded to "
    "16 B; measured on a 64-bit host, where TFLM's persistent structs are larger than on a "
    "32-bit MCU"
)


def largest_tensors(info: ModelInfo, *, constant: bool, n: int = 3) -> list[dict]:
    """The biggest weight tensors (flash) or activation tensors (arena), largest first."""
    rows = []
    for t in info.tensors:
        if (t.constant_bytes > 0) != constant:
            continue
        size = t.constant_bytes if constant else activation_bytes(t.shape, t.dtype)
        rows.append({"name": t.name, "shape": list(t.shape), "dtype": t.dtype, "bytes": size})
    rows.sort(key=lambda r: (-r["bytes"], r["name"]))
    return rows[:n]


def enforce_memory(target: Target, memory: Memory, info: ModelInfo | None = None) -> None:
    if not memory.overruns:
        return
    hint = "use a smaller model or a target with more memory"
    if info is not None:
        over_ram = any("RAM" in o for o in memory.overruns)
        top = largest_tensors(info, constant=not over_ram)
        what = "activations" if over_ram else "weights"
        listed = ", ".join(f"{r['name'] or '?'} {r['shape']} {r['bytes'] / 1024:.1f} KiB"
                           for r in top)
        hint = f"largest {what}: {listed}; shrink those layers or pick a bigger target"
    raise BudgetExceededError(target.name, list(memory.overruns), hint=hint)


def enforce_accuracy(accuracy: Accuracy, max_drop_pp: float | None) -> None:
    """Fail when top-1 (or, without labels, argmax agreement) fell more than allowed."""
    if max_drop_pp is None:
        return
    if accuracy.drop_pp is not None:
        if accuracy.drop_pp > max_drop_pp:
            raise AccuracyGateError("top-1 accuracy drop (points)", accuracy.drop_pp, max_drop_pp)
        return
    disagreement = 100.0 * (1.0 - accuracy.agreement)
    if disagreement > max_drop_pp:
        raise AccuracyGateError(
            "argmax disagreement with float (points; no labels given)", disagreement, max_drop_pp
        )


def _kib(n: int) -> str:
    return f"{n / 1024:.1f} KiB ({n} B)"
