"""Custom activation ranges through TFLite's own quantizer (private TF APIs, fenced here).

TFLiteConverter calibrates activations by min/max only. To use other ranges we let the
converter produce its calibrated float model (`_experimental_calibrate_only`), whose tensors
carry the min/max the quantizer reads, rewrite those min/max, and run the same MLIR quantizer
the converter runs (`tensorflow.lite.python.convert.mlir_quantize`). Op rules (fixed output
ranges of SOFTMAX/LOGISTIC/TANH, shared scales of pooling/concat/reshape) stay the quantizer's.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping

import numpy as np

from edgeq.adapters.native import capture_fds
from edgeq.adapters.tf_converter import (
    ConverterSettings,
    _explain,
    _set_private,
    build_converter,
)
from edgeq.errors import ConversionError, EdgeqError


def float_model(concrete_function: Any) -> bytes:
    """The unquantized TFLite model of the same batch-1 function (tensor names match the
    calibrated model's)."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete_function])
    with capture_fds():
        return bytes(converter.convert())


def calibrated_model(
    concrete_function: Any,
    representative: Callable[[], Iterable[np.ndarray]],
    settings: ConverterSettings,
    *,
    target_name: str = "target",
) -> bytes:
    """The converter's calibrated float model: min/max recorded on every quantizable tensor."""
    converter = build_converter(concrete_function, representative, settings)
    _set_private(converter, "_experimental_calibrate_only", True)
    try:
        with capture_fds() as captured:
            return bytes(converter.convert())
    except EdgeqError:  # our own check before calibration (tf_converter._check_before_calibration)
        raise
    except Exception as exc:
        raise _explain(exc, captured.text, settings, target_name) from exc


def tensor_ranges(calibrated: bytes) -> dict[str, tuple[float, float]]:
    """The min/max the converter recorded, by tensor name."""
    model = _schema().ModelT.InitFromPackedBuf(calibrated, 0)
    out = {}
    for t in model.subgraphs[0].tensors:
        q = t.quantization
        if q is not None and q.min is not None and q.max is not None and len(q.min) == 1:
            out[_name(t.name)] = (float(q.min[0]), float(q.max[0]))
    return out


def with_ranges(calibrated: bytes, ranges: Mapping[str, tuple[float, float]]) -> bytes:
    """A copy of the calibrated model with the min/max of the named tensors replaced."""
    schema = _schema()
    model = schema.ModelT.InitFromPackedBuf(calibrated, 0)
    for t in model.subgraphs[0].tensors:
        name = _name(t.name)
        q = t.quantization
        if name in ranges and q is not None and q.min is not None and len(q.min) == 1:
            lo, hi = ranges[name]
            q.min = np.array([lo], dtype=np.float32)
            q.max = np.array([hi], dtype=np.float32)
    import flatbuffers

    builder = flatbuffers.Builder(len(calibrated) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def quantize_calibrated(calibrated: bytes, settings: ConverterSettings, *,
                        target_name: str = "target", denylist: tuple[str, ...] = ()) -> bytes:
    """Run the converter's MLIR quantizer on a calibrated model, as `convert()` would.

    ``denylist`` names ops (by their output tensor in the calibrated model) to keep in float:
    the quantizer wraps them in DEQUANTIZE/QUANTIZE, as TFLite's QuantizationDebugger does for
    selective quantization."""
    import tensorflow as tf

    try:
        from tensorflow.lite.python.convert import mlir_quantize
    except ImportError as exc:
        raise ConversionError(
            "quantize", f"TensorFlow {tf.__version__} has no lite.python.convert.mlir_quantize",
            hint="install the TensorFlow version edgeq is tested with (2.21)",
        ) from exc
    try:
        with capture_fds() as captured:
            return bytes(mlir_quantize(
                calibrated,
                disable_per_channel=not settings.per_channel,
                input_data_type=getattr(tf, settings.input_dtype),
                output_data_type=getattr(tf, settings.output_dtype),
                disable_per_channel_for_dense_layers=not settings.dense_per_channel,
                **({"denylisted_nodes": list(denylist)} if denylist else {}),
            ))
    except Exception as exc:
        raise _explain(exc, captured.text, settings, target_name) from exc


def _schema():
    from ai_edge_litert import schema_py_generated

    return schema_py_generated


def _name(raw: Any) -> str:
    return raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else str(raw or "")
