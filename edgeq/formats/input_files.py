"""Every path a user names (the model, --data/--eval-data/--train-data, --baseline, --labels,
--target's .toml, --source, --tflm-tree, --report), checked and read the one way.

A path must name a regular file (or a directory where one is due); a symbolic link is followed
to what it names and judged by that. A FIFO, a character or block device or a socket is refused
with exit 2 and one line naming the option and the path: reading `/dev/zero` (or a link to it
named `model.tflite`) grows memory without bound, and opening a FIFO blocks until someone writes
to it, forever in a batch job.

Reading is bounded: `read_file` opens without blocking (O_NONBLOCK: a FIFO swapped in after the
check opens at once instead of waiting for a writer), checks what it opened with fstat (the
object actually read, not the name checked a moment before), learns the size before reading,
refuses a file over the option's limit, and never reads more than that size. Libraries that
open the path themselves (h5py, zipfile, numpy, Pillow, tarfile) get it only after
`check_file`/`check_dir` said it is a regular file or a directory.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import BinaryIO, Callable

from edgeq.errors import InputError

MiB = 1024**2
GiB = 1024**3

# Limits for the files read whole into memory. A .tflite is at most 2 GiB as a flatbuffer; the
# larger "offset buffer" layout keeps weights after it, and no edge target takes more than a
# few hundred MiB, so 4 GiB bounds it without refusing a model any runtime could run.
TFLITE_MAX = 4 * GiB
REPORT_MAX = 64 * MiB  # a report.json edgeq writes is kilobytes (a few MiB with histograms)
LABELS_MAX = 16 * MiB  # a million class names of 16 characters
TOML_MAX = MiB  # a target profile is a few KiB

ErrorFactory = Callable[..., InputError]

_KINDS = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def _generic(option: str) -> ErrorFactory:
    def make(path: str | Path, message: str, *, hint: str | None = None) -> InputError:
        return InputError(f"{option} '{path}': {message}", hint=hint)

    return make


def kind_text(mode: int) -> str:
    """'a FIFO (named pipe)', 'a character device', ..., 'a directory', 'a regular file'."""
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISREG(mode):
        return "a regular file"
    return next((text for test, text in _KINDS if test(mode)), "not a regular file")


def _stat(p: Path, option: str, make: ErrorFactory, hint: str | None) -> os.stat_result:
    try:
        return os.stat(p)  # follows links: a link is judged by what it names
    except FileNotFoundError:
        if os.path.lexists(p):
            raise make(p, "is a symbolic link to nothing", hint=hint) from None
        raise make(p, "not found (no such file or folder)",
                   hint=hint or f"check the path given to {option}") from None
    except OSError as exc:
        raise make(p, f"cannot be read ({_reason(exc)})", hint=hint) from exc


def _reason(exc: OSError) -> str:
    if exc.errno == errno.ELOOP:
        return "a loop of symbolic links"
    return exc.strerror or type(exc).__name__


def _refuse(p: Path, option: str, mode: int, wanted: str, make: ErrorFactory,
            hint: str | None) -> InputError:
    via = " (through a symbolic link)" if p.is_symlink() else ""
    return make(p, f"is {kind_text(mode)}{via}, not {wanted}",
                hint=hint or f"pass {wanted} to {option}")


def check_file(path: str | Path, option: str, *, error: ErrorFactory | None = None,
               hint: str | None = None) -> os.stat_result:
    """The stat of `path` when it names a regular file (through links).

    Raises:
        InputError (or `error`'s class): missing, unreadable, or not a regular file.
    """
    return _check_kind(path, option, error, hint, "a regular file", stat.S_ISREG)


def check_dir(path: str | Path, option: str, *, error: ErrorFactory | None = None,
              hint: str | None = None) -> os.stat_result:
    """The stat of `path` when it names a directory (through links)."""
    return _check_kind(path, option, error, hint, "a directory", stat.S_ISDIR)


def check_file_or_dir(path: str | Path, option: str, *, error: ErrorFactory | None = None,
                      hint: str | None = None) -> os.stat_result:
    """The stat of `path` when it names a regular file or a directory (through links)."""
    return _check_kind(path, option, error, hint, "a regular file or a directory",
                       lambda mode: stat.S_ISREG(mode) or stat.S_ISDIR(mode))


def _check_kind(path: str | Path, option: str, error: ErrorFactory | None, hint: str | None,
                wanted: str, ok: Callable[[int], bool]) -> os.stat_result:
    p, make = Path(path), error or _generic(option)
    st = _stat(p, option, make, hint)
    if not ok(st.st_mode):
        raise _refuse(p, option, st.st_mode, wanted, make, hint)
    return st


def open_file(path: str | Path, option: str, limit: int, *, error: ErrorFactory | None = None,
              hint: str | None = None) -> tuple[BinaryIO, int]:
    """A regular file opened for reading and its size, at most `limit` bytes. The object
    opened is checked (fstat), so a name swapped for a FIFO or a device after an earlier check
    is refused too, and opening never blocks.

    Raises:
        InputError (or `error`'s class): missing, unreadable, not a regular file, or over
            `limit`.
    """
    p, make = Path(path), error or _generic(option)
    check_file(p, option, error=make, hint=hint)
    try:
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise make(p, f"cannot be read ({_reason(exc)})", hint=hint) from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _refuse(p, option, st.st_mode, "a regular file", make, hint)
        if st.st_size > limit:
            raise make(p, f"is {_size(st.st_size)}, over the {_size(limit)} edgeq reads for "
                       f"{option}", hint=hint or f"check the file given to {option}")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb"), st.st_size
    except BaseException:
        os.close(fd)
        raise


def read_file(path: str | Path, option: str, limit: int, *, error: ErrorFactory | None = None,
              hint: str | None = None) -> bytes:
    """The bytes of a regular file of at most `limit` bytes, read no further than the size it
    had when opened (a file still growing is cut there, never read without end)."""
    fh, size = open_file(path, option, limit, error=error, hint=hint)
    with fh:
        try:
            return fh.read(size)
        except OSError as exc:
            raise (error or _generic(option))(Path(path), f"cannot be read ({_reason(exc)})",
                                              hint=hint) from exc


def read_text(path: str | Path, option: str, limit: int, *, error: ErrorFactory | None = None,
              hint: str | None = None) -> str:
    """`read_file` decoded as UTF-8."""
    data = read_file(path, option, limit, error=error, hint=hint)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise (error or _generic(option))(Path(path), "is not UTF-8 text",
                                          hint=hint or f"pass a UTF-8 text file to {option}") \
            from exc


def check_output_path(path: str | Path, option: str) -> None:
    """An output file the user names (--report): if something is there already it must be a
    regular file (replaced as a whole); a directory, FIFO, device or socket is refused, and so
    is a symbolic link to one."""
    p = Path(path)
    try:
        st = os.stat(p)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise InputError(f"{option} '{p}': cannot be checked ({_reason(exc)})") from exc
    if not stat.S_ISREG(st.st_mode):
        raise _refuse(p, option, st.st_mode, "a regular file", _generic(option),
                      f"pass a new file name or an existing regular file to {option}")


def _size(n: int) -> str:
    if n >= GiB:
        return f"{n / GiB:.1f} GiB"
    if n >= MiB:
        return f"{n / MiB:.1f} MiB"
    return f"{n} bytes"
