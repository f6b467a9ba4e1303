"""The Edge TPU compiler's per-op rules, one small function per constraint.

Each constraint's docstring is the message the user reads when an op breaks it (Vela's
pattern); the function returns None when the op is fine, or the detail that completes the
message ("tensor conv/out has shape [2, 8, 8, 3]"). ``STATUS`` is the status string the real
compiler prints in its per-op table for that kind of failure, so predictions and real logs
can be compared; ``FIX`` is the concrete change in Keras terms.

Sources: coral.ai models-intro "Supported operations" (via the Axis ARTPEC-7 copy), real
compiler logs in google-coral/edgetpu issues, and the compiled fixtures in
shared/fixtures/models/coral (design/TARGETS.md section 1 lists them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from edgeq.formats.tflite import ModelInfo, OpInfo, TensorInfo

NOT_SUPPORTED = "Operation not supported"
VERSION = "Operation version not supported"
DATA_TYPE = "Operation is working on an unsupported data type"
RANK = "Tensor has unsupported rank (up to 3 innermost dimensions mapped)"
UNSPECIFIED = "Operation is otherwise supported, but not mapped due to some unspecified limitation"
STRIDES = "Only Strided-Slice with unitary strides supported"
SUBGRAPH = "More than one subgraph is not supported"
MAPPED = "Mapped to Edge TPU"

SOFTMAX_MAX_ELEMENTS = 16000
INTEGER_ACTIVATIONS = ("int8", "uint8")
LSTM_OPS = ("LSTM", "UNIDIRECTIONAL_SEQUENCE_LSTM")
# What to do instead, per op the Edge TPU cannot run at all.
REPLACEMENTS = {
    "LEAKY_RELU": "replace LeakyReLU with ReLU, or with PReLU(shared_axes=[1, 2]) which maps",
    "HARD_SWISH": "replace hard-swish with ReLU6, or x * ReLU6(x + 3) / 6 built from ADD/MUL",
    "GELU": "replace GELU with ReLU (or a clipped ReLU6) and fine-tune",
    "ARG_MAX": "take the argmax on the host from the model's output (it is cheap there)",
    "DEQUANTIZE": "keep the model integer to the end (uint8/int8 output)",
    "BATCH_MATMUL": "express the product as a Dense on 2-D input or a 1x1 Conv2D",
    "EXP": "use a supported activation; exponentials run on the CPU",
    "SQUARED_DIFFERENCE": "avoid LayerNormalization-style statistics inside the model",
    "RSQRT": "avoid LayerNormalization-style statistics inside the model",
    "CUSTOM": "custom ops never map; move the post-processing to the host",
}


@dataclass(frozen=True)
class Finding:
    """Why one op does not map: the compiler's status string, our message and the fix."""

    constraint: str
    status: str
    message: str
    fix: str


@dataclass(frozen=True)
class Rule:
    name: str
    ops: tuple[str, ...]  # empty: every op
    check: Callable[[OpInfo, ModelInfo], str | None]
    status: str
    fix: str

    @property
    def message(self) -> str:
        return " ".join((self.check.__doc__ or self.name).split())


RULES: list[Rule] = []


def _rule(*ops: str, status: str, fix: str):
    def register(fn: Callable[[OpInfo, ModelInfo], str | None]):
        RULES.append(Rule(fn.__name__.removeprefix("constraint_"), ops, fn, status, fix))
        return fn

    return register


# --- helpers ---------------------------------------------------------------------------------

def activation_tensors(op: OpInfo, info: ModelInfo) -> list[TensorInfo]:
    """The op's non-constant tensors (weights and biases are exempt from the shape rules)."""
    return [info.tensors[i] for i in (*op.inputs, *op.outputs)
            if 0 <= i < len(info.tensors) and info.tensors[i].constant_bytes == 0]


def _name(t: TensorInfo) -> str:
    return t.name or f"#{t.index}"


def _shape(t: TensorInfo) -> str:
    return "[" + ", ".join(str(d) for d in t.shape) + "]"


def _input(op: OpInfo, info: ModelInfo, k: int = 0) -> TensorInfo | None:
    if len(op.inputs) > k and 0 <= op.inputs[k] < len(info.tensors):
        return info.tensors[op.inputs[k]]
    return None


