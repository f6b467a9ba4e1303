"""`edgeq analyze`: what a target makes of a model.

Op placement from the target's rules (and its compiler's verdict when it has one: Vela, the
Edge TPU compiler when installed), the model's flash size and, for TFLite Micro targets, the
tensor arena measured by TFLM's recording allocator, checked against the budgets. On a TFLite
Micro target the placement is what TFLM runs: QUANTIZE/DEQUANTIZE at the edges of an integer
model (float I/O, as openmv, MLTK and MCUNet ship models) and float kernels inside run on the
MCU core, and the notes say what float I/O costs. Scales TFLM aborts on are named first
(edgeq.formats.kernel_limits). A Keras model is converted first (full-integer, calibrated on --data
or, for sizing before training, on synthetic inputs: op placement and memory do not depend on
the calibration ranges).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from edgeq.errors import ConversionError, DataError, ModelFileError
from edgeq.formats.input_files import TFLITE_MAX, check_file_or_dir, read_file
from edgeq.pipeline.gate import Memory, check_memory, largest_tensors
from edgeq.pipeline.place import ETHOS_U_OP, OpPlacement, place_ops
from edgeq.targets import Target, load_target
from edgeq.formats.tflite import ModelInfo, activation_bytes, read_model


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
    notes: tuple[str, ...] = ()
    arena_plan: dict[str, Any] | None = None  # TFLM's head plan vs edgeq's (arena_stage)

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
        if self.arena_plan is not None:
            memory["arena_plan"] = self.arena_plan
        return {
            "target": self.target.name,
            "model": self.model_path,
            "ops": [op.to_dict() for op in self.ops],
            "memory": memory,
            "largest_tensors": self.largest,
            **({self.compiler["key"]: self.compiler["summary"],
                "compiler_notes": self.compiler["notes"]} if self.compiler else {}),
            "notes": list(self.notes),
            "summary": self.summary(),
        }


def analyze(model_path: str | Path, target_name: str, data: str | None = None, *,
            allow_unsafe: bool = False) -> Analysis:
    """Place the ops of a model on a target and measure what it needs.

    ``allow_unsafe`` loads a Keras model or SavedModel that edgeq's safe loader policy refuses
    (edgeq.pipeline.load), as `convert --allow-unsafe` does.

    Raises:
        ModelFileError: a missing, corrupt or unknown model file (exit 2).
        UnsafeModelError: a model that would run code when loaded, without allow_unsafe.
        TargetNotFoundError / TargetFileError: bad --target (exit 2).
        TargetConstraintError: the target's compiler would refuse the whole model (exit 3).
    """
    target = load_target(target_name)
    p = Path(model_path)
    check_file_or_dir(p, "model", error=ModelFileError, hint="check the path to the model")
    if data is not None:  # before a Keras model is loaded and converted for it
        check_file_or_dir(data, "--data", error=DataError)
    notes: list[str] = []
    synthetic = False
    if p.is_dir() or p.suffix.lower() in (".keras", ".h5", ".hdf5"):
        data_bytes, layer_scope = _convert_first(p, target, data, notes, allow_unsafe)
        synthetic = data is None
    elif p.suffix.lower() == ".tflite":
        data_bytes = read_file(p, "model", TFLITE_MAX, error=ModelFileError)
        layer_scope = ((), None)
    else:
        raise ModelFileError(p, "analyze reads .tflite, .keras, .h5 or SavedModel directories",
                             hint="pass the model file")
    info = read_model(data_bytes, p)
    if target.runtime.name == "tflm":  # no arena, Vela or op figure on weights TFLM ignores
        from edgeq.adapters.tflm import check_inline_buffers

        check_inline_buffers(data_bytes, str(p))
    placements = place_ops(info, target, *layer_scope, source=str(p))
    vela_compiled = ETHOS_U_OP in info.op_names
    arena = None
    if (target.runtime.name == "tflm" and not vela_compiled
            and not any(op.placement == "none" for op in placements)):
        # the same ops and shapes as `info` (only scales may be raised): the same work
        arena = measure_arena(_runnable(data_bytes, info, synthetic, notes), p, info=info)
    if target.runtime.name == "tflm":
        notes.extend(float_io_notes(info, placements))
    if vela_compiled and target.compiler is not None:
        built = ", ".join(sorted(set(info.npu_configs))) or "unknown"
        notes.append(f"already compiled by Vela for {built}: the ethos-u op needs the NPU "
                     "driver, which TFLite Micro on the host lacks, so there are no arena or "
                     "Vela figures; analyze the model before Vela for them")
    compiler = None
    if target.compiler is not None and not vela_compiled:
        from edgeq.pipeline.compile import compile_for_target

        try:
            compiled = compile_for_target(data_bytes, target, placements, p.stem)
        except ConversionError as exc:  # the compiler choked on a file that passed our checks
            raise ModelFileError(p, f"{exc}", hint=f"check the file with "
                                 f"'{target.compiler.name}' itself") from exc
        placements = compiled.placements
        key = "vela" if compiled.compiler == "vela" else "edgetpu"
        compiler = {"key": key, "summary": compiled.summary, "notes": list(compiled.notes)}
    memory = check_memory(target, len(data_bytes), arena, info)
    # Ethos-U: what runs is Vela's output, which carries Vela's own plan.
    plan = _arena_plan(data_bytes, info, target, p) \
        if arena is not None and target.compiler is None else None
    largest = {
        "activations": largest_tensors(info, constant=False),
        "weights": largest_tensors(info, constant=True),
    }
    return Analysis(target, str(p), info, placements, memory, largest, arena, compiler,
                    tuple(notes), plan)


def _arena_plan(model: bytes, info: ModelInfo, target: Target, p: Path) -> dict[str, Any]:
    """TFLM's head for this file next to the best offline plan edgeq finds and the lower bound
    (edgeq.pipeline.arena_stage): figures only, the file is not changed."""
    from edgeq.pipeline.arena_stage import plan_model, target_kernels

    figures = plan_model(model, target_kernels(target), source=str(p), info=info).to_dict(
        written=False)
    if figures["smaller_than_tflm"]:
        figures["reason"] = ("analyze only reports; `edgeq convert` and `edgeq embed` write "
                             f"this plan: {figures['reason']}")
    return figures


def _convert_first(p: Path, target: Target, data: str | None, notes: list[str],
                   allow_unsafe: bool) -> tuple[bytes, tuple[tuple[str, ...], str | None]]:
    """Full-integer conversion of a Keras model for the target, to analyse what it becomes.

    Runs TensorFlow's converter in this process, so `edgeq analyze` runs under the crash
    supervisor (edgeq.process.supervise) and names its stages like convert does."""
    from edgeq.adapters.tf_tempdir import private_tempdir

    with private_tempdir():  # TensorFlow's autograph files go there, and are removed after
        return _convert(p, target, data, notes, allow_unsafe)


def _convert(p: Path, target: Target, data: str | None, notes: list[str],
             allow_unsafe: bool) -> tuple[bytes, tuple[tuple[str, ...], str | None]]:
    import numpy as np

    from edgeq.data import MAX_BYTES, Dataset, Preprocess, check_input_spec, load_dataset
    from edgeq.pipeline.load import load_model
    from edgeq.pipeline.quantize import converter_settings, quantize_minmax
    from edgeq.process.supervise import mark

    mark("load")
    loaded = load_model(p, allow_unsafe=allow_unsafe)
    spec = loaded.input_spec
    check_input_spec(spec, p)  # a (65536, 65536, 3) input: exit 3, not numpy out of memory
    if data is not None:
        # Sizing uses the inputs only: labels are not checked against the model's classes.
        calib = load_dataset(data, spec, Preprocess(), role="calibration").spread(100)
        notes.append(f"converted to full integer for {target.name}, calibrated on {data}")
    else:
        # Up to 8 samples, as many as fit the data memory limit (float64 before the cast).
        n = max(1, min(8, MAX_BYTES // (8 * max(math.prod(spec.shape), 1))))
        x = np.random.default_rng(0).uniform(0.0, 1.0, (n, *spec.shape)).astype(spec.dtype)
        calib = Dataset(x, None, "synthetic", ("uniform [0, 1) inputs",), {})
        notes.append(f"converted to full integer for {target.name} with {n} synthetic calibration "
                     "inputs: op placement and sizes hold, accuracy needs 'edgeq convert' with "
                     "real data")
    mark("quantize")
    result = quantize_minmax(loaded, target, calib, converter_settings(target))
    mark("analyze")
    return result.model, loaded.layer_scope()


def _runnable(model: bytes, info: ModelInfo, synthetic: bool,
              notes: list[str]) -> bytes:
    """The model TFLite Micro can load for the arena measurement.

    A user's model (a .tflite, or Keras calibrated on --data) goes as it is: scales the kernels
    abort on are refused by name (exit 3) where every interpreter run starts
    (edgeq.process.isolation, edgeq.formats.kernel_limits). A Keras model converted on
    synthetic inputs for sizing gets such scales raised instead: they come from the synthetic
    calibration (an untrained network drives its logits to ~1e-8), and the arena depends on
    shapes, not scale values.
    """
    from edgeq.formats.kernel_limits import scale_problems, with_safe_scales

    if not synthetic:
        return model
    problems = scale_problems(info, "tflm")
    if not problems:
        return model
    first = problems[0]
    notes.append(f"the synthetic calibration gave op {first.index} {first.op} scales TFLite "
                 f"Micro aborts on ({first.detail}); the arena was measured with them raised "
                 "(sizes do not depend on scales). Convert with real data before deploying")
    return with_safe_scales(model, problems)


def float_io_notes(info: ModelInfo, placements: tuple[OpPlacement, ...]) -> list[str]:
    """What float inputs and outputs cost on a microcontroller: the float buffer the
    application fills or reads, and the conversion op that runs on the MCU core."""
    ops_by_tensor = {}
    for op in info.ops:
        for i in (*op.inputs, *op.outputs):
            ops_by_tensor.setdefault(i, op)
    where = {r.index: r.placement for r in placements}
    notes = []
    for kind, indices in (("input", info.inputs), ("output", info.outputs)):
        for i in indices:
            t = info.tensors[i]
            if t.dtype not in ("float32", "float16"):
                continue
            op = ops_by_tensor.get(i)
            how = (f"; {op.op} (op {op.index}) converts it on the "
                   f"{'MCU core' if where.get(op.index) == 'mcu' else where.get(op.index)}"
                   if op is not None else "")
            notes.append(f"float I/O: {kind} '{t.name}' {list(t.shape)} is {t.dtype}, "
                         f"{activation_bytes(t.shape, t.dtype)} B in the arena instead of "
                         f"{activation_bytes(t.shape, 'int8')} B as int8{how}")
    return notes


def measure_arena(model: bytes, source: str | Path, *, info: ModelInfo | None = None) -> Any:
    """TFLite Micro's arena for a user's model, measured in a child process (edgeq.process.isolation):
    a model that crashes or hangs the interpreter is a bad input (exit 2), not a dead edgeq."""
    from edgeq.adapters.tflm import ArenaUsage
    from edgeq.process.isolation import run_in_child

    got = run_in_child("tflm_arena", model, stage="TFLite Micro (arena measurement)",
                       source=source, info=info)  # info: `model`'s, for the time limit
    return ArenaUsage(got["total"], got["head"], got["tail"], got["log"])
