"""TensorFlow's temporary files in a private directory that is removed at the end of the run.

Autograph writes every function it converts (each `tf.function` traced while converting,
calibrating or training) as `__autograph_generated_file*.py` in `tempfile.gettempdir()` and
imports it; it removes the .py at exit, but Python has written the compiled
`__pycache__/__autograph_generated_file*.cpython-*.pyc` beside it, and nothing removes that: every
convert left files in the user's $TMPDIR, on success and on error (issue 22). Python's
`tempfile` reads its directory from `tempfile.tempdir` on every call, so pointing it at a
directory of the run's own catches them all, whichever module asks.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Iterator

_ACTIVE = threading.local()


@contextlib.contextmanager
def private_tempdir() -> Iterator[Path]:
    """`tempfile`'s directory is a fresh private one (mode 0700) while this runs; removed after,
    with whatever TensorFlow (or anything else using `tempfile`) left in it. Re-entrant."""
    if getattr(_ACTIVE, "path", None) is not None:
        yield _ACTIVE.path
        return
    private = Path(tempfile.mkdtemp(prefix="edgeq-run-"))
    previous = tempfile.tempdir
    tempfile.tempdir = str(private)
    _ACTIVE.path = private
    try:
        yield private
    finally:
        _ACTIVE.path = None
        tempfile.tempdir = previous
        shutil.rmtree(private, ignore_errors=True)
