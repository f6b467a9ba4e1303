"""Captures what native code (C++ printf/stderr) writes, so it reaches the report, not the user.

TF's converter and TFLite Micro print from C++ straight to file descriptors 1 and 2; Python's
`sys.stdout` redirection does not see that, so we swap the descriptors themselves.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import IO, Iterator

# Set by the supervisor (edgeq.process.supervise): a private directory where captures are
# written under a name, so that what native code printed before crashing the process survives it.
NATIVE_LOG_ENV = "EDGEQ_NATIVE_LOG_DIR"
_TAIL_BYTES = 64 << 10
# TF/absl log lines (F = fatal, E = error), MLIR diagnostics, TFLite's error reporter, CHECKs.
_ERROR_LINE = re.compile(r"^(?:[FE]\d{4} |.*\berror: |ERROR: |.*Check failed)")
_ABSL_PREFIX = re.compile(r"^[FEWI]\d{4} [\d:. ]+\d+ [\w./-]+:\d+\] ")
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class Captured:
    """Filled with the captured text when the `capture_fds` block exits."""

    text: str = ""


@contextlib.contextmanager
def capture_fds(fds: tuple[int, ...] = (1, 2)) -> Iterator[Captured]:
    result = Captured()
    sys.stdout.flush()
    sys.stderr.flush()
    saved = {fd: os.dup(fd) for fd in fds}
    with _sink() as sink:
        for fd in fds:
            os.dup2(sink.fileno(), fd)
        try:
            yield result
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            for fd, copy in saved.items():
                os.dup2(copy, fd)
                os.close(copy)
            sink.seek(0)
            result.text = sink.read().decode("utf-8", errors="replace")


def _sink() -> IO[bytes]:
    directory = os.environ.get(NATIVE_LOG_ENV)
    if directory and os.path.isdir(directory):
        # Removed when the block ends; left behind only if the process dies inside it.
        return tempfile.NamedTemporaryFile(dir=directory, prefix=f"capture-{os.getpid()}-")
    return tempfile.TemporaryFile()


def last_native_error(directory: str | Path, pid: int) -> str | None:
    """The last error line native code wrote inside a capture block of process ``pid`` that
    never ended (the process died in it), as one printable line; None when there is none.
    (Other processes sharing the directory, such as the interpreter workers, are not looked at.)

    Only lines that look like errors count (absl F/E lines, MLIR "error:", TFLite "ERROR:",
    "Check failed"), so progress chatter is not mistaken for the cause. The text may name the
    model's ops and tensors; control characters and escape sequences are removed.
    """
    files = sorted(Path(directory).glob(f"capture-{pid}-*"), key=lambda f: f.stat().st_mtime)
    for f in reversed(files):
        with f.open("rb") as fh:
            fh.seek(max(0, f.stat().st_size - _TAIL_BYTES))
            lines = fh.read().decode("utf-8", errors="replace").splitlines()
        for line in reversed(lines):
            if _ERROR_LINE.match(line):
                clean = _CONTROL.sub("", _ANSI.sub("", _ABSL_PREFIX.sub("", line))).strip()
                return clean[:300] if clean else None
    return None


def import_tensorflow_quietly() -> None:
    """Import TensorFlow and Keras with their C++ start-up log lines (oneDNN, CUDA probing)
    kept off the terminal; TF_CPP_MIN_LOG_LEVEL does not silence absl's early messages."""
    if "tensorflow" in sys.modules:
        return
    with capture_fds():
        import keras  # noqa: F401
        import tensorflow as tf

        # Device discovery (CUDA probing) logs on first use; do it here, under the capture.
        tf.config.list_physical_devices()
