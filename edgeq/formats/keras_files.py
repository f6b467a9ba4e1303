"""Keras model files read as untrusted data, before any Keras loader opens them: the model
config comes back as plain JSON (for the safety policy in keras_config_policy), and every byte
Keras will later inflate or allocate is bounded first.

Limits (each refusal names the file, the member or dataset, and the limit):
- the file itself: a regular file (not a FIFO or device, edgeq.formats.input_files) of at most
  KERAS_FILE_MAX, the sum of the limits below and room for the container's own bytes.
- the model config (.keras `config.json`, .h5 `model_config`) at most CONFIG_MAX. Parsing JSON
  takes up to 23 times its size in memory (64 MiB of `[{},{},...]` took 1.5 GB), so 16 MiB
  keeps a hostile config under about 400 MB; the largest real configs are around a megabyte.
- the weights (.keras `model.weights.h5`, and the datasets of any HDF5 weights) at most
  WEIGHTS_MAX declared: edgeq converts models for edge devices, whose weights are megabytes,
  and Keras reads the member into memory whole.
- everything else in a .keras archive (metadata.json, assets/) at most OTHER_MAX together:
  Keras extracts it all to disk when assets are present.
- any member, and the HDF5 datasets, at most archive.MAX_RATIO times their stored size past
  archive.RATIO_FLOOR (a decompression or sparse-dataset bomb stores next to nothing).
HDF5 datasets stored outside the file (external links, external or virtual datasets) are
refused: Keras would read whatever file they name.

Keras opens the archive again to load the weights, through Python's zipfile, which returns no
more than a member's header declares; `check_keras_members` has checked every member's header
and inflated the member to compare size and CRC, so Keras reads exactly what was checked (see
edgeq.formats.archive).
"""

from __future__ import annotations

import json
import math
import tempfile
import zipfile
import zlib
from pathlib import Path
from typing import IO, Any

from edgeq.errors import ModelFileError
from edgeq.formats.input_files import open_file
from edgeq.transforms.keras_config import first_line
from edgeq.formats.archive import (
    GiB,
    MAX_RATIO,
    MiB,
    RATIO_FLOOR,
    ArchiveError,
    check_header,
    check_member_count,
    inflate,
    read_member,
    size_text,
)

CONFIG_MAX = 16 * MiB
WEIGHTS_MAX = 2 * GiB
OTHER_MAX = 256 * MiB
# The whole file: its weights, config and the rest, with room for the container's own bytes.
KERAS_FILE_MAX = WEIGHTS_MAX + CONFIG_MAX + OTHER_MAX + 64 * MiB

_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_CONFIG = "config.json"
_WEIGHTS = "model.weights.h5"
_RESAVE = "re-save the model with model.save('model.keras')"


def keras_config(p: Path) -> Any:
    """The parsed `config.json` of a .keras archive, after every member's header is checked.

    Raises:
        ModelFileError: not a zip archive, no config.json, a member over its limit or with a
            false header, or a config that is not JSON.
    """
    with _open_zip(p) as (fh, zf):
        infos = zf.infolist()
        names = [i.filename for i in infos]
        if _CONFIG not in names:
            raise ModelFileError(p, "not a Keras 3 .keras archive (no config.json)", hint=_RESAVE)
        if "model.weights.npz" in names:
            raise ModelFileError(p, "holds its weights as model.weights.npz; edgeq reads the "
                                 f"HDF5 weights model.save() writes ({_WEIGHTS})", hint=_RESAVE)
        other = 0
        for info in infos:
            limit = {_CONFIG: CONFIG_MAX, _WEIGHTS: WEIGHTS_MAX}.get(info.filename, OTHER_MAX)
            _archive_check(p, check_header, info, limit)
            if info.filename not in (_CONFIG, _WEIGHTS):
                other += info.file_size
        if other > OTHER_MAX:
            raise ModelFileError(p, f"holds {size_text(other)} besides its config and weights "
                                 f"(metadata, assets), over the {size_text(OTHER_MAX)} limit")
        # The last entry of a name is the one zipfile (and so Keras) reads.
        raw = _archive_check(p, read_member, fh, zf.getinfo(_CONFIG), CONFIG_MAX)
    return _parse(p, raw, _CONFIG)


def check_keras_members(p: Path) -> int:
    """Inflate every member of a .keras archive (streaming, nothing kept) to check its size
    and CRC against its header, and bound the datasets of its HDF5 weights. Returns how many
    values (weights) the datasets of model.weights.h5 hold.

    Raises:
        ModelFileError: a member that does not match its header, or weights over the limits.
    """
    stored = 0
    with _open_zip(p) as (fh, zf):
        for info in zf.infolist():
            if info.filename == _WEIGHTS and info is zf.getinfo(_WEIGHTS):
                stored = _check_weights_member(p, fh, info)
            else:
                _archive_check(p, inflate, fh, info)
    return stored


