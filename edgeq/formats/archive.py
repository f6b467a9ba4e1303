"""Zip archives read as untrusted input (.keras models, .npz data): every member's compression
method, declared size and compression ratio is checked from the headers before anything is
inflated, and what is inflated is counted as it streams, so a decompression bomb costs neither
memory nor minutes.

Why the headers can be trusted as far as they are: Python's zipfile never returns more bytes
from a member than the central directory's `file_size` (for stored and deflated members; its
bzip2/LZMA readers inflate a whole compressed chunk in one step, so those are refused). A header
that declares less than the stream holds therefore truncates the member rather than letting it
grow, and a header whose compressed size is more than deflate could produce from the declared
size is refused here as a lie. `inflate` then checks the member's real inflated size and CRC
against the header, so what a later reader (Keras) sees is exactly what was checked.
"""

from __future__ import annotations

import struct
import zipfile
import zlib
from typing import IO, Callable

MiB = 1024**2
GiB = 1024**3

MAX_MEMBERS = 10_000
# Deflate cannot exceed about 1032:1; real model weights and samples compress a few times at
# most (Keras stores its members uncompressed). Past RATIO_FLOOR a member must stay within
# MAX_RATIO of its stored bytes.
MAX_RATIO = 100
RATIO_FLOOR = 64 * MiB
_METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflated"}
_CHUNK = MiB
_LOCAL_HEADER = struct.Struct("<4s5H3I2H")


class ArchiveError(ValueError):
    """A member that cannot be read safely; the message names the member and the limit."""


def size_text(n: int) -> str:
    """A byte count for messages: '3.0 GiB', '16 MiB', '812 bytes'."""
    if n >= GiB:
        return f"{n / GiB:.1f} GiB"
    if n >= MiB:
        return f"{n / MiB:.1f} MiB".replace(".0 MiB", " MiB")
    if n >= 1024:
        return f"{n / 1024:.1f} KiB"
    return f"{n} bytes"


def check_member_count(zf: zipfile.ZipFile) -> None:
    if len(zf.infolist()) > MAX_MEMBERS:
        raise ArchiveError(f"holds {len(zf.infolist())} members, over the limit of {MAX_MEMBERS}")


def check_header(info: zipfile.ZipInfo, limit: int | None = None,
                 max_ratio: int = MAX_RATIO) -> None:
    """Refuse a member from its headers alone: encrypted, an unsupported compression method,
    sizes that contradict each other, more than `limit` bytes inflated, or a bomb's ratio
    (over `max_ratio`:1 past RATIO_FLOOR).

    Raises:
        ArchiveError: naming the member, what it declares and the limit.
    """
    name = info.filename
    if info.flag_bits & 0x1:
        raise ArchiveError(f"member '{name}' is encrypted")
    if info.compress_type not in _METHODS:
        raise ArchiveError(
            f"member '{name}' uses zip compression method {info.compress_type}; only stored and "
            "deflated members are read (other methods inflate unbounded amounts at once)")
    if info.compress_type == zipfile.ZIP_STORED and info.compress_size != info.file_size:
        raise ArchiveError(f"member '{name}' is stored uncompressed but its header declares "
                           f"{info.file_size} bytes for {info.compress_size} stored: the header "
                           "is false")
    if info.compress_size > _deflate_bound(info.file_size):
        raise ArchiveError(f"member '{name}' declares {size_text(info.file_size)} inflated from "
                           f"{size_text(info.compress_size)}, more than deflate ever produces: "
                           "the header is false")
    if limit is not None and info.file_size > limit:
        raise ArchiveError(f"member '{name}' inflates to {size_text(info.file_size)}, over the "
                           f"{size_text(limit)} limit")
    if info.file_size > RATIO_FLOOR and info.file_size > max_ratio * info.compress_size:
        raise ArchiveError(
            f"member '{name}' inflates to {size_text(info.file_size)} from "
            f"{size_text(info.compress_size)} ({info.file_size // max(info.compress_size, 1)}:1, "
            f"over {max_ratio}:1): a decompression bomb")


def inflate(fh: IO[bytes], info: zipfile.ZipInfo, sink: Callable[[bytes], object] | None = None
            ) -> int:
    """Stream one member from the archive file `fh` (deflated or stored) in bounded chunks,
    handing each to `sink`, and stop as soon as it passes the size its header declares.

    Returns:
        The member's size, equal to its declared size.

    Raises:
        ArchiveError: the member inflates past its declared size, ends short of it, or does not
            match its CRC.
    """
    name = info.filename
    fh.seek(info.header_offset)
    head = fh.read(_LOCAL_HEADER.size)
    if len(head) != _LOCAL_HEADER.size or head[:4] != b"PK\x03\x04":
        raise ArchiveError(f"member '{name}' has no local header where the directory says")
    name_len, extra_len = _LOCAL_HEADER.unpack(head)[-2:]
    fh.seek(info.header_offset + _LOCAL_HEADER.size + name_len + extra_len)
    inflater = zlib.decompressobj(-15) if info.compress_type == zipfile.ZIP_DEFLATED else None
    left, size, crc = info.compress_size, 0, 0
    while left:
        raw = fh.read(min(_CHUNK, left))
        if not raw:
            raise ArchiveError(f"member '{name}' is truncated")
        left -= len(raw)
        while True:
            if inflater is None:
                data, raw = raw, b""
            else:  # max_length: a bomb's chunk inflates a megabyte at a time, never at once
                data = inflater.decompress(raw, _CHUNK)
                raw = inflater.unconsumed_tail
            size += len(data)
            if size > info.file_size:
                raise ArchiveError(f"member '{name}' inflates past the "
                                   f"{size_text(info.file_size)} its header declares")
            crc = zlib.crc32(data, crc)
            if sink is not None:
                sink(data)
            # A full chunk may leave output pending inside zlib even when no input is left.
            if not raw and (inflater is None or len(data) < _CHUNK):
                break
    if size != info.file_size or (inflater is not None and not inflater.eof):
        raise ArchiveError(f"member '{name}' holds {size_text(size)}, not the "
                           f"{size_text(info.file_size)} its header declares")
    if crc != info.CRC:
        raise ArchiveError(f"member '{name}' does not match its CRC: the archive is corrupt")
    return size


def read_member(fh: IO[bytes], info: zipfile.ZipInfo, limit: int) -> bytes:
    """A member's bytes, at most `limit` of them (checked from the header, then as it inflates).

    Raises:
        ArchiveError: as `check_header` and `inflate`.
    """
    check_header(info, limit)
    parts: list[bytes] = []
    inflate(fh, info, parts.append)
    return b"".join(parts)


def _deflate_bound(n: int) -> int:
    # zlib's deflateBound is n + n/4096 + n/16384 + 13; other encoders flush more often. This
    # bound is loose on purpose: it exists to catch a header that declares far less than the
    # stream it sits on, which only a forged header does.
    return n + n // 64 + 4096