def _output(op: OpInfo, info: ModelInfo, k: int = 0) -> TensorInfo | None:
    if len(op.outputs) > k and 0 <= op.outputs[k] < len(info.tensors):
        return info.tensors[op.outputs[k]]
    return None


def _axes(op: OpInfo, info: ModelInfo, k: int, rank: int) -> tuple[int, ...] | None:
    """Constant axis values of input k, made non-negative; None when not a constant."""
    if len(op.inputs) <= k or op.inputs[k] not in info.values:
        return None
    return tuple(a % rank if rank else a for a in info.values[op.inputs[k]])


def _inner_only(shape: tuple[int, ...]) -> bool:
    """Only the innermost dimension is larger than 1 (a "1-D" tensor to the Edge TPU)."""
    return all(d == 1 for d in shape[:-1])


# --- rules for every op ----------------------------------------------------------------------

@_rule("QUANTIZE", status=UNSPECIFIED,
       fix="give the model uint8/int8 input (inference_input_type; edgeq convert does) so "
           "that the first op is already on the Edge TPU")
def constraint_quantize_from_float(op: OpInfo, info: ModelInfo) -> str | None:
    """Quantizing the model's float input runs on the CPU, before the Edge TPU subgraph"""
    x = _input(op, info)
    return f"input {_name(x)} is {x.dtype}" if x is not None and x.dtype.startswith("float") \
        else None


@_rule(status=DATA_TYPE, fix="quantize the model to full integer (int8 or uint8) throughout: "
       "edgeq convert MODEL --target coral --data CALIBRATION")
def constraint_integer_tensors(op: OpInfo, info: ModelInfo) -> str | None:
    """Activations must be int8 or uint8: the Edge TPU computes in 8-bit integers only"""
    for t in activation_tensors(op, info):
        if t.dtype in INTEGER_ACTIVATIONS:
            continue
        if op.op == "QUANTIZE" and t.dtype.startswith("float"):
            continue  # the float input's QUANTIZE: its own rule above
        if op.op in LSTM_OPS and t.dtype == "int16":
            continue  # the int8 LSTM kernel keeps its cell state in int16; the compiler maps it
        if op.op in ("RESHAPE", "SQUEEZE", "EXPAND_DIMS") and t.dtype == "int32":
            continue  # a shape or axis tensor fed at run time is still integer bookkeeping
        return f"tensor {_name(t)} is {t.dtype}"
    return None


@_rule(status=RANK, fix="keep tensors at most 3-D with batch 1 (e.g. Reshape to [H, W, C]); "
       "do not stack samples or time steps in a 4th dimension")
def constraint_rank(op: OpInfo, info: ModelInfo) -> str | None:
    """Tensors of more than 3 dimensions may be larger than 1 only in their 3 innermost
    dimensions ([1, 128, 128, 3] maps, [3, 128, 128, 1] does not)"""
    for t in activation_tensors(op, info):
        if len(t.shape) > 3 and any(d > 1 for d in t.shape[:-3]):
            return f"tensor {_name(t)} has shape {_shape(t)}"
    return None


# --- per-op rules (coral.ai "Supported operations", limitations column) -----------------------

@_rule("AVERAGE_POOL_2D", "MAX_POOL_2D", "CONCATENATION", status=UNSPECIFIED,
       fix="apply the activation as its own layer after the pooling/concatenation")
def constraint_no_fused_activation(op: OpInfo, info: ModelInfo) -> str | None:
    """Pooling and concatenation must not have a fused activation function"""
    act = op.option("fusedActivationFunction", 0)
    return f"fused activation {_ACTIVATIONS.get(act, act)}" if act else None


_ACTIVATIONS = {1: "RELU", 2: "RELU_N1_TO_1", 3: "RELU6", 4: "TANH", 5: "SIGN_BIT"}


@_rule("CONCATENATION", status=UNSPECIFIED,
       fix="concatenate only computed tensors; for zero padding use ZeroPadding2D")
def constraint_concat_constants(op: OpInfo, info: ModelInfo) -> str | None:
    """A concatenation with a compile-time constant input must have exactly 2 inputs, and the
    constant must be all zeros (zero padding)"""
    constants = [info.tensors[i] for i in op.inputs
                 if 0 <= i < len(info.tensors) and info.tensors[i].constant_bytes > 0]
    if not constants:
        return None
    if len(op.inputs) != 2:
        return f"{len(op.inputs)} inputs, {len(constants)} of them constant"
    t = constants[0]
    zero = t.zero_points[0] if t.zero_points else 0
    if t.constant_fill is None or t.constant_fill != zero:
        return f"constant input {_name(t)} is not all zeros"
    return None


