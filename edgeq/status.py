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


# The one line a Ctrl-C ends with, wherever it lands (edgeq.entry, edgeq.cli, edgeq.process.supervise).
INTERRUPTED = "interrupted; no partial output was left (outputs are the old or the new set)"
