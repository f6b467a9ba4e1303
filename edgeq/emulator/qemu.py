"""Runs an emulator firmware on QEMU (system mode, semihosting) over a batch of inputs, with the
instruction-count plugin, and reads back the outputs, the firmware's report and the counts.

The I/O protocol (see firmware/main.cc): edgeq writes in.bin (a header, then every sample's
input bytes) into a fresh run directory, QEMU runs there with semihosting on, the firmware
writes out.bin (every sample's output bytes) and "EDGEQ key=value" lines on stdout. One QEMU
boot serves the whole batch."""

from __future__ import annotations

import struct
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeq.emulator.build import MARKS, Firmware
from edgeq.emulator.cores import Core
from edgeq.emulator.toolchain import Toolchain
from edgeq.errors import ConversionError
from edgeq.process.spawn import raise_if_killed, tied_command

_STAGE = "emulator run (QEMU)"


@dataclass(frozen=True)
class Run:
    outputs: bytes  # samples x output_bytes, as the device wrote them
    report: dict[str, str]  # the firmware's EDGEQ key=value lines
    invoke_insns: np.ndarray  # (samples,) instructions from edgeq_mark(0) to edgeq_mark(1)
    op_insns: np.ndarray | None  # (samples, ops) per op, when every Invoke marked every op
    total_insns: int  # the whole run, boot and I/O included
    run_seconds: float
    command: tuple[str, ...]
    op_tensors: bytes = b""  # ops.bin: firmware built with preserve=True only


def run_firmware(fw: Firmware, core: Core, tool: Toolchain, plugin: Path, inputs: bytes,
                 samples: int, sample_bytes: int, *, timeout: float = 900.0) -> Run:
    """Boots `fw` on `core`'s QEMU machine once for all `samples` (`inputs` holds their bytes).

    Raises:
        ConversionError: QEMU failed, timed out, or the firmware reported an error.
    """
    with tempfile.TemporaryDirectory(prefix="edgeq-qemu-") as tmp:
        d = Path(tmp)
        (d / "in.bin").write_bytes(b"EDGQ" + struct.pack("<III", 1, samples, sample_bytes)
                                   + inputs)
        counts = d / "insns.txt"
        if "," in str(counts) or "," in str(plugin):
            raise ConversionError(_STAGE, "QEMU's -plugin option cannot take a path with ','",
                                  hint="set TMPDIR and EDGEQ_CACHE to paths without commas")
        lo, hi = fw.mark_fn
        cmd = (tool.qemu, "-machine", core.machine, "-cpu", core.cpu, "-nographic",
               "-monitor", "none", "-serial", "none",
               "-semihosting-config", "enable=on,target=native", "-kernel", str(fw.elf),
               "-plugin", f"{plugin},fn={lo:#x},fnend={hi:#x},marks={fw.marks_addr:#x},"
               f"nmarks={MARKS},out={counts}")
        start = time.perf_counter()
        try:
            proc = subprocess.run(tied_command(cmd), cwd=d, capture_output=True,
                                  timeout=timeout, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as exc:
            raise ConversionError(_STAGE, f"no result after {timeout:.0f} s",
                                  hint="pass fewer samples (--eval-samples)") from exc
        seconds = time.perf_counter() - start
        raise_if_killed(_STAGE, proc.returncode)  # from outside: not the firmware's fault
        text = proc.stdout.decode(errors="replace")
        report = dict(ln[6:].split("=", 1) for ln in text.splitlines()
                      if ln.startswith("EDGEQ ") and "=" in ln)
        if "error" in report or report.get("status") != "ok":
            why = report.get("error") or (proc.stderr.decode(errors="replace").strip()
                                          .splitlines() or [f"exit status {proc.returncode}"])[-1]
            raise ConversionError(_STAGE, f"the firmware stopped: {why}", hint=_HINTS.get(why))
        out_path = d / "out.bin"
        outputs = out_path.read_bytes() if out_path.is_file() else b""
        ops_path = d / "ops.bin"
        op_tensors = ops_path.read_bytes() if ops_path.is_file() else b""
        invoke, ops, total = _parse_counts(counts.read_text() if counts.is_file() else "",
                                           samples)
    return Run(outputs, report, invoke, ops, total, seconds, cmd, op_tensors)


_HINTS = {
    "allocate_tensors": "the model does not fit the emulated board's RAM (the arena is capped "
                        "at 3 MiB)",
    "hard_fault": "the firmware crashed on the emulated core; rerun with --debug",
}


def _parse_counts(text: str, samples: int) -> tuple[np.ndarray, np.ndarray | None, int]:
    """Per sample: instructions inside Invoke, and per op when each Invoke marked the same
    number of ops."""
    invoke: list[int] = []
    ops: list[list[int]] = []
    total = 0
    begin: int | None = None
    current: list[int] = []
    op_start: dict[int, int] = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key == "total":
            total = int(value)
            continue
        k, n = int(key), int(value)
        if k == 0:
            begin, current, op_start = n, [], {}
        elif k == 1 and begin is not None:
            invoke.append(n - begin)
            ops.append(current)
            begin = None
        elif k % 2 == 0:
            op_start[(k - 2) // 2] = n
        else:
            i = (k - 3) // 2
            if i in op_start:
                while len(current) <= i:
                    current.append(0)
                current[i] = n - op_start.pop(i)
    if len(invoke) != samples:
        raise ConversionError(_STAGE, f"the instruction counter saw {len(invoke)} Invoke() "
                              f"calls for {samples} samples")
    per_op = None
    if ops and all(len(o) == len(ops[0]) for o in ops) and ops[0]:
        per_op = np.asarray(ops, dtype=np.int64)
    return np.asarray(invoke, dtype=np.int64), per_op, total
