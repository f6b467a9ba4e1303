"""`edgeq emulate`: the model's real firmware (TFLite Micro + CMSIS-NN, built by
arm-none-eabi-gcc from edgeq's `embed` output) on an emulated Cortex-M (QEMU), compared byte
for byte with the TFLite Micro Python interpreter, with top-1 on the emulated device and an
estimate of its cycles from counted instructions.

Results are values: `emulate()` returns an `EmulatorResult`; nothing here prints."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgeq.data import InputSpec, Preprocess, load_dataset, output_classes
from edgeq.emulator import cores
from edgeq.emulator.costmodel import cost_model
from edgeq.errors import ConversionError, DataError, TargetConstraintError, UsageError
from edgeq.formats.tflite import ModelInfo, TensorInfo

SYNTHETIC_SAMPLES = 8  # without --eval-data: this many seeded random inputs
# The firmware's arena is larger than embed's recommendation, so that a recommendation that is
# too small for the device's kernels (CMSIS-NN's scratch buffers differ per core) is reported
# as a finding next to what the device used, instead of stopping the run.
_ARENA_HEADROOM = 64 << 10
_ARENA_CAP = 3 << 20  # the mps boards' RAM is 4 MiB (code and stack live elsewhere or above)
_NAME = "g_model"


@dataclass(frozen=True)
class OpCost:
    index: int
    op: str
    instructions: int  # mean over the samples
    estimated_cycles: int
    share: float  # of the instructions inside Invoke()
    layer: str = ""  # the layer that made the op's output (its tensor name's first part)

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "op": self.op, "layer": self.layer,
                "instructions": self.instructions,
                "estimated_cycles": self.estimated_cycles, "share": round(self.share, 4)}


@dataclass(frozen=True)
class OpMismatch:
    """An op whose output differs between the device and the interpreter (same input)."""

    index: int  # in execution order (subgraph 0)
    op: str
    tensor: str
    differing_bytes: int
    bytes: int

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "op": self.op, "tensor": self.tensor,
                "differing_bytes": self.differing_bytes, "bytes": self.bytes}


@dataclass(frozen=True)
class EmulatorResult:
    model: str
    target: str
    core: str
    machine: str
    cpu: str
    clock_hz: int
    samples: int
    inputs: str  # "eval-data PATH" or "synthetic (seed 0)"
    instructions_per_inference: int  # mean over the samples, inside Invoke()
    instructions_min: int
    instructions_max: int
    estimated_cycles: int
    estimated_ms: float
    cpi: float
    cost_model_calibrated: bool
    cost_model_basis: str
    outputs_identical: bool
    mismatched_samples: int
    first_mismatch: int | None  # sample index
    max_abs_diff: float  # in output units (quantized steps for integer outputs)
    top1: dict[str, float] | None  # device, interpreter, agreement: only with labels
    agreement: float  # device top-1 class == interpreter top-1 class, over all samples
    arena_bytes: int  # used on the device build (32-bit), TFLM's arena_used_bytes()
    arena_declared: int  # `edgeq embed`'s recommended kTensorArenaSize
    arena_fits: bool  # the device build's arena (+16 B alignment slack) fits in arena_declared
    arena_host: int  # the TFLM Python interpreter's recording allocator (64-bit host)
    firmware_text_bytes: int
    firmware_ram_bytes: int
    build_seconds: float
    build_cached: bool
    objects_compiled: int
    run_seconds: float
    per_op: tuple[OpCost, ...]  # every op, in execution order (empty when not available)
    top_ops: tuple[OpCost, ...]  # the most expensive ops
    toolchain: dict[str, str] = field(default_factory=dict)
    # Every op's outputs compared on one sample (the first that differs): filled when outputs
    # differ, or when asked (locate_ops=True). The first entry is the op that causes it.
    op_outputs_compared: int = 0
    mismatch_ops: tuple[OpMismatch, ...] = ()
    mismatch_sample: int | None = None
    locate_note: str = ""
    # A model with an offline arena plan: the same firmware without it (emulator.arena_check).
    arena_plan: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The report's `emulator` section."""
        return {
            "model": self.model, "target": self.target, "core": self.core,
            "machine": self.machine, "cpu": self.cpu, "clock_hz": self.clock_hz,
            "samples": self.samples, "inputs": self.inputs,
            "instructions_per_inference": self.instructions_per_inference,
            "instructions_min": self.instructions_min, "instructions_max": self.instructions_max,
            "estimated_cycles": self.estimated_cycles,
            "estimated_ms": round(self.estimated_ms, 3),
            "estimate": {
                "cycles_per_instruction": self.cpi, "calibrated": self.cost_model_calibrated,
                "basis": self.cost_model_basis,
                "note": "an estimate: exact instruction counts from QEMU times one per-core "
                        "CPI fitted to published MLPerf Tiny results; no caches, wait states "
                        "or pipeline are modelled",
            },
            "outputs_identical": self.outputs_identical,
            "mismatched_samples": self.mismatched_samples,
            "first_mismatch": self.first_mismatch,
            "max_abs_diff": self.max_abs_diff,
            "top1": self.top1, "agreement": round(self.agreement, 6),
            "arena_bytes": self.arena_bytes, "arena_declared": self.arena_declared,
            "arena_fits_declared": self.arena_fits,
            # what the declared arena leaves over the device's need (used + 16 B alignment)
            "arena_margin": self.arena_declared - self.arena_bytes - 16,
            "arena_host": self.arena_host,
            "firmware_text_bytes": self.firmware_text_bytes,
            "firmware_ram_bytes": self.firmware_ram_bytes,
            "build_seconds": round(self.build_seconds, 2), "build_cached": self.build_cached,
            "objects_compiled": self.objects_compiled,
            "run_seconds": round(self.run_seconds, 2),
            "top_ops": [o.to_dict() for o in self.top_ops],
            "per_op": [o.to_dict() for o in self.per_op],
            "toolchain": dict(self.toolchain),
            "op_outputs_compared": self.op_outputs_compared,
            "mismatch_ops": [m.to_dict() for m in self.mismatch_ops],
            "mismatch_sample": self.mismatch_sample,
            "locate_note": self.locate_note,
            **({"arena_plan": self.arena_plan} if self.arena_plan is not None else {}),
        }


