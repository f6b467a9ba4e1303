"""Builds the emulator firmware for one model: edgeq's `embed` output (C array, op resolver,
arena size) + the TFLite Micro tree with CMSIS-NN kernels + edgeq's firmware main and start-up,
cross-compiled with arm-none-eabi-gcc.

Only what the model needs is compiled: the framework, the kernels that register the model's
ops, and whatever the linker then reports missing (found in the tree by name), so a first build
compiles tens of files, not the whole library. Every object is cached under
``<cache>/emulator/obj/<key>/`` where the key hashes the tree's contents, the compiler version
and every flag; a linked firmware is cached under ``<cache>/emulator/fw/<key>/`` keyed by that
and the embedded sources. A second run of the same model compiles and links nothing.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Iterator

from edgeq.emulator import cores as C
from edgeq.emulator.toolchain import Toolchain, Tree, cache_dir
from edgeq.errors import ConversionError

# Bump when the firmware sources or the build recipe change in a way the hashes do not see.
BUILD_VERSION = 2
MARKS = 4096  # words in edgeq_marks[] (main.cc's EDGEQ_MARKS)
_STAGE = "emulator firmware build"
_FIRMWARE_FILES = ("main.cc", "startup.c", "mps2.ld", "mps3.ld", "edgeq_sections.ld")
# The framework: every non-test source of tensorflow/lite/micro (not kernels) and the TFLite
# core files it uses. Test helpers and the recording allocator stay out.
_CORE_DIRS = ("tensorflow/lite/micro", "tensorflow/lite/micro/arena_allocator",
              "tensorflow/lite/micro/memory_planner", "tensorflow/lite/micro/tflite_bridge",
              "tensorflow/lite/core/api", "tensorflow/lite/core/c",
              "tensorflow/compiler/mlir/lite/core/api", "tensorflow/compiler/mlir/lite/schema")
_CORE_SKIP = {"fake_micro_context.cc", "mock_micro_graph.cc", "test_helpers.cc",
              "test_helper_custom_ops.cc", "recording_micro_allocator.cc", "hexdump.cc",
              "micro_time.cc", "system_setup.cc", "micro_profiler.cc"}
_CORE_EXTRA = ("tensorflow/lite/micro/kernels/kernel_util.cc",
               "tensorflow/lite/kernels/kernel_util.cc",
               "tensorflow/lite/kernels/internal/quantization_util.cc")
# Parsing these headers (flatbuffers' schema, above all) is most of a TFLM file's compile time;
# precompiled once per build, they make each file about 3x faster to compile.
_PCH_HEADERS = ("tensorflow/lite/schema/schema_generated.h",
                "tensorflow/lite/micro/micro_interpreter.h",
                "tensorflow/lite/micro/kernels/kernel_util.h",
                "tensorflow/lite/kernels/internal/common.h",
                "tensorflow/lite/kernels/internal/quantization_util.h",
                "tensorflow/lite/kernels/kernel_util.h")
_PCH_MIN_FILES = 4  # fewer C++ files to compile at one -O level: no precompiled header
_INCLUDES = ("", "third_party/flatbuffers/include", "third_party/gemmlowp", "third_party/ruy",
             "third_party/kissfft", "third_party/cmsis/CMSIS/Core/Include",
             "third_party/cmsis_nn", "third_party/cmsis_nn/Include")
_UNDEFINED = re.compile(r"undefined reference to `([^']+)'")


@dataclass(frozen=True)
class Firmware:
    elf: Path
    key: str  # the firmware cache key
    config_key: str  # the object cache key (tree + compiler + flags)
    cached: bool  # nothing was compiled or linked: the firmware came from the cache
    compiled: int  # objects compiled in this run
    objects: int  # library objects linked in
    build_seconds: float
    arena_size: int  # the arena the firmware declares (embed's recommendation)
    mark_fn: tuple[int, int]  # edgeq_mark() address range [lo, hi)
    marks_addr: int  # &edgeq_marks[0]
    text_bytes: int  # code + constants (incl. the model), from the ELF
    ram_bytes: int  # .data + .bss (incl. the arena), from the ELF


def config_key(tool: Toolchain, tree: Tree, core: C.Core) -> str:
    parts = [str(BUILD_VERSION), tree.digest, tool.gcc_version, core.name, *core.flags,
             *C.DEFINES, *C.COMMON, *C.CXX, *C.C, C.CORE_OPT, C.KERNEL_OPT]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:20]


def firmware_sources() -> dict[str, bytes]:
    pkg = resources.files("edgeq.emulator") / "firmware"
    return {name: (pkg / name).read_bytes() for name in _FIRMWARE_FILES}


def build_firmware(embedded: dict[str, bytes], name: str, arena_size: int, sample_bytes: int,
                   core: C.Core, tool: Toolchain, tree: Tree, *, jobs: int | None = None,
                   preserve: bool = False) -> Firmware:
    """The firmware ELF for the model `embed` wrote as `embedded` (NAME.h, NAME.cc, NAME_ops.h).

    Raises:
        ConversionError: a compile or link step failed (its first error lines are quoted).
    """
    start = time.perf_counter()
    ckey = config_key(tool, tree, core)
    sources = firmware_sources()
    h = hashlib.sha256(
        f"{ckey}\0{name}\0{arena_size}\0{sample_bytes}\0{MARKS}\0{preserve}".encode())
    for fname in sorted(embedded):
        h.update(fname.encode() + b"\0" + embedded[fname])
    for fname in sorted(sources):
        h.update(fname.encode() + b"\0" + sources[fname])
    fkey = h.hexdigest()[:20]
    root = cache_dir() / "emulator"
    fwdir, objdir = root / "fw" / fkey, root / "obj" / ckey
    meta_path = fwdir / "firmware.json"
    if meta_path.is_file() and (fwdir / "firmware.elf").is_file():
        return _firmware(fwdir, json.loads(meta_path.read_text()), cached=True, compiled=0,
                         seconds=time.perf_counter() - start)
    objdir.mkdir(parents=True, exist_ok=True)
    with _locked(objdir / ".lock"):
        if meta_path.is_file():  # built by another process while this one waited
            return _firmware(fwdir, json.loads(meta_path.read_text()), cached=True,
                             compiled=0, seconds=time.perf_counter() - start)
        b = _Builder(tool, tree, core, objdir, jobs or _default_jobs())
        work = fwdir.with_name(fkey + f".tmp{os.getpid()}")
        shutil.rmtree(work, ignore_errors=True)
        try:
            (work / "src").mkdir(parents=True)
            for fname, data in {**embedded, **sources}.items():
                (work / "src" / fname).write_bytes(data)
            app = b.compile_app(work, name, arena_size, sample_bytes, preserve)
            wanted = set(_core_sources(tree.root))
            wanted |= set(_kernel_sources(tree.root, embedded[f"{name}_ops.h"]))
            elf, used = b.link(work, app, wanted)
            meta = _symbols(tool, elf)
            meta.update(arena_size=arena_size, objects=len(used), config_key=ckey, key=fkey,
                        library=sorted(used))
            (work / "firmware.json").write_text(json.dumps(meta, indent=1))
            shutil.rmtree(fwdir, ignore_errors=True)
            os.replace(work, fwdir)
        except BaseException:  # a failed or interrupted build leaves no half-built firmware
            shutil.rmtree(work, ignore_errors=True)
            raise
        return _firmware(fwdir, meta, cached=False, compiled=b.compiled,
                         seconds=time.perf_counter() - start)


def _default_jobs() -> int:
    value = os.environ.get("EDGEQ_JOBS")
    if value and value.isdigit() and int(value) > 0:
        return int(value)
    return max(1, min(os.cpu_count() or 1, 8))


def _firmware(fwdir: Path, meta: dict, *, cached: bool, compiled: int, seconds: float
              ) -> Firmware:
    return Firmware(
        elf=fwdir / "firmware.elf", key=meta["key"], config_key=meta["config_key"],
        cached=cached, compiled=compiled, objects=meta["objects"], build_seconds=seconds,
        arena_size=meta["arena_size"], mark_fn=(meta["mark_lo"], meta["mark_hi"]),
        marks_addr=meta["marks"], text_bytes=meta["text_bytes"], ram_bytes=meta["ram_bytes"],
    )


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _core_sources(root: Path) -> list[str]:
    out = []
    for d in _CORE_DIRS:
        for p in sorted((root / d).glob("*.cc")):
            if p.name not in _CORE_SKIP and not p.name.endswith("_test.cc"):
                out.append(str(p.relative_to(root)))
    return out + [f for f in _CORE_EXTRA if (root / f).is_file()]


_METHOD = re.compile(r"TfLiteStatus\s+(Add\w+)\s*\(")
_REGISTER_CALL = re.compile(r"\b(Register_\w+)\s*\(\s*\)")
_REGISTER_DEF = re.compile(r"^\s*(?:const\s+)?TFLMRegistration\*?\s+(Register_\w+)\s*\(", re.M)
_OPS_CALL = re.compile(r"resolver\.(Add\w+)\(\)")


def _kernel_sources(root: Path, ops_header: bytes) -> list[str]:
    """The kernel files that define the Register_X() of each resolver method the model's
    NAME_ops.h calls, with each one's X_common.cc."""
    methods = set(_OPS_CALL.findall(ops_header.decode()))
    header = (root / "tensorflow/lite/micro/micro_mutable_op_resolver.h").read_text()
    wanted = set()
    for m in _METHOD.finditer(header):
        if m.group(1) in methods:
            call = _REGISTER_CALL.search(header, m.end(), m.end() + 400)
            if call:
                wanted.add(call.group(1))
    index = _register_index(root)
    out = set()
    for fn in wanted:
        for src in index.get(fn, ()):
            out.add(src)
            common = (root / src).with_name((root / src).stem + "_common.cc")
            for cand in (common, root / "tensorflow/lite/micro/kernels" / common.name):
                if cand.is_file():
                    out.add(str(cand.relative_to(root)))
    return sorted(out)


