"""The real Edge TPU compiler: run it when it is on PATH, read its log, and map its verdict
back onto the source model's ops.

The compiler is x86-64 Linux only and installed from Coral's own apt repository, so it is
often absent; callers then keep edgeq's prediction and say so. Its log format (design/
TARGETS.md 1.5): a header with sizes and cache figures, "Number of operations that will run
on Edge TPU/CPU" lines that are ABSENT when every op maps, and with -s the per-op table
"Operator  Count  Status", one row per (op, status) pair.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from edgeq.errors import ConversionError
from edgeq.formats.tflite import ModelInfo
from edgeq.process.spawn import raise_if_killed, tied_command

EXECUTABLE = "edgetpu_compiler"
CUSTOM_OP = "CUSTOM:edgetpu-custom-op"
_UNITS = {"B": 1, "KiB": 1024, "MiB": 1024 ** 2, "GiB": 1024 ** 3}


@dataclass(frozen=True)
class CompilerLog:
    version: str | None = None
    succeeded: bool = False
    error: str | None = None  # the compiler's own failure line
    input_bytes: int | None = None
    output_bytes: int | None = None
    on_chip_used_bytes: int | None = None
    on_chip_remaining_bytes: int | None = None
    off_chip_bytes: int | None = None
    subgraphs: int | None = None
    ops_total: int | None = None
    ops_on_tpu: int | None = None
    ops_on_cpu: int | None = None
    rows: tuple[tuple[str, int, str], ...] = field(default=())  # (op, count, status)

    def summary(self) -> dict[str, object]:
        return {k: v for k, v in self.__dict__.items() if k != "rows"} | {
            "table": [{"op": op, "count": n, "status": s} for op, n, s in self.rows]}


def parse_log(text: str) -> CompilerLog:
    """Read the compiler's stdout or .log file. Count lines that are absent mean every op
    mapped (the compiler prints them only when some op stays on the CPU)."""
    values: dict[str, object] = {}
    rows: list[tuple[str, int, str]] = []
    in_table = False
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        if m := re.match(r"Edge TPU Compiler version (\S+)", line):
            values["version"] = m.group(1)
        elif re.match(r"Operator\s+Count\s+Status", line):
            in_table = True
        elif in_table and (m := re.match(r"^(\S+)\s+(\d+)\s+(\S.*?)\s*$", line)):
            rows.append((m.group(1), int(m.group(2)), m.group(3)))
        elif m := _FIELDS.match(line):
            key = _FIELD_KEYS[m.group(1)]
            values[key] = _size(m.group(2)) if key.endswith("_bytes") else int(m.group(2))
        elif line.startswith("Model compiled successfully") or line == "Compilation succeeded!":
            values["succeeded"] = True
        elif _is_error(line):  # e.g. "Invalid model: x.tflite" then "Model not quantized"
            values["error"] = f"{values['error']}; {line}" if "error" in values else line
            in_table = False
    log = CompilerLog(**values, rows=tuple(rows))  # type: ignore[arg-type]
    if log.succeeded and log.ops_total is not None and log.ops_on_tpu is None:
        log = CompilerLog(**{**log.__dict__, "ops_on_tpu": log.ops_total, "ops_on_cpu": 0})
    return log


_FIELD_KEYS = {
    "Input size": "input_bytes",
    "Output size": "output_bytes",
    "On-chip memory used for caching model parameters": "on_chip_used_bytes",
    "On-chip memory remaining for caching model parameters": "on_chip_remaining_bytes",
    "Off-chip memory used for streaming uncached model parameters": "off_chip_bytes",
    "Number of Edge TPU subgraphs": "subgraphs",
    "Total number of operations": "ops_total",
    "Number of operations that will run on Edge TPU": "ops_on_tpu",
    "Number of operations that will run on CPU": "ops_on_cpu",
}
_FIELDS = re.compile(r"(" + "|".join(re.escape(k) for k in _FIELD_KEYS) + r"):\s*(\S+)")


def _size(text: str) -> int | None:
    m = re.fullmatch(r"([\d.]+)\s*(B|KiB|MiB|GiB)", text)
    return round(float(m.group(1)) * _UNITS[m.group(2)]) if m else None


def _is_error(line: str) -> bool:
    return (line.startswith(("ERROR:", "Invalid model", "Internal compiler error"))
            or line in ("Compilation failed!", "Model not quantized")
            or line.startswith("Compilation failed"))


@dataclass(frozen=True)
class CompilerRun:
    version: str
    log: CompilerLog
    model: bytes | None  # X_edgetpu.tflite, None when compilation failed
    text: str  # stdout + the .log file, for the report


def installed() -> str | None:
    return shutil.which(EXECUTABLE)


def compile_model(model: bytes, name: str, min_runtime_version: int | None,
                  args: tuple[str, ...] = ("-s",), timeout_s: int = 300) -> CompilerRun:
    """Run edgetpu_compiler on ``model`` in a scratch directory.

    Raises:
        ConversionError: the compiler is missing, hangs past ``timeout_s`` or crashes.
    """
    exe = installed()
    if exe is None:
        raise ConversionError(f"{EXECUTABLE} is not on PATH")
    with tempfile.TemporaryDirectory(prefix="edgeq-edgetpu-") as tmp:
        src = Path(tmp) / f"{name}.tflite"
        src.write_bytes(model)
        cmd = [exe, *args, "-o", tmp]
        if min_runtime_version is not None:
            cmd += ["-m", str(min_runtime_version)]
        try:
            proc = subprocess.run(tied_command([*cmd, str(src)]), capture_output=True, text=True,
                                  timeout=timeout_s, cwd=tmp)
        except subprocess.TimeoutExpired as exc:
            raise ConversionError(f"{EXECUTABLE} did not finish in {timeout_s} s") from exc
        text = proc.stdout + proc.stderr
        log_file = Path(tmp) / f"{name}_edgetpu.log"
        if log_file.is_file():
            text += "\n" + log_file.read_text(errors="replace")
        out = Path(tmp) / f"{name}_edgetpu.tflite"
        compiled = out.read_bytes() if proc.returncode == 0 and out.is_file() else None
    log = parse_log(text)
    raise_if_killed(EXECUTABLE, proc.returncode)  # from outside (out of memory, a job limit)
    if proc.returncode < 0:
        raise ConversionError(f"{EXECUTABLE} was killed by signal {-proc.returncode}")
    return CompilerRun(log.version or "unknown", log, compiled, text)


def compiled_placement(source: ModelInfo, compiled: ModelInfo,
                       log: CompilerLog | None = None) -> list[tuple[int, str, str]]:
    """(index, placement, status) for every op of the source model, read from the compiled
    model: ops left in it (other than edgetpu-custom-op) run on the CPU, matched to the
    source by their output tensor names; the rest were replaced by the custom op. Statuses
    come from the log's table when there is one (per op type, the first CPU instances take
    the non-subgraph statuses: the op that split the graph comes before those it cut off)."""
    cpu_names = {compiled.tensors[t].name for op in compiled.ops if op.op != CUSTOM_OP
                 for t in op.outputs if 0 <= t < len(compiled.tensors)}
    statuses: dict[str, list[str]] = {}
    for op, count, status in (log.rows if log else ()):
        if status != "Mapped to Edge TPU":
            statuses.setdefault(op, []).extend([status] * count)
    for queue in statuses.values():  # the splitting op's own reason before the cut-off ones
        queue.sort(key=lambda s: s == "More than one subgraph is not supported")
    out = []
    for op in source.ops:
        names = {source.tensors[t].name for t in op.outputs if 0 <= t < len(source.tensors)}
        if names & cpu_names:
            queue = statuses.get(op.op.removeprefix("CUSTOM:"), [])
            out.append((op.index, "cpu", queue.pop(0) if queue else "runs on the CPU"))
        else:
            out.append((op.index, "tpu", "Mapped to Edge TPU"))
    return out
