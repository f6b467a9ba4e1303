"""The arena memory CMSIS-NN's kernels ask for beyond what the host's TFLM interpreter measures.

edgeq measures a model's TFLM arena with the TFLite Micro Python interpreter, whose kernels are
TFLM's reference kernels: they request almost no scratch. A device build with CMSIS-NN requests
scratch buffers (live only while their op runs, planned in the arena's head) and, on Helium
cores, persistent buffers of precomputed kernel sums (in the tail, for the whole run); the
sizes depend on the code path the core's build takes:

* ``dsp``: Cortex-M4/M7/M33 (ARM_MATH_DSP),
* ``mve``: Cortex-M55/M85 (ARM_MATH_MVEI, Helium).

Every figure below is an upper bound of the size the TFLM CMSIS-NN kernel (tflite-micro @
90b983c2, tensorflow/lite/micro/kernels/cmsis_nn/*.cc) requests in Prepare, from CMSIS-NN @
4ab83cc3's ``*_get_buffer_size*`` functions (Source/*/arm_*_get_buffer_sizes_s8.c), int8 kernels:

* CONV_2D: im2col buffer. DSP: ``arm_convolve_s8_get_buffer_size`` = 2 columns x
  align4(kh*kw*cin) int16 = 4 * align4(kh*kw*cin) B; MVE: ``arm_convolve_s8_get_buffer_size_mve``
  = 4 * align16(kh*kw*cin) B. The 1x1 and 1xN paths ask for no more than these (1x1 fast: 0 with
  GCC; 1xN on MVE: < 2*kw*cin).
* DEPTHWISE_CONV_2D (depth multiplier 1): DSP ``..._opt_get_buffer_size_dsp`` = cin*kh*kw int16
  (0 for 3x3 with padding <= 1, not relied on here); MVE ``..._opt_get_buffer_size_mve`` =
  4 * CH_IN_BLOCK_MVE(124) * kh*kw B; one input channel on MVE runs as a convolution: the conv
  buffer plus a copy of the filter (kh*kw*cout B).
* FULLY_CONNECTED: DSP none; MVE ``arm_fully_connected_s8_get_buffer_size_mve`` = 4 B per output
  channel, which the TFLM kernel (KERNELS_OPTIMIZED_FOR_SPEED, constant weights) allocates as a
  PERSISTENT buffer of kernel sums: one per FC op, all alive at once. With more than two output
  dimensions and accum_depth % 4 == 0 it runs as a 1x1 convolution: 8 B per output channel of
  scratch for per-tensor quantization.
* AVERAGE_POOL_2D: DSP ``arm_avgpool_s8_get_buffer_size_dsp`` = 4 B per channel; MVE none.
* SVDF: MVE kernel sums, 4 B per filter, persistent (as FULLY_CONNECTED).

The scratch sizes used are edgeq.pipeline.arena_scratch's exact ones where it models the op (it
also applies the exceptions above, e.g. no depthwise scratch for 3x3 on the DSP path); the bounds
here cover the ops it does not model. The persistent kernel sums are this module's alone.
TFLM hands both kinds out in 16-byte units. The recommendation (edgeq.outputs.embed) adds the largest
scratch buffer of any one op (only one op runs at a time) and the sum of the persistent ones.
Other ops and int16 kernels add nothing here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from edgeq.formats.tflite import ModelInfo, OpInfo

VARIANTS = ("dsp", "mve")
_CH_IN_BLOCK_MVE = 124  # arm_nnsupportfunctions.h
_ALIGN = 16


@dataclass(frozen=True)
class KernelBuffers:
    variant: str  # "dsp" or "mve"
    scratch: int  # the largest scratch buffer of one op, B (16-byte units)
    persistent: int  # all persistent buffers together, B (16-byte units)
    any_core: bool = False  # no core given: the larger of the DSP and Helium figures

    @property
    def total(self) -> int:
        return self.scratch + self.persistent


def kernel_buffers(info: ModelInfo, variant: str | None) -> KernelBuffers:
    """What `variant`'s CMSIS-NN kernels add to the host-measured arena for this model; with
    no variant (the core is not known), the larger of the two."""
    if variant is None:
        worst = max((kernel_buffers(info, v) for v in VARIANTS), key=lambda b: b.total)
        return KernelBuffers(worst.variant, worst.scratch, worst.persistent, any_core=True)
    if variant not in VARIANTS:
        raise ValueError(f"unknown CMSIS-NN variant {variant!r}")
    from edgeq.pipeline.arena_scratch import CMSIS_DSP, CMSIS_MVE, scratch_requests

    kernels = CMSIS_DSP if variant == "dsp" else CMSIS_MVE
    scratch = persistent = 0
    for op in info.ops:
        s, p = _op_buffers(info, op, variant)
        # The exact requests where edgeq.pipeline.arena_scratch (the arena planner's model of
        # each kernel's Prepare) knows the op; the bound above where it does not.
        exact = scratch_requests(info, op, kernels)
        scratch = max(scratch, _up(s) if exact is None else sum(_up(r) for r in exact))
        persistent += _up(p)
    return KernelBuffers(variant, scratch, persistent)


def _up(n: int) -> int:
    return -(-n // _ALIGN) * _ALIGN


def _shape(info: ModelInfo, op: OpInfo, k: int, outputs: bool = False) -> tuple[int, ...]:
    idx = (op.outputs if outputs else op.inputs)
    if k >= len(idx) or idx[k] < 0:
        return ()
    return info.tensors[idx[k]].shape


def _dtype(info: ModelInfo, op: OpInfo, k: int) -> str:
    idx = op.inputs
    return info.tensors[idx[k]].dtype if k < len(idx) and idx[k] >= 0 else ""


def _op_buffers(info: ModelInfo, op: OpInfo, variant: str) -> tuple[int, int]:
    """(scratch, persistent) bytes of one op's CMSIS-NN kernel on `variant`."""
    if _dtype(info, op, 0) != "int8":
        return 0, 0
    name = op.op
    inp, filt, out = _shape(info, op, 0), _shape(info, op, 1), _shape(info, op, 0, True)
    if name == "CONV_2D" and len(filt) == 4:
        return _conv(filt[1] * filt[2] * filt[3], variant), 0
    if name == "DEPTHWISE_CONV_2D" and len(filt) == 4 and len(inp) == 4:
        kh, kw, cout, cin = filt[1], filt[2], filt[3], inp[3]
        if variant == "dsp":
            return (cin * kh * kw * 2 if cin == cout else 0), 0
        opt = 4 * _CH_IN_BLOCK_MVE * kh * kw if cin == cout else 0
        one = _conv(kh * kw, variant) + kh * kw * cout if cin == 1 else 0
        return max(opt, one), 0
    if name == "FULLY_CONNECTED" and len(filt) == 2:
        cout, depth = filt[0], filt[1]
        if len(out) > 2 and depth % 4 == 0:  # runs as a 1x1 convolution
            return 8 * cout, 0
        return 0, (4 * cout if variant == "mve" else 0)
    if name == "AVERAGE_POOL_2D" and len(inp) == 4:
        return (4 * inp[3] if variant == "dsp" else 0), 0
    if name == "SVDF" and len(filt) == 2:
        return 0, (4 * filt[0] if variant == "mve" else 0)
    return 0, 0


def _conv(rhs_cols: int, variant: str) -> int:
    if variant == "dsp":
        return 4 * (math.ceil(rhs_cols / 4) * 4)
    return 4 * (math.ceil(rhs_cols / 16) * 16)
