"""The library API, one import for scripts and notebooks: each command's entry point returns
a value (a report, an analysis, an outcome) and never prints.

    from edgeq.api import ConvertOptions, convert
    result = convert(ConvertOptions(model="m.keras", target="cortex-m4", data="calib.npz"))

The entry points live in `edgeq.commands` (one module per command); `edgeq.testing` has the
assertion form of `verify` for test suites.
"""

from edgeq.commands.analyze import Analysis, analyze
from edgeq.commands.convert import ConvertResult, Progress, convert
from edgeq.commands.convert_options import ConvertOptions
from edgeq.commands.inspect import inspect_model
from edgeq.commands.verify import VerifyOutcome, verify_model

__all__ = ["Analysis", "ConvertOptions", "ConvertResult", "Progress", "VerifyOutcome", "analyze",
           "convert", "inspect_model", "verify_model"]