def _register_index(root: Path) -> dict[str, list[str]]:
    index: dict[str, list[str]] = {}
    for d in ("tensorflow/lite/micro/kernels", "signal/micro/kernels"):
        for p in sorted((root / d).rglob("*.cc")):
            if p.name.endswith("_test.cc"):
                continue
            for fn in _REGISTER_DEF.findall(p.read_text(errors="replace")):
                index.setdefault(fn, []).append(str(p.relative_to(root)))
    return index


class _Builder:
    def __init__(self, tool: Toolchain, tree: Tree, core: C.Core, objdir: Path, jobs: int):
        self.tool, self.root, self.core = tool, tree.root, core
        self.objdir, self.jobs = objdir, jobs
        self.includes = [f"-I{tree.root / i}" if i else f"-I{tree.root}" for i in _INCLUDES]
        # __FILE__ (TFLM's error messages) must not carry where the tree or the cache is: the
        # same inputs give the same firmware bytes on any machine.
        self.prefix_map = [f"-ffile-prefix-map={tree.root}=tflm"]
        self.compiled = 0
        self.work = objdir
        self._sources: list[Path] | None = None

    @staticmethod
    def _opt(rel: str) -> str:
        return C.KERNEL_OPT if ("/kernels/" in rel or "cmsis_nn" in rel or "signal" in rel) \
            else C.CORE_OPT

    def _command(self, src: Path, obj: Path, extra: list[str]) -> list[str]:
        is_c = src.suffix == ".c"
        return [self.tool.gcc if is_c else self.tool.gxx, *self.core.flags, self._opt(str(src)),
                *C.DEFINES, *C.COMMON, *(C.C if is_c else C.CXX), *self.prefix_map,
                *self.includes, *extra, "-c", str(src), "-o", str(obj)]

    def _pch(self, opt: str) -> list[str]:
        """Builds the precompiled header for C++ at `opt`; the flags that use it."""
        d = self.work / "pch" / opt.lstrip("-")
        header = d / "edgeq_pch.h"
        if not header.is_file():
            d.mkdir(parents=True, exist_ok=True)
            header.write_text("".join(f'#include "{h}"\n' for h in _PCH_HEADERS
                                      if (self.root / h).is_file()))
            cmd = [self.tool.gxx, *self.core.flags, opt, *C.DEFINES, *C.COMMON, *C.CXX,
                   *self.prefix_map, *self.includes, "-x", "c++-header", str(header), "-o", str(header) + ".gch"]
            if subprocess.run(cmd, capture_output=True).returncode != 0:
                return []  # compile without it
        return ["-include", str(header), "-Winvalid-pch"]

    def _compile(self, src: Path, obj: Path, extra: list[str] | None = None) -> None:
        obj.parent.mkdir(parents=True, exist_ok=True)
        tmp = obj.with_name(obj.name + f".tmp{os.getpid()}")
        run = subprocess.run(self._command(src, tmp, extra or []), capture_output=True, text=True)
        if run.returncode != 0:
            tmp.unlink(missing_ok=True)
            lines = [ln for ln in run.stderr.splitlines() if "error" in ln][:3] or \
                run.stderr.strip().splitlines()[-3:]
            raise ConversionError(_STAGE, f"{Path(self.tool.gxx).name} failed on {src.name}: "
                                  + " | ".join(lines))
        os.replace(tmp, obj)

    def _objects(self, rels: set[str]) -> dict[str, Path]:
        """Compiles (in parallel) the library sources not in the cache yet."""
        objs = {r: self.objdir / (r + ".o") for r in rels}
        todo = [r for r in sorted(rels) if not objs[r].is_file()]
        if todo:
            extra: dict[str, list[str]] = {}
            with ThreadPoolExecutor(self.jobs) as pool:
                levels = {self._opt(r) for r in todo if r.endswith(".cc")}
                big = [o for o in sorted(levels) if sum(
                    1 for r in todo if r.endswith(".cc") and self._opt(r) == o) >= _PCH_MIN_FILES]
                for o, flags in zip(big, pool.map(self._pch, big)):
                    extra[o] = flags
                futures = [pool.submit(self._compile, self.root / r, objs[r],
                                       extra.get(self._opt(r), []) if r.endswith(".cc") else [])
                           for r in todo]
                for f in futures:
                    f.result()
            self.compiled += len(todo)
        return objs

    def compile_app(self, work: Path, name: str, arena: int, sample_bytes: int,
                    preserve: bool = False) -> list[Path]:
        src = work / "src"
        extra = [f"-ffile-prefix-map={work}=fw", f"-I{src}", f'-DEDGEQ_MODEL_HEADER="{name}.h"',
                 f'-DEDGEQ_OPS_HEADER="{name}_ops.h"', f"-DEDGEQ_MODEL_ARRAY={name}",
                 f"-DEDGEQ_OP_COUNT={name}_op_count", f"-DEDGEQ_REGISTER_OPS={name}_register_ops",
                 f"-DEDGEQ_ARENA_SIZE={arena}", f"-DEDGEQ_MAX_SAMPLE_BYTES={max(sample_bytes, 1)}",
                 f"-DEDGEQ_MARKS={MARKS}", f"-DEDGEQ_PRESERVE={int(preserve)}"]
        objs = []
        jobs = [(src / "main.cc", work / "main.o"), (src / "startup.c", work / "startup.o"),
                (src / f"{name}.cc", work / "model.o")]
        with ThreadPoolExecutor(self.jobs) as pool:
            for f in [pool.submit(self._compile, s, o, extra) for s, o in jobs]:
                f.result()
        objs = [o for _, o in jobs]
        self.compiled += len(objs)
        return objs

    def link(self, work: Path, app: list[Path], wanted: set[str]) -> tuple[Path, set[str]]:
        elf = work / "firmware.elf"
        self.work = work
        tried: set[str] = set()
        for _ in range(12):
            objs = self._objects(wanted)
            lib = work / "libtflm.a"
            lib.unlink(missing_ok=True)
            _run([self.tool.ar, "rcs", str(lib), *[str(objs[r]) for r in sorted(objs)]])
            cmd = [self.tool.gxx, *self.core.flags, "-nostartfiles", "--specs=rdimon.specs",
                   f"-L{work / 'src'}", "-T", str(work / "src" / self.core.linker_script),
                   "-Wl,--gc-sections", f"-Wl,-Map={work / 'firmware.map'}",
                   *[str(o) for o in app], str(lib), "-Wl,--start-group", "-lstdc++", "-lm",
                   "-lc", "-lrdimon", "-lgcc", "-Wl,--end-group", "-o", str(elf)]
            run = subprocess.run(cmd, capture_output=True, text=True)
            if run.returncode == 0:
                shutil.rmtree(work / "pch", ignore_errors=True)  # large, and only for compiling
                return elf, wanted
            missing = sorted(set(_UNDEFINED.findall(run.stderr)))
            if not missing:
                raise ConversionError(_STAGE, "link failed: "
                                      + " | ".join(run.stderr.strip().splitlines()[-4:]))
            found = set()
            for sym in missing:
                found |= set(self._define(sym))
            found -= wanted
            if not found or not (set(missing) - tried):
                raise ConversionError(
                    _STAGE, "link failed: no source in the TFLM tree defines "
                    + ", ".join(missing[:6]),
                    hint="the tree may lack a kernel this model needs; make it with "
                    "OPTIMIZED_KERNEL_DIR=cmsis_nn from a current tflite-micro checkout")
            tried |= set(missing)
            wanted = wanted | found
        raise ConversionError(_STAGE, "link did not converge")

    def _all_sources(self) -> list[Path]:
        if self._sources is None:
            self._sources = sorted(
                p for p in self.root.rglob("*") if p.suffix in (".c", ".cc")
                and not p.name.endswith("_test.cc") and p.name not in _CORE_SKIP
                and "/examples/" not in str(p))
        return self._sources

    def _define(self, symbol: str) -> list[str]:
        """Source files that (by a textual match) define `symbol`, as the linker names it."""
        name = symbol.split("(")[0].strip()
        for lead in ("vtable for ", "typeinfo for ", "typeinfo name for "):
            if name.startswith(lead):  # emitted with the class's first out-of-line method
                name = name[len(lead):] + "::"
        # "tflite::MicroAllocator::Create" -> "MicroAllocator::Create"; "arm_convolve_s8".
        parts = [p for p in re.sub(r"<.*>", "", name).split("::") if p and "anonymous" not in p]
        if not parts:
            return []
        leaf = parts[-1]
        if "::" not in name and not leaf.startswith("_"):  # a C function: arm_x -> arm_x.c
            direct = [p for p in self._all_sources() if p.stem == leaf]
            if direct:
                return [str(direct[0].relative_to(self.root))]
        qual = "::".join(parts[-2:]) if len(parts) >= 2 and parts[-2][:1].isupper() else leaf
        # A definition at namespace scope starts in column 0 with its type ("TfLiteStatus
        # tflite::micro::Foo(" or "int32_t* Foo(" or "const int kFoo ="): only type tokens
        # may come before the name, which rules out calls on the same line.
        prefix = r"^(?:[A-Za-z_][\w:<>,\*& \t]*[\*& \t])?(?:\w+::)*"
        if name.endswith("::"):  # a class: any of its out-of-line members
            pattern = re.compile(prefix + re.escape(leaf) + r"::~?\w+[ \t]*\(", re.M)
        else:
            pattern = re.compile(prefix + re.escape(qual) + r"[ \t]*\(|" + prefix
                                 + re.escape(leaf) + r"\b[^(;]*=", re.M)
        hits = []
        for p in self._all_sources():
            text = p.read_text(errors="replace")
            if leaf in text and pattern.search(text):
                hits.append(str(p.relative_to(self.root)))
        return hits


