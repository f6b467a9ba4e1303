"""Finding what the emulator needs: the Arm cross compiler, QEMU, a host C compiler (for the
instruction-count plugin), a TensorFlow Lite Micro source tree, and edgeq's build cache.

Every miss is one `MissingDependencyError` whose hint is the command that fixes it."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import stat
import subprocess
import tarfile
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from edgeq.errors import InputError, MissingDependencyError

# The complete set of Debian 12 (and Ubuntu) packages the emulator needs; README.md and .ci/run
# name the same list. gcc-arm-none-eabi brings binutils-arm-none-eabi (ar, nm, size); the C++
# headers and libstdc++ for arm-none-eabi-g++ are a separate package, and so is newlib (whose
# librdimon.a is the semihosting C library the firmware links).
APT_PACKAGES = ("gcc", "gcc-arm-none-eabi", "libnewlib-arm-none-eabi",
                "libstdc++-arm-none-eabi-newlib", "qemu-system-arm")
ENV_TREE = "EDGEQ_TFLM_TREE"
ENV_CACHE = "EDGEQ_CACHE"
CREATE_TREE = ("python3 tensorflow/lite/micro/tools/project_generation/create_tflm_tree.py "
               "--makefile_options=\"TARGET=cortex_m_qemu TARGET_ARCH=cortex-m4 "
               "OPTIMIZED_KERNEL_DIR=cmsis_nn\" /path/to/tflm_tree")
TREE_HINT = (f"pass --tflm-tree DIR (or a .tar.gz of one) or set {ENV_TREE}, or unset both to "
             f"use the tree edgeq ships; make a tree with CMSIS-NN kernels from a tflite-micro "
             f"checkout with: {CREATE_TREE}")
_TREE_MARKERS = ("tensorflow/lite/micro/micro_interpreter.h", "third_party/cmsis_nn/Include")
_BUNDLED = "tflm_tree_cmsis_nn.tar.gz"


def apt_line(packages: list[str] | tuple[str, ...] = APT_PACKAGES) -> str:
    return f"sudo apt-get install -y {' '.join(packages)} (Debian 12 / Ubuntu package names)"


@dataclass(frozen=True)
class Toolchain:
    gcc: str
    gxx: str
    ar: str
    nm: str
    qemu: str
    host_cc: str
    gcc_version: str
    qemu_version: str


def find_toolchain() -> Toolchain:
    """Every tool and library the emulator needs, checked before any work (well under a
    second): the cross compilers and binutils, the C++ headers and libstdc++ for
    arm-none-eabi-g++, newlib's semihosting library, QEMU and a host C compiler (for the
    plugin). One error names every missing Debian package and the apt-get line for them.
    A found toolchain is remembered for the process (per PATH)."""
    return _find_toolchain(os.environ.get("PATH", ""))


@functools.lru_cache(maxsize=4)
def _find_toolchain(_path: str) -> Toolchain:
    tools = {"gcc": "arm-none-eabi-gcc", "gxx": "arm-none-eabi-g++", "ar": "arm-none-eabi-ar",
             "nm": "arm-none-eabi-nm", "size": "arm-none-eabi-size", "qemu": "qemu-system-arm"}
    found = {k: shutil.which(v) for k, v in tools.items()}
    host_cc = next((shutil.which(c) for c in ("cc", "gcc", "clang") if shutil.which(c)), None)
    missing: dict[str, str] = {}  # package -> what of it is missing
    if found["gcc"] is None or found["gxx"] is None:
        missing["gcc-arm-none-eabi"] = "arm-none-eabi-gcc/g++"
    elif not all(found[k] for k in ("ar", "nm", "size")):
        missing["binutils-arm-none-eabi"] = "arm-none-eabi-ar/nm/size"
    if not _has_lib(found["gcc"], "librdimon.a"):
        missing["libnewlib-arm-none-eabi"] = "newlib's librdimon.a"
    if not (_has_lib(found["gxx"], "libstdc++.a") and _has_cxx_headers(found["gxx"])):
        missing["libstdc++-arm-none-eabi-newlib"] = "C++ headers (<cstddef>) and libstdc++"
    if found["qemu"] is None:
        missing["qemu-system-arm"] = "qemu-system-arm"
    if host_cc is None:
        missing["gcc"] = "a host C compiler for QEMU's plugin"
    if missing:
        what = ", ".join(f"{pkg} ({why})" for pkg, why in missing.items())
        err = MissingDependencyError(what, apt_line(
            [p for p in APT_PACKAGES if p in missing] + [p for p in missing
                                                        if p not in APT_PACKAGES]))
        err.message = f"edgeq emulate needs Debian package(s) that are not installed: {what}"
        raise err
    return Toolchain(
        gcc=found["gcc"], gxx=found["gxx"], ar=found["ar"], nm=found["nm"], qemu=found["qemu"],
        host_cc=host_cc, gcc_version=_first_line([found["gcc"], "--version"]),
        qemu_version=_first_line([found["qemu"], "--version"]),
    )


# Where Debian puts them, for when there is no compiler to ask.
_DEBIAN_LIBS = {"librdimon.a": "/usr/lib/arm-none-eabi/newlib/librdimon.a",
                "libstdc++.a": "/usr/lib/arm-none-eabi/newlib/libstdc++.a"}


def _has_lib(compiler: str | None, name: str) -> bool:
    if compiler is None:
        return os.path.isfile(_DEBIAN_LIBS[name])
    out = subprocess.run([compiler, "-mthumb", "-mcpu=cortex-m4", "-mfloat-abi=hard",
                          "-mfpu=fpv4-sp-d16", f"-print-file-name={name}"],
                         capture_output=True, text=True)
    return out.returncode == 0 and os.path.isabs(out.stdout.strip())


def _has_cxx_headers(gxx: str | None) -> bool:
    if gxx is None:
        return os.path.isdir("/usr/include/newlib/c++")
    out = subprocess.run([gxx, "-x", "c++", "-fsyntax-only", "-"], capture_output=True,
                         input="#include <cstddef>\n#include <cstdint>\n", text=True)
    return out.returncode == 0


def _first_line(cmd: list[str]) -> str:
    out = subprocess.run(cmd, capture_output=True, text=True)
    return (out.stdout.strip().splitlines() or ["unknown"])[0]


def cache_dir() -> Path:
    """$EDGEQ_CACHE, else $XDG_CACHE_HOME/edgeq, else ~/.cache/edgeq."""
    if os.environ.get(ENV_CACHE):
        return Path(os.environ[ENV_CACHE]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "edgeq"


@dataclass(frozen=True)
class Tree:
    root: Path
    digest: str  # sha256 over the tree's paths and contents: part of every cache key
    source: str  # what the user gave, or "bundled"
    commits: dict = field(default_factory=dict)  # the bundled tree's pinned sources


def bundled_tree() -> Path:
    """The TFLM + CMSIS-NN tree that ships in the wheel (edgeq/emulator/tflm/)."""
    return Path(str(resources.files("edgeq.emulator") / "tflm" / _BUNDLED))


def bundled_commits() -> dict:
    manifest = resources.files("edgeq.emulator") / "tflm" / "TREE.json"
    return json.loads(manifest.read_text())["sources"]


def resolve_tree(given: str | Path | None) -> Tree:
    """The TFLM tree from --tflm-tree, else $EDGEQ_TFLM_TREE, else the one edgeq ships: a
    directory, or a .tar.gz holding one (unpacked once into the cache, keyed by its hash)."""
    value = given if given is not None else os.environ.get(ENV_TREE)
    bundled = not value
    if bundled:
        value = bundled_tree()
        if not value.is_file():
            raise InputError(f"the TFLM tree edgeq ships is missing from this install ({value})",
                             hint="reinstall edgeq, or " + TREE_HINT)
    from edgeq.formats.input_files import check_file_or_dir

    path = Path(value).expanduser()
    option = ("--tflm-tree" if given is not None else "the TFLM tree edgeq ships" if bundled
              else f"${ENV_TREE}")
    if not path.exists() and not path.is_symlink():
        raise InputError(f"TFLM tree '{path}' does not exist", hint=TREE_HINT)
    if stat.S_ISREG(check_file_or_dir(path, option, hint=TREE_HINT).st_mode):
        path = _unpack(path)
    root = _find_root(path)
    if root is None:
        raise InputError(f"'{value}' is not a TensorFlow Lite Micro tree with CMSIS-NN (no "
                         f"{' or '.join(_TREE_MARKERS)})", hint=TREE_HINT)
    digest_file = path / ".digest"
    if (path / ".complete").is_file() and digest_file.is_file():  # an unpacked archive
        digest = digest_file.read_text().strip()
    else:
        digest = _tree_digest(root)
        if (path / ".complete").is_file():  # unpacked by an older edgeq: keep it from now on
            tmp = path / f".digest.tmp{os.getpid()}"
            tmp.write_text(digest + "\n")
            os.replace(tmp, digest_file)
    return Tree(root=root, digest=digest, source="bundled" if bundled else str(value),
                commits=bundled_commits() if bundled else {})


def _find_root(path: Path) -> Path | None:
    for cand in (path, *sorted(p for p in path.iterdir() if p.is_dir())):
        if all((cand / m).exists() for m in _TREE_MARKERS):
            return cand
    return None


def _unpack(archive: Path) -> Path:
    digest = _file_digest(archive)
    dest = cache_dir() / "emulator" / "trees" / digest[:16]
    if (dest / ".complete").exists():
        return dest
    tmp = dest.with_name(dest.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        with tarfile.open(archive) as tar:
            try:
                tar.extractall(tmp, filter=_bounded_filter())  # no links or paths out of tmp
            except TypeError:  # Python before 3.10.12 / 3.11.4: no filters
                tar.extractall(tmp)
    except (tarfile.TarError, OSError) as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise InputError(f"TFLM tree archive '{archive}': cannot unpack: {exc}",
                         hint=TREE_HINT) from exc
    root = _find_root(tmp)
    if root is not None:  # the digest of an archive's tree never changes: computed once
        (tmp / ".digest").write_text(_tree_digest(root) + "\n")
    (tmp / ".complete").write_text(str(archive) + "\n")
    try:
        tmp.rename(dest)
    except OSError:  # another process unpacked it first
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


# The pinned TFLM + CMSIS-NN tree unpacks to tens of MiB; a gzip bomb would fill the disk.
TREE_MAX_BYTES = 2 << 30
TREE_MAX_MEMBERS = 200_000


def _bounded_filter():
    """tarfile's "data" filter (no links or paths out of the destination, no devices), which
    also stops the extraction past TREE_MAX_BYTES or TREE_MAX_MEMBERS: members are extracted as
    they stream out of the gzip, so the count is kept as they come."""
    seen = {"bytes": 0, "members": 0}

    def check(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo | None:
        seen["bytes"] += max(member.size, 0)
        seen["members"] += 1
        if seen["bytes"] > TREE_MAX_BYTES or seen["members"] > TREE_MAX_MEMBERS:
            raise tarfile.TarError(f"it unpacks to more than {TREE_MAX_BYTES >> 30} GiB or "
                                   f"{TREE_MAX_MEMBERS:,} files, more than a TFLM tree holds")
        return tarfile.data_filter(member, dest)  # exists wherever filters do

    return check


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


_SOURCE_SUFFIXES = {".h", ".hpp", ".c", ".cc", ".cpp", ".inc", ".S", ".s"}


def _tree_digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.suffix in _SOURCE_SUFFIXES:
            h.update(str(p.relative_to(root)).encode() + b"\0")
            with p.open("rb") as fh:  # streamed: a tree's file may be large
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
    return h.hexdigest()
