"""Runs interpreter work on a user's .tflite in a child process, so a native crash or hang in
LiteRT or TFLite Micro becomes an edgeq error instead of a dead process.

Why a child process: an interpreter reading a malformed model can dereference foreign memory
(TFLite Micro does not verify flatbuffers; kernels trust their input counts). No Python code
survives that in-process. `edgeq.formats.tflite_check` rejects what it can name first; the child is for
what only the kernels know. The child runs `edgeq.process.worker` as `edgeq.process.spawn` starts
every Python child (isolated from the working directory, this process's edgeq, ended by the
kernel when this process ends); it imports numpy and the interpreter, never TensorFlow, so it
starts in a fraction of a second.

Protocol: the request is one JSON line on stdin followed by the model bytes; the answer is one
JSON line on the worker's stdout ({"result": ...} or {"error": {...}}). Past `timeout_s` the
child is killed. A crash signal (SIGSEGV, SIGABRT, ...) or no answer is a crash; any other
signal came from outside (the OOM killer, a job limit: `KilledError`, exit 128 + N), except
SIGINT, which is the terminal's Ctrl-C reaching the worker too (it shares edgeq's process
group): that stops edgeq as the Ctrl-C does.

Models edgeq just produced are not run here: conversion keeps its interpreter work in-process
for speed and relies on the process supervisor in `edgeq.process.supervise`.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

from edgeq import errors
from edgeq.errors import ConversionError, EdgeqError, ModelFileError
from edgeq.status import ExitStatus
from edgeq.process.spawn import python_command, raise_if_killed, signal_name

DEFAULT_TIMEOUT_S = float(os.environ.get("EDGEQ_CHILD_TIMEOUT", "120"))


def run_in_child(task: str, model: bytes, *, stage: str, source: str | Path,
                 args: dict[str, Any] | None = None, user_file: bool = True,
                 timeout_s: float | None = None) -> Any:
    """Run `edgeq.process.worker` task `task` on `model` in a child process and return its result.

    Raises:
        TargetConstraintError: the child's checks refused the model before its interpreter
            ran: scales the interpreter aborts on, a tensor or (TFLite Micro) an arena too large
            for the runtime's 32-bit size arithmetic (exit 3).
        ModelFileError: (user_file) the child crashed, hung, or its interpreter rejected the
            model: the file is what was wrong (exit 2), and the stage is named.
        ConversionError: the same for a model edgeq made itself (exit 1).
        KilledError: the child was killed from outside edgeq (exit 128 + the signal).
        KeyboardInterrupt: the child got the terminal's Ctrl-C (SIGINT).
        EdgeqError: what the worker raised, of the same class when it is one edgeq knows.
    """
    limit = DEFAULT_TIMEOUT_S if timeout_s is None else timeout_s
    # The child's runners check the model before its interpreter sees it (edgeq.formats:
    # tensor sizes, kernel_limits) and name it by `source` in what they refuse.
    args = {**(args or {}), "source": str(source)}
    request = json.dumps({"task": task, "args": args}).encode() + b"\n" + bytes(model)
    try:
        proc = subprocess.run(python_command("edgeq.process.worker"), input=request,
                              capture_output=True, timeout=limit, check=False)
    except subprocess.TimeoutExpired:
        raise _failure(stage, source, user_file, f"did not finish within {limit:g} s",
                       hint="set EDGEQ_CHILD_TIMEOUT (seconds) to allow longer") from None
    answer = _answer(proc.stdout)
    raise_if_killed(stage, proc.returncode)
    if proc.returncode < 0:
        raise _failure(stage, source, user_file, f"crashed ({signal_name(-proc.returncode)})")
    if answer is None:
        tail = _last_line(proc.stderr)
        raise _failure(stage, source, user_file,
                       f"the worker exited with status {proc.returncode} without an answer"
                       + (f" ({tail})" if tail else ""))
    if "error" in answer:
        raise _rebuild(answer["error"], stage, source, user_file)
    return answer["result"]


def _failure(stage: str, source: str | Path, user_file: bool, what: str,
             hint: str | None = None) -> EdgeqError:
    if user_file:
        return ModelFileError(source, f"{stage} {what} on this model; the file is probably "
                              "malformed in a way edgeq's checks do not catch",
                              hint=hint or "re-export the model with the TFLite converter")
    return ConversionError(stage, what, hint=hint)


def _rebuild(err: dict[str, Any], stage: str, source: str | Path, user_file: bool) -> EdgeqError:
    kind, message = err.get("type", ""), str(err.get("message", ""))
    if kind == "MissingDependencyError":
        return errors.MissingDependencyError(message, "reinstall edgeq with its dependencies")
    if err.get("exit_status") == ExitStatus.TARGET_CONSTRAINT:
        # edgeq's own checks in the child (kernel_limits, tensor sizes): the target's limit
        return errors.TargetConstraintError(message, hint=err.get("hint"))
    if user_file:  # the interpreter refused the file: a bad input, not an edgeq failure
        return ModelFileError(source, f"{stage} rejected it: {message}",
                              hint="check that the target's runtime supports this model")
    return ConversionError(stage, message)


def _answer(stdout: bytes) -> dict[str, Any] | None:
    for line in reversed(stdout.splitlines()):
        try:
            value = json.loads(line)
        except (ValueError, UnicodeDecodeError):
            continue
        if isinstance(value, dict) and ("result" in value or "error" in value):
            return value
    return None


def _last_line(data: bytes) -> str:
    lines = [ln.strip() for ln in data.decode("utf-8", "replace").splitlines() if ln.strip()]
    return lines[-1][:200] if lines else ""
