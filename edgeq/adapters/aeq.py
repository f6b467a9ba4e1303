"""Google's ai-edge-quantizer (AEQ): int4 weights, per channel or blockwise, on a float model.

The TFLite converter has no int4 or blockwise path; AEQ rewrites the float TFLite flatbuffer
instead. Activations stay float32. Which AEQ mode each op gets is chosen by what LiteRT 2.3's
CPU kernels run correctly (measured on the MLPerf Tiny VWW MobileNet and single-op models):

  - FULLY_CONNECTED: dynamic range (int4 weights; the kernel quantizes activations to int8 on
    each run). This is the one int4 blockwise path LiteRT runs: XNNPACK takes it, per channel
    and blockwise. The builtin (non-XNNPACK) kernel gives wrong outputs for blockwise
    FULLY_CONNECTED with few output units (2), and AEQ's weight-only blockwise (DEQUANTIZE) is
    wrong on every resolver, so blockwise models must run with XNNPACK, LiteRT's default.
  - CONV_2D: dynamic range, always per channel: AEQ 0.10 has no blockwise CONV_2D. LiteRT runs
    it with its builtin hybrid kernel; XNNPACK does not take int4 convolutions.
  - DEPTHWISE_CONV_2D: weight-only (int4 weights and a DEQUANTIZE op, float compute). LiteRT has
    no int4 hybrid depthwise kernel, and AEQ's policy lists no int4 depthwise at all, so its
    check is skipped (`skip_checks`); without it the depthwise weights of a MobileNet stay
    float32 and the model keeps 0.7x the weight bytes of the int8 model instead of 0.53x.
  - BATCH_MATMUL: weight-only, per channel (AEQ's only int4 mode for it).

Other ops (EMBEDDING_LOOKUP, which Keras models do not produce; TRANSPOSE_CONV; CONV_3D) keep
float weights: `quantized_op_counts` says how many. No TensorFlow here.
"""

from __future__ import annotations

import importlib.metadata
import re
from collections import Counter
from typing import Any

from edgeq.errors import ConversionError, MissingDependencyError, UsageError
from edgeq.formats.tflite import ModelInfo, read_model

STAGE = "quantize (ai-edge-quantizer)"
BITS = (4, 8)
BLOCK_SIZES = (32, 64, 128, 256)  # the blockwise granularities AEQ 0.10 has (BLOCKWISE_<n>)
_PACKAGE = "ai-edge-quantizer"
_INSTALL = "pip install ai-edge-quantizer"

# op -> (AEQ mode, whether a block size applies); see the module docstring for why.
OP_MODES: dict[str, tuple[str, bool]] = {
    "FULLY_CONNECTED": ("dynamic", True),
    "CONV_2D": ("dynamic", False),
    "DEPTHWISE_CONV_2D": ("weight_only", False),
    "BATCH_MATMUL": ("weight_only", False),
}
# Ops outside AEQ's int4 policy that LiteRT still runs (checked for the ops above only).
_SKIP_CHECKS = {"DEPTHWISE_CONV_2D"}
# Ops that carry a weight tensor, and the input that holds it (for quantized_op_counts).
_WEIGHT_INPUT = {
    "FULLY_CONNECTED": 1,
    "CONV_2D": 1,
    "DEPTHWISE_CONV_2D": 1,
    "BATCH_MATMUL": 1,
    "EMBEDDING_LOOKUP": 1,
    "TRANSPOSE_CONV": 1,
    "CONV_3D": 1,
}
_SCOPE_MAX = 10000  # AEQ truncates an op's scope string to this many characters


