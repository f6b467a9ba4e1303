"""Crash and hang isolation for `edgeq convert` (and `analyze`, `emulate`): a thin parent
process runs the real command in a child and turns a native crash or a stage past its time
limit into one error line.

Why a parent and not a child per stage: the conversion stages share a TensorFlow process
(loaded model, traced functions); a child per stage would import TensorFlow again each time,
and `tools/bench_convert.py` holds convert to 1.3x a plain converter script. The parent imports
nothing heavy (about 0.1 s) and does no work; the child runs the command exactly as before and
reports each stage it enters on a pipe (`mark`). When the child dies of a signal, the parent
knows which stage it was in; when a stage outlives its limit, the parent kills the child's
process group (Vela included) and says so. In-process interpreter work on user files is
isolated separately (`edgeq.process.isolation`).

The child is a Python child as `edgeq.process.spawn` starts them all: isolated from the working
directory (a `json.py` there never runs), running this process's edgeq, and ended by the kernel
when this process ends, however it ends (`kill -9` included), with everything it started.

Ctrl-C: the child runs in its own process group, so the terminal's SIGINT reaches only the
parent, which forwards it once; the child stops cleanly (exit 130, outputs untouched or
complete, see `edgeq.outputs.atomic`). A SIGTERM to the parent is forwarded the same way, as the
SIGINT the child knows how to stop on cleanly. A second one kills the child outright, and so
does a first one that comes before the child has said it is ready (edgeq.entry): Python's own
start-up would print a traceback, and a child that far back has read and written nothing.

How the child's end reads: an exit status is passed through; death by a crash signal (SIGSEGV,
SIGABRT, ...) names the stage, as bad input in the stages that read the user's files (exit 2)
and as edgeq's bug elsewhere (exit 1); death by any other signal (SIGKILL from the OOM killer,
a job limit's SIGTERM) that edgeq did not send says so, with exit 128 + N (`KilledError`).

`EDGEQ_NO_SUPERVISOR=1` runs the command in one process (for debuggers and profilers).
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time

# Commands that run TensorFlow or TFLite Micro in-process (analyze converts a Keras model first).
SUPERVISED = ("convert", "emulate", "analyze")
STAGE_FD_ENV = "EDGEQ_STAGE_FD"
TIMEOUT_ENV = "EDGEQ_STAGE_TIMEOUT"
DEFAULT_LIMIT_S = 3600.0
# Stages that read the user's files: a crash there is a bad input (exit 2), elsewhere edgeq's.
_INPUT_STAGES = ("start", "load", "check data")


def wanted(argv: list[str]) -> bool:
    """Whether this command line should run under a supervisor."""
    if os.environ.get("EDGEQ_NO_SUPERVISOR") == "1" or os.environ.get(STAGE_FD_ENV):
        return False
    command = next((a for a in argv if not a.startswith("-")), None)
    return command in SUPERVISED and not {"-h", "--help"} & set(argv)


def stage_limit(name: str) -> float:
    value = os.environ.get(TIMEOUT_ENV)
    try:
        return float(value) if value else DEFAULT_LIMIT_S
    except ValueError:
        return DEFAULT_LIMIT_S


_SWALLOWED: list[object] = []  # Ctrl-Cs that landed in a callback Python could not raise from


def guard_interrupts() -> None:
    """Ctrl-C raises KeyboardInterrupt wherever Python happens to be; inside a weakref or
    __del__ callback (TensorFlow's garbage runs many) Python cannot raise it and prints
    "Exception ignored in ..." with a traceback, and the run goes on as if nothing happened.
    Record those instead: the next stage boundary (`mark`) raises them, and `interrupted()`
    tells the CLI at the end."""
    previous = sys.unraisablehook

    def hook(unraisable) -> None:
        if unraisable.exc_type is not None and issubclass(unraisable.exc_type, KeyboardInterrupt):
            _SWALLOWED.append(unraisable.exc_type)
            return
        previous(unraisable)

    sys.unraisablehook = hook


def interrupted() -> bool:
    return bool(_SWALLOWED)


def report_exit(code: int) -> None:
    """Child side: the command is over and has said what it had to; only interpreter shutdown
    is left. A crash there (an interrupted `import tensorflow` can abort in its destructors)
    must not turn into a second message from the supervisor."""
    _tell(f"{_EXIT}\t{int(code)}")


_EXIT = "\x00exit"  # not a stage name: the child's final status
# Written by the child (edgeq.entry) as soon as a Ctrl-C would stop it cleanly; before that the
# supervisor kills it instead of forwarding the signal.
READY = "\x00ready"

def mark(stage: str) -> None:
    """Child side: tell the supervisor (if any) which stage starts now; a Ctrl-C swallowed by
    a callback during the last stage stops the run here, and so does a supervisor that is gone
    (killed: on Linux the kernel has ended this process already, see edgeq.process.spawn)."""
    if _SWALLOWED or not _tell(f"{stage}\t{stage_limit(stage)}"):
        raise KeyboardInterrupt


def report_ready() -> None:
    """Child side: a Ctrl-C from here on stops the command cleanly (edgeq.entry)."""
    _tell(READY)


def _tell(line: str) -> bool:
    """One line to the supervisor over its stage pipe; nothing when there is no supervisor.
    False when the supervisor is gone: the pipe's reading end closes only with its process."""
    fd = os.environ.get(STAGE_FD_ENV)
    if fd:
        try:
            os.write(int(fd), f"{line}\n".encode())
        except BrokenPipeError:
            return False
        except (OSError, ValueError):
            pass
    return True


def run(argv: list[str], command: list[str] | None = None) -> int:
    """Parent side: run `edgeq ARGV` (or `command`, for tests) in a child; its exit status.

    The child's native-output captures go to a private directory (edgeq.adapters.native), so
    that a crash can be reported with the last error the converter or interpreter printed."""
    import shutil
    import tempfile

    from edgeq.adapters.native import NATIVE_LOG_ENV, last_native_error
    from edgeq.errors import KilledError
    from edgeq.process.spawn import is_crash, python_command, signal_name
    from edgeq.status import INTERRUPTED

    interrupts: list[int] = []
    child: subprocess.Popen | None = None
    ready = False  # the child said that a Ctrl-C now stops it cleanly (edgeq.entry)

    def forward(number, frame):
        interrupts.append(number)
        if child is None:
            return
        try:
            if len(interrupts) == 1 and ready:
                os.kill(child.pid, signal.SIGINT)
            else:  # a second Ctrl-C, or a child still starting Python: it has done nothing
                os.killpg(child.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    # Installed before the child exists, so that no Ctrl-C can leave it running unattended.
    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    read_end, write_end = os.pipe()
    stage, limit, started = "start", stage_limit("start"), time.monotonic()
    reported: int | None = None
    log_dir = tempfile.mkdtemp(prefix="edgeq-native-")
    said = None  # the last error line native code printed before a crash
    try:
        env = dict(os.environ, **{STAGE_FD_ENV: str(write_end), NATIVE_LOG_ENV: log_dir})
        group = {"process_group": 0} if sys.version_info >= (3, 11) \
            else {"preexec_fn": os.setpgrp}
        if not interrupts:
            child = subprocess.Popen(command or python_command("edgeq", *argv),
                                     env=env, pass_fds=(write_end,), **group)
        os.close(write_end)
        if child is None:
            _error(INTERRUPTED)
            return 130
        if interrupts:  # it came while the child was being started
            forward(interrupts.pop(), None)
        pending = b""
        while True:
            remaining = started + limit - time.monotonic()
            if remaining <= 0:
                _kill_group(child)
                _error(f"{stage} did not finish within {limit:g} s; stopped it (set "
                       f"{TIMEOUT_ENV} to allow longer)")
                return 1
            try:
                readable, _, _ = select.select([read_end], [], [], min(remaining, 1.0))
            except InterruptedError:
                continue
            if not readable:
                continue
            chunk = os.read(read_end, 4096)
            if not chunk:
                break
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                name, _, value = line.decode("utf-8", "replace").partition("\t")
                if name == READY:
                    ready = True
                elif name == _EXIT:
                    reported = int(value)
                else:
                    stage, started = name or stage, time.monotonic()
                    limit = float(value) if value else stage_limit(stage)
        code = child.wait()
        if code < 0:
            said = last_native_error(log_dir, child.pid)
    finally:
        shutil.rmtree(log_dir, ignore_errors=True)
        os.close(read_end)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if code >= 0:
        return code
    if reported is not None:  # it died in interpreter shutdown, after its own final word
        return reported
    if interrupts:  # the child died of the signal (or was killed) before it could say so
        _error(INTERRUPTED)
        return 130
    if not is_crash(-code):
        killed = KilledError(stage, -code)
        _error(str(killed))
        return int(killed.exit_status)
    name = signal_name(-code)
    said = f"; its last message: {said!r}" if said else ""
    if stage in _INPUT_STAGES:
        _error(f"{stage} crashed in native code ({name}) reading the input files{said}; they "
               "may be corrupt (rerun with --debug for details)")
        return 2
    _error(f"{stage} crashed in native code ({name}){said}; this is a bug in edgeq or the tool "
           "it runs, please report it with the model (outputs are untouched)")
    return 1


def _kill_group(child: subprocess.Popen) -> None:
    try:
        os.killpg(child.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    child.wait()


def _error(message: str) -> None:
    sys.stderr.write(f"edgeq: error: {message}\n")
    sys.stderr.flush()
