"""Python child processes: the one place that builds their command line (isolated from the
working directory, importing edgeq from where this process did, dying with this process), and
what it means when one ends by a signal.

Why isolated: `python -m X` puts the current directory first on the import path, so a `json.py`
or `random.py` lying where the user stands (often a folder of downloaded models) would run
inside edgeq. Every child therefore starts in Python's isolated mode (`-I`: no working
directory or script folder on the path, no user site, PYTHON* variables ignored) and is then
given the import path of this process minus the working directory, so it finds its packages
where this process found them (a `pip install --user`, a PYTHONPATH the user set), and the
edgeq package itself is loaded from this process's copy by location (a source checkout run
from its own folder, an editable install of another checkout: the child still runs this code).
Environment variables other than PYTHON* (EDGEQ_*, TF_CPP_MIN_LOG_LEVEL, CUDA_*, the
supervisor's stage pipe) reach the child as before; of Python's own settings, the UTF-8 mode
and the warning options are passed on as flags.

Why it dies with this process: a child in its own process group (the supervised command) is
not stopped when edgeq is killed; it used to finish and write its outputs seconds later. On
Linux the child asks the kernel for SIGKILL when its parent ends (`PR_SET_PDEATHSIG`), first
thing, then checks that the parent is still the one that started it (it may have died before
the request). The kernel sends the signal when the *thread* that started the child ends; edgeq
starts children with `subprocess.run`/`Popen` and waits for them in the same thread, so that
thread outlives its child. A grandchild (an interpreter worker or Vela under the supervised
command) makes the same request of its own parent, so a kill takes the whole tree down. A pipe
the child watches would work on every system but needs a thread in the child, which cannot
run while native code holds the interpreter lock (TensorFlow, TFLite Micro); elsewhere than
Linux the supervised command stops at its next stage boundary instead (`supervise.mark`).
"""

from __future__ import annotations

import os
import signal
import sys

# A crash in the child's own code: the classification by stage (bad input or edgeq's bug)
# stands. Any other signal came from outside: the kernel's OOM killer, a job limit, a user.
CRASH_SIGNALS = frozenset({signal.SIGSEGV, signal.SIGABRT, signal.SIGBUS, signal.SIGFPE,
                           signal.SIGILL, signal.SIGTRAP, signal.SIGSYS})
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>

# Run by `python -I -c`. Start-up has imported only from the standard library and site-packages
# (-I); from here on imports follow this process's path, except edgeq itself, which is loaded
# from this process's package folder (by location: no folder is put on the path for it, so
# nothing else in a source checkout can shadow a module). The rest is edgeq's own code.
_BOOTSTRAP = """\
import sys
sys.path[:] = {path!r}
if {package!r}:
    from importlib.util import module_from_spec, spec_from_file_location
    spec = spec_from_file_location("edgeq", {init!r}, submodule_search_locations={package!r})
    sys.modules["edgeq"] = module_from_spec(spec)
    spec.loader.exec_module(sys.modules["edgeq"])
from edgeq.process.spawn import run_child
run_child({parent}, {module!r})
"""


def python_command(module: str, *args: str) -> list[str]:
    """The command line of a child that runs ``python -m MODULE ARGS`` isolated (see above)."""
    flags = ["-I"]
    if sys.flags.utf8_mode:
        flags += ["-X", "utf8"]
    for option in sys.warnoptions:
        flags += ["-W", option]
    edgeq = sys.modules["edgeq"]
    init = getattr(edgeq, "__file__", None)
    package = [str(p) for p in getattr(edgeq, "__path__", [])] if init else []
    code = _BOOTSTRAP.format(path=import_path(), package=package, init=init,
                             parent=os.getpid(), module=module)
    return [sys.executable, *flags, "-c", code, *args]


# Run by `python -I -c` in front of a native tool: the same request as `_die_with`, then the
# tool replaces this process (same pid, and the request survives exec).
_TIED = """\
import ctypes, os, signal, sys
try:
    ctypes.CDLL(None).prctl({request}, int(signal.SIGKILL), 0, 0, 0)
except (OSError, AttributeError):
    pass
if os.getppid() != {parent}:
    os.kill(os.getpid(), signal.SIGKILL)
try:
    os.execv(sys.argv[1], sys.argv[1:])
except OSError as exc:
    sys.stderr.write(f"{{sys.argv[1]}}: {{exc.strerror}}\\n")
    os._exit(127)
"""


def tied_command(cmd: list[str] | tuple[str, ...]) -> list[str]:
    """The command line of a long-running native tool (QEMU, the Edge TPU compiler) that dies
    with this process, as Python children do (see above): a few milliseconds of a bare
    isolated Python, which then becomes the tool. ``cmd[0]`` must be a path (no PATH search).
    Elsewhere than Linux, the command as it is."""
    if not sys.platform.startswith("linux"):
        return list(cmd)
    code = _TIED.format(request=_PR_SET_PDEATHSIG, parent=os.getpid())
    # Made absolute here: the tool may be started in another working directory.
    return [sys.executable, "-I", "-S", "-c", code, os.path.abspath(cmd[0]), *map(str, cmd[1:])]


def import_path() -> list[str]:
    """This process's import path without the working directory (as '' or by name)."""
    cwd = os.path.realpath(os.getcwd())
    path: list[str] = []
    for entry in sys.path:
        if not isinstance(entry, (str, os.PathLike)):
            continue
        entry = os.fspath(entry)
        # '' and '.' are the working directory too; other relative entries (an editable
        # install's finder placeholder) are kept as they are.
        if entry not in path and os.path.realpath(entry or ".") != cwd:
            path.append(entry)
    return path


def run_child(parent: int, module: str) -> None:
    """Child side, first code after the bootstrap: die with `parent`, then run `module` as
    `python -m` would (``__name__ == "__main__"``, ``sys.argv[0]`` its file)."""
    _die_with(parent)
    import runpy

    runpy.run_module(module, run_name="__main__", alter_sys=True)


def _die_with(parent: int) -> None:
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):
            pass
    # The parent may have ended before the request: this process was then handed to another
    # (init, a subreaper) already, and ends as the request would have made it end.
    if os.getppid() != parent:
        os.kill(os.getpid(), signal.SIGKILL)


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def is_crash(number: int) -> bool:
    """Whether death by signal `number` is the child's own crash (not a kill from outside)."""
    return number in CRASH_SIGNALS


def raise_if_killed(stage: str, returncode: int) -> None:
    """For a child in edgeq's process group (an interpreter worker, Vela) that ended by a
    signal other than a crash: SIGINT is the terminal's Ctrl-C, which reached the child with
    edgeq (KeyboardInterrupt: edgeq stops as on Ctrl-C); any other came from outside
    (KilledError, exit 128 + N). Crashes and exit statuses are the caller's to read."""
    if returncode >= 0 or is_crash(-returncode):
        return
    if -returncode == signal.SIGINT:
        raise KeyboardInterrupt
    from edgeq.errors import KilledError

    raise KilledError(stage, -returncode)
