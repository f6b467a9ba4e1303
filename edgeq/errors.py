"""The one error hierarchy of edgeq; the CLI maps each class to an exit status.

Every error carries what went wrong (naming the file, layer, op or option) and how to fix it.
Library code raises these and never prints or exits.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Iterable

from edgeq.status import ExitStatus, killed


class EdgeqError(Exception):
    """Base class. ``str(err)`` is the one line a user sees."""

    exit_status: ExitStatus = ExitStatus.ERROR

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(self.__str__())

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message}. Fix: {self.hint}"
        return self.message


# --- exit 2: usage or bad input ---------------------------------------------------------------


class InputError(EdgeqError):
    """Bad input from the user: a file, an option, a data set."""

    exit_status = ExitStatus.BAD_INPUT


class UsageError(InputError):
    """An option or a combination of options that cannot work."""


class ModelFileError(InputError):
    """The model file is missing, unreadable, corrupt or of an unknown format."""

    def __init__(self, path: str | Path, message: str, *, hint: str | None = None) -> None:
        self.path = str(path)
        super().__init__(f"model '{path}': {message}", hint=hint)


class UnsafeModelError(ModelFileError):
    """The model config would run or import code (a Lambda layer, a serialized function, a
    custom object) and --allow-unsafe was not given."""


class DataError(InputError):
    """A data set does not match the model or holds bad values."""

    def __init__(self, path: str | Path, message: str, *, hint: str | None = None) -> None:
        self.path = str(path)
        super().__init__(f"data '{path}': {message}", hint=hint)


class TargetNotFoundError(InputError):
    """No target profile of that name."""

    def __init__(self, name: str, known: Iterable[str], suggestion: str | None = None) -> None:
        self.name = name
        self.known = sorted(known)
        hint = f"did you mean '{suggestion}'? " if suggestion else ""
        hint += "known targets: " + ", ".join(self.known) + " (or a path to a .toml profile)"
        super().__init__(f"unknown target '{name}'", hint=hint)


class TargetFileError(InputError):
    """A target profile file is malformed: unknown key, wrong type, bad value."""

    def __init__(
        self, path: str | Path, key: str | None, message: str, *, hint: str | None = None
    ) -> None:
        self.path = str(path)
        self.key = key
        where = f"{path}" + (f" [{key}]" if key else "")
        super().__init__(f"target profile {where}: {message}", hint=hint)


class OutputExistsError(InputError):
    """An output would replace an existing file and --overwrite was not given."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        super().__init__(
            f"output '{path}' already exists",
            hint="pass --overwrite to replace it, or choose another --out directory",
        )


class MissingDependencyError(InputError):
    """A Python package or tool edgeq needs for this step is not installed."""

    def __init__(self, what: str, install_hint: str) -> None:
        self.what = what
        super().__init__(f"{what} is not installed", hint=install_hint)


# --- exit 3: the target cannot run it -----------------------------------------------------------


class TargetConstraintError(EdgeqError):
    """The model breaks a rule of the target: an op it cannot run, a budget it exceeds."""

    exit_status = ExitStatus.TARGET_CONSTRAINT


class UnsupportedOpsError(TargetConstraintError):
    """Ops the target cannot run, by name, with the layer that made them when known."""

    def __init__(self, target: str, ops: Iterable[str], *, hint: str | None = None) -> None:
        self.target = target
        self.ops = sorted(set(ops))
        super().__init__(
            f"target '{target}' cannot run op(s): {', '.join(self.ops)}",
            hint=hint
            or "replace the layer(s) that produce them, or choose a target that allows float fallback",
        )


class BudgetExceededError(TargetConstraintError):
    """Model flash or arena RAM exceed the target's budget."""

    def __init__(self, target: str, overruns: list[str], *, hint: str | None = None) -> None:
        self.target = target
        self.overruns = overruns
        super().__init__(
            f"model does not fit target '{target}': " + "; ".join(overruns),
            hint=hint or "use a smaller model or a target with more memory",
        )


