"""The `edgeq` command line: one module per command, each parsing its options, calling the
library (edgeq.commands), rendering the result (edgeq.cli.render); this module holds the group
and maps errors to exit codes. No conversion logic lives here, and nothing heavy is imported at
start-up so that `edgeq --help` answers at once (the command modules import only click)."""

from __future__ import annotations

import os
import signal
import sys
import traceback
import warnings
from typing import Callable

import click

from edgeq import __version__
from edgeq.errors import EdgeqError
from edgeq.status import INTERRUPTED, ExitStatus


class _State:
    debug = False


def _quiet_tensorflow() -> None:
    """TF and absl write start-up chatter to stderr; users see it only with --debug."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    warnings.filterwarnings("ignore")
    import logging

    for name in ("tensorflow", "absl", "keras", "h5py"):
        logging.getLogger(name).setLevel(logging.ERROR)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgeq")
@click.option("--debug", is_flag=True, help="Show tracebacks and the tools' own output.")
def cli(debug: bool) -> None:
    """edgeq: a Keras model to a verified, deployable integer TFLite model for an edge device."""
    _State.debug = debug
    if not debug:
        _quiet_tensorflow()


def _add_commands() -> None:
    from edgeq.cli.analyze import analyze
    from edgeq.cli.convert import convert
    from edgeq.cli.embed import embed
    from edgeq.cli.emulate import emulate
    from edgeq.cli.inspect import inspect
    from edgeq.cli.targets import targets
    from edgeq.cli.verify import verify

    for command in (convert, analyze, inspect, verify, embed, emulate, targets):
        cli.add_command(command)


_add_commands()


def main(argv: list[str] | None = None, on_ready: Callable[[], None] | None = None) -> int:
    """Console entry point; returns the exit status (the script wrapper exits with it).

    Called without ``argv`` (the `edgeq` script, `python -m edgeq`), commands that run native
    conversion code in-process run under a supervisor process (edgeq.process.supervise) that turns a
    crash or hang into one error line; called with ``argv`` (tests, scripts), in this process.
    ``on_ready`` runs once the start-up imports are done (edgeq.entry passes its `arm`: from then
    on a Ctrl-C unwinds the work instead of leaving at once).
    """
    if argv is None:
        from edgeq.process import supervise

        if supervise.wanted(sys.argv[1:]):
            return supervise.run(sys.argv[1:])
        supervise.guard_interrupts()
        code = _run(argv, on_ready=on_ready)
        if supervise.interrupted() and code == ExitStatus.OK:  # swallowed by a callback late
            _error(INTERRUPTED)
            code = int(ExitStatus.INTERRUPTED)
        supervise.report_exit(code)
        # The work is done; a Ctrl-C during interpreter shutdown (TF's threads, garbage
        # collection) would only print a stray KeyboardInterrupt traceback.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        return code
    return _run(argv)


def _run(argv: list[str] | None, on_ready: Callable[[], None] | None = None) -> int:
    try:
        if on_ready is not None:  # the start-up imports are done
            on_ready()
        cli.main(args=argv, prog_name="edgeq", standalone_mode=False)
    except click.exceptions.Exit as exc:  # --help, --version
        return int(exc.exit_code)
    except click.ClickException as exc:  # usage errors found by click itself
        from edgeq.outputs.text import terminal

        exc.message = terminal(exc.message)  # it may quote the user's value
        exc.show()
        return int(ExitStatus.BAD_INPUT)
    except click.exceptions.Abort:
        _error(INTERRUPTED)
        return int(ExitStatus.INTERRUPTED)
    except EdgeqError as exc:
        if _State.debug:
            traceback.print_exc()
        _error(str(exc))
        return int(exc.exit_status)
    except KeyboardInterrupt:
        _error(INTERRUPTED)
        return int(ExitStatus.INTERRUPTED)
    except Exception as exc:  # a bug: say so plainly; the traceback is one flag away
        if _State.debug:
            traceback.print_exc()
        first = (str(exc).strip().splitlines() or [""])[0]
        _error(f"internal error: {type(exc).__name__}: {first} "
               "(rerun with --debug for the traceback, and please report it)")
        return int(ExitStatus.ERROR)
    return int(ExitStatus.OK)


def _error(message: str) -> None:
    # Messages name files, layers, tensors and op codes: their control characters are shown
    # escaped, so the error stays one line and cannot drive the terminal.
    from edgeq.outputs.text import terminal

    click.echo(f"edgeq: error: {terminal(message)}", err=True)

