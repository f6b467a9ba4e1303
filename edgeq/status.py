"""Process exit codes: the contract scripts and CI jobs rely on (ARCHITECTURE.md)."""

from __future__ import annotations

import enum


class ExitStatus(enum.IntEnum):
    OK = 0
    ERROR = 1  # internal error: a bug in edgeq or a tool it drives
    BAD_INPUT = 2  # usage error or bad input (model, data, target, output path)
    TARGET_CONSTRAINT = 3  # the model cannot run on the target or is over its budget
    ACCURACY_GATE = 4  # the model got worse than the user's accuracy budget allows
    INTERRUPTED = 130  # Ctrl-C (SIGINT): 128 + 2, as shells report it; outputs old or new


def killed(signal_number: int) -> int:
    """The exit status after a process of the run was killed by signal N from outside edgeq
    (the kernel's OOM killer, a CI job limit, a user): 128 + N, what a shell reports for a
    process killed by it, so scripts and CI read 137 (SIGKILL) or 143 (SIGTERM) as they would
    from edgeq itself being killed; never 1 or 2, which would blame edgeq or the input."""
    return 128 + int(signal_number)


# The one line a Ctrl-C ends with, wherever it lands (edgeq.entry, edgeq.cli, edgeq.process.supervise).
INTERRUPTED = "interrupted; no partial output was left (outputs are the old or the new set)"
