"""Does a converted 16x8 model run on the target's runtime? Run it once and see.

The converter makes int16 versions of ops whose runtime kernels have none: LiteRT 2.21's
SQUARED_DIFFERENCE takes float32, int32 and int8 only ("SquaredDifference only supports FLOAT32
and INT32 now, got 7", raised at invoke, not at prepare). A table of such gaps would go stale
with every LiteRT release; one invoke on the runtime that verifies the model is the ground
truth, and it is cheap. The failure becomes exit 3 naming the op, instead of an internal error
in the verify stage.
"""

from __future__ import annotations

import re

import numpy as np

from edgeq.errors import ConversionError, UnsupportedOpsError

_FAILED = re.compile(r"\((\w+)\) failed to (?:invoke|prepare)")
INT16_ALTERNATIVES = ("use --recipe int8 (int8 activations run every op here), or --method auto "
                      "--max-drop PP to search the int8 stages")


def int16_problem(model: bytes, sample: np.ndarray, target_name: str, *, threads: int = 1
                  ) -> UnsupportedOpsError | None:
    """The error that names the op LiteRT cannot run in this 16x8 model, or None when one
    sample runs."""
    from edgeq.adapters.litert import LiteRTRunner

    try:
        LiteRTRunner(model, threads=threads, source="the 16x8 model").run(sample[:1])
    except (RuntimeError, ConversionError) as exc:
        text = str(exc)
        m = _FAILED.search(text)
        op = m.group(1) if m else "?"
        detail = next((ln.strip() for ln in text.splitlines() if ln.strip()), text)
        detail = detail.split("Node number")[0].strip().rstrip(".")
        return UnsupportedOpsError(
            target_name, [op],
            hint=f"{op} has no int16 (16x8) kernel in LiteRT ({detail}); {INT16_ALTERNATIVES}")
    return None


def check_int16(model: bytes, sample: np.ndarray, target_name: str) -> None:
    problem = int16_problem(model, sample, target_name)
    if problem is not None:
        raise problem