def h5_config(p: Path) -> Any:
    """The parsed `model_config` attribute of a legacy .h5 model.

    Raises:
        ModelFileError: not HDF5, weights only, a config over CONFIG_MAX or not JSON.
    """
    fh, _ = open_file(p, "model", KERAS_FILE_MAX, error=ModelFileError)
    with fh:
        magic = fh.read(8)
    if magic != _HDF5_MAGIC:
        raise ModelFileError(p, "not an HDF5 file", hint="re-save the model with model.save()")
    import h5py

    try:
        with h5py.File(p, "r") as f:
            if "model_config" not in f.attrs:
                raise ModelFileError(
                    p, "holds weights only, no model architecture",
                    hint="save the whole model (model.save), not model.save_weights")
            # A fixed-length string says its size before it is read; a variable-length one is
            # stored whole in the file, so reading it costs no more than the file's own size.
            declared = f.attrs.get_id("model_config").get_type().get_size()
            if declared > CONFIG_MAX:
                raise _config_too_big(p, "model_config", declared)
            raw = f.attrs["model_config"]
    except (OSError, RuntimeError, ValueError, TypeError) as exc:
        raise ModelFileError(p, f"corrupt HDF5 file ({first_line(exc)})") from exc
    if isinstance(raw, str):
        raw = raw.encode("utf-8", "surrogateescape")
    if not isinstance(raw, bytes):
        raise ModelFileError(p, f"its model_config is a {type(raw).__name__}, not JSON text")
    if len(raw) > CONFIG_MAX:
        raise _config_too_big(p, "model_config", len(raw))
    return _parse(p, raw, "model_config")


def h5_json_attribute(p: Path, name: str) -> Any:
    """A JSON attribute of a legacy .h5 model's root (training_config), bounded like its
    model_config; None when absent.

    Raises:
        ModelFileError: not a regular HDF5 file, the attribute over CONFIG_MAX or not JSON.
    """
    fh, _ = open_file(p, "model", KERAS_FILE_MAX, error=ModelFileError)
    with fh:
        if fh.read(8) != _HDF5_MAGIC:
            raise ModelFileError(p, "not an HDF5 file")
    import h5py

    try:
        with h5py.File(p, "r") as f:
            if name not in f.attrs:
                return None
            if f.attrs.get_id(name).get_type().get_size() > CONFIG_MAX:
                raise _config_too_big(p, name, f.attrs.get_id(name).get_type().get_size())
            raw = f.attrs[name]
    except (OSError, RuntimeError, ValueError, TypeError) as exc:
        raise ModelFileError(p, f"corrupt HDF5 file ({first_line(exc)})") from exc
    if isinstance(raw, str):
        raw = raw.encode("utf-8", "surrogateescape")
    if not isinstance(raw, bytes) or len(raw) > CONFIG_MAX:
        raise ModelFileError(p, f"its {name} is not JSON text of at most {size_text(CONFIG_MAX)}")
    return _parse(p, raw, name)


def check_h5_weights(p: Path) -> int:
    """Bound the datasets of a legacy .h5 model before Keras reads them; returns how many
    values they hold.

    Raises:
        ModelFileError: external storage, or datasets over WEIGHTS_MAX or the bomb ratio.
    """
    return _check_h5_datasets(p, p, "the file")


# --- helpers -----------------------------------------------------------------------------------


class _open_zip:  # noqa: N801 - used as a context manager, like open()
    """The archive file and its ZipFile, both closed on exit."""

    def __init__(self, p: Path) -> None:
        self.p = p

    def __enter__(self) -> tuple[IO[bytes], zipfile.ZipFile]:
        self.fh, _ = open_file(self.p, "model", KERAS_FILE_MAX, error=ModelFileError)
        try:
            self.zf = zipfile.ZipFile(self.fh)
            check_member_count(self.zf)
        except (zipfile.BadZipFile, ArchiveError, OSError, ValueError, EOFError) as exc:
            self.fh.close()
            raise ModelFileError(self.p, f"not a valid Keras 3 .keras archive ({first_line(exc)})",
                                 hint=_RESAVE) from exc
        return self.fh, self.zf

    def __exit__(self, *exc: object) -> None:
        self.zf.close()
        self.fh.close()


def _archive_check(p: Path, fn, *args):
    try:
        return fn(*args)
    except ArchiveError as exc:
        raise ModelFileError(p, str(exc), hint=_RESAVE) from exc
    except (OSError, zlib.error) as exc:
        raise ModelFileError(p, f"corrupt archive ({first_line(exc)})", hint=_RESAVE) from exc


