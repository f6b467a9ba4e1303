"""Stage 4, place ops: where each op of the produced model runs on the target, and why.

A first, profile-driven placement: the op table, the op versions and the integer-only rule of
the target. Compiler-specific rules (the Edge TPU's rank and per-op constraints, Vela's
checks) refine it in their own modules.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from edgeq.errors import ModelFileError, UnsupportedOpsError
from edgeq.formats.input_files import TFLITE_MAX, read_file
from edgeq.targets import Target
from edgeq.formats.tflite import ModelInfo, OpInfo, read_model

# The custom op Vela replaces each run of NPU ops with: the NPU's command stream, which only an
# Ethos-U driver can run (TFLite Micro on a plain Cortex-M or on the host has no kernel for it).
ETHOS_U_OP = "CUSTOM:ethos-u"


@dataclass(frozen=True)
class OpPlacement:
    index: int
    op: str
    placement: str  # tpu | npu | cpu | mcu | none (cannot run anywhere on this target)
    reason: str
    layer: str | None = None  # the Keras layer the op came from, when known
    fix: str | None = None  # what to change so that it runs on the accelerator
    status: str | None = None  # the compiler's own status string (Edge TPU per-op table)
    rule: str | None = None  # the placement rule that kept it off the accelerator (Edge TPU)
    # What the op costs where it runs, by the compiler's estimate (Vela's per-layer figures:
    # npu_cycles, macs, mac_utilisation, bound, ...); merged into to_dict's keys.
    perf: dict | None = field(default=None, compare=False)

    def to_dict(self) -> dict:
        out = {k: v for k, v in asdict(self).items() if v is not None and k != "perf"}
        return {**out, **(self.perf or {})}


def place_ops(info: ModelInfo, target: Target, layer_names: tuple[str, ...] = (),
              model_name: str | None = None, *, source: str = "model"
              ) -> tuple[OpPlacement, ...]:
    """One record per op, in execution order.

    Raises:
        TargetConstraintError: the target's compiler would refuse the whole model (exit 3).
    """
    if target.compiler is not None and target.compiler.name == "edgetpu_compiler":
        return edgetpu_placements(info, target, layer_names, model_name, source=source)
    from edgeq.edgetpu.placement import keras_layer

    home = target.runtime.placement
    fallback = target.runtime.fallback_placement
    # A compiler that maps one subgraph (the Edge TPU's) sends every op after the first op it
    # cannot map to the CPU as well, supported or not.
    single_subgraph = target.runtime.partitioning == "single-subgraph"
    split_at: OpInfo | None = None
    records = []
    vela_compiled = home == "npu" and ETHOS_U_OP in info.op_names
    for op in info.ops:
        # Every target names the Keras layer behind an op, from the converter's tensor names,
        # as the Edge TPU placement does (one reader: edgeq.edgetpu.placement.keras_layer).
        layer = keras_layer(op, info, layer_names, model_name)
        if vela_compiled:
            records.append(_vela_compiled(op, info, target))
            continue
        problem = _problem(op, info, target)
        if problem is None and split_at is not None and single_subgraph:
            problem = (
                f"follows {split_at.op} (op {split_at.index}), the first op the {home.upper()} "
                "cannot run; the compiler maps only one subgraph, so everything after it runs "
                "on the CPU"
            )
        if problem is None:
            why = (_float_on_mcu(op, info) if home == "mcu" else None) or (
                f"supported on {_where(target)}")
            records.append(OpPlacement(op.index, op.op, home, why, layer))
            continue
        if split_at is None:
            split_at = op
        records.append(OpPlacement(op.index, op.op, fallback, problem, layer))
    return tuple(records)


def _vela_compiled(op: OpInfo, info: ModelInfo, target: Target) -> OpPlacement:
    """In a model Vela already compiled, Vela has chosen: its custom op runs on the NPU and
    every op it left as a builtin on the CPU next to it. The command stream names the NPU it
    was compiled for (edgeq.formats.ethos_u); the Ethos-U driver refuses it on any other
    ("NPU config mismatch"), so a stream for another configuration has nowhere to run."""
    if op.op == ETHOS_U_OP:
        built = compiled_for_op(op, info)
        want = target.compiler.accelerator_config if target.compiler is not None else None
        if built != "unknown" and want and built != want:
            return OpPlacement(op.index, op.op, "none",
                               f"op {op.index} {op.op} was compiled by Vela for {built}, not "
                               f"for {want}"
                               + (f" (target {target.name})" if target.name != want else "")
                               + ": the Ethos-U driver refuses a command "
                               f"stream for another configuration (NPU config mismatch); "
                               f"{_use_instead(built)}")
        return OpPlacement(op.index, op.op, "npu",
                           "the NPU command stream of a model already compiled by Vela for "
                           f"{built}" if built != "unknown" else
                           "the NPU command stream of a model already compiled by Vela "
                           "(its configuration word is unreadable)")
    return OpPlacement(op.index, op.op, target.runtime.fallback_placement,
                       _problem(op, info, target) or "left on the CPU by Vela (TFLite Micro)")


def edgetpu_placements(info: ModelInfo, target: Target, layer_names: tuple[str, ...] = (),
                       model_name: str | None = None, *, source: str = "model"
                       ) -> tuple[OpPlacement, ...]:
    from edgeq.edgetpu import placement

    placement.check_compilable(info, source)
    plan = placement.plan(info, target.ops.allowed, dict(target.ops.max_versions), layer_names,
                          model_name)
    placement.check_mappable(plan, info, source)
    return tuple(OpPlacement(r.index, r.op, r.placement, r.reason, r.layer, r.fix, r.status,
                             r.rule) for r in plan.ops)


def check_placeable(records: tuple[OpPlacement, ...], target: Target) -> None:
    """Raise when an op has nowhere to run on this target."""
    bad = [r for r in records if r.placement == "none"]
    if bad:
        first = bad[0]
        if first.op == ETHOS_U_OP:  # the reason already says what to do instead
            raise UnsupportedOpsError(target.name, [r.op for r in bad], hint=first.reason)
        offer = _substitution_for(first.op)
        raise UnsupportedOpsError(
            target.name,
            [r.op for r in bad],
            hint=f"{first.reason}; replace the layer that produces {first.op}"
            + (f", pass {offer}" if offer else "")
            + ", or pick a target whose runtime has it (edgeq targets lists them)",
        )


def _substitution_for(op: str) -> str | None:
    """The `--substitute` rewrite that removes `op` (edgeq.transforms.substitute), if any."""
    return {"GELU": "--substitute gelu (x*sigmoid(1.702x): LOGISTIC and MUL)"}.get(op)


def read_placeable(model: str | Path, target: Target, command: str
                   ) -> tuple[Path, bytes, ModelInfo]:
    """A user's .tflite for `edgeq COMMAND` (verify, emulate): its path, bytes and structure,
    once every op has a place on the target.

    Raises:
        ModelFileError: the file is missing or not a readable .tflite (exit 2).
        UnsupportedOpsError: an op the target cannot run (exit 3).
        TargetConstraintError: weights stored after the flatbuffer, for TFLM (exit 3).
    """
    p = Path(model)
    data = read_file(p, "model", TFLITE_MAX, error=ModelFileError,
                     hint=f"pass the .tflite file to {command}")
    info = read_model(data, p)
    if target.runtime.name == "tflm":  # before any figure: TFLM would run without weights
        from edgeq.adapters.tflm import check_inline_buffers

        check_inline_buffers(data, str(p))
    check_placeable(place_ops(info, target), target)
    return p, data, info


def _problem(op: OpInfo, info: ModelInfo, target: Target) -> str | None:
    if op.op == ETHOS_U_OP:
        built = compiled_for_op(op, info)
        return (f"op {op.index} {op.op} is the Ethos-U NPU's command stream (this model was "
                "already compiled by Vela"
                + (f" for {built}" if built != "unknown" else "") + "); "
                + _use_instead(built))
    if not target.allows_op(op.op):
        return f"{op.op} is not in the {target.name} op table"
    limit = target.max_version(op.op)
    if limit is not None and op.version > limit:
        return f"{op.op} version {op.version} is newer than {target.name} accepts ({limit})"
    if target.quantization.float_fallback == "none":
        floats = [
            info.tensors[i].name or str(i)
            for i in (*op.inputs, *op.outputs)
            if i >= 0 and info.tensors[i].dtype in ("float32", "float16")
        ]
        if floats and target.runtime.name == "tflm":
            # TFLite Micro has float32 kernels for its ops: on a microcontroller they run on the
            # MCU core (see _float_on_mcu); next to an NPU they stay on the Cortex-M.
            if target.runtime.placement == "mcu":
                return None
            return (f"{op.op} computes in float ({floats[0]}); the NPU runs integer ops only, "
                    "so it runs on the Cortex-M (TFLite Micro float kernel)")
        if floats:
            return f"{op.op} computes in float ({floats[0]}); {target.name} runs integer ops only"
    return None


def _float_on_mcu(op: OpInfo, info: ModelInfo) -> str | None:
    """Why a float op runs on a microcontroller: float I/O conversion at the model's edges
    (models from openmv, Silicon Labs MLTK and MCUNet ship a QUANTIZE first and a DEQUANTIZE
    last) or a float kernel inside an otherwise integer model. None for an integer op."""
    ins = [i for i in op.inputs if i >= 0]
    outs = [i for i in op.outputs if i >= 0]
    if not any(info.tensors[i].dtype in ("float32", "float16") for i in (*ins, *outs)):
        return None
    if op.op == "QUANTIZE" and set(ins) & set(info.inputs):
        t = info.tensors[ins[0]]
        return (f"converts the model's {t.dtype} input '{t.name}' to "
                f"{info.tensors[outs[0]].dtype} on the MCU core (float I/O)")
    if op.op == "DEQUANTIZE" and set(outs) & set(info.outputs):
        t = info.tensors[outs[0]]
        return (f"converts {info.tensors[ins[0]].dtype} to the model's {t.dtype} output "
                f"'{t.name}' on the MCU core (float I/O)")
    return ("computes in float on the MCU core (TFLite Micro's float32 kernel): slower than "
            "int8 and without CMSIS-NN")


def _where(target: Target) -> str:
    return {"mcu": "the MCU (TFLite Micro)", "cpu": "the CPU (LiteRT)", "tpu": "the Edge TPU",
            "npu": "the NPU"}.get(target.runtime.placement, target.runtime.placement)


def compiled_for_op(op: OpInfo, info: ModelInfo) -> str:
    """The accelerator an ethos-u op's command stream was compiled for, or "unknown"."""
    nth = sum(1 for o in info.ops[:op.index] if o.op == ETHOS_U_OP)
    return info.npu_configs[nth] if nth < len(info.npu_configs) else "unknown"