def emulate(model: str | Path, target: str, *, eval_data: str | Path | None = None,
            preprocess: Preprocess | None = None, eval_samples: int | None = None,
            tflm_tree: str | Path | None = None, clock_hz: int | None = None,
            jobs: int | None = None, top_ops: int = 5, locate_ops: bool = False,
            progress: Callable[[int, int], None] | None = None) -> EmulatorResult:
    """Build `model` (.tflite) into firmware for `target`'s core, run it on QEMU over the
    evaluation inputs (or seeded random ones) and compare with the TFLM interpreter.

    The first run on a core prepares its TFLM library (see `prepare`), reporting files
    compiled of total through `progress`.

    Raises:
        InputError: a bad model, data or TFLM tree; a missing tool (with its install line).
        TargetConstraintError: the target has no emulator, or an op TFLM cannot run.
        ConversionError: the firmware did not build or run.
    """
    from edgeq.emulator.build import build_firmware
    from edgeq.emulator.plugin import plugin_path
    from edgeq.emulator.qemu import run_firmware
    from edgeq.emulator.toolchain import find_toolchain, resolve_tree
    from edgeq.pipeline.place import read_placeable
    from edgeq.outputs.embed import embed_model
    prof = _emulated(target)
    if eval_samples is not None and eval_samples < 1:
        raise UsageError("--eval-samples must be at least 1")
    core = cores.CORES[prof.emulator.core]
    clock = clock_hz or prof.emulator.clock_hz
    p, data, info = read_placeable(model, prof, "emulate")
    tool = find_toolchain()
    tree = resolve_tree(tflm_tree)

    x, labels, source = _inputs(info, eval_data, preprocess, eval_samples)
    n = x.shape[0]
    reference, host_arena = _reference(data, info, x, str(p))
    embedded = embed_model(data, _NAME, source=str(p), arena=host_arena, cmsis_nn=core.cmsis_nn)
    sample_bytes = x.shape[1]
    device_arena = min(max(2 * embedded.arena_size, embedded.arena_size + _ARENA_HEADROOM),
                       max(_ARENA_CAP, embedded.arena_size))
    fw = build_firmware(embedded.files, _NAME, device_arena, sample_bytes, core, tool,
                        tree, jobs=jobs, progress=progress)
    run = run_firmware(fw, core, tool, plugin_path(tool), x.tobytes(), n, sample_bytes)

    def build_and_run(model_bytes: bytes):  # the same build for another flatbuffer
        files = embed_model(model_bytes, _NAME, source=str(p), arena=host_arena).files
        other = build_firmware(files, _NAME, device_arena, sample_bytes, core, tool, tree,
                               jobs=jobs)
        return run_firmware(other, core, tool, plugin_path(tool), x.tobytes(), n, sample_bytes)

    from edgeq.emulator.arena_check import plan_check

    plan = plan_check(data, info, x, run, build_and_run, core.name)
    out_bytes = int(run.report.get("output_bytes", 0))
    if out_bytes != reference.shape[1] or len(run.outputs) != n * out_bytes:
        raise ConversionError("emulator run (QEMU)", f"the firmware wrote {len(run.outputs)} "
                              f"output bytes, expected {n} x {reference.shape[1]}")
    device = np.frombuffer(run.outputs, dtype=np.uint8).reshape(n, out_bytes)
    differs = np.any(device != reference, axis=1)
    first = int(np.argmax(differs)) if differs.any() else None
    out0 = info.output_tensors[0]
    dev0, ref0 = _first_output(device, out0), _first_output(reference, out0)
    max_diff = float(np.max(np.abs(dev0.astype(np.float64) - ref0.astype(np.float64)))) \
        if differs.any() else 0.0
    dev_cls, ref_cls = dev0.argmax(axis=1), ref0.argmax(axis=1)
    top1 = None
    if labels is not None:
        top1 = {"device": float(np.mean(dev_cls == labels)),
                "interpreter": float(np.mean(ref_cls == labels)),
                "labels": int(labels.shape[0])}

    compared, mismatch_ops, note, where = 0, (), "", None
    if differs.any() or locate_ops:
        where = first if first is not None else 0
        try:
            compared, mismatch_ops = _locate(data, info, x[where], embedded.files, core, tool,
                                             tree, jobs, source=str(p))
        except ConversionError as exc:  # e.g. every tensor kept does not fit the board's RAM
            note = f"could not compare the ops' outputs: {exc.message}"

    cm = cost_model(core.name)
    mean_insns = float(run.invoke_insns.mean())
    per_op = _per_op(info, run.op_insns, cm)
    return EmulatorResult(
        model=str(p), target=prof.name, core=core.name, machine=core.machine, cpu=core.cpu,
        clock_hz=clock, samples=n, inputs=source,
        instructions_per_inference=int(round(mean_insns)),
        instructions_min=int(run.invoke_insns.min()), instructions_max=int(run.invoke_insns.max()),
        estimated_cycles=cm.cycles(mean_insns), estimated_ms=cm.ms(mean_insns, clock),
        cpi=cm.cpi, cost_model_calibrated=cm.calibrated, cost_model_basis=cm.basis,
        outputs_identical=not differs.any(), mismatched_samples=int(differs.sum()),
        first_mismatch=first, max_abs_diff=max_diff, top1=top1,
        agreement=float(np.mean(dev_cls == ref_cls)),
        arena_bytes=int(run.report.get("arena_used", 0)), arena_declared=embedded.arena_size,
        arena_fits=int(run.report.get("arena_used", 0)) + 16 <= embedded.arena_size,
        arena_host=host_arena.total, firmware_text_bytes=fw.text_bytes,
        firmware_ram_bytes=fw.ram_bytes, build_seconds=fw.build_seconds,
        build_cached=fw.cached, objects_compiled=fw.compiled, run_seconds=run.run_seconds,
        per_op=per_op, top_ops=tuple(sorted(per_op, key=lambda o: -o.instructions)[:top_ops]),
        toolchain={"gcc": tool.gcc_version, "qemu": tool.qemu_version, "tflm_tree": tree.source,
                   "tflm_tree_sha256": tree.digest, **({"tflm_tree_sources": tree.commits}
                                                       if tree.commits else {}),
                   "library": fw.config_key, "firmware": fw.key},
        op_outputs_compared=compared, mismatch_ops=mismatch_ops, mismatch_sample=where,
        locate_note=note, arena_plan=plan,
    )