@_rule("CONV_2D", "DEPTHWISE_CONV_2D", status=UNSPECIFIED,
       fix="use the same dilation_rate for both spatial axes")
def constraint_same_dilation(op: OpInfo, info: ModelInfo) -> str | None:
    """Convolutions must use the same dilation in x and y (an axis where the kernel is 1 wide
    has no dilation to speak of)"""
    h, w = op.option("dilationHFactor", 1), op.option("dilationWFactor", 1)
    if h == w:
        return None
    # Evidence: the TCN pair in fixtures/device_truth/edgetpu (fredriktegnell/edgetpu-tcn,
    # compiler 16 log) maps Conv1D-as-Conv2D with dilation 2x1 and 4x1 on a [k, 1] kernel.
    kernel = _input(op, info, 1)
    if kernel is not None and len(kernel.shape) == 4:
        if 1 in (kernel.shape[1], kernel.shape[2]):  # [out, kh, kw, in] (depthwise: [1, ...])
            return None
    return f"dilation {h}x{w}"


@_rule("FULLY_CONNECTED", status=UNSPECIFIED,
       fix="use a plain Dense layer (the converter's default weight format)")
def constraint_fc_weight_format(op: OpInfo, info: ModelInfo) -> str | None:
    """Fully-connected weights must use the default format"""
    fmt = op.option("weightsFormat", 0)
    return f"weights format {fmt} (shuffled)" if fmt else None


@_rule("FULLY_CONNECTED", status=VERSION,
       fix="a Dense layer on a 3-D input keeps its input's rank: Flatten or Reshape to 2-D "
           "before the Dense, or use a 1x1 Conv2D on [1, T, F] data")
def constraint_fc_keep_num_dims(op: OpInfo, info: ModelInfo) -> str | None:
    """A fully-connected op must give a 1-D output: Dense on a 3-D input (keep_num_dims, op
    version 5) is refused"""
    if op.option("keepNumDims", False):
        out = _output(op, info)
        return f"keep_num_dims, output shape {_shape(out)}" if out else "keep_num_dims"
    return None


@_rule("FULLY_CONNECTED", status=UNSPECIFIED,
       fix="Flatten the input so that the Dense output is [1, N]")
def constraint_fc_1d_output(op: OpInfo, info: ModelInfo) -> str | None:
    """A fully-connected op's output must be one-dimensional (only the innermost dimension
    larger than 1)"""
    out = _output(op, info)
    if out is not None and not _inner_only(out.shape):
        return f"output {_name(out)} has shape {_shape(out)}"
    return None


@_rule("MEAN", "SUM", "REDUCE_MAX", "REDUCE_MIN", status=UNSPECIFIED,
       fix="reduce over the spatial or channel axes only (e.g. GlobalAveragePooling2D)")
def constraint_reduce_not_batch(op: OpInfo, info: ModelInfo) -> str | None:
    """Reductions cannot operate on the batch dimension"""
    x = _input(op, info)
    axes = _axes(op, info, 1, len(x.shape) if x else 0)
    if x is not None and axes is not None and len(x.shape) == 4 and 0 in axes:
        return f"reduces axis 0 of {_shape(x)}"
    return None


@_rule("MEAN", status=UNSPECIFIED,
       fix="pad the channels to a multiple of 4, or average over the spatial axes only")
def constraint_mean_depth(op: OpInfo, info: ModelInfo) -> str | None:
    """A mean over the channel (z) axis needs a channel count that is a multiple of 4"""
    x = _input(op, info)
    if x is None or not x.shape:
        return None
    axes = _axes(op, info, 1, len(x.shape))
    if axes is not None and len(x.shape) - 1 in axes and x.shape[-1] % 4:
        return f"{x.shape[-1]} channels"
    return None


@_rule("PACK", status=UNSPECIFIED, fix="stack along a non-batch axis")
def constraint_pack_not_batch(op: OpInfo, info: ModelInfo) -> str | None:
    """Packing cannot be along the batch dimension"""
    out = _output(op, info)
    axis = op.option("axis", 0)
    if out is not None and len(out.shape) == 4 and axis % 4 == 0:
        return f"axis {axis}"
    return None