def _use_instead(built: str) -> str:
    """What to run instead: the bundled profile for that NPU, if there is one."""
    from edgeq.targets import list_targets

    if built == "unknown":
        return ("analyze the model before Vela, or use the ethos-u target it was compiled for "
                "(edgeq targets lists them)")
    names = sorted(t.name for t in list_targets()
                   if t.compiler is not None and t.compiler.accelerator_config == built)
    if names:
        return f"use --target {names[0]}, or analyze the model before Vela"
    return ("analyze the model before Vela, with an ethos-u target (edgeq targets lists them; "
            f"none is bundled for {built}, a profile .toml can name it)")


def io_notes(info: ModelInfo, target: Target) -> list[str]:
    """A model whose input or output type the target's profile does not use: an int8-only
    microcontroller profile (no float fallback) given a float-I/O model (an android-arm64 or
    float16 build) runs, on TFLite Micro, float QUANTIZE/DEQUANTIZE kernels on a core the
    profile says feeds int8 sensor bytes."""
    q = target.quantization
    notes = []
    for what, tensor, wanted in (("input", info.input_tensors[0], q.input_dtype),
                                 ("output", info.output_tensors[0], q.output_dtype)):
        if wanted and tensor.dtype != wanted and q.float_fallback == "none":
            notes.append(f"the model's {what} '{tensor.name}' is {tensor.dtype}, but "
                         f"{target.name} takes {wanted} {what}s (an integer-only profile): it "
                         "was not converted for this target; edgeq convert --target "
                         f"{target.name} makes a model with {wanted} I/O")
    return notes
