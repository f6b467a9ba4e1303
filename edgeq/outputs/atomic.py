"""Writes a run's outputs all at once, or not at all.

Files are staged in a temporary directory beside the output directory and moved into place
only when every one of them is written, so an interrupted or crashed run leaves either the old
outputs or the complete new set, never a mix and never a half-written file:

- a new output directory appears in one rename;
- an existing one is swapped for the staged one in one atomic exchange (Linux renameat2
  RENAME_EXCHANGE); files of the old directory that are not outputs of this run are carried
  over as hard links first. Where the exchange is not available (another OS, another file
  system) or an entry cannot be carried over, files are replaced one by one with os.replace;
- Ctrl-C (SIGINT/SIGTERM) during the move is held back until the move is done, then raised.

A run killed outright (SIGKILL, including the kernel's kill of a supervised child whose edgeq
was killed) cannot clean up: its staging directory stays behind. It is hidden (a dot name with
`STAGING_MARK`), never read as outputs, and carries its owner's pid and host, so the next run
writing to the same place removes those whose process is gone from this machine.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import stat
import tempfile
import threading
from pathlib import Path
from typing import Iterator

from edgeq.errors import OutputExistsError, UsageError

STAGING_MARK = ".edgeq-tmp-"
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def check_out_dir(out_dir: Path, option: str = "--out") -> None:
    """Fail before any work when the output directory cannot be one: the path, or a folder
    above it, is a file. (Found at the end, it cost a whole run and read as an internal
    error.)"""
    out_dir = Path(out_dir)
    for path in (out_dir, *out_dir.parents):
        if path.is_dir():
            return
        if path.exists():
            where = "is a file" if path == out_dir else f"lies under '{path}', which is a file"
            raise UsageError(f"{option} '{out_dir}' {where}, not a directory",
                             hint=f"give {option} a directory (it is created when missing)")


def check_file_path(path: Path, option: str) -> None:
    """The same for an output file: it must not be a directory, nor lie under a file."""
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{option} '{path}' is a directory", hint=f"give {option} a file name")
    check_out_dir(path.parent, option)


def check_free(out_dir: Path, names: list[str], overwrite: bool) -> None:
    """Fail before any work is done when an output would replace a file without --overwrite."""
    if overwrite:
        return
    for name in names:
        if (out_dir / name).exists():
            raise OutputExistsError(out_dir / name)


def write_outputs(out_dir: Path, files: dict[str, bytes], *, overwrite: bool) -> dict[str, Path]:
    out_dir = Path(out_dir)
    check_free(out_dir, list(files), overwrite)
    real = out_dir.resolve()  # `--out .` or a symlink: stage beside the real directory
    real.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{real.name}{STAGING_MARK}"
    _remove_stale_stages(real.parent, prefix)
    stage = Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}@{_host()}-", dir=real.parent))
    os.chmod(stage, _dir_mode(real))  # mkdtemp makes it 0700; the output keeps the usual mode
    try:
        for name, data in files.items():
            with open(stage / name, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
        with _signals_deferred():
            _commit(stage, real, files)
    finally:
        shutil.rmtree(stage, ignore_errors=True)  # the old directory after an exchange
    return {name: out_dir / name for name in files}


def _remove_stale_stages(folder: Path, prefix: str) -> None:
    """Staging directories `prefix` + "PID@HOST-XXXXXXXX" of runs on this host that are gone.
    Any other (a live run's, another host's, an older edgeq's without an owner) is left."""
    host = _host()
    try:
        entries = [e for e in os.scandir(folder) if e.name.startswith(prefix)]
    except OSError:
        return
    for entry in entries:
        owner = entry.name[len(prefix):].rpartition("-")[0]  # mkdtemp's suffix has no '-'
        pid, _, where = owner.partition("@")
        if pid.isdigit() and where == host and not _alive(int(pid)):
            shutil.rmtree(entry.path, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process: alive
        pass
    return True


def _host() -> str:
    return os.uname().nodename if hasattr(os, "uname") else ""


def _dir_mode(existing: Path) -> int:
    try:
        return stat.S_IMODE(os.stat(existing).st_mode)
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o777 & ~umask


def _commit(stage: Path, out_dir: Path, files: dict[str, bytes]) -> None:
    if not out_dir.exists():
        os.rename(stage, out_dir)
        return
    cwd = Path.cwd().resolve()
    # Never swap the directory the process (and the user's shell) stands in.
    swappable = out_dir != cwd and out_dir not in cwd.parents
    if swappable and _carry_over(out_dir, stage, files) and _exchange(stage, out_dir):
        return
    for name in files:  # fallback: each replacement is atomic, the set is not
        os.replace(stage / name, out_dir / name)


def _carry_over(out_dir: Path, stage: Path, files: dict[str, bytes]) -> bool:
    """Hard-link the old directory's other files into the stage; False when one cannot be."""
    for entry in os.scandir(out_dir):
        if entry.name in files:
            continue
        if not entry.is_file(follow_symlinks=False):
            return False
        try:
            os.link(entry.path, stage / entry.name)
        except OSError:
            return False
    return True


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2); False where the system cannot."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                          ctypes.c_uint]
    done = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    return done == 0


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold SIGINT/SIGTERM for the few renames of a commit, then act on them."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.signal(sig, lambda number, frame: caught.append(number))
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if caught:
        handler = previous[caught[0]]
        if callable(handler):
            handler(caught[0], None)
        else:  # SIG_DFL / SIG_IGN: let the system act as it would have
            os.kill(os.getpid(), caught[0])

