"""The one place that drives `tf.lite.TFLiteConverter`, including its private flags.

Private attributes (`_experimental_disable_per_channel`, ...) change between TF releases; they
are set only here, each checked to exist first so a TF upgrade fails with a clear message
instead of silently producing a different model.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import numpy as np

from edgeq.adapters.native import capture_fds
from edgeq.errors import (
    CalibrationLimitError,
    ConversionError,
    EdgeqError,
    UnsupportedOpsError,
)

_DTYPES = ("int8", "uint8", "int16", "float32")


@dataclass(frozen=True)
class ConverterSettings:
    """What the target asks of the converter (built from the profile's [quantization])."""

    per_channel: bool = True  # CONV_2D / DEPTHWISE_CONV_2D weights
    dense_per_channel: bool = True  # FULLY_CONNECTED weights
    input_dtype: str = "int8"
    output_dtype: str = "int8"
    float_fallback: bool = False  # ops without int8 kernels may stay float (CPU targets)
    int16_activations: bool = False


@dataclass(frozen=True)
class ConversionOutput:
    model: bytes
    log: str  # what the converter printed natively; kept for --debug and the report


def convert_int8(
    concrete_function: Any,
    representative: Callable[[], Iterable[np.ndarray]],
    settings: ConverterSettings,
    *,
    target_name: str = "target",
) -> ConversionOutput:
    """Full-integer PTQ of a batch-1 concrete function with min/max calibration.

    Args:
        concrete_function: a `tf.function` traced at batch 1 (static shapes).
        representative: returns an iterator of single float samples with the batch axis.
        settings: quantization asked for by the target.
        target_name: for error messages.

    Raises:
        UnsupportedOpsError: an op has no integer kernel and the target allows no float fallback.
        ConversionError: anything else the converter rejected.
    """
    converter = build_converter(concrete_function, representative, settings)
    try:
        with capture_fds() as captured:
            model = converter.convert()
    except EdgeqError:  # raised by our own check inside the converter (_check_before_calibration)
        raise
    except Exception as exc:  # the converter raises ConverterError, RuntimeError, ValueError
        raise _explain(exc, captured.text, settings, target_name) from exc
    return ConversionOutput(model=bytes(model), log=captured.text)


def build_converter(
    concrete_function: Any,
    representative: Callable[[], Iterable[np.ndarray]],
    settings: ConverterSettings,
) -> Any:
    """A TFLiteConverter set up for full-integer PTQ as the target asks (not yet run).

    Its float model is checked before TF's calibrator runs it (`_check_before_calibration`):
    converting raises CalibrationLimitError where the calibrator would crash."""
    import tensorflow as tf

    for name, dtype in (("input", settings.input_dtype), ("output", settings.output_dtype)):
        if dtype not in _DTYPES:
            raise ConversionError("quantize", f"{name} dtype '{dtype}' is not one of {_DTYPES}")

    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete_function])
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([x] for x in representative())
    if settings.int16_activations:
        ops = [tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
    else:
        ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    if settings.float_fallback:
        ops.append(tf.lite.OpsSet.TFLITE_BUILTINS)
    converter.target_spec.supported_ops = ops
    if settings.input_dtype != "float32":
        converter.inference_input_type = getattr(tf, settings.input_dtype)
    if settings.output_dtype != "float32":
        converter.inference_output_type = getattr(tf, settings.output_dtype)
    _set_private(converter, "_experimental_disable_per_channel", not settings.per_channel)
    _set_private(
        converter,
        "_experimental_disable_per_channel_quantization_for_dense_layers",
        not settings.dense_per_channel,
    )
    _check_before_calibration(converter)
    return converter


def _check_before_calibration(converter: Any) -> None:
    """Check the converter's float model before it reaches TF's calibrator.

    `convert()` makes the float TFLite model and hands it to `_quantize(model, ...)`, which
    runs it in the calibrator; a float model the calibrator crashes on (a not-unrolled RNN's
    loop, see edgeq.formats.calibration_limits) would kill the process with SIGSEGV and no
    message. Wrapping that one hand-over sees the very bytes the calibrator gets at the cost
    of a flatbuffer scan; converting the float model separately first would double the
    converter's work on every model.
    """
    quantize = getattr(converter, "_quantize", None)
    if quantize is None:
        import tensorflow as tf

        raise ConversionError(
            "quantize",
            f"TensorFlow {tf.__version__} has no converter method '_quantize' that edgeq "
            "checks the float model in before calibration",
            hint="install the TensorFlow version edgeq is tested with (2.21)",
        )

    def checked(float_model, *args, **kwargs):
        from edgeq.formats.calibration_limits import calibration_problem

        problem = calibration_problem(bytes(float_model))
        if problem is not None:
            raise CalibrationLimitError(problem.op, problem.where, problem.detail,
                                        hint=problem.fix)
        return quantize(float_model, *args, **kwargs)

    converter._quantize = checked


def _set_private(converter: Any, name: str, value: bool) -> None:
    if not hasattr(converter, name):
        import tensorflow as tf

        raise ConversionError(
            "quantize",
            f"TensorFlow {tf.__version__} has no converter attribute '{name}' that edgeq needs",
            hint="install the TensorFlow version edgeq is tested with (2.21)",
        )
    setattr(converter, name, value)


# 'tf.Sin' op is neither a custom op nor a flex op / Quantization not yet supported for op: 'X'
_OP_PATTERNS = (
    re.compile(r"'(?:tf|tfl)\.(\w+)' op is neither a custom op nor a flex op"),
    re.compile(r"Quantization not yet supported for op: '(\w+)'"),
    re.compile(r"Quantization to 16x8-bit not yet supported for op: '(\w+)'"),
    re.compile(r"op '(?:tf|tfl)\.(\w+)' .*not supported", re.IGNORECASE),
)


# State in resource variables (a stateful RNN): the calibrator's interpreter fails on the TFLite
# op, or freezing the graph fails on the TF op before that.
_VARIABLE_PATTERNS = (
    re.compile(r"\((READ_VARIABLE|ASSIGN_VARIABLE|VAR_HANDLE)\) failed to (?:invoke|prepare)"),
    re.compile(r"node (\S*(?:AssignVariableOp|ReadVariableOp)\S*) was passed \w+ from .*"
               r"incompatible with expected resource"),
)
_TF_VARIABLE_OPS = {"AssignVariableOp": "ASSIGN_VARIABLE", "ReadVariableOp": "READ_VARIABLE"}


def _explain(exc: Exception, log: str, settings: ConverterSettings, target: str) -> Exception:
    text = f"{exc}\n{log}"
    variable = _variable_error(text)
    if variable is not None:
        return variable
    ops = sorted({m.group(1) for p in _OP_PATTERNS for m in p.finditer(text)})
    if ops:
        hint = (
            "these ops have no full-integer TFLite kernel; replace the layers that make them"
            if not settings.float_fallback
            else "these TensorFlow ops have no TFLite builtin; replace the layers that make them"
        )
        return UnsupportedOpsError(target, ops, hint=hint)
    first = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
    return ConversionError("quantize (TFLiteConverter)", first[:400])


def _variable_error(text: str) -> CalibrationLimitError | None:
    from edgeq.formats.calibration_limits import variable_problem

    for pattern in _VARIABLE_PATTERNS:
        m = pattern.search(text)
        if m:
            found = m.group(1)
            op = next((tflite for tf_op, tflite in _TF_VARIABLE_OPS.items() if tf_op in found),
                      found)
            problem = variable_problem(op, "" if op == found else f"node '{found}'")
            return CalibrationLimitError(problem.op, problem.where, problem.detail,
                                         hint=problem.fix)
    return None


def tensorflow_version() -> str:
    import tensorflow as tf

    return tf.__version__


def convert_weight_only(concrete_function: Any, weights: str) -> ConversionOutput:
    """Dynamic-range int8 weights ("int8") or float16 weights ("float16"); activations stay
    float and need no calibration data."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete_function])
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if weights == "float16":
        converter.target_spec.supported_types = [tf.float16]
    elif weights != "int8":
        raise ConversionError("quantize", f"no converter path for {weights} weights")
    try:
        with capture_fds() as captured:
            model = converter.convert()
    except Exception as exc:
        raise ConversionError("quantize (TFLiteConverter)", str(exc).strip()[:400]) from exc
    return ConversionOutput(model=bytes(model), log=captured.text)
