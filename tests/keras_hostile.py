"""Hostile Keras files for the safety and resource tests: real model files whose config is
rewritten to carry code that would create a marker file, and zip archives whose members
inflate far past what they store. Nothing here imports TensorFlow."""

from __future__ import annotations

import base64
import json
import marshal
import shutil
import struct
import zipfile
import zlib
from pathlib import Path
from typing import Any, Callable

MiB = 1024**2
GiB = 1024**3


# --- payloads -----------------------------------------------------------------------------------


def payload_code(marker: Path) -> str:
    """base64 of a marshalled lambda that creates `marker` and returns its first argument: the
    form Keras and tf_keras store a Python lambda in (func_dump)."""
    source = (f"lambda *a, **k: (__import__('pathlib').Path({str(marker)!r}).write_text('ran'),"
              " a[0] if a else None)[1]")
    fn = eval(compile(source, "<payload>", "eval"))  # noqa: S307 - the test's own payload
    return base64.b64encode(marshal.dumps(fn.__code__)).decode("ascii")


def keras3_lambda(code: str) -> dict:
    """A Keras 3 serialized lambda, in both the forms Keras reads: Lambda layers' (code,
    defaults, closure) and serialization_lib's value."""
    return {"class_name": "__lambda__", "config": {"code": code, "defaults": None,
                                                   "closure": None, "value": [code, None, None]}}


def strip_modules(node: Any) -> Any:
    """Remove Keras 3's `module` and `registered_name` keys everywhere, as a legacy .h5 or an
    attacker would."""
    if isinstance(node, dict):
        node.pop("module", None)
        node.pop("registered_name", None)
        for value in node.values():
            strip_modules(value)
    elif isinstance(node, list):
        for value in node:
            strip_modules(value)
    return node


# --- rewriting real files -----------------------------------------------------------------------


def read_config(path: Path) -> Any:
    if path.suffix == ".keras":
        with zipfile.ZipFile(path) as zf:
            return json.loads(zf.read("config.json"))
    import h5py

    with h5py.File(path, "r") as f:
        raw = f.attrs["model_config"]
    return json.loads(raw.decode() if isinstance(raw, bytes) else raw)


def write_config(src: Path, dst: Path, config: Any = None, *, text: str | bytes | None = None
                 ) -> Path:
    """A copy of the model file `src` at `dst` with its config replaced (as JSON, or as raw
    `text` for configs that are not JSON)."""
    data = text if text is not None else json.dumps(config)
    data = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    if src.suffix == ".keras":
        with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
            for item in zin.infolist():
                zout.writestr(item, data if item.filename == "config.json"
                              else zin.read(item.filename))
        return dst
    import h5py
    import numpy as np

    shutil.copyfile(src, dst)
    with h5py.File(dst, "a") as f:
        try:
            f.attrs["model_config"] = np.bytes_(data)  # fixed-length, as tf_keras writes it
        except OSError:  # past 64 KiB: variable-length, kept outside the object header
            f.attrs.create("model_config", data, dtype=h5py.string_dtype("ascii"))
    return dst


def edited(src: Path, dst: Path, edit: Callable[[Any], Any], *, strip: bool = False) -> Path:
    config = read_config(src)
    config = edit(config) or config
    if strip:
        strip_modules(config)
    return write_config(src, dst, config)


# --- decompression bombs ------------------------------------------------------------------------


def deflated_zeros(n: int) -> bytes:
    """A raw deflate stream of `n` zero bytes, built in milliseconds: one megabyte compressed
    with a full flush (which resets the compressor, so its output stands alone) repeated."""
    chunk = MiB
    block = zlib.compressobj(9, zlib.DEFLATED, -15)
    one = block.compress(b"\0" * chunk) + block.flush(zlib.Z_FULL_FLUSH)
    tail = zlib.compressobj(9, zlib.DEFLATED, -15)
    return one * (n // chunk) + tail.compress(b"\0" * (n % chunk)) + tail.flush()


def write_zip(path: Path, members: list[tuple[str, bytes, dict]]) -> Path:
    """A zip archive written by hand, so a member's header can say anything: each member is
    (name, raw bytes as stored, header fields). Fields: `data` (the inflated bytes, for an
    honest header), or `method`, `size` and `crc` to declare."""
    out = bytearray()
    central = bytearray()
    for name, raw, fields in members:
        data = fields.get("data")
        method = fields.get("method", zipfile.ZIP_DEFLATED)
        size = fields.get("size", len(data) if data is not None else 0)
        crc = fields.get("crc", zlib.crc32(data) if data is not None else 0)
        encoded = name.encode()
        offset = len(out)
        out += struct.pack("<4s5H3I2H", b"PK\x03\x04", 20, 0, method, 0, 0, crc, len(raw),
                           size, len(encoded), 0) + encoded + raw
        central += struct.pack("<4s6H3I5H2I", b"PK\x01\x02", 20, 20, 0, method, 0, 0, crc,
                               len(raw), size, len(encoded), 0, 0, 0, 0, 0, offset) + encoded
    end = struct.pack("<4s4H2IH", b"PK\x05\x06", 0, 0, len(members), len(members), len(central),
                      len(out), 0)
    path.write_bytes(bytes(out + central + end))
    return path


def deflated(data: bytes) -> bytes:
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    return c.compress(data) + c.flush()


def keras_members(src: Path) -> list[tuple[str, bytes, dict]]:
    """The members of a real .keras file, deflated, as write_zip takes them."""
    with zipfile.ZipFile(src) as zf:
        return [(i.filename, deflated(zf.read(i)), {"data": zf.read(i)}) for i in zf.infolist()]


def replace_member(members: list, name: str, raw: bytes, fields: dict) -> list:
    return [(n, raw, fields) if n == name else (n, r, f) for n, r, f in members]
