"""The `edgeq` program's first code (console script and `python -m edgeq`): Ctrl-C is handled
from here on, before click, numpy or TensorFlow are imported.

Python turns Ctrl-C into a KeyboardInterrupt wherever it happens to be; during the start-up
imports nothing catches it, so the user saw a traceback. Until the CLI has its own handling in
place (`arm`), a Ctrl-C ends the process at once with one line: nothing has been read or
written yet, so there is nothing to clean up. Once armed, a Ctrl-C raises KeyboardInterrupt
again, so that the work under way unwinds (temporary files removed, outputs old or new, see
`edgeq.outputs`) and the CLI reports it as exit 130.

Importing this module changes nothing; `main` does, and only the program calls it.
"""

from __future__ import annotations

import os
import signal
import sys

INTERRUPTED = "interrupted; no partial output was left (outputs are the old or the new set)"
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what shells report for a Ctrl-C
# Written by a supervised child (edgeq.supervise) on its stage pipe as soon as a Ctrl-C would
# stop it cleanly; before that the supervisor kills it instead of forwarding the signal.
READY = "\x00ready"
STAGE_FD_ENV = "EDGEQ_STAGE_FD"


def main() -> int:
    """Run the command line; the process's exit status."""
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        # Not when SIGINT is ignored (nohup, a background job): keep it ignored.
        signal.signal(signal.SIGINT, _leave_now)
    _tell_supervisor()
    try:
        from edgeq.cli import main as cli_main

        code = cli_main()
    except KeyboardInterrupt:  # between arming and the CLI's own handler, or after it
        leave(EXIT_INTERRUPTED, INTERRUPTED)
    # The work is done and reported; a Ctrl-C now would only interrupt interpreter shutdown.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if code == EXIT_INTERRUPTED:
        # An interrupted `import tensorflow` can abort in its destructors at shutdown and print
        # a second, misleading message; the run is over, so skip them.
        leave(code)
    return code


def arm() -> None:
    """From now on a Ctrl-C raises KeyboardInterrupt (the CLI catches it: exit 130)."""
    if signal.getsignal(signal.SIGINT) is _leave_now:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def leave(code: int, message: str | None = None) -> None:
    """Exit at once with ``code``, after one error line and flushing what was printed."""
    try:
        if message:
            sys.stderr.write(f"edgeq: error: {message}\n")
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
    except BaseException:  # a closed pipe or a second Ctrl-C must not stop the exit
        pass
    os._exit(code)


def _leave_now(signum: int, frame: object) -> None:
    leave(EXIT_INTERRUPTED, INTERRUPTED)


def _tell_supervisor() -> None:
    fd = os.environ.get(STAGE_FD_ENV)
    if fd:
        try:
            os.write(int(fd), f"{READY}\n".encode())
        except (OSError, ValueError):
            pass