def _check_weights_member(p: Path, fh: IO[bytes], info: zipfile.ZipInfo) -> int:
    if info.compress_type == zipfile.ZIP_STORED:
        _archive_check(p, inflate, fh, info)  # size and CRC
        return _check_h5_datasets(p, _Window(fh, info), _WEIGHTS)
    # Deflated (Keras stores; someone re-zipped it): HDF5 seeks all over the file, and seeking
    # backwards in a deflated member starts inflating again from the top, so inflate it once
    # to a temporary file (its size is already bounded by the header check).
    with tempfile.TemporaryFile() as tmp:
        _archive_check(p, inflate, fh, info, tmp.write)
        tmp.seek(0)
        return _check_h5_datasets(p, tmp, _WEIGHTS)


def _check_h5_datasets(p: Path, source: Any, where: str) -> int:
    """Bound the datasets; returns how many values they hold."""
    import h5py

    declared = stored = values = 0
    problems: list[str] = []

    def visit(name: str, link: Any) -> None:
        nonlocal declared, stored, values
        if isinstance(link, h5py.ExternalLink):
            problems.append(f"'{name}' is a link to another file ({link.filename})")
            return
        if not isinstance(link, h5py.HardLink):
            return  # a soft link names an object in this file, visited under its own name
        obj = f.get(name)
        if not isinstance(obj, h5py.Dataset):
            return
        if obj.external or obj.is_virtual:
            problems.append(f"dataset '{name}' keeps its data outside this file")
        elif obj.dtype.kind not in "biuf":
            problems.append(f"dataset '{name}' has dtype {obj.dtype}, not numbers")
        values += math.prod(obj.shape or ())
        declared += math.prod(obj.shape or ()) * obj.dtype.itemsize
        stored += obj.id.get_storage_size()

    try:
        with h5py.File(source, "r") as f:
            f.visititems_links(visit)
    except (OSError, RuntimeError, ValueError, TypeError, KeyError) as exc:
        raise ModelFileError(p, f"{where} is not a readable HDF5 file ({first_line(exc)})",
                             hint="re-save the model with model.save()") from exc
    if problems:
        raise ModelFileError(p, f"{problems[0]} (in {where}); edgeq reads weights stored in the "
                             "file itself", hint="re-save the model with model.save()")
    if declared > WEIGHTS_MAX:
        raise ModelFileError(p, f"the datasets in {where} declare {size_text(declared)} of "
                             f"weights, over the {size_text(WEIGHTS_MAX)} limit for edge models")
    if declared > RATIO_FLOOR and declared > MAX_RATIO * stored:
        raise ModelFileError(
            p, f"the datasets in {where} declare {size_text(declared)} of weights but store "
            f"{size_text(stored)} (over {MAX_RATIO}:1): a compressed or sparse dataset bomb",
            hint="re-save the model with model.save(), which stores weights uncompressed")
    return values


class _Window:
    """A read-only, seekable view of a stored (uncompressed) zip member, for h5py."""

    def __init__(self, fh: IO[bytes], info: zipfile.ZipInfo) -> None:
        fh.seek(info.header_offset + 26)
        name_len, extra_len = (int.from_bytes(fh.read(2), "little") for _ in range(2))
        self.fh, self.size, self.pos = fh, info.file_size, 0
        self.start = info.header_offset + 30 + name_len + extra_len

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self.pos, 2: self.size}[whence]
        self.pos = max(0, base + offset)
        return self.pos

    def tell(self) -> int:
        return self.pos

    def read(self, n: int = -1) -> bytes:
        n = self.size - self.pos if n is None or n < 0 else min(n, self.size - self.pos)
        if n <= 0:
            return b""
        self.fh.seek(self.start + self.pos)
        data = self.fh.read(n)
        self.pos += len(data)
        return data

    def readinto(self, buf: Any) -> int:
        data = self.read(len(buf))
        buf[: len(data)] = data
        return len(data)


def _parse(p: Path, raw: bytes, what: str) -> Any:
    try:
        return json.loads(raw)
    except RecursionError as exc:
        raise ModelFileError(p, f"its {what} is nested too deeply to be a model config") from exc
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, an int of 5,000 digits
        raise ModelFileError(p, f"its {what} is not valid JSON ({first_line(exc)[:120]})",
                             hint="re-save the model with model.save()") from exc


def _config_too_big(p: Path, what: str, size: int) -> ModelFileError:
    return ModelFileError(p, f"its {what} is {size_text(size)}, over the {size_text(CONFIG_MAX)} "
                          "limit for a model config", hint="re-save the model with model.save()")
