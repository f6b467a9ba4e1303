"""`edgeq analyze`: what a target makes of an existing .tflite, without converting anything.

Op placement from the target's rules, the model's flash size and, for TFLite Micro targets,
the tensor arena measured by TFLM's recording allocator, checked against the budgets.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from edgeq.errors import ConversionError, ModelFileError
from edgeq.pipeline.gate import Memory, check_memory, largest_tensors
from edgeq.pipeline.place import OpPlacement, place_ops
from edgeq.targets import Target, load_target
from edgeq.tflite_file import ModelInfo, read_model


@dataclass(frozen=True)
class Analysis:
    target: Target
    model_path: str
    info: ModelInfo
    ops: tuple[OpPlacement, ...]
    memory: Memory
    largest: dict[str, list[dict[str, Any]]]  # the tensors to look at when a budget is exceeded
    arena: Any = None  # ArenaUsage from TFLite Micro, for TFLM targets
    compiler: dict[str, Any] | None = None  # what the target's compiler said (vela summary)

    @property
    def unplaceable(self) -> tuple[OpPlacement, ...]:
        return tuple(op for op in self.ops if op.placement == "none")

    def summary(self) -> dict[str, Any]:
        counts: dict[str, int] = {}
        for op in self.ops:
            counts[op.placement] = counts.get(op.placement, 0) + 1
        inp, out = self.info.input_tensors[0], self.info.output_tensors[0]
        return {
            "ops_total": len(self.ops),
            "placement_counts": counts,
            "model_bytes": self.info.size_bytes,
            "weight_bytes": self.info.weight_bytes,
            "input": {"shape": list(inp.shape), "dtype": inp.dtype},
            "output": {"shape": list(out.shape), "dtype": out.dtype},
            "dynamic_shapes": bool(self.info.dynamic_tensors),
            "float_tensors": len(self.info.float_op_tensors()),
            "fits": not self.memory.overruns,
        }

    def to_dict(self) -> dict[str, Any]:
        memory = {k: v for k, v in asdict(self.memory).items() if k != "overruns"}
        memory["overruns"] = list(self.memory.overruns)
        return {
            "target": self.target.name,
            "model": self.model_path,
            "ops": [op.to_dict() for op in self.ops],
            "memory": memory,
            "largest_tensors": self.largest,
            **({"vela": self.compiler["summary"], "compiler_notes": self.compiler["notes"]}
               if self.compiler else {}),
            "summary": self.summary(),
        }


def analyze(model_path: str | Path, target_name: str) -> Analysis:
    """Place the ops of a .tflite on a target and measure what it needs.

    Raises:
        ModelFileError: not a .tflite file, or a corrupt one (exit 2).
        TargetNotFoundError / TargetFileError: bad --target (exit 2).
    """
    target = load_target(target_name)
    p = Path(model_path)
    if p.is_dir() or p.suffix.lower() != ".tflite":
        raise ModelFileError(
            p, "analyze reads .tflite files", hint="convert a Keras model with 'edgeq convert' first"
        )
    if not p.is_file():
        raise ModelFileError(p, "not found", hint="check the path to the model")
    data = p.read_bytes()
    info = read_model(data, p)
    placements = place_ops(info, target)
    arena = None
    if target.runtime.name == "tflm" and not any(op.placement == "none" for op in placements):
        arena = measure_arena(data, p)
    compiler = None
    if target.compiler is not None and target.compiler.name == "vela":
        from edgeq.pipeline.compile import compile_for_target

        try:
            compiled = compile_for_target(data, target, placements, p.stem)
        except ConversionError as exc:  # vela choked on a file that passed edgeq's checks
            raise ModelFileError(p, f"{exc}", hint="check the file with 'vela' itself") from exc
        placements = compiled.placements
        compiler = {"summary": compiled.summary, "notes": list(compiled.notes)}
    memory = check_memory(target, len(data), arena)
    largest = {
        "activations": largest_tensors(info, constant=False),
        "weights": largest_tensors(info, constant=True),
    }
    return Analysis(target, str(p), info, placements, memory, largest, arena, compiler)


def measure_arena(model: bytes, source: str | Path) -> Any:
    """TFLite Micro's arena for a user's model, measured in a child process (edgeq.isolation):
    a model that crashes or hangs the interpreter is a bad input (exit 2), not a dead edgeq."""
    from edgeq.adapters.tflm import ArenaUsage
    from edgeq.isolation import run_in_child

    got = run_in_child("tflm_arena", model, stage="TFLite Micro (arena measurement)",
                       source=source)
    return ArenaUsage(got["total"], got["head"], got["tail"], got["log"])