def emulated_targets() -> list[str]:
    """The targets with an [emulator] table, by name."""
    from edgeq.targets import list_targets

    return [t.name for t in list_targets() if t.emulator is not None]


def _emulated(target: str):
    from edgeq.targets import load_target

    prof = load_target(target)
    if prof.emulator is None:
        raise TargetConstraintError(f"target '{prof.name}' has no emulator",
                                    hint="edgeq emulates the targets with an [emulator] "
                                    f"table: {', '.join(emulated_targets())}")
    return prof


def prepare(target: str, *, tflm_tree: str | Path | None = None, jobs: int | None = None,
            progress: Callable[[int, int], None] | None = None):
    """Builds the target core's TFLM library (framework and every kernel) and the QEMU plugin
    into the cache ahead of time, as the first `emulate` would: for CI images and Dockerfiles.
    Returns the `Library` (compiled == 0 when it was prepared already)."""
    from edgeq.emulator.library import prepare_library
    from edgeq.emulator.plugin import plugin_path
    from edgeq.emulator.toolchain import find_toolchain, resolve_tree

    core = cores.CORES[_emulated(target).emulator.core]
    tool = find_toolchain()
    tree = resolve_tree(tflm_tree)
    plugin_path(tool)
    return prepare_library(tool, tree, core, jobs=jobs, progress=progress)


