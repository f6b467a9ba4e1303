"""Finding what the emulator needs: the Arm cross compiler, QEMU, a host C compiler (for the
instruction-count plugin), a TensorFlow Lite Micro source tree, and edgeq's build cache.

Every miss is one `MissingDependencyError` whose hint is the command that fixes it."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

from edgeq.errors import InputError, MissingDependencyError

APT_HINT = ("apt-get install -y gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm "
            "(Debian/Ubuntu)")
ENV_TREE = "EDGEQ_TFLM_TREE"
ENV_CACHE = "EDGEQ_CACHE"
CREATE_TREE = ("python3 tensorflow/lite/micro/tools/project_generation/create_tflm_tree.py "
               "--makefile_options=\"TARGET=cortex_m_qemu TARGET_ARCH=cortex-m4 "
               "OPTIMIZED_KERNEL_DIR=cmsis_nn\" /path/to/tflm_tree")
TREE_HINT = (f"pass --tflm-tree DIR (or a .tar.gz of one) or set {ENV_TREE}; make a tree with "
             f"CMSIS-NN kernels from a tflite-micro checkout with: {CREATE_TREE}")
_TREE_MARKERS = ("tensorflow/lite/micro/micro_interpreter.h", "third_party/cmsis_nn/Include")


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
    """The tools on PATH, or one error naming every missing one with the apt-get line."""
    names = {"gcc": "arm-none-eabi-gcc", "gxx": "arm-none-eabi-g++", "ar": "arm-none-eabi-ar",
             "nm": "arm-none-eabi-nm", "qemu": "qemu-system-arm"}
    found = {k: shutil.which(v) for k, v in names.items()}
    host_cc = next((shutil.which(c) for c in ("cc", "gcc", "clang") if shutil.which(c)), None)
    missing = [names[k] for k, v in found.items() if v is None]
    if host_cc is None:
        missing.append("a host C compiler (cc)")
    if missing:
        hint = APT_HINT + ("; and gcc for the host" if host_cc is None else "")
        raise MissingDependencyError(", ".join(missing), hint)
    if not _has_newlib(found["gcc"]):
        raise MissingDependencyError("newlib for arm-none-eabi (rdimon semihosting library)",
                                     APT_HINT)
    return Toolchain(
        gcc=found["gcc"], gxx=found["gxx"], ar=found["ar"], nm=found["nm"], qemu=found["qemu"],
        host_cc=host_cc, gcc_version=_first_line([found["gcc"], "--version"]),
        qemu_version=_first_line([found["qemu"], "--version"]),
    )


def _has_newlib(gcc: str) -> bool:
    out = subprocess.run([gcc, "-print-file-name=librdimon.a"], capture_output=True, text=True)
    return out.returncode == 0 and os.path.isabs(out.stdout.strip())


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
    source: str  # what the user gave


def resolve_tree(given: str | Path | None) -> Tree:
    """The TFLM tree from --tflm-tree or $EDGEQ_TFLM_TREE: a directory, or a .tar.gz holding one
    (unpacked once into the cache, keyed by the archive's hash)."""
    value = given if given is not None else os.environ.get(ENV_TREE)
    if not value:
        raise InputError("edgeq emulate needs a TensorFlow Lite Micro source tree with CMSIS-NN, "
                         "and none was given", hint=TREE_HINT)
    from edgeq.formats.input_files import check_file_or_dir

    path = Path(value).expanduser()
    option = "--tflm-tree" if given is not None else f"${ENV_TREE}"
    if not path.exists() and not path.is_symlink():
        raise InputError(f"TFLM tree '{path}' does not exist", hint=TREE_HINT)
    if stat.S_ISREG(check_file_or_dir(path, option, hint=TREE_HINT).st_mode):
        path = _unpack(path)
    root = _find_root(path)
    if root is None:
        raise InputError(f"'{value}' is not a TensorFlow Lite Micro tree with CMSIS-NN (no "
                         f"{' or '.join(_TREE_MARKERS)})", hint=TREE_HINT)
    return Tree(root=root, digest=_tree_digest(root), source=str(value))


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