@_rule("PAD", status=UNSPECIFIED, fix="pad the spatial or channel axes only (ZeroPadding2D)")
def constraint_pad_not_batch(op: OpInfo, info: ModelInfo) -> str | None:
    """Padding cannot be in the batch dimension"""
    x = _input(op, info)
    pads = info.values.get(op.inputs[1]) if len(op.inputs) > 1 else None
    if x is not None and pads and len(x.shape) == 4 and any(pads[:2]):
        return f"paddings {list(pads)}"
    return None


@_rule("PRELU", status=UNSPECIFIED,
       fix="share alpha across the spatial axes: PReLU(shared_axes=[1, 2])")
def constraint_prelu_alpha(op: OpInfo, info: ModelInfo) -> str | None:
    """PReLU's alpha must be 1-D (only its innermost dimension larger than 1)"""
    alpha = _input(op, info, 1)
    if alpha is not None and not _inner_only(alpha.shape):
        return f"alpha has shape {_shape(alpha)}"
    return None


@_rule("RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR", status=UNSPECIFIED,
       fix="resize by a whole factor (UpSampling2D(size=2)); for a 1x1 map use "
           "UpSampling2D(size=(H, W), interpolation='nearest') or tile it with a broadcast ADD")
def constraint_resize_factor(op: OpInfo, info: ModelInfo) -> str | None:
    """A resize maps only with a whole upscaling factor per axis (with align_corners, between
    the corner pixels); other ratios would lose precision on the Edge TPU"""
    x, out = _input(op, info), _output(op, info)
    if x is None or out is None or len(x.shape) != 4 or len(out.shape) != 4:
        return None
    corners = bool(op.option("alignCorners", False))
    for axis, name in ((1, "height"), (2, "width")):
        n_in, n_out = x.shape[axis], out.shape[axis]
        if n_in == n_out:
            continue
        if corners:
            whole = n_in > 1 and (n_out - 1) % (n_in - 1) == 0
        else:
            whole = n_out % n_in == 0
        if not whole:
            kind = "align_corners " if corners else ""
            return f"{kind}{name} {n_in} -> {n_out} is not a whole-factor upscale"
    return None


@_rule("SOFTMAX", status=UNSPECIFIED,
       fix="apply Softmax over a shorter axis, or on the host")
def constraint_softmax_axis(op: OpInfo, info: ModelInfo) -> str | None:
    """Softmax maps with at most 16,000 elements along its (innermost) axis"""
    # Coral's table says "1-D input only", but compiler 16 maps YOLOv8's DFL softmax on
    # [1, 4, 525, 16] and [1, 4, 756, 16] (jveitchmichaelis/edgetpu-yolo yolov8n/s 160 and 192
    # logs in fixtures/device_truth/edgetpu_logs: every op mapped). The newest compiler wins.
    x = _input(op, info)
    if x is not None and x.shape and x.shape[-1] > SOFTMAX_MAX_ELEMENTS:
        return f"{x.shape[-1]} elements"
    return None


@_rule("SPLIT", "SPLIT_V", status=UNSPECIFIED, fix="split along a non-batch axis")
def constraint_split_not_batch(op: OpInfo, info: ModelInfo) -> str | None:
    """Splitting cannot be along the batch dimension"""
    k = 0 if op.op == "SPLIT" else 2
    x = _input(op, info, 1 if op.op == "SPLIT" else 0)
    axes = _axes(op, info, k, len(x.shape) if x else 0)
    if x is not None and axes is not None and len(x.shape) == 4 and 0 in axes:
        return f"splits axis 0 of {_shape(x)}"
    return None


@_rule("STRIDED_SLICE", status=STRIDES,
       fix="slice with step 1 (x[:, a:b]) and take every n-th element another way, e.g. a "
           "strided Conv2D or pooling")
def constraint_strided_slice_unit(op: OpInfo, info: ModelInfo) -> str | None:
    """A strided slice must have all strides 1 and no ellipsis or new-axis mask"""
    strides = info.values.get(op.inputs[3]) if len(op.inputs) > 3 else None
    if strides is not None and any(s != 1 for s in strides):
        return f"strides {list(strides)}"
    if op.option("ellipsisMask", 0) or op.option("newAxisMask", 0):
        return "ellipsis or new-axis mask set"
    return None


