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

TIMEOUT_ENV = "EDGEQ_CHILD_TIMEOUT"  # seconds: one flat limit instead of the model's own

# The time limit follows the model's work (`time_limit`): a big model on many samples must not
# be stopped, and an endless one (a WHILE loop that never ends) must be, in bounded time. The
# rates are TFLite Micro's reference kernels on an x86-64 host (the slowest interpreter edgeq
# runs; LiteRT is faster), with a wide margin for a loaded CI machine: 0.75-3.1 ns per MAC
# measured on the MLPerf Tiny int8 models on a busy 2-core machine (tools/bench_analyze.py
# --rates), 100 ns allowed (100 ns per activation element too); 2 ms per op per inference and
# 50 ms per sample for the Python around it; the child's start-up (numpy and the interpreter
# imported, the model read and allocated: under 2 s) 30 s plus 10 ms per op. For the MLPerf
# models that is 40-166 s for 100 samples, which took 0.1-2.5 s.
_START_S = 30.0
_LOAD_S_PER_OP = 0.01
_S_PER_MAC = 100e-9
_S_PER_OP_RUN = 2e-3
_S_PER_SAMPLE = 0.05


def model_work(info: Any) -> tuple[int, int]:
    """(multiply-accumulates, element reads and writes) of one inference, from the shapes in
    the flatbuffer: ops with weights (convolutions, fully connected) count a MAC per output
    element per weight it reads; every op counts its activations' elements. Ops in other
    subgraphs (an IF or WHILE body) are not counted: their trip count is not in the file,
    which is what the limit is for."""
    macs = elements = 0
    for op in info.ops:
        tensors = [info.tensors[i] for i in (*op.inputs, *op.outputs) if i >= 0]
        elements += sum(_count(t.shape) for t in tensors if not t.constant_bytes)
        weights = [info.tensors[i] for i in op.inputs[1:2] if i >= 0]
        if op.op in _WEIGHTED and weights and op.outputs and op.outputs[0] >= 0:
            out = info.tensors[op.outputs[0]].shape
            w = weights[0].shape
            per_output = _count(w) // max(out[-1] if out else 1, 1) if op.op != "BATCH_MATMUL" \
                else (w[-2] if len(w) >= 2 else 1)
            macs += _count(out) * max(per_output, 1)
    return macs, elements


_WEIGHTED = frozenset({"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV",
                       "CONV_3D", "BATCH_MATMUL", "SVDF", "UNIDIRECTIONAL_SEQUENCE_LSTM"})


def _count(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= max(int(d), 1)
    return n


def time_limit(info: Any | None, samples: int = 0) -> float:
    """Seconds a child may take to load `info`'s model and run it on `samples` inputs: the
    model's own work at a pessimistic rate (see above), or EDGEQ_CHILD_TIMEOUT when set."""
    flat = os.environ.get(TIMEOUT_ENV)
    if flat:
        try:
            return max(float(flat), 0.1)
        except ValueError:
            pass
    if info is None:
        return _START_S
    macs, elements = model_work(info)
    per_sample = _S_PER_SAMPLE + len(info.ops) * _S_PER_OP_RUN + macs * _S_PER_MAC \
        + elements * _S_PER_MAC
    return round(_START_S + len(info.ops) * _LOAD_S_PER_OP + samples * per_sample, 1)


def run_in_child(task: str, model: bytes, *, stage: str, source: str | Path,
                 args: dict[str, Any] | None = None, user_file: bool = True,
                 timeout_s: float | None = None, samples: int = 0, info: Any = None) -> Any:
    """Run `edgeq.process.worker` task `task` on `model` in a child process and return its result.

    The child may take `timeout_s`, by default `time_limit` of the model (`info`, read here
    when not given) and the `samples` it runs on.

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
    if info is None and timeout_s is None:
        info = _info(model, source)
    limit = time_limit(info, samples) if timeout_s is None else timeout_s
    # The child's runners check the model before its interpreter sees it (edgeq.formats:
    # tensor sizes, kernel_limits) and name it by `source` in what they refuse.
    args = {**(args or {}), "source": str(source)}
    request = json.dumps({"task": task, "args": args}).encode() + b"\n" + bytes(model)
    try:
        proc = subprocess.run(python_command("edgeq.process.worker"), input=request,
                              capture_output=True, timeout=limit, check=False)
    except subprocess.TimeoutExpired:
        what = f"did not finish within {limit:g} s"
        if not user_file:
            raise ConversionError(stage, what, hint=f"set {TIMEOUT_ENV} (seconds) to allow "
                                  "longer") from None
        raise ModelFileError(source, f"{stage} {what} ({_limit_text(info, samples)}); it "
                             "may loop forever (a WHILE whose condition never turns false)",
                             hint=f"set {TIMEOUT_ENV} (seconds) to allow longer if the model "
                             "is only slow") from None
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


def _info(model: bytes, source: str | Path) -> Any:
    """The model's values for its time limit; None for bytes that are no model (the worker's
    own checks name what is wrong with them)."""
    from edgeq.formats.tflite import read_model

    try:
        return read_model(bytes(model), source)
    except EdgeqError:
        return None


def _limit_text(info: Any, samples: int) -> str:
    if os.environ.get(TIMEOUT_ENV):
        return f"the limit {TIMEOUT_ENV} sets"
    if info is None:
        return "the limit for loading a model"
    macs, _ = model_work(info)
    runs = f" on {samples} input(s)" if samples else ", loading it"
    return (f"the limit for this model's work: {len(info.ops)} op(s), {macs:,} MACs per "
            f"inference{runs}")


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
