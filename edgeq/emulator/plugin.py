"""The instruction-count plugin for QEMU (firmware/insn_count.c), built once with the host C
compiler and cached by the hash of its source and the compiler's version."""

from __future__ import annotations

import hashlib
import os
import subprocess
from importlib import resources
from pathlib import Path

from edgeq.emulator.toolchain import Toolchain, cache_dir
from edgeq.errors import ConversionError


def plugin_path(tool: Toolchain) -> Path:
    source = (resources.files("edgeq.emulator") / "firmware" / "insn_count.c").read_bytes()
    version = subprocess.run([tool.host_cc, "--version"], capture_output=True, text=True).stdout
    key = hashlib.sha256(source + b"\0" + version.encode()).hexdigest()[:16]
    out = cache_dir() / "emulator" / "plugin" / key / "insn_count.so"
    if out.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    src = out.with_name("insn_count.c")
    src.write_bytes(source)
    tmp = out.with_name(f"insn_count.so.tmp{os.getpid()}")
    run = subprocess.run([tool.host_cc, "-shared", "-fPIC", "-O2", "-fvisibility=hidden",
                          str(src), "-o", str(tmp)], capture_output=True, text=True)
    if run.returncode != 0:
        raise ConversionError("emulator plugin build",
                              f"{tool.host_cc} failed: {run.stderr.strip()[:300]}",
                              hint="install a host C compiler: apt-get install -y gcc")
    os.replace(tmp, out)
    return out
