"""Quantization scales that make TFLite Micro or LiteRT abort (SIGABRT) while preparing a model.

The kernels turn scale ratios into fixed-point multipliers in their Prepare step and guard the
ranges with TFLITE_CHECK, which calls abort(): no error status, no message, a dead process. A
model trained or calibrated on data of the wrong magnitude (activations around 1e-8: an
untrained network, inputs not scaled) gets there with a file that is otherwise well formed, so
edgeq checks these rules before any interpreter sees the model and names the op, the tensors
and their scales instead.

The rules are the checks that abort, read from tensorflow/tflite-micro (commit 0cc6f983,
tensorflow/lite/micro/kernels/) and confirmed on the installed tflite-micro and ai-edge-litert
wheels by rewriting one scale of a converted model at a time (the thresholds below flip between
"allocates" and "SIGABRT" exactly where the formulas put them):

- SOFTMAX / LOG_SOFTMAX, int8 input (TFLM only): softmax_common.cc CalculateSoftmaxParams and
  log_softmax.cc CalculateOpData call PreprocessSoftmaxScaling(beta, input_scale, 5), which
  passes min(beta * input_scale * 2^26, 2^31 - 1) to QuantizeMultiplierGreaterThanOne, and that
  does TFLITE_CHECK_GT(multiplier, 1.) (kernels/internal/quantization_util.cc). So beta x
  input scale must exceed 2^-26 (1.49e-8): 1.5e-8 allocates, 1.4e-8 aborts. LiteRT's int8
  softmax builds a lookup table instead and runs these models.
- ADD / SUB, int8 or int16 output (TFLM and LiteRT): add_common.cc CalculateOpDataAdd (and
  sub_common.cc) passes s_in / (2 max(s_in1, s_in2)) for each input and
  2 max(s_in1, s_in2) / (2^20 s_out) (2^15 for int16) for the output to
  QuantizeMultiplierSmallerThanOneExp, which checks 0 < multiplier < 1. Inputs at 8.5e-9 abort
  with an output scale of 1e-14 and allocate with 1e-13 (the bound is 1.6e-14).
- Any activation scale that is zero, negative or not finite: 0 and NaN abort the ADD checks
  above in both runtimes; elsewhere they give garbage or a refusal, never a working model.

Other kernels (CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED, MUL, LOGISTIC, TANH, HARD_SWISH,
LEAKY_RELU, pooling, MEAN) use QuantizeMultiplier, which flushes multipliers under 2^-31 to zero
and saturates large ones: they allocate with activation scales down to 1e-20 and were left out.

One rule is about sizes, not scales. TFLite Micro's memory planner takes each buffer's size
and returns its offset as a C `int` (memory_planner/greedy_memory_planner.h: `AddBuffer(...,
int size, ...)`, `int offset`). An arena of 2 GiB or more wraps there, and the allocator then
uses the wrapped figure (`check_arena_sizes`). edgeq.formats.tflite_check has already refused
any single tensor past 32-bit sizes for every runtime.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from edgeq.errors import KernelLimitError, TensorSizeError
from edgeq.formats.tflite import ModelInfo, OpInfo, TensorInfo

SOFTMAX_MIN_SCALE = 2.0**-26  # beta x input scale must exceed this (TFLM softmax)
PLANNER_MAX_BYTES = 2**31 - 1  # TFLite Micro's planner: sizes and offsets are C ints
_ALIGN = 16  # TFLite Micro aligns every planned buffer to 16 bytes
_ADD_LEFT_SHIFT = {"int8": 20, "int16": 15}
_QUANTIZED = ("int8", "uint8", "int16")
_RUNTIME_NAMES = {"tflm": "TFLite Micro", "litert": "LiteRT"}


@dataclass(frozen=True)
class ScaleProblem:
    index: int
    op: str
    detail: str  # the rule broken, with the tensors and their scales
    cause: str  # the likely cause and what to do
    tensor: int  # the tensor whose scale to change to satisfy the rule
    safe_scale: float  # a scale for `tensor` that satisfies it (for sizing-only models)


def scale_problems(info: ModelInfo, runtime: str) -> list[ScaleProblem]:
    """Every op whose scales break a rule above for ``runtime`` ("tflm" or "litert")."""
    found = []
    for op in info.ops:
        problem = _bad_scale(op, info) or (
            _softmax(op, info) if runtime == "tflm" else None) or _add(op, info)
        if problem is not None:
            found.append(problem)
    return found


def check_scales(info: ModelInfo, source: str, runtime: str) -> None:
    """Raise KernelLimitError for the first op the runtime would abort on."""
    problems = scale_problems(info, runtime)
    if problems:
        first, more = problems[0], len(problems) - 1
        extra = f" ({more} more op(s) like it)" if more else ""
        raise KernelLimitError(
            source, f"op {first.index} {first.op}: {first.detail}; "
            f"{_RUNTIME_NAMES.get(runtime, runtime)} aborts on it{extra}", hint=first.cause)


def activation_total(info: ModelInfo) -> int:
    """The bytes of every activation tensor, each 16-byte aligned, in Python integers: an
    upper bound on what TFLite Micro's planner places. Its greedy planner puts each buffer in
    a gap or after the buffers live at the same time, never past all of them end to end."""
    from edgeq.formats.tflite import activation_bytes

    return sum(-(-activation_bytes(t.shape, t.dtype) // _ALIGN) * _ALIGN
               for t in info.tensors if t.constant_bytes == 0)


def check_arena_sizes(info: ModelInfo, source: str) -> None:
    """The activation tensors must add up to less than 2 GiB (2^31 - 1 bytes), so that no size
    or offset TFLite Micro's memory planner computes in a C int can wrap.

    Raises:
        TensorSizeError: naming the largest activation tensor and its op (exit 3).
    """
    total = activation_total(info)
    if total <= PLANNER_MAX_BYTES:
        return
    from edgeq.formats.tflite import activation_bytes

    acts = [t for t in info.tensors if t.constant_bytes == 0]
    big = max(acts, key=lambda t: activation_bytes(t.shape, t.dtype))
    op = _op_of(info, big.index)
    raise TensorSizeError(
        source, f"its activation tensors add up to {total} bytes ({total / 2**30:.1f} GiB), "
        f"past the {PLANNER_MAX_BYTES} bytes TFLite Micro's memory planner can place (it "
        f"computes sizes and offsets in a 32-bit int); the largest is tensor {big.index} "
        f"'{big.name}'" + (f" ({op})" if op else "") + f" of shape {list(big.shape)} "
        f"{big.dtype}, {activation_bytes(big.shape, big.dtype)} bytes",
        tensor=big.index, tensor_name=big.name, op=op,
        hint="no microcontroller holds such an arena; shrink the largest layers")


def _op_of(info: ModelInfo, index: int) -> str | None:
    """Names the op that makes tensor ``index`` ("output of op 3 CONV_2D"), else its first
    reader; None for a tensor no op uses."""
    for op in info.ops:
        if index in op.outputs:
            return f"output of op {op.index} {op.op}"
    for op in info.ops:
        if index in op.inputs:
            return f"input of op {op.index} {op.op}"
    return None


def with_safe_scales(model: bytes, problems: list[ScaleProblem]) -> bytes:
    """A copy of ``model`` with each problem's tensor given its safe scale.

    For sizing only: the arena planner and the persistent allocations depend on shapes, dtypes
    and the number of scales, never on their values, so the copy needs exactly the memory the
    original would.
    """
    import flatbuffers

    from edgeq.formats.tflite_schema import schema as _schema

    parsed = _schema().ModelT.InitFromPackedBuf(model, 0)
    tensors = parsed.subgraphs[0].tensors
    for p in problems:
        q = tensors[p.tensor].quantization
        q.scale = [p.safe_scale] * len(q.scale)
    builder = flatbuffers.Builder(len(model) + 1024)
    builder.Finish(parsed.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _activations(op: OpInfo, info: ModelInfo) -> list[TensorInfo]:
    return [info.tensors[i] for i in (*op.inputs, *op.outputs)
            if i >= 0 and info.tensors[i].constant_bytes == 0
            and info.tensors[i].dtype in _QUANTIZED and info.tensors[i].scales]


def _bad_scale(op: OpInfo, info: ModelInfo) -> ScaleProblem | None:
    for t in _activations(op, info):
        bad = [s for s in t.scales if not (math.isfinite(s) and s > 0)]
        if bad:
            return ScaleProblem(
                op.index, op.op, f"tensor '{t.name}' has scale {bad[0]!r}",
                "a scale must be a positive finite number. An infinite or NaN one comes from "
                "activations past float32: calibration values far out of range (edgeq's data "
                "warnings name such samples; remove them) or a model that overflows; "
                "re-export it from a model and data that give finite activations", t.index, 1.0)
    return None


def _softmax(op: OpInfo, info: ModelInfo) -> ScaleProblem | None:
    if op.op not in ("SOFTMAX", "LOG_SOFTMAX") or not op.inputs:
        return None
    t = info.tensors[op.inputs[0]]
    if t.dtype != "int8" or not t.scales:
        return None
    beta = float(op.option("beta", 1.0)) if op.op == "SOFTMAX" else 1.0
    if beta * t.scales[0] > SOFTMAX_MIN_SCALE:
        return None
    safe = 2 * SOFTMAX_MIN_SCALE / beta if beta > 0 else 1.0
    return ScaleProblem(
        op.index, op.op,
        f"input '{t.name}' has scale {t.scales[0]:.3g}{_beta(beta)}, at or below the 2^-26 "
        f"({SOFTMAX_MIN_SCALE:.3g}) the int8 kernel accepts",
        _tiny_cause(t.scales[0]), t.index, safe)


def _add(op: OpInfo, info: ModelInfo) -> ScaleProblem | None:
    if op.op not in ("ADD", "SUB") or len(op.inputs) < 2 or not op.outputs:
        return None
    a, b, out = (info.tensors[i] for i in (op.inputs[0], op.inputs[1], op.outputs[0]))
    shift = _ADD_LEFT_SHIFT.get(out.dtype)
    if shift is None or not (a.scales and b.scales and out.scales):
        return None
    twice_max = 2 * max(a.scales[0], b.scales[0])
    multiplier = twice_max / (2**shift * out.scales[0])
    if multiplier < 1:
        return None
    return ScaleProblem(
        op.index, op.op,
        f"output '{out.name}' scale {out.scales[0]:.3g} is too small for inputs '{a.name}' "
        f"({a.scales[0]:.3g}) and '{b.name}' ({b.scales[0]:.3g}): the output rescale "
        f"2 x {twice_max / 2:.3g} / (2^{shift} x {out.scales[0]:.3g}) = {multiplier:.3g} "
        "must be below 1",
        _tiny_cause(out.scales[0]), out.index, 2 * twice_max / 2**shift)


def _beta(beta: float) -> str:
    return "" if beta == 1.0 else f" (x beta {beta:g})"


def _tiny_cause(scale: float) -> str:
    return (f"activations span ~{scale * 255:.1e}: is the model trained? is the data scaled "
            "(e.g. pixels in [0, 1], not 1e-8)? calibrate on the data the model sees in use")