def _run(cmd: list[str]) -> str:
    run = subprocess.run(cmd, capture_output=True, text=True)
    if run.returncode != 0:
        raise ConversionError(_STAGE, f"{Path(cmd[0]).name} failed: {run.stderr.strip()[:300]}")
    return run.stdout


def _symbols(tool: Toolchain, elf: Path) -> dict:
    out = _run([tool.nm, "-S", "--defined-only", str(elf)])
    syms = {}
    for line in out.splitlines():
        f = line.split()
        if len(f) == 4:
            syms[f[3]] = (int(f[0], 16), int(f[1], 16))
    if "edgeq_mark" not in syms or "edgeq_marks" not in syms:
        raise ConversionError(_STAGE, "the firmware has no edgeq_mark/edgeq_marks symbols")
    lo, size = syms["edgeq_mark"]
    lo &= ~1  # the Thumb bit
    sizes = _run([tool.nm.replace("-nm", "-size"), "-A", str(elf)])
    text = ram = 0
    for line in sizes.splitlines():
        f = line.split()
        if len(f) >= 3 and f[1].isdigit():
            sec, n, addr = f[0], int(f[1]), int(f[2])
            if n and sec not in (".comment", ".ARM.attributes") and not sec.startswith(".debug"):
                if sec in (".data", ".bss"):
                    ram += n
                else:
                    text += n
    return {"mark_lo": lo, "mark_hi": lo + size, "marks": syms["edgeq_marks"][0],
            "text_bytes": text, "ram_bytes": ram}
