"""Captures what native code (C++ printf/stderr) writes, so it reaches the report, not the user.

TF's converter and TFLite Micro print from C++ straight to file descriptors 1 and 2; Python's
`sys.stdout` redirection does not see that, so we swap the descriptors themselves.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from typing import Iterator


class Captured:
    """Filled with the captured text when the `capture_fds` block exits."""

    text: str = ""


@contextlib.contextmanager
def capture_fds(fds: tuple[int, ...] = (1, 2)) -> Iterator[Captured]:
    result = Captured()
    sys.stdout.flush()
    sys.stderr.flush()
    saved = {fd: os.dup(fd) for fd in fds}
    with tempfile.TemporaryFile() as sink:
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