def _locate(model: bytes, info: ModelInfo, row: np.ndarray, embedded: dict[str, bytes],
            core: cores.Core, tool: Any, tree: Any, jobs: int | None, *, source: str = "model"
            ) -> tuple[int, tuple[OpMismatch, ...]]:
    """Runs one sample on firmware that keeps every tensor (TFLM's preserve_all_tensors) and
    on the interpreter in the same mode, and compares every op's outputs in execution order."""
    from edgeq.emulator.build import build_firmware
    from edgeq.emulator.plugin import plugin_path
    from edgeq.emulator.qemu import run_firmware

    fw = build_firmware(embedded, _NAME, _ARENA_CAP, row.shape[0], core, tool, tree, jobs=jobs,
                        preserve=True)
    run = run_firmware(fw, core, tool, plugin_path(tool), row.tobytes(), 1, row.shape[0])
    device, at = [], 0
    blob = run.op_tensors
    while at + 4 <= len(blob):
        n = int.from_bytes(blob[at:at + 4], "little")
        device.append(blob[at + 4:at + 4 + n])
        at += 4 + n
    reference = _reference_op_outputs(model, row, source, info)
    if len(device) != len(reference):
        raise ConversionError("emulator run (QEMU)", f"the firmware dumped {len(device)} op "
                              f"outputs, the interpreter has {len(reference)}")
    found = []
    for (k, tensor, ref), dev in zip(reference, device):
        a = np.frombuffer(dev, dtype=np.uint8)
        b = np.frombuffer(ref, dtype=np.uint8)
        if a.shape != b.shape or np.any(a != b):
            diff = int(np.sum(a != b)) if a.shape == b.shape else max(a.size, b.size)
            found.append(OpMismatch(k, info.ops[k].op, tensor, diff, b.size))
    return len(reference), tuple(found)


def _reference_op_outputs(model: bytes, row: np.ndarray, source: str, info: ModelInfo
                          ) -> list[tuple[int, str, bytes]]:
    """TFLM's every op output for one sample, computed in a child as `_reference` is."""
    import tempfile

    from edgeq.process.isolation import run_in_child

    with tempfile.TemporaryDirectory(prefix="edgeq-emulate-") as tmp:
        x_path, out_path = Path(tmp) / "row.npy", Path(tmp) / "ops.npz"
        np.save(x_path, row)
        got = run_in_child("tflm_op_outputs", model, stage="TFLite Micro (op outputs)",
                           source=source, args={"x_path": str(x_path),
                                                "out_path": str(out_path)},
                           samples=1, info=info)
        with np.load(out_path, allow_pickle=False) as saved:
            data = [saved[f"arr_{i}"].tobytes() for i in range(len(got))]
    return [(int(k), str(name), d) for (k, name), d in zip(got, data)]


def _dtype(t: TensorInfo) -> np.dtype:
    return np.dtype(t.dtype)


def _first_output(raw: np.ndarray, t: TensorInfo) -> np.ndarray:
    n_bytes = math.prod(t.shape) * _dtype(t).itemsize
    return np.ascontiguousarray(raw[:, :n_bytes]).view(_dtype(t)).reshape(raw.shape[0], -1)


