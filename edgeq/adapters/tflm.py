"""TensorFlow Lite Micro's Python interpreter: the microcontroller emulator.

Its reference kernels are the bit-exact golden for optimized MCU kernels (CMSIS-NN), so
accuracy measured here is what the board computes. The tensor arena comes from TFLM's own
recording allocator, which prints from C++ to stderr: we capture the descriptor and parse it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeq.adapters.io_quant import dequantize, quantize
from edgeq.adapters.native import capture_fds
from edgeq.errors import ConversionError, MissingDependencyError, TargetConstraintError

# The arena handed to the interpreter; the figures reported are what the allocator used, not
# this size. TFLM's own default (10x the model size) is too small for models with few weights
# and large activations, so the first try is also sized from the activation tensors (the
# planner never needs more than all of them side by side), and a model that still does not fit
# is retried with twice the arena: a big model gets its exact figures, not a refusal.
_MIN_ARENA = 8 << 20
# TFLite Micro keeps arena sizes in C ints: the host build crashes (SIGSEGV) when handed an
# arena between 2^31 and 2^32 bytes, even for hello_world. Its planner cannot place more
# anyway (edgeq.formats.kernel_limits.check_arena_sizes).
_MAX_ARENA = (2**31 - 1) // 16 * 16
# What TFLM's SingleArenaBufferAllocator logs when the arena is too small, e.g. "Failed to
# allocate tail memory. Requested: 2136, available 344, missing: 1792" (person_detect, 1 KiB).
_TOO_SMALL = re.compile(r"Requested: \d+, available \d+")
_ARENA_LINE = re.compile(r"Arena allocation (total|head|tail) (\d+) bytes")


@dataclass(frozen=True)
class ArenaUsage:
    total: int
    head: int  # planned, non-persistent: activations and scratch
    tail: int  # persistent: eval tensors, node structs, op data, quantization params
    log: str  # the allocator's full dump


def _runtime() -> Any:
    try:
        from tflite_micro.python.tflite_micro import runtime
    except ImportError as exc:
        raise MissingDependencyError("tflite-micro", "pip install tflite-micro") from exc
    # Before it builds an interpreter, TFLM's Python wrapper counts the model's resource
    # variables by unpacking the whole model with the pure-Python flatbuffers object API:
    # 6 s of a 20,000-op model's 9 s load (issue 22). The same count, read in linear time.
    if getattr(runtime, "count_resource_variables", None) is not _count_resource_variables:
        _REPLACED.append(runtime.count_resource_variables)  # the tests compare the two
        runtime.count_resource_variables = _count_resource_variables
    return runtime


_REPLACED: list[Any] = []


def _count_resource_variables(model: Any) -> int:
    from edgeq.formats.tflite import resource_variable_names

    return len(resource_variable_names(bytes(model)))


def check_inline_buffers(model: bytes, source: str = "model") -> None:
    """Refuse a model whose weights lie after the flatbuffer (Buffer.offset/size, the >2 GB
    layout LiteRT reads): TFLite Micro takes a tensor's data from Buffer.data alone
    (tensorflow/lite/micro/micro_allocator.cc, internal::GetFlatbufferTensorBuffer; nothing
    in tensorflow/lite/micro reads Buffer.offset), so those tensors would have no data, its
    outputs would be garbage and its arena would also hold the "weights". Call on a file
    tflite_check passed.

    Raises:
        TargetConstraintError: such buffers exist (exit 3), naming how many and the first.
    """
    from edgeq.formats.tflite_check import external_buffers

    found = external_buffers(model)
    if found:
        listed = ", ".join(map(str, found[:5])) + (", ..." if len(found) > 5 else "")
        raise TargetConstraintError(
            f"model '{source}': {len(found)} buffer(s) ({listed}) store their bytes after the "
            "flatbuffer (Buffer.offset/size, the layout of models over 2 GB); TFLite Micro "
            "reads only Buffer.data (micro_allocator.cc), so it would run without those "
            "weights",
            hint="convert the model again without buffer offsets (the TFLite converter writes "
                 "them only past 2 GB, or with _experimental_use_buffer_offset) so the weights "
                 "are inline")


def version() -> str:
    try:
        from tflite_micro import _version
    except ImportError:
        return "not installed"
    return getattr(_version, "__version__", "unknown")


def parse_allocations(text: str) -> ArenaUsage:
    found = {k: int(v) for k, v in _ARENA_LINE.findall(text)}
    if set(found) != {"total", "head", "tail"}:
        raise ConversionError("verify (TFLite Micro)", "the recording allocator printed no arena figures")
    return ArenaUsage(found["total"], found["head"], found["tail"], text)


class TFLMRunner:
    """Runs a model on TFLite Micro; `arena` holds what the recording allocator measured."""

    runtime = "tflm"

    def __init__(self, model: bytes, *, source: str = "model") -> None:
        from edgeq.formats.kernel_limits import check_arena_sizes, check_scales
        from edgeq.formats.tflite import read_model

        rt = _runtime()
        info = read_model(model, source)  # refuses tensors past 32-bit sizes (tflite_check)
        check_inline_buffers(model, source)  # TFLM would run without those weights
        check_scales(info, source, "tflm")  # TFLM aborts on these: refuse them by name first
        check_arena_sizes(info, source)  # its planner's int arithmetic would wrap
        arena = first_arena_size(info)
        while True:
            try:
                with capture_fds() as captured:
                    self._interp = rt.Interpreter.from_bytes(model, arena_size=arena)
                break
            except (RuntimeError, ValueError) as exc:
                if arena < _MAX_ARENA and _TOO_SMALL.search(captured.text):
                    arena = min(2 * arena, _MAX_ARENA)
                    continue
                raise ConversionError(
                    "verify (TFLite Micro)",
                    f"the interpreter rejected the model: {str(exc).strip()[:300]}"
                    + _first_log_line(captured.text),
                    hint="the model may use an op or dtype TFLite Micro has no kernel for",
                ) from exc
        with capture_fds((2,)) as alloc:
            self._interp.print_allocations()
        self.arena = parse_allocations(alloc.text)
        self.log = captured.text
        self._in = self._interp.get_input_details(0)
        with capture_fds((2,)):
            self._outs = _output_details(self._interp)

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        outputs: list[list[np.ndarray]] = [[] for _ in self._outs]
        for sample in x:
            self._interp.set_input(quantize(sample[None], self._in), 0)
            self._interp.invoke()
            for k, det in enumerate(self._outs):
                outputs[k].append(dequantize(self._interp.get_output(k), det)[0])
        return [np.stack(o) for o in outputs]


def reference_outputs(model: bytes, x: np.ndarray, *, source: str = "model"
                      ) -> tuple[np.ndarray, ArenaUsage]:
    """The raw output bytes of every sample (rows of `x`: the inputs' raw bytes back to back,
    as the firmware reads them) and the arena, the emulator's reference (`edgeq emulate`).
    Runs in a child (edgeq.process.worker): a model that never ends is stopped there."""
    from edgeq.formats.tflite import read_model

    arena = TFLMRunner(model, source=source).arena  # also rejects models TFLM cannot load
    info = read_model(model, source)
    rt = _runtime()
    outs = []
    with capture_fds((1, 2)):
        interp = rt.Interpreter.from_bytes(model, arena_size=first_arena_size(info))
        for row in x:
            _set_raw_inputs(interp, info, row)
            interp.invoke()
            outs.append(b"".join(np.ascontiguousarray(interp.get_output(k)).tobytes()
                                 for k in range(len(info.outputs))))
    return np.frombuffer(b"".join(outs), dtype=np.uint8).reshape(x.shape[0], -1), arena


def reference_op_outputs(model: bytes, row: np.ndarray, *, source: str = "model"
                         ) -> list[tuple[int, str, bytes]]:
    """Every op's outputs (op index, tensor name, raw bytes), in execution order, for one
    sample, with TFLM keeping every tensor (its preserve-all-tensors mode)."""
    from edgeq.formats.tflite import read_model

    info = read_model(model, source)
    rt = _runtime()
    out = []
    with capture_fds((1, 2)):
        interp = rt.Interpreter.from_bytes(
            model, arena_size=first_arena_size(info),
            intrepreter_config=rt.InterpreterConfig.kPreserveAllTensors)  # TFLM's spelling
        _set_raw_inputs(interp, info, row)
        interp.invoke()
        for k, op in enumerate(info.ops):
            for idx in op.outputs:
                if idx < 0:
                    out.append((k, "", b""))
                    continue
                d = interp.GetTensor(idx, 0)
                out.append((k, info.tensors[idx].name,
                            np.ascontiguousarray(d["tensor_data"]).tobytes()))
    return out


def _set_raw_inputs(interp: Any, info: Any, row: np.ndarray) -> None:
    """Feed one sample, the model's inputs' bytes back to back, to a TFLM interpreter."""
    import math

    at = 0
    for k, t in enumerate(info.input_tensors):
        dt = np.dtype(t.dtype)
        size = math.prod(t.shape) * dt.itemsize  # Python ints: exact
        interp.set_input(row[at:at + size].view(dt).reshape(t.shape), k)
        at += size


def first_arena_size(info: Any) -> int:
    """Every activation tensor 16-byte aligned, plus room for TFLM's per-tensor and per-op
    structs (about 100 B each on a 64-bit host), doubled for kernel scratch."""
    from edgeq.formats.kernel_limits import activation_total

    acts = activation_total(info)
    structs = 128 * (len(info.tensors) + len(info.ops))
    return min(max(_MIN_ARENA, 10 * info.size_bytes, 2 * (acts + structs)), _MAX_ARENA)


def _first_log_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return f" ({lines[0][:200]})" if lines else ""


def _output_details(interp: Any) -> list[dict[str, Any]]:
    """TFLM's Python API has no output count; probe until it raises (and prints, hence the
    capture around the call)."""
    found = []
    for k in range(64):
        try:
            found.append(interp.get_output_details(k))
        except Exception:  # the binding raises a plain RuntimeError/IndexError past the end
            break
    return found