def version() -> str:
    try:
        return importlib.metadata.version(_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def build_recipe(
    float_model: bytes, *, bits: int = 4, block_size: int | None = None
) -> list[dict[str, Any]]:
    """The AEQ recipe (its JSON format) that `quantize_weights` applies to this model.

    A FULLY_CONNECTED whose input size is not a multiple of `block_size` gets per-channel int4
    (AEQ refuses such a block), through an entry matching that op's scope alone.

    Raises:
        UsageError: bits not in BITS, block_size not in BLOCK_SIZES, or blocks with 8 bits.
        ModelFileError: not a TFLite flatbuffer.
    """
    _check_options(bits, block_size)
    info = read_model(float_model)
    blocks = f"BLOCKWISE_{block_size}" if block_size else "CHANNELWISE"
    recipe = [
        _entry(".*", op, mode, bits, blocks if takes_blocks else "CHANNELWISE")
        for op, (mode, takes_blocks) in OP_MODES.items()
    ]
    if block_size:
        # AEQ applies the last entry whose regex matches, so these override the ".*" one.
        recipe += [
            _entry(regex, "FULLY_CONNECTED", "dynamic", bits, "CHANNELWISE")
            for regex in _unblockable_fc_scopes(info, block_size)
        ]
    return recipe


def quantize_weights(float_model: bytes, *, bits: int = 4, block_size: int | None = None) -> bytes:
    """Quantize the weights of a float32 TFLite model to int4, activations staying float32.

    Args:
        float_model: a float32 TFLite flatbuffer (what TFLiteConverter gives with no options).
        bits: weight bits, 4 (8 works too, but the TFLite converter's dynamic_wi8_afp32 is the
            usual path for int8 weights).
        block_size: None for one scale per output channel, else one scale per `block_size`
            weights inside a channel (FULLY_CONNECTED only; other ops stay per channel).

    Returns:
        The quantized model; the same input gives the same bytes. Per op, the mode is dynamic
        range (FULLY_CONNECTED, CONV_2D) or weight-only (DEPTHWISE_CONV_2D, BATCH_MATMUL); see
        the module docstring.

    Raises:
        MissingDependencyError: ai-edge-quantizer is not installed.
        UsageError: bits or block_size that AEQ cannot build.
        ModelFileError: not a TFLite flatbuffer.
        ConversionError: AEQ failed.
    """
    recipe = build_recipe(float_model, bits=bits, block_size=block_size)
    quantizer = _quantizer_module()
    try:
        q = quantizer.Quantizer(bytes(float_model), recipe)
        result = q.quantize(enable_progress_bar=False, enable_progress_report=False)
    except Exception as exc:  # AEQ raises ValueError, KeyError, RuntimeError ... as it goes
        raise ConversionError(STAGE, _first_line(exc)) from exc
    return bytes(result.quantized_model)


def quantized_op_counts(model: bytes) -> dict[str, int]:
    """How many weight-carrying ops hold their weights in each dtype, int4 and float32 first.

    A weight-only op reads its weights through a DEQUANTIZE op; the dtype counted is that of the
    DEQUANTIZE input. Ops whose weight input is not a constant (a BATCH_MATMUL of two
    activations) are not counted.
    """
    info = read_model(model)
    producer = {t: op for op in info.ops for t in op.outputs}
    counts: Counter[str] = Counter()
    for op in info.ops:
        k = _WEIGHT_INPUT.get(op.op)
        if k is None or len(op.inputs) <= k or op.inputs[k] < 0:
            continue
        weight = info.tensors[op.inputs[k]]
        src = producer.get(weight.index)
        if src is not None and src.op == "DEQUANTIZE" and src.inputs:
            weight = info.tensors[src.inputs[0]]
        if weight.constant_bytes:
            counts[weight.dtype] += 1
    first = {"int4": counts.pop("int4", 0), "float32": counts.pop("float32", 0)}
    return {**first, **dict(sorted(counts.items()))}


def _quantizer_module() -> Any:
    try:
        from ai_edge_quantizer import quantizer
    except ImportError as exc:
        raise MissingDependencyError(_PACKAGE, _INSTALL) from exc
    return quantizer


def _check_options(bits: int, block_size: int | None) -> None:
    if bits not in BITS:
        raise UsageError(
            f"{bits}-bit weights are not built with ai-edge-quantizer",
            hint="use bits 4 (or 8)",
        )
    if block_size is None:
        return
    if block_size not in BLOCK_SIZES:
        raise UsageError(
            f"block size {block_size} is not one ai-edge-quantizer builds",
            hint="use one of: " + ", ".join(str(b) for b in BLOCK_SIZES),
        )
    if bits != 4:
        raise UsageError("blockwise weights are built for int4 only", hint="use bits 4")


def _entry(regex: str, op: str, mode: str, bits: int, granularity: str) -> dict[str, Any]:
    dynamic = mode == "dynamic"
    return {
        "regex": regex,
        "operation": op,
        "algorithm_key": "min_max_uniform_quantize",
        "op_config": {
            "weight_tensor_config": {
                "num_bits": bits,
                "symmetric": True,  # LiteRT's int4 kernels take symmetric weights only
                "granularity": granularity,
                "dtype": "INT",
            },
            # dynamic: integer kernels quantize activations per run; weight-only: a DEQUANTIZE
            # op feeds float weights to a float kernel.
            "compute_precision": "INTEGER" if dynamic else "FLOAT",
            "explicit_dequantize": not dynamic,
            "skip_checks": op in _SKIP_CHECKS,
            "min_weight_elements": 0,
        },
    }


def _unblockable_fc_scopes(info: ModelInfo, block_size: int) -> list[str]:
    """Regexes matching exactly the FULLY_CONNECTED ops whose weight rows don't split in blocks."""
    regexes = []
    for op in info.ops:
        if op.op != "FULLY_CONNECTED" or len(op.inputs) < 2 or op.inputs[1] < 0:
            continue
        weight = info.tensors[op.inputs[1]]
        if not weight.constant_bytes or not weight.shape or weight.shape[-1] % block_size == 0:
            continue
        # AEQ names an op by its output tensor names, each followed by ';' (get_op_scope).
        scope = "".join(f"{info.tensors[t].name};" for t in op.outputs if t >= 0)
        regexes.append("^" + re.escape(scope[:_SCOPE_MAX]) + "$")
    return regexes


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
