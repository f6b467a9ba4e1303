"""The prepared TFLite Micro library for one (tree, core flags, compiler): the framework, every
kernel (CMSIS-NN's where the tree has one, else the reference kernel) and every CMSIS-NN and
signal function, compiled once into ``<cache>/emulator/obj/<key>/libtflm.a``.

A model's firmware then compiles only its own three files (edgeq's main, start-up and the
embedded model) and links against the archive: the linker takes only the members the model
needs. `edgeq emulate --prepare --target T` builds it ahead of time (for CI images and
Dockerfiles); otherwise the first `emulate` on a core builds it, reporting files compiled of
total through a progress callback (the library never prints).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from edgeq.emulator import cores as C
from edgeq.emulator.toolchain import Toolchain, Tree, cache_dir
from edgeq.errors import ConversionError

# Bump when the library recipe changes in a way the key's hashes do not see.
LIBRARY_VERSION = 3
STAGE = "emulator firmware build"
Progress = Callable[[int, int], None]  # (files compiled so far, files to compile)

# Not part of a firmware: TFLM's test helpers, the recording allocator, and the platform files
# edgeq's own firmware replaces (timing, system set-up, the profiler).
_SKIP_NAMES = {"fake_micro_context.cc", "mock_micro_graph.cc", "test_helpers.cc",
               "test_helper_custom_ops.cc", "recording_micro_allocator.cc", "hexdump.cc",
               "micro_time.cc", "system_setup.cc", "micro_profiler.cc", "kernel_runner.cc"}
_SKIP_DIRS = ("/examples/", "/tools/", "/testing/", "/benchmarks/")
# Parsing these headers (flatbuffers' schema, above all) is most of a TFLM file's compile time;
# precompiled once per library, they make each C++ file about 3x faster to compile.
_PCH_HEADERS = ("tensorflow/lite/schema/schema_generated.h",
                "tensorflow/lite/micro/micro_interpreter.h",
                "tensorflow/lite/micro/kernels/kernel_util.h",
                "tensorflow/lite/kernels/internal/common.h",
                "tensorflow/lite/kernels/internal/quantization_util.h",
                "tensorflow/lite/kernels/kernel_util.h")
INCLUDES = ("", "third_party/flatbuffers/include", "third_party/gemmlowp", "third_party/ruy",
            "third_party/kissfft", "third_party/cmsis/CMSIS/Core/Include",
            "third_party/cmsis_nn", "third_party/cmsis_nn/Include")


def config_key(tool: Toolchain, tree: Tree, core: C.Core) -> str:
    """The library's cache key: the tree's contents, the compiler and every flag. Not the core's
    name: cores built with the same flags (cortex-m55 and cortex-m85) share one library."""
    parts = [str(LIBRARY_VERSION), tree.digest, tool.gcc_version, *core.flags, *C.DEFINES,
             *C.COMMON, *C.CXX, *C.C, C.CORE_OPT, C.KERNEL_OPT]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:20]


def library_sources(root: Path) -> list[str]:
    """Every source file of the tree that goes into the library, sorted. Where CMSIS-NN has a
    kernel (kernels/cmsis_nn/X.cc) it replaces the reference kernels/X.cc: both define the
    same Register_X()."""
    kernels = root / "tensorflow/lite/micro/kernels"
    optimized = {p.name for p in (kernels / "cmsis_nn").glob("*.cc")}
    out = []
    for p in root.rglob("*"):
        if p.suffix not in (".c", ".cc") or not p.is_file():
            continue
        rel = "/" + str(p.relative_to(root))
        if p.name.endswith("_test.cc") or p.name in _SKIP_NAMES or any(d in rel for d in _SKIP_DIRS):
            continue
        if p.parent == kernels and p.name in optimized:
            continue
        out.append(rel[1:])
    return sorted(out)


@dataclass(frozen=True)
class Library:
    archive: Path  # libtflm.a
    key: str
    objdir: Path  # also holds the precompiled headers the firmware's main.cc uses
    files: int  # sources in the archive
    compiled: int  # compiled by this call (0: it was prepared already)
    seconds: float


def prepare_library(tool: Toolchain, tree: Tree, core: C.Core, *, jobs: int | None = None,
                    progress: Progress | None = None) -> Library:
    """The prepared library for `core`, building what is missing (objects already in the cache
    are kept: an interrupted preparation resumes). Concurrent edgeq processes wait for one
    another on a lock.

    Raises:
        ConversionError: a source did not compile (its first error lines are quoted).
    """
    start = time.perf_counter()
    key = config_key(tool, tree, core)
    objdir = cache_dir() / "emulator" / "obj" / key
    done = objdir / "library.json"
    if done.is_file() and (objdir / "libtflm.a").is_file():
        meta = json.loads(done.read_text())
        return Library(objdir / "libtflm.a", key, objdir, meta["files"], 0,
                       time.perf_counter() - start)
    objdir.mkdir(parents=True, exist_ok=True)
    with locked(objdir / ".lock"):
        if done.is_file():  # prepared by another process while this one waited
            return prepare_library(tool, tree, core, jobs=jobs, progress=progress)
        b = Compiler(tool, tree, core, objdir, jobs or default_jobs())
        rels = library_sources(tree.root)
        objs, failed = b.compile_all(rels, progress)
        # A tree made with other options may hold a file or two this core cannot compile (a
        # kernel for other hardware): left out, and named if a model's link then needs it. More
        # than that is a broken toolchain or tree: the first error stops the preparation.
        if len(failed) > max(2, len(rels) // 50):
            first = sorted(failed)[0]
            raise ConversionError(STAGE, f"{len(failed)} of {len(rels)} TFLM sources did not "
                                  f"compile; the first: {failed[first]}")
        rels = [r for r in rels if r not in failed]
        # A precompiled header is some 250 MB: keep only the one a model's main.cc uses.
        for level in {C.CORE_OPT, C.KERNEL_OPT} - {Compiler.opt("main.cc")}:
            shutil.rmtree(objdir / "pch" / level.lstrip("-"), ignore_errors=True)
        archive = objdir / "libtflm.a"
        tmp = objdir / f"libtflm.a.tmp{os.getpid()}"
        tmp.unlink(missing_ok=True)
        # An archive member is named by its file's base name, and the tree has several
        # kernel_util.cc (and more): each object goes in under its whole relative path,
        # flattened, so that none replaces another. D: no timestamps, uids or modes (the same
        # bytes on every machine).
        staged = objdir / "members"
        shutil.rmtree(staged, ignore_errors=True)
        staged.mkdir()
        for r in rels:
            os.link(objs[r], staged / member_name(r))
        run([tool.ar, "qcsD", str(tmp), *[str(staged / member_name(r)) for r in rels]])
        shutil.rmtree(staged, ignore_errors=True)
        os.replace(tmp, archive)
        done.write_text(json.dumps({"key": key, "files": len(rels), "flags": list(core.flags),
                                    "gcc": tool.gcc_version, "tree": tree.digest,
                                    "sources": rels, "left_out": failed}, indent=1))
        return Library(archive, key, objdir, len(rels), b.compiled, time.perf_counter() - start)


def member_name(rel: str) -> str:
    """The archive member of a library source (its relative path, flattened)."""
    return rel.replace("/", "__") + ".o"


def source_of_member(member: str) -> str:
    return member[:-2].replace("__", "/") if member.endswith(".o") else member


def default_jobs() -> int:
    value = os.environ.get("EDGEQ_JOBS")
    if value and value.isdigit() and int(value) > 0:
        return int(value)
    return max(1, min(os.cpu_count() or 1, 8))


@contextmanager
def locked(path: Path) -> Iterator[None]:
    with path.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def run(cmd: list[str]) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ConversionError(STAGE, f"{Path(cmd[0]).name} failed: {proc.stderr.strip()[:300]}")
    return proc.stdout


class Compiler:
    """arm-none-eabi-gcc with the library's flags for one core; objects under `objdir`."""

    def __init__(self, tool: Toolchain, tree: Tree, core: C.Core, objdir: Path, jobs: int):
        self.tool, self.root, self.core = tool, tree.root, core
        self.objdir, self.jobs = objdir, jobs
        self.includes = [f"-I{tree.root / i}" if i else f"-I{tree.root}" for i in INCLUDES]
        # __FILE__ (TFLM's error messages) must not carry where the tree or the cache is: the
        # same inputs give the same firmware bytes on any machine.
        self.prefix_map = [f"-ffile-prefix-map={tree.root}=tflm"]
        self.compiled = 0

    @staticmethod
    def opt(rel: str) -> str:
        return C.KERNEL_OPT if ("/kernels/" in rel or "cmsis_nn" in rel or "signal" in rel) \
            else C.CORE_OPT

    def command(self, src: Path, obj: Path, extra: list[str]) -> list[str]:
        is_c = src.suffix == ".c"
        return [self.tool.gcc if is_c else self.tool.gxx, *self.core.flags, self.opt(str(src)),
                *C.DEFINES, *C.COMMON, *(C.C if is_c else C.CXX), *self.prefix_map,
                *self.includes, *extra, "-c", str(src), "-o", str(obj)]

    def pch(self, opt: str) -> list[str]:
        """The precompiled header for C++ at `opt` (built once, kept with the objects): the
        flags that use it, or none when it cannot be built."""
        d = self.objdir / "pch" / opt.lstrip("-")
        header = d / "edgeq_pch.h"
        if not (d / "edgeq_pch.h.gch").is_file():
            d.mkdir(parents=True, exist_ok=True)
            header.write_text("".join(f'#include "{h}"\n' for h in _PCH_HEADERS
                                      if (self.root / h).is_file()))
            tmp = d / f"edgeq_pch.h.gch.tmp{os.getpid()}"
            cmd = [self.tool.gxx, *self.core.flags, opt, *C.DEFINES, *C.COMMON, *C.CXX,
                   *self.prefix_map, *self.includes, "-x", "c++-header", str(header),
                   "-o", str(tmp)]
            if subprocess.run(cmd, capture_output=True).returncode != 0:
                tmp.unlink(missing_ok=True)
                return []  # compile without it
            os.replace(tmp, d / "edgeq_pch.h.gch")
        return ["-include", str(header), "-Winvalid-pch"]

    def compile(self, src: Path, obj: Path, extra: list[str] | None = None) -> None:
        obj.parent.mkdir(parents=True, exist_ok=True)
        tmp = obj.with_name(obj.name + f".tmp{os.getpid()}")
        proc = subprocess.run(self.command(src, tmp, extra or []), capture_output=True,
                              text=True)
        if proc.returncode != 0:
            tmp.unlink(missing_ok=True)
            lines = [ln for ln in proc.stderr.splitlines() if "error" in ln][:3] or \
                proc.stderr.strip().splitlines()[-3:]
            raise ConversionError(STAGE, f"{Path(self.command(src, tmp, [])[0]).name} failed "
                                  f"on {src.name}: " + " | ".join(lines))
        os.replace(tmp, obj)

    def compile_all(self, rels: list[str], progress: Progress | None
                    ) -> tuple[dict[str, Path], dict[str, str]]:
        """Compiles (in parallel) the sources not in the cache yet: their objects, and the
        sources that did not compile with the first line of each one's error."""
        objs = {r: self.objdir / (r + ".o") for r in rels}
        todo = [r for r in rels if not objs[r].is_file()]
        failed: dict[str, str] = {}
        if not todo:
            return objs, failed
        if progress is not None:
            progress(0, len(todo))
        with ThreadPoolExecutor(self.jobs) as pool:
            levels = sorted({self.opt(r) for r in todo if r.endswith(".cc")})
            extra = dict(zip(levels, pool.map(self.pch, levels)))
            futures = {pool.submit(self.compile, self.root / r, objs[r],
                                   extra.get(self.opt(r), []) if r.endswith(".cc") else []): r
                       for r in todo}
            try:
                for n, f in enumerate(as_completed(futures), 1):
                    try:
                        f.result()
                    except ConversionError as exc:
                        failed[futures[f]] = exc.message
                    if progress is not None:
                        progress(n, len(todo))
            except BaseException:
                for f in futures:
                    f.cancel()
                raise
        self.compiled += len(todo) - len(failed)
        return objs, failed
