"""Builds the emulator firmware for one model: edgeq's `embed` output (C array, op resolver,
arena size) + the prepared TFLite Micro library (edgeq.emulator.library: the framework and
every kernel of the tree, CMSIS-NN's where it has one) + edgeq's firmware main and start-up,
cross-compiled with arm-none-eabi-gcc.

A model compiles only its own three files (main.cc with the library's precompiled header,
startup.c and the embedded model) and links against the library's archive; the linker takes
the members the model needs. A linked firmware is cached under ``<cache>/emulator/fw/<key>/``,
keyed by the library's key and the embedded sources: a second run of the same model compiles
and links nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from edgeq.emulator import cores as C
from edgeq.emulator.library import (STAGE, Compiler, Progress, locked, prepare_library, run,
                                   source_of_member)
from edgeq.emulator.toolchain import Toolchain, Tree, cache_dir
from edgeq.errors import ConversionError

# Bump when the firmware sources or the build recipe change in a way the hashes do not see.
BUILD_VERSION = 3
MARKS = 4096  # words in edgeq_marks[] (main.cc's EDGEQ_MARKS)
_FIRMWARE_FILES = ("main.cc", "startup.c", "mps2.ld", "mps2tz.ld", "mps3.ld",
                   "edgeq_sections.ld")
_UNDEFINED = re.compile(r"undefined reference to `([^']+)'")


@dataclass(frozen=True)
class Firmware:
    elf: Path
    key: str  # the firmware cache key
    config_key: str  # the library's cache key (tree + compiler + flags)
    cached: bool  # nothing was compiled or linked: the firmware came from the cache
    compiled: int  # files compiled in this run (library and model)
    objects: int  # library members linked in
    build_seconds: float
    arena_size: int  # the arena the firmware declares (embed's recommendation)
    mark_fn: tuple[int, int]  # edgeq_mark() address range [lo, hi)
    marks_addr: int  # &edgeq_marks[0]
    text_bytes: int  # code + constants (incl. the model), from the ELF
    ram_bytes: int  # .data + .bss (incl. the arena), from the ELF


def firmware_sources() -> dict[str, bytes]:
    pkg = resources.files("edgeq.emulator") / "firmware"
    return {name: (pkg / name).read_bytes() for name in _FIRMWARE_FILES}


def build_firmware(embedded: dict[str, bytes], name: str, arena_size: int, sample_bytes: int,
                   core: C.Core, tool: Toolchain, tree: Tree, *, jobs: int | None = None,
                   preserve: bool = False, progress: Progress | None = None) -> Firmware:
    """The firmware ELF for the model `embed` wrote as `embedded` (NAME.h, NAME.cc, NAME_ops.h).
    Prepares the core's library first when it is not (reporting through `progress`).

    Raises:
        ConversionError: a compile or link step failed (its first error lines are quoted).
    """
    start = time.perf_counter()
    lib = prepare_library(tool, tree, core, jobs=jobs, progress=progress)
    sources = firmware_sources()
    h = hashlib.sha256(f"{BUILD_VERSION}\0{lib.key}\0{core.linker_script}\0{name}\0"
                       f"{arena_size}\0{sample_bytes}\0{MARKS}\0{preserve}".encode())
    for fname in sorted(embedded):
        h.update(fname.encode() + b"\0" + embedded[fname])
    for fname in sorted(sources):
        h.update(fname.encode() + b"\0" + sources[fname])
    fkey = h.hexdigest()[:20]
    fwdir = cache_dir() / "emulator" / "fw" / fkey
    meta_path = fwdir / "firmware.json"
    if meta_path.is_file() and (fwdir / "firmware.elf").is_file():
        return _firmware(fwdir, json.loads(meta_path.read_text()), cached=True,
                         compiled=lib.compiled, seconds=time.perf_counter() - start)
    fwdir.parent.mkdir(parents=True, exist_ok=True)
    with locked(fwdir.parent / f"{fkey}.lock"):
        if meta_path.is_file():  # built by another process while this one waited
            return _firmware(fwdir, json.loads(meta_path.read_text()), cached=True,
                             compiled=lib.compiled, seconds=time.perf_counter() - start)
        b = Compiler(tool, tree, core, lib.objdir, 1)
        work = fwdir.with_name(fkey + f".tmp{os.getpid()}")
        shutil.rmtree(work, ignore_errors=True)
        try:
            (work / "src").mkdir(parents=True)
            for fname, data in {**embedded, **sources}.items():
                (work / "src" / fname).write_bytes(data)
            app = _compile_app(b, work, name, arena_size, sample_bytes, preserve, jobs)
            left_out = json.loads((lib.objdir / "library.json").read_text()).get("left_out", {})
            elf = _link(tool, core, work, app, lib.archive, left_out)
            members = _members(work / "firmware.map")
            meta = _symbols(tool, elf)
            meta.update(arena_size=arena_size, objects=len(members), config_key=lib.key,
                        key=fkey, library=members)
            (work / "firmware.json").write_text(json.dumps(meta, indent=1))
            shutil.rmtree(fwdir, ignore_errors=True)
            os.replace(work, fwdir)
        except BaseException:  # a failed or interrupted build leaves no half-built firmware
            shutil.rmtree(work, ignore_errors=True)
            raise
        return _firmware(fwdir, meta, cached=False, compiled=lib.compiled + len(app),
                         seconds=time.perf_counter() - start)


def _compile_app(b: Compiler, work: Path, name: str, arena: int, sample_bytes: int,
                 preserve: bool, jobs: int | None) -> list[Path]:
    src = work / "src"
    extra = [f"-ffile-prefix-map={work}=fw", f"-I{src}", f'-DEDGEQ_MODEL_HEADER="{name}.h"',
             f'-DEDGEQ_OPS_HEADER="{name}_ops.h"', f"-DEDGEQ_MODEL_ARRAY={name}",
             f"-DEDGEQ_OP_COUNT={name}_op_count", f"-DEDGEQ_REGISTER_OPS={name}_register_ops",
             f"-DEDGEQ_ARENA_SIZE={arena}", f"-DEDGEQ_MAX_SAMPLE_BYTES={max(sample_bytes, 1)}",
             f"-DEDGEQ_MARKS={MARKS}", f"-DEDGEQ_PRESERVE={int(preserve)}"]
    # main.cc includes the TFLM headers the library's precompiled header holds (built at
    # main.cc's -O level, kept with the library); the model array is plain data.
    pch = b.pch(b.opt(str(src / "main.cc")))
    todo = [(src / "main.cc", work / "main.o", extra + pch),
            (src / "startup.c", work / "startup.o", extra),
            (src / f"{name}.cc", work / "model.o", extra)]
    with ThreadPoolExecutor(max(1, min(3, jobs or os.cpu_count() or 1))) as pool:
        for f in [pool.submit(b.compile, s, o, x) for s, o, x in todo]:
            f.result()
    return [o for _, o, _ in todo]


def _link(tool: Toolchain, core: C.Core, work: Path, app: list[Path], archive: Path,
          left_out: dict[str, str]) -> Path:
    elf = work / "firmware.elf"
    cmd = [tool.gxx, *core.flags, "-nostartfiles", "--specs=rdimon.specs",
           f"-L{work / 'src'}", "-T", str(work / "src" / core.linker_script),
           "-Wl,--gc-sections", f"-Wl,-Map={work / 'firmware.map'}",
           *[str(o) for o in app], str(archive), "-Wl,--start-group", "-lstdc++", "-lm",
           "-lc", "-lrdimon", "-lgcc", "-Wl,--end-group", "-o", str(elf)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        missing = sorted(set(_UNDEFINED.findall(proc.stderr)))
        if missing:
            raise ConversionError(
                STAGE, "link failed: no source in the TFLM tree defines " + ", ".join(missing[:6]),
                hint=(f"{len(left_out)} source(s) of the tree did not compile for this core "
                      f"({', '.join(sorted(left_out)[:3])}; first error: "
                      f"{next(iter(left_out.values()))})" if left_out else
                      "the tree may lack a kernel this model needs; make it with "
                      "OPTIMIZED_KERNEL_DIR=cmsis_nn from a current tflite-micro checkout"))
        raise ConversionError(STAGE, "link failed: "
                              + " | ".join(proc.stderr.strip().splitlines()[-4:]))
    return elf


_MEMBER = re.compile(r"libtflm\.a\(([^)]+)\)")


def _members(map_file: Path) -> list[str]:
    """The library's objects the linker took (the map's "archive member included" part)."""
    text = map_file.read_text(errors="replace")
    text = text.split("Discarded input sections")[0]
    return sorted({source_of_member(m) for m in _MEMBER.findall(text)})


def _firmware(fwdir: Path, meta: dict, *, cached: bool, compiled: int, seconds: float
              ) -> Firmware:
    return Firmware(
        elf=fwdir / "firmware.elf", key=meta["key"], config_key=meta["config_key"],
        cached=cached, compiled=compiled, objects=meta["objects"], build_seconds=seconds,
        arena_size=meta["arena_size"], mark_fn=(meta["mark_lo"], meta["mark_hi"]),
        marks_addr=meta["marks"], text_bytes=meta["text_bytes"], ram_bytes=meta["ram_bytes"],
    )



def _symbols(tool: Toolchain, elf: Path) -> dict:
    out = run([tool.nm, "-S", "--defined-only", str(elf)])
    syms = {}
    for line in out.splitlines():
        f = line.split()
        if len(f) == 4:
            syms[f[3]] = (int(f[0], 16), int(f[1], 16))
    if "edgeq_mark" not in syms or "edgeq_marks" not in syms:
        raise ConversionError(STAGE, "the firmware has no edgeq_mark/edgeq_marks symbols")
    lo, size = syms["edgeq_mark"]
    lo &= ~1  # the Thumb bit
    sizes = run([tool.nm.replace("-nm", "-size"), "-A", str(elf)])
    text = ram = 0
    for line in sizes.splitlines():
        f = line.split()
        if len(f) >= 3 and f[1].isdigit():
            sec, n = f[0], int(f[1])
            if n and sec not in (".comment", ".ARM.attributes") and not sec.startswith(".debug"):
                if sec in (".data", ".bss"):
                    ram += n
                else:
                    text += n
    return {"mark_lo": lo, "mark_hi": lo + size, "marks": syms["edgeq_marks"][0],
            "text_bytes": text, "ram_bytes": ram}