# --- size limits (the docs' "may not map for large tensors"; bounds from real compiles) -----
# The compiler leaves an otherwise supported op on the CPU when its tensors are too large for
# the Edge TPU's on-chip layout, with the status "otherwise supported, but not mapped due to
# some unspecified limitation". Coral's table says so for RESHAPE ("certain reshapes may not
# map for large tensors") and the resizes ("depending on input/output size"). No limit is
# published; each constant below lies between the largest case that mapped and the smallest
# that did not in compiler-16 output (fixtures/device_truth), and the bracket is stated so that
# a new compile can narrow it.

# Elements in the two innermost dimensions (x * z of the [y, x, z] layout) of any activation.
# Mapped: the SSDLite-MobileDet COCO class scores [1, 2034, 91] (185,094; CONCATENATION and
# LOGISTIC mapped in the compiler-15 log, device_truth/edgetpu_logs demo-manufacturing; SSD
# MobileNet v1 COCO [1, 1917, 91] likewise in compiler 1.0 logs), RESHAPE -> [1, 1200, 85]
# (102,000; yolov5n-int8 pair), FC on [1, 94400] (TCN pair). Not mapped: [1, 2352, 85]
# (199,920; yolov5s-224 compiler-16 log: RESHAPE, CONCATENATION, QUANTIZE "unspecified"),
# [1, 4800, 85] (408,000; yolov5n-int8 pair), [1, 80, 8400] and [1, 144, 8400] (yolov8n pair
# and its compiler-16 log). So the limit lies in (185,094, 199,920].
MAX_ROW_ELEMENTS = 192 * 1024
# TRANSPOSE: total elements. Mapped: [1, 20, 20, 144] (57,600; yolov8n pair), [1, 24, 24, 144]
# (82,944; yolov8n/s 192 logs, all mapped). Not mapped: [1, 784, 3, 85] (199,920; yolov5s-224
# log), [1, 40, 40, 144] (230,400; yolov8n pair and log).
MAX_TRANSPOSE_ELEMENTS = 128 * 1024
# RESHAPE: total elements. Mapped: [1, 40, 40, 255] -> [1, 1600, 3, 85] (408,000; yolov5n-int8
# pair). Not mapped: [1, 80, 80, 255] -> [1, 6400, 3, 85] (1,632,000; same pair).
MAX_RESHAPE_ELEMENTS = 1024 * 1024
# Resizes: output elements. Mapped: RESIZE_NEAREST_NEIGHBOR -> [1, 80, 80, 128] (819,200;
# yolov8n pair), RESIZE_BILINEAR -> [1, 128, 128, 32] (google-coral/edgetpu#31). Not mapped:
# RESIZE_BILINEAR 33 -> 513 to [1, 513, 513, 19] (5,000,211; deeplab mobilenet-edgetpu slim
# pair), -> [1, 512, 512, 32] (edgetpu#31).
MAX_RESIZE_OUTPUT_ELEMENTS = 2 * 1024 * 1024


def _elements(t: TensorInfo) -> int:
    n = 1
    for d in t.shape:
        n *= max(int(d), 1)
    return n


def _input_over(op: OpInfo, info: ModelInfo, limit: int) -> str | None:
    x = _input(op, info)
    if x is not None and _elements(x) > limit:
        return f"input {_name(x)} has shape {_shape(x)}"
    return None


def _row(t: TensorInfo) -> int:
    inner = [max(int(d), 1) for d in t.shape[-2:]]
    return inner[0] * inner[1] if len(inner) == 2 else (inner[0] if inner else 1)


@_rule(status=UNSPECIFIED,
       fix="keep each activation's last two dimensions small (e.g. [1, N, 85] with N in the "
           "thousands is too wide): split the tensor, or do this reshaping/post-processing "
           "on the host")
def constraint_row_size(op: OpInfo, info: ModelInfo) -> str | None:
    """An activation's two innermost dimensions may hold at most 196,608 elements (larger
    tensors are not mapped, e.g. a YOLO detection head's [1, 4800, 85])"""
    for t in activation_tensors(op, info):
        if _row(t) > MAX_ROW_ELEMENTS:
            return f"tensor {_name(t)} has shape {_shape(t)}"
    return None