def _inputs(info: ModelInfo, eval_data: str | Path | None, preprocess: Preprocess | None,
            eval_samples: int | None) -> tuple[np.ndarray, np.ndarray | None, str]:
    """(samples, bytes) uint8 of every input tensor's raw bytes, labels, and where they came
    from. Evaluation data is quantized with the model input's own scale and zero point."""
    ins = info.input_tensors
    if eval_data is None:
        rng = np.random.default_rng(0)
        n = eval_samples or SYNTHETIC_SAMPLES
        parts = []
        for t in ins:
            dt = _dtype(t)
            shape = (n, *t.shape)  # one whole input tensor per sample (batch 2 models too)
            if np.issubdtype(dt, np.integer):
                lim = np.iinfo(dt)
                parts.append(rng.integers(lim.min, int(lim.max) + 1, size=shape).astype(dt))
            else:
                parts.append(rng.standard_normal(shape).astype(dt))
        raw = np.concatenate([a.reshape(n, -1).view(np.uint8) for a in parts], axis=1)
        return np.ascontiguousarray(raw), None, f"synthetic: {n} seeded random inputs (seed 0)"
    if len(ins) != 1:
        raise UsageError(f"--eval-data feeds one input; this model has {len(ins)}",
                         hint="leave out --eval-data to compare on seeded random inputs")
    t = ins[0]
    spec = InputSpec(shape=tuple(t.shape[1:]), dtype="float32", name=t.name)
    ds = load_dataset(eval_data, spec, preprocess or Preprocess(), role="evaluation",
                      classes=output_classes(info.output_tensors[0].shape[1:]))
    if eval_samples is not None:
        ds = ds.spread(eval_samples)
    if ds.n == 0:
        raise DataError(eval_data, "holds no samples")
    from edgeq.adapters.io_quant import quantize

    detail = {"dtype": t.dtype, "quantization_parameters": {
        "scales": list(t.scales), "zero_points": list(t.zero_points)}}
    q = quantize(ds.x, detail).reshape(ds.n, -1)
    raw = np.ascontiguousarray(q).view(np.uint8).reshape(ds.n, -1)
    return raw, ds.y, f"eval-data {eval_data}: {ds.n} samples"


def _reference(model: bytes, info: ModelInfo, x: np.ndarray, source: str):
    """The TFLM Python interpreter's raw output bytes for each sample, and its arena.

    Computed in a child process (edgeq.process.isolation) like verify's evaluation: the model
    is the user's, and TFLite Micro runs it in native code that no signal interrupts. A model
    that never ends (a WHILE whose condition stays true) ran here for 13 minutes and ignored
    SIGTERM; in the child it is stopped at a limit that follows its work and the number of
    samples (exit 2 naming the model and the limit), and Ctrl-C/SIGTERM end it at once."""
    import tempfile

    from edgeq.adapters.tflm import ArenaUsage
    from edgeq.process.isolation import run_in_child

    with tempfile.TemporaryDirectory(prefix="edgeq-emulate-") as tmp:
        x_path, out_path = Path(tmp) / "x.npy", Path(tmp) / "reference.npy"
        np.save(x_path, np.ascontiguousarray(x))
        got = run_in_child("tflm_reference", model, stage="TFLite Micro (reference outputs)",
                           source=source, args={"x_path": str(x_path),
                                                "out_path": str(out_path)},
                           samples=x.shape[0], info=info)
        ref = np.load(out_path, allow_pickle=False)
    return ref, ArenaUsage(got["total"], got["head"], got["tail"], got["log"])


def _per_op(info: ModelInfo, op_insns: np.ndarray | None, cm) -> tuple[OpCost, ...]:
    if op_insns is None or op_insns.shape[1] != len(info.ops):
        return ()
    mean = op_insns.mean(axis=0)
    total = float(mean.sum()) or 1.0
    return tuple(OpCost(i, op.op, int(round(m)), cm.cycles(m), float(m) / total,
                        _layer(info, op))
                 for i, (op, m) in enumerate(zip(info.ops, mean)))


def _layer(info: ModelInfo, op) -> str:
    from edgeq.outputs.report import short_tensor_name

    outs = [i for i in op.outputs if i >= 0]
    return short_tensor_name(info.tensors[outs[0]].name) if outs else ""