class KernelLimitError(TargetConstraintError):
    """Quantization scales the runtime's kernels abort on (edgeq.formats.kernel_limits), found before
    any interpreter runs the model."""

    def __init__(self, source: str | Path, message: str, *, hint: str | None = None) -> None:
        self.source = str(source)
        super().__init__(f"model '{source}': {message}", hint=hint)


class TensorSizeError(TargetConstraintError):
    """A tensor or tensor arena too large for the 32-bit size arithmetic of the runtimes
    (edgeq.formats.tflite_check, edgeq.formats.kernel_limits), found before any interpreter
    sees the model.

    Exit 3, not 2: the file is well formed and its sizes agree with each other. Every target
    edgeq knows runs TFLite (TFLite Micro, LiteRT, the Edge TPU runtime), which counts a
    tensor's elements in a 32-bit int, and microcontrollers address memory with a 32-bit
    size_t. Like an op the target lacks, the model is past what the target can run. Shapes no
    TensorFlow tensor can have (a negative dimension, more than 2^63 - 1 elements) mean a
    damaged file, and those are a ModelFileError (exit 2).
    """

    def __init__(self, source: str | Path, message: str, *, tensor: int | None = None,
                 tensor_name: str = "", op: str | None = None, hint: str | None = None) -> None:
        self.source = str(source)
        self.tensor = tensor
        self.tensor_name = tensor_name
        self.op = op
        super().__init__(f"model '{source}': {message}", hint=hint)


class CalibrationLimitError(TargetConstraintError):
    """An op TensorFlow's full-integer calibrator crashes or fails on
    (edgeq.formats.calibration_limits), found in the float model before the calibrator runs."""

    def __init__(self, op: str, where: str, message: str, *, hint: str | None = None) -> None:
        self.op = op
        self.where = where
        super().__init__(f"op {op} ({where}): {message}", hint=hint)


# --- exit 4: accuracy gate ----------------------------------------------------------------------


class AccuracyGateError(EdgeqError):
    """The quantized model lost more accuracy than the user allows."""

    exit_status = ExitStatus.ACCURACY_GATE

    def __init__(self, metric: str, value: float, threshold: float, *, hint: str | None = None):
        self.metric = metric
        self.value = value
        self.threshold = threshold
        super().__init__(
            f"{metric} is {value:.2f}, over the allowed {threshold:.2f}",
            hint=hint or "try another calibration or QAT, or raise the budget",
        )


# --- exit 128 + N: killed by signal N from outside edgeq --------------------------------------


# What usually sends each signal, as a guess in the message.
_KILLERS = {"SIGKILL": "out of memory? a job limit?", "SIGTERM": "a job limit? a shutdown?",
            "SIGHUP": "the terminal closed?", "SIGXCPU": "a CPU time limit?",
            "SIGXFSZ": "a file size limit?"}


class KilledError(EdgeqError):
    """A child process (the supervised command, an interpreter worker) was killed by a signal
    that did not come from edgeq: neither the input nor edgeq is to blame."""

    def __init__(self, stage: str, signal_number: int) -> None:
        try:
            name = signal.Signals(signal_number).name
        except ValueError:
            name = "unknown"
        self.stage = stage
        self.signal_number = signal_number
        self.exit_status = killed(signal_number)  # type: ignore[assignment]
        guess = f" ({_KILLERS[name]})" if name in _KILLERS else ""
        super().__init__(f"{stage} was killed (signal {signal_number}, {name}) from outside "
                         f"edgeq{guess}; outputs are untouched")


# --- exit 1: a stage failed for a reason edgeq could not name -----------------------------------


class ConversionError(EdgeqError):
    """A stage failed inside a tool (TF converter, interpreter); ``stage`` names which."""

    def __init__(self, stage: str, message: str, *, hint: str | None = None) -> None:
        self.stage = stage
        super().__init__(f"{stage} failed: {message}", hint=hint)
