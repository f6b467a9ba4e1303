"""The scratch buffers TFLite Micro's kernels ask for at Prepare, per op, for one kernel build.

TFLM plans these buffers in the arena's head next to the activations (live only while their op
runs), so an arena plan must know them. They differ between builds: the host's Python
interpreter runs the reference kernels (64-bit pointers), a Cortex-M build CMSIS-NN's, whose
sizes differ again between the DSP (Cortex-M4/M7) and MVE (Cortex-M55) code paths. Each
formula below is the kernel's own, cited from the pinned TFLM (90b983c2) and CMSIS-NN
(4ab83cc3) trees (shared/third_party), built as edgeq's emulator builds them: arm-none-eabi-gcc
(not Arm Compiler 6) and KERNELS_OPTIMIZED_FOR_SPEED (edgeq.emulator.cores.DEFINES).

An op whose requests are not modelled here returns None: the planner then leaves the model as
it is rather than guess (an unmodelled scratch buffer could make the planned arena larger).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from edgeq.formats.tflite import ModelInfo, OpInfo


@dataclass(frozen=True)
class Kernels:
    name: str  # "reference", "cmsis-nn-dsp", "cmsis-nn-mve"
    pointer_bytes: int  # sizeof(void*) on the machine that runs them
    description: str


REFERENCE = Kernels("reference", 8, "TFLM reference kernels (the host's Python interpreter)")
CMSIS_DSP = Kernels("cmsis-nn-dsp", 4, "TFLM + CMSIS-NN, DSP code paths (Cortex-M4/M7/M33)")
CMSIS_MVE = Kernels("cmsis-nn-mve", 4, "TFLM + CMSIS-NN, MVE code paths (Cortex-M55/M85)")
_BY_CORE = {"cortex-m4": CMSIS_DSP, "cortex-m7": CMSIS_DSP, "cortex-m33": CMSIS_DSP,
            "cortex-m55": CMSIS_MVE, "cortex-m85": CMSIS_MVE}  # edgeq.emulator.cores

# Ops that request no scratch buffer in either build (TFLM kernels/, kernels/cmsis_nn/: no
# RequestScratchBufferInArena in their Prepare).
_NONE = frozenset({
    "ABS", "ADD", "ARG_MAX", "ARG_MIN", "BATCH_TO_SPACE_ND", "CAST", "CEIL", "CONCATENATION",
    "COS", "DEQUANTIZE", "DIV", "ELU", "EQUAL", "EXP", "EXPAND_DIMS", "FILL", "FLOOR",
    "FLOOR_DIV", "FLOOR_MOD", "GATHER", "GATHER_ND", "GREATER", "GREATER_EQUAL", "HARD_SWISH",
    "L2_NORMALIZATION", "L2_POOL_2D", "LEAKY_RELU", "LESS", "LESS_EQUAL", "LOG", "LOGICAL_AND",
    "LOGICAL_NOT", "LOGICAL_OR", "LOGISTIC", "LOG_SOFTMAX", "MAXIMUM", "MAX_POOL_2D", "MINIMUM",
    "MUL", "NEG", "NOT_EQUAL", "PACK", "PAD", "PADV2", "PRELU", "QUANTIZE", "RELU", "RELU6",
    "RELU_N1_TO_1", "RESHAPE", "RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR", "ROUND", "RSQRT",
    "SELECT_V2", "SHAPE", "SIN", "SLICE", "SOFTMAX", "SPACE_TO_BATCH_ND", "SPACE_TO_DEPTH",
    "SPLIT", "SPLIT_V", "SQRT", "SQUARE", "SQUARED_DIFFERENCE", "SQUEEZE", "STRIDED_SLICE",
    "SUB", "TANH", "TRANSPOSE", "UNPACK", "ZEROS_LIKE", "DEPTH_TO_SPACE", "BROADCAST_TO",
    "BROADCAST_ARGS", "CUMSUM", "REVERSE_V2",
})


def kernels_for(core: str | None) -> Kernels:
    """The kernel build a target's firmware uses: CMSIS-NN for an emulated Cortex-M core,
    else the reference kernels."""
    return _BY_CORE.get(core or "", REFERENCE)


def scratch_requests(info: ModelInfo, op: OpInfo, kernels: Kernels) -> tuple[int, ...] | None:
    """The bytes of each scratch buffer `op` requests at Prepare, in request order; None when
    this build's requests for the op are not modelled."""
    name = op.op
    if name in _NONE:
        return ()
    t = info.tensors
    ins = [t[i] if i >= 0 else None for i in op.inputs]
    out = t[op.outputs[0]] if op.outputs and op.outputs[0] >= 0 else None
    if name in ("MEAN", "SUM", "REDUCE_MAX", "REDUCE_MIN"):
        # kernels/reduce_common.cc: PrepareMeanOrSumHelper / PrepareMinMaxHelper.
        rank, axes = len(ins[0].shape), math.prod(ins[1].shape)
        acc = ()
        if name in ("MEAN", "SUM") and ins[0].dtype in ("int8", "int16"):
            acc = (4 * math.prod(out.shape),)
        return (*acc, 4 * rank, 4 * axes)
    if name == "MIRROR_PAD":  # kernels/mirror_pad.cc: two int arrays of the input's rank
        return (4 * len(ins[0].shape),) * 2
    if name == "ADD_N" and out.dtype in ("int8", "float32"):  # kernels/add_n.cc: a pointer each
        return (kernels.pointer_bytes * len(op.inputs),)
    if name in ("CONV_2D", "DEPTHWISE_CONV_2D"):
        return _conv(op, ins, out, kernels)
    if name == "FULLY_CONNECTED":
        return _fully_connected(op, ins, out, kernels)
    if name == "AVERAGE_POOL_2D":
        if kernels is REFERENCE or ins[0].dtype != "int8":
            return () if kernels is REFERENCE else None
        # cmsis_nn/pooling.cc -> arm_avgpool_s8_get_buffer_size: DSP ch * 4, MVE 0.
        return (4 * out.shape[3],) if kernels is CMSIS_DSP else ()
    if name == "SVDF" and ins[0].dtype == "int8":
        # svdf_common.cc / cmsis_nn/svdf.cc: int32 scratch of batch x filters and batch x units;
        # CMSIS-NN's MVE kernel sums go to persistent memory under KERNELS_OPTIMIZED_FOR_SPEED.
        batch, filters = ins[0].shape[0], ins[1].shape[0]
        rank = int(op.option("rank", 1) or 1)
        return (4 * batch * filters, 4 * batch * (filters // rank))
    return None


def _conv(op: OpInfo, ins, out, kernels: Kernels) -> tuple[int, ...] | None:
    inp, flt = ins[0], ins[1]
    if flt.dtype == "int4":  # conv_common.cc / depthwise_conv_common.cc: unpacked filter
        return (math.prod(flt.shape),) if kernels is REFERENCE else None
    if kernels is REFERENCE:
        return ()
    if inp.dtype != "int8" or flt.dtype != "int8" or len(inp.shape) != 4:
        return None  # int16 paths: not modelled
    n, ih, iw, ic = inp.shape
    _, oh, ow, oc = out.shape
    kh, kw = flt.shape[1], flt.shape[2]
    sh, sw = int(op.option("strideH", 1)), int(op.option("strideW", 1))
    dh = int(op.option("dilationHFactor", 1))
    dw = int(op.option("dilationWFactor", 1))
    ph, pw = _padding(sh, dh, ih, kh, oh), _padding(sw, dw, iw, kw, ow)
    if op.op == "DEPTHWISE_CONV_2D":
        return _depthwise(kernels, n, ih, iw, ic, kh, kw, oh, ow, oc, sh, sw, dh, dw, ph, pw)
    fc = flt.shape[3]
    return _nonzero(_conv_s8(kernels, n, ih, iw, ic, kh, kw, fc, ow, sh, sw, dh, dw, ph, pw))


def _conv_s8(kernels, n, ih, iw, ic, kh, kw, fc, ow, sh, sw, dh, dw, ph, pw) -> int:
    """arm_convolve_wrapper_s8_get_buffer_size (arm_convolve_get_buffer_sizes_s8.c)."""
    if pw == 0 and ph == 0 and kw == 1 and kh == 1 and dw == 1 and dh == 1 and ic == fc:
        # 1x1: the fast path (unit stride) needs 2*c int16 with Arm Compiler 6 only; GCC: 0.
        return 0
    if ih == 1 and dw == 1 and kh == 1 and (sw * ic) % 4 == 0 and ic == fc:  # 1 x N
        if kernels is CMSIS_DSP:
            return _conv_s8_dsp(ic, kh, kw)
        total = (ow - 1) * sw + kw - iw
        asym = total % 2
        right = max(1, (pw + asym + sw - 1) // sw) if pw + asym != 0 else 0
        left = max(1, (pw + sw - 1) // sw) if pw != 0 else 0
        if right + max(ow - (right + left), 0) + left != ow:
            return _conv_s8_mve(ic, kh, kw)
        pad_left = pw * ic
        pad_right = right * ic if asym else pad_left
        elem_left = kw * ic
        return max(elem_left + pad_left, elem_left - ic + pad_right)
    return _conv_s8_dsp(ic, kh, kw) if kernels is CMSIS_DSP else _conv_s8_mve(ic, kh, kw)


def _conv_s8_dsp(ic: int, kh: int, kw: int) -> int:
    cols = kw * kh * ic
    cols += (4 - cols % 4) % 4
    return 2 * cols * 2


def _conv_s8_mve(ic: int, kh: int, kw: int) -> int:
    return 4 * ((ic * kw * kh + 15) // 16) * 16


def _depthwise(kernels, n, ih, iw, ic, kh, kw, oh, ow, oc, sh, sw, dh, dw, ph, pw
               ) -> tuple[int, ...]:
    """arm_depthwise_conv_wrapper_s8_get_buffer_size (arm_depthwise_conv_get_buffer_sizes_s8.c);
    GCC builds set CONVERT_DW_CONV_WITH_ONE_INPUT_CH_AND_OUTPUT_CH_ABOVE_THRESHOLD to 1."""
    if kernels is CMSIS_MVE and ic == 1 and oc > 1:
        # The depthwise conv runs as a conv: its buffer plus the transposed filter.
        return _nonzero(_conv_s8(kernels, n, ih, iw, ic, kh, kw, ic, ow, sh, sw, dh, dw, ph, pw)
                        + oc * kh * kw)
    if ic == oc and n == 1 and dw == 1 and dh == 1:
        if kernels is CMSIS_DSP:
            if kw == 3 and kh == 3 and ph <= 1 and pw <= 1:
                return ()
            return _nonzero(ic * kw * kh * 2)
        return _nonzero(4 * 124 * kw * kh)  # CH_IN_BLOCK_MVE = 124
    return ()


def _fully_connected(op: OpInfo, ins, out, kernels: Kernels) -> tuple[int, ...] | None:
    """cmsis_nn/fully_connected.cc Prepare; the reference kernel asks for nothing."""
    inp, flt = ins[0], ins[1]
    if kernels is REFERENCE:
        return ()
    if inp.dtype != "int8" or flt.dtype != "int8":
        return None
    accum = flt.shape[-1]
    out_depth = out.shape[-1]
    if len(out.shape) > 2 and accum % 4 == 0:
        # conv 1x1 path; per-tensor weights fake per-channel multipliers in a scratch buffer
        per_tensor = len(flt.scales) <= 1
        return (out_depth * 8,) if per_tensor else ()
    constant = flt.constant_bytes > 0 and (len(ins) < 3 or ins[2] is None
                                           or ins[2].constant_bytes > 0)
    if kernels is CMSIS_MVE and not constant:
        return (out_depth * 4,)
    return ()


def _padding(stride: int, dilation: int, in_size: int, filter_size: int, out_size: int) -> int:
    """tensorflow/lite/kernels/padding.h ComputePaddingWithOffset."""
    effective = (filter_size - 1) * dilation + 1
    total = (out_size - 1) * stride + effective - in_size
    return max(total, 0) // 2


def _nonzero(size: int) -> tuple[int, ...]:
    return (size,) if size > 0 else ()
