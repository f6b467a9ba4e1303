"""Google's ai-edge-quantizer (AEQ): int4 and blockwise weights on a float TFLite model.

The TFLite converter has no int4 path, so the int4 recipes quantize the float TFLite model
with AEQ's public API. What AEQ 0.10 supports decides the mix, found by trying it on the MLPerf
Tiny VWW network:
  - CONV_2D / FULLY_CONNECTED / ...: int4 weight-only, one scale per output channel (weights
    stored int4 and dequantized at load; the ops compute in float);
  - DEPTHWISE_CONV_2D: AEQ has no int4 weight-only path, so its weights are int8;
  - blockwise (`block_size`): AEQ 0.10 applies it to FULLY_CONNECTED in dynamic mode only
    (int4 blocks, activations quantized on the fly); the other ops keep the channelwise rule.
"""

from __future__ import annotations

import importlib.metadata
from typing import Any

from edgeq.adapters.native import capture_fds
from edgeq.errors import ConversionError, MissingDependencyError

_BLOCKS = (32, 64, 128, 256)


def version() -> str:
    try:
        return importlib.metadata.version("ai-edge-quantizer")
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _modules() -> tuple[Any, Any]:
    try:
        from ai_edge_quantizer import qtyping, quantizer
    except ImportError as exc:
        raise MissingDependencyError("ai-edge-quantizer", "pip install ai-edge-quantizer") from exc
    return quantizer, qtyping


def quantize_weights(float_model: bytes, *, bits: int = 4, block_size: int | None = None) -> bytes:
    """The float model with int4 weights as described in the module docstring.

    Raises:
        MissingDependencyError: ai-edge-quantizer is not installed.
        ConversionError: AEQ rejected the model or a block size it has no granularity for.
    """
    quantizer, qtyping = _modules()
    if block_size is not None and block_size not in _BLOCKS:
        raise ConversionError("quantize (ai-edge-quantizer)",
                              f"block size {block_size} is not one of {_BLOCKS}")
    try:
        q = quantizer.Quantizer(bytearray(float_model))
        # Later configs override earlier ones for the ops they name.
        q.add_weight_only_config(regex=".*", operation_name="*", num_bits=bits)
        q.add_weight_only_config(regex=".*", operation_name="DEPTHWISE_CONV_2D", num_bits=8)
        if block_size is not None:
            q.add_dynamic_config(
                regex=".*", operation_name="FULLY_CONNECTED", num_bits=bits,
                granularity=qtyping.QuantGranularity(f"BLOCKWISE_{block_size}"),
            )
        with capture_fds():
            result = q.quantize(enable_progress_report=False)
    except (ValueError, RuntimeError, KeyError, TypeError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConversionError("quantize (ai-edge-quantizer)", first[:300]) from exc
    return bytes(result.quantized_model)
