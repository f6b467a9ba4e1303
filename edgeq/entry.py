"""The `edgeq` program's first code (console script and `python -m edgeq`): Ctrl-C is handled
from here on, before click, numpy or TensorFlow are imported.

Python turns Ctrl-C into a KeyboardInterrupt wherever it happens to be; during the start-up
imports nothing catches it, so the user saw a traceback. Until the CLI has its own handling in
place (`arm`), a Ctrl-C ends the process at once with one line: nothing has been read or
written yet, so there is nothing to clean up. Once armed, a Ctrl-C raises KeyboardInterrupt
again, so that the work under way unwinds (temporary files removed, outputs old or new, see
`edgeq.outputs.atomic`) and the CLI reports it as exit 130.

Importing this module installs that handler, so only the program imports it (the console
script and `python -m edgeq`); the library and the tests never do.
"""

# Before any other import: _signal is built into the interpreter, so there is nothing to wait
# for, and a Ctrl-C from here on is handled (`signal` itself imports enum and functools).
import _signal


def _leave_now(signum, frame):  # noqa: ANN001 - a signal handler
    # Self-contained: it may run before the imports below. sys is built in and os was loaded
    # by the interpreter's start-up, so neither import waits. The words are
    # edgeq.status.INTERRUPTED's (tests/e2e/test_robustness.py checks the line).
    import os
    import sys

    try:
        sys.stderr.write("edgeq: error: interrupted; no partial output was left (outputs are "
                         "the old or the new set)\n")
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:  # a closed pipe or a second Ctrl-C must not stop the exit
        pass
    os._exit(130)


# Not when SIGINT is ignored (nohup, a background job): it stays ignored.
if _signal.getsignal(_signal.SIGINT) is _signal.default_int_handler:
    _signal.signal(_signal.SIGINT, _leave_now)

import os  # noqa: E402 - after the handler, on purpose
import signal  # noqa: E402
import sys  # noqa: E402

from edgeq.status import INTERRUPTED, ExitStatus  # noqa: E402


def main() -> int:
    """Run the command line; the process's exit status."""
    _tell_supervisor()
    try:
        from edgeq.cli import main as cli_main

        code = cli_main(on_ready=arm)
    except KeyboardInterrupt:  # between arming and the CLI's own handler, or after it
        leave(ExitStatus.INTERRUPTED, INTERRUPTED)
    # The work is done and reported; a Ctrl-C now would only interrupt interpreter shutdown.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if code == ExitStatus.INTERRUPTED:
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
    os._exit(int(code))


def _tell_supervisor() -> None:
    from edgeq.process.supervise import report_ready

    report_ready()
