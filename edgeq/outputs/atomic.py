"""Writes a run's outputs into the output directory, touching nothing but those files.

The directory is the user's: edgeq never swaps, renames, re-creates or deletes it, nor any
file in it that is not one of this run's named outputs (it used to swap in a staged copy of the
whole directory: files another process created there meanwhile were lost, a directory owned by
another user became edgeq's with a new inode, and --overwrite deleted a directory named like an
output with its contents). So:

- every output is written in full to a hidden staging directory inside the output directory
  (same file system: a rename moves it), fsynced, and only when all of them are written are
  they renamed over their names one by one; each rename is atomic, so no file is ever half
  written, and an interrupted or crashed run leaves the old set or the new one (only a kill or
  a power cut between two renames of the last step, microseconds, can leave a mix);
- Ctrl-C (SIGINT/SIGTERM) during those renames is held back until they are done, then raised;
- only a regular file (or a symlink, which is replaced, not followed) is ever replaced, and only
  with --overwrite; a directory or a special file named like an output is refused (exit 2);
- concurrent runs on one output directory detect each other: a run holds an exclusive lock on
  the directory (`claim`, flock on the directory itself, so no lock file is left in it; a lock
  file `.edgeq.lock` where the file system cannot lock a directory) for the whole command when
  the directory exists (else from when its outputs are written), and a second run exits 2 at
  once; the files are checked again under the lock, so of two runs without --overwrite one
  writes and the other exits 2;
- a directory created by a run that then fails is removed again when it is still empty.

A run killed outright (SIGKILL) cannot clean up: its staging directory stays behind. It is
hidden (a dot name starting with `STAGING_MARK`), never read as outputs, and carries its
owner's pid and host, so the next run writing there removes those whose process is gone.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
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
LOCK_FILE = ".edgeq.lock"
_NAME_MAX = 255  # bytes of one file name on Linux, macOS and Windows file systems
_USER_ERRNOS = (errno.EACCES, errno.EPERM, errno.EROFS)  # the user's directory, not edgeq
_HELD: dict[str, int] = {}  # output directories this process has claimed -> depth


def check_out_dir(out_dir: Path, option: str = "--out") -> None:
    """Fail before any work when the output directory cannot be one: the path, or a folder
    above it, is a file (or something else that is not a directory)."""
    out_dir = Path(out_dir)
    for path in (out_dir, *out_dir.parents):
        if path.is_dir():
            return
        if os.path.lexists(path):
            what = "a file" if path.is_file() else "not a directory"
            where = f"is {what}" if path == out_dir else f"lies under '{path}', which is {what}"
            raise UsageError(f"{option} '{out_dir}' {where}, not a directory",
                             hint=f"give {option} a directory (it is created when missing)")


def check_file_path(path: Path, option: str) -> None:
    """The same for an output file: it must not be a directory, nor lie under a file."""
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{option} '{path}' is a directory", hint=f"give {option} a file name")
    _check_names([path.name], option)
    check_out_dir(path.parent, option)


def check_free(out_dir: Path, names: list[str], overwrite: bool) -> None:
    """Fail before any work is done when an output would replace a file without --overwrite,
    or would replace something that is not a file even with it."""
    out_dir = Path(out_dir)
    _check_names(names)
    for name in names:
        path = out_dir / name
        if not os.path.lexists(path):
            continue
        mode = os.lstat(path).st_mode
        if not (stat.S_ISREG(mode) or stat.S_ISLNK(mode)):
            what = "a directory" if stat.S_ISDIR(mode) else "not a regular file"
            raise UsageError(f"output '{path}' exists and is {what}; edgeq replaces only files",
                             hint="move it away, or choose another --out directory")
        if not overwrite:
            raise OutputExistsError(path)


@contextlib.contextmanager
def claim(out_dir: Path, option: str = "--out", *, create: bool = True) -> Iterator[Path]:
    """Hold the output directory for this run: another edgeq run that claims it meanwhile
    exits 2 at once instead of racing this one. Re-entrant in a process. A missing directory
    is created (and removed on the way out when the run left it empty); with `create=False`
    (a whole run claiming its --out up front) a missing one is not held yet: no directory
    appears before there are outputs, and `write_outputs` creates and holds it then."""
    out_dir = Path(out_dir)
    check_out_dir(out_dir, option)
    if not create and not out_dir.is_dir():
        yield out_dir
        return
    created = [p for p in (out_dir, *out_dir.parents) if not os.path.lexists(p)]
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create {option} '{out_dir}': {exc.strerror}",
                         hint=f"give {option} a directory you can write to") from exc
    real = str(out_dir.resolve())
    if real in _HELD:
        _HELD[real] += 1
        try:
            yield Path(real)
        finally:
            _HELD[real] -= 1
        return
    fd = _lock(Path(real), out_dir, option)
    _HELD[real] = 1
    try:
        yield Path(real)
    finally:
        del _HELD[real]
        if fd is not None:
            os.close(fd)  # releases the lock
        for path in created:  # deepest first; rmdir only ever removes an empty directory
            try:
                os.rmdir(path)
            except OSError:
                break


def _lock(real: Path, shown: Path, option: str) -> int | None:
    """An exclusive flock on the directory (or, where the file system refuses to lock a
    directory, on a lock file in it); its descriptor. None when neither can be had (a directory
    this user may write but not read): the writes are still atomic, only unguarded."""
    for path, flags in ((real, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)),
                        (real / LOCK_FILE, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0))):
        try:
            fd = os.open(path, flags | getattr(os, "O_CLOEXEC", 0), 0o644)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            os.close(fd)
            raise UsageError(f"another edgeq run is writing to {option} '{shown}'",
                             hint=f"wait for it to finish, or give this run another {option}") \
                from None
        except OSError:  # EBADF/ENOLCK/EINVAL: this file system does not lock directories
            os.close(fd)
    return None


def write_outputs(out_dir: Path, files: dict[str, bytes], *, overwrite: bool) -> dict[str, Path]:
    """Write `files` (name -> bytes) into `out_dir`, all or none (see the module docstring).

    Raises:
        OutputExistsError: an output exists and `overwrite` is false (checked under the lock).
        UsageError: the directory is not one, is held by another run, or an output's name is
            too long or names a directory or special file.
    """
    out_dir = Path(out_dir)
    with claim(out_dir) as real:
        check_free(out_dir, list(files), overwrite)
        _remove_stale_stages(real)
        try:
            stage = Path(tempfile.mkdtemp(prefix=f"{STAGING_MARK}{os.getpid()}@{_host()}-",
                                          dir=real))
        except OSError as exc:
            if exc.errno not in _USER_ERRNOS:
                raise
            raise UsageError(f"cannot write to --out '{out_dir}': {exc.strerror}",
                             hint="give --out a directory you can write to") from exc
        try:
            for name, data in files.items():
                with open(stage / name, "wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
            with _signals_deferred():
                for name in files:
                    os.replace(stage / name, real / name)
            _fsync_dir(real)
        finally:
            shutil.rmtree(stage, ignore_errors=True)
    return {name: out_dir / name for name in files}


def _check_names(names: list[str], option: str = "--out") -> None:
    """A name the file system cannot hold fails here with exit 2, not as ENAMETOOLONG (exit 1)
    when the file is written."""
    for name in names:
        size = len(os.fsencode(name))
        if size > _NAME_MAX:
            raise UsageError(f"output file name '{name[:40]}...' is {size} bytes; file systems "
                             f"hold at most {_NAME_MAX}",
                             hint="choose a shorter name (e.g. embed --name)")


def _remove_stale_stages(folder: Path) -> None:
    """Staging directories STAGING_MARK + "PID@HOST-XXXXXXXX" of runs on this host that are
    gone. Any other (a live run's, another host's) is left."""
    host = _host()
    try:
        entries = [e for e in os.scandir(folder) if e.name.startswith(STAGING_MARK)]
    except OSError:
        return
    for entry in entries:
        owner = entry.name[len(STAGING_MARK):].rpartition("-")[0]  # mkdtemp's suffix has no '-'
        pid, _, where = owner.partition("@")
        if pid.isdigit() and where == host and not _alive(int(pid)) \
                and entry.is_dir(follow_symlinks=False):
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


def _fsync_dir(folder: Path) -> None:
    """Make the renames durable (a crash after the run must not bring back the old names)."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems cannot fsync a directory; the renames are done
        pass
    finally:
        os.close(fd)


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