@_rule("TRANSPOSE", status=UNSPECIFIED,
       fix="transpose smaller tensors, keep the layout NHWC through the model, or move the "
           "transpose to the host")
def constraint_transpose_size(op: OpInfo, info: ModelInfo) -> str | None:
    """A transpose maps only up to 131,072 elements"""
    return _input_over(op, info, MAX_TRANSPOSE_ELEMENTS)


@_rule("RESHAPE", status=UNSPECIFIED,
       fix="reshape smaller tensors, or do this reshaping on the host from the model's output")
def constraint_reshape_size(op: OpInfo, info: ModelInfo) -> str | None:
    """A reshape maps only up to 1,048,576 elements ("certain reshapes may not map for large
    tensors")"""
    return _input_over(op, info, MAX_RESHAPE_ELEMENTS)


@_rule("RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR", status=UNSPECIFIED,
       fix="resize to a smaller output on the Edge TPU and upscale the rest on the host "
           "(e.g. argmax at low resolution, then resize the label map)")
def constraint_resize_output_size(op: OpInfo, info: ModelInfo) -> str | None:
    """A resize maps only up to an output of 2,097,152 elements"""
    out = _output(op, info)
    if out is not None and _elements(out) > MAX_RESIZE_OUTPUT_ELEMENTS:
        return f"output {_name(out)} has shape {_shape(out)}"
    return None


def op_findings(op: OpInfo, info: ModelInfo, allowed: tuple[str, ...],
                max_versions: dict[str, int]) -> list[Finding]:
    """Every reason the Edge TPU compiler would leave ``op`` on the CPU; empty when it maps."""
    if op.op.startswith("CUSTOM:"):
        # Real logs give custom ops this status (SSD post-processing, PosenetDecoderOp).
        return [Finding("op_table", DATA_TYPE,
                        f"{op.op} is a custom op: the Edge TPU runs builtin ops only",
                        replacement(op.op))]
    if allowed and op.op not in allowed:
        return [Finding("op_table", NOT_SUPPORTED,
                        f"{op.op} is not in the Edge TPU's supported-ops table",
                        replacement(op.op))]
    limit = max_versions.get(op.op)
    findings = []
    if limit is not None and op.version > limit:
        findings.append(Finding(
            "op_version", VERSION,
            f"{op.op} version {op.version} is newer than the compiler accepts ({limit})",
            _version_fix(op)))
    for rule in RULES:
        if rule.ops and op.op not in rule.ops:
            continue
        detail = rule.check(op, info)
        if detail is not None:
            findings.append(Finding(rule.name, rule.status, f"{rule.message}: {detail}", rule.fix))
    return findings


def replacement(op: str) -> str:
    key = "CUSTOM" if op.startswith("CUSTOM:") else op
    return REPLACEMENTS.get(key, f"replace the layer that produces {op} with one from the "
                                 "supported-ops table (edgeq targets coral --supported-ops)")


def _version_fix(op: OpInfo) -> str:
    if op.op.startswith("RESIZE_") and op.option("halfPixelCenters", False):
        return ("the resize uses half_pixel_centers (TF2 tf.image.resize / Keras UpSampling2D "
                "bilinear); use UpSampling2D(interpolation='nearest') or "
                "tf.compat.v1.image.resize(..., half_pixel_centers=False)")
    if op.op == "FULLY_CONNECTED" and op.option("keepNumDims", False):
        return ("a Dense layer on a 3-D input keeps its input's rank: Flatten or Reshape to 2-D "
                "before the Dense, or use a 1x1 Conv2D")
    return "use the layer's plain form, or an older converter that emits the older op version"


def supported_ops_table(allowed: tuple[str, ...],
                        max_versions: dict[str, int]) -> list[dict[str, object]]:
    """The table `edgeq targets coral --supported-ops` prints: one row per op, generated from
    the profile's op list and the constraint functions above (their docstrings)."""
    rows = []
    for name in sorted(allowed):
        limits = [r.message for r in RULES if r.ops and name in r.ops]
        rows.append({"op": name, "max_version": max_versions.get(name),
                     "limitations": limits})
    general = [r.message for r in RULES if not r.ops]
    rows.append({"op": "(every op)", "max_version": None, "limitations": general})
    return rows
