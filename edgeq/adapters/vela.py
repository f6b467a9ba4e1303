"""Arm Vela: compiles an int8 TFLite model for an Ethos-U NPU and reads back what it reports.

Vela runs as a subprocess, in its own temporary directory: it prints its report from both Python
and its C++ core (Regor, the default in Vela 5.x), and a crash there must not take edgeq
down. It is started as every Python child of edgeq is (`edgeq.process.spawn`): isolated from
the working directory and ended when its parent ends. From its stdout come the network summary (memory, operator counts, MACs, the cycle
estimate) and the reasons it gives for ops it leaves on the CPU; from the compiled model comes
which ops it left there, and from the per-layer table Vela writes with --verbose-performance
(edgeq.adapters.vela_perf) what each op costs on the NPU. No TensorFlow here.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import re
import subprocess
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from edgeq.errors import ConversionError, MissingDependencyError
from edgeq.process.spawn import python_command, raise_if_killed
from edgeq.pipeline.place import OpPlacement
from edgeq.formats.tflite import ModelInfo, OpInfo, read_model
from edgeq.adapters.vela_advice import layers_and_advice
from edgeq.adapters.vela_perf import LayerPerf, VelaRow, read_rows

STAGE = "compile (vela)"
NPU_OP = "CUSTOM:ethos-u"  # what Vela replaces each run of NPU ops with
NPU_REASON = "mapped to the NPU (ethos-u custom op)"
DEFAULT_CONFIG = "Arm/vela.ini"  # the .ini bundled with Vela, resolved by Vela itself
_WHAT = "ethos-u-vela (vela)"
_INSTALL = "pip install ethos-u-vela"


@dataclass(frozen=True)
class VelaSummary:
    """Vela's network summary, as printed on stdout.

    Memory figures are Vela's KiB with two decimals converted to bytes, so they are within 5 B
    of the exact figure; an area Vela does not print (it prints only those in use) is 0.
    ``cpu_ops`` and ``npu_ops`` are Vela's own counts after it has lowered the graph (an int8
    SOFTMAX becomes about 30 NPU operations), not counts of the input model's ops; the NPU count
    also changes with ``--show-cpu-operations``, which makes Vela count differently. The cycle
    figures and the inference time are printed only with ``--verbose-cycle-estimate``
    (``run_vela`` always passes it) and are None without it; the time is Vela's estimate, total
    cycles / NPU clock, rounded to 0.01 ms.
    """

    network: str
    accelerator: str  # as Vela prints it, e.g. "Ethos_U55_128"
    system_config: str
    memory_mode: str
    clock_mhz: int
    sram_bytes: int
    offchip_flash_bytes: int
    dram_bytes: int
    onchip_flash_bytes: int
    npu_ops: int
    cpu_ops: int
    macs: int
    npu_cycles: int | None
    cycles: int | None  # "Total cycles": NPU work plus the memory accesses it waits for
    inference_ms: float | None
    raw: str = field(repr=False)  # vela's stdout


@dataclass(frozen=True)
class VelaResult:
    """What one Vela run produced."""

    summary: VelaSummary
    model: bytes = field(repr=False)  # the compiled <name>_vela.tflite
    placements: tuple[OpPlacement, ...]  # one per op of the input model, in execution order
    version: str
    # Where Vela's output and edgeq's reading of it disagree (e.g. CPU op counts).
    notes: tuple[str, ...] = ()
    # Vela's per-layer table (None when it wrote none) and its rows summed per input op.
    rows: tuple[VelaRow, ...] | None = field(default=None, repr=False)
    layers: dict[int, LayerPerf] = field(default_factory=dict, repr=False)
    command_streams: int = 0  # ethos-u ops in the compiled model
    advice: tuple[str, ...] = ()  # edgeq.adapters.vela_advice


def vela_version() -> str:
    try:
        return importlib.metadata.version("ethos-u-vela")
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def run_vela(
    model: bytes,
    *,
    accelerator: str,
    system_config: str | None,
    memory_mode: str | None,
    config_file: str | None = None,
    extra_args: tuple[str, ...] = (),
    name: str = "model",
    timeout_s: int = 600,
    executable: str | None = None,
) -> VelaResult:
    """Compiles ``model`` with Vela and reads its summary and per-op placement.

    Args:
        model: an int8 TFLite flatbuffer.
        accelerator: Vela's ``--accelerator-config``, e.g. "ethos-u55-128".
        system_config: a ``System_Config`` section of the config file, or None for Vela's
            internal default.
        memory_mode: a ``Memory_Mode`` section of the config file, or None.
        config_file: a Vela .ini: "Vendor/file.ini" names one bundled with Vela, anything else
            is a path. Defaults to "Arm/vela.ini" when a system config or memory mode is given.
        extra_args: passed to vela as they are (e.g. ``("--optimise", "Size")``).
        name: the file stem Vela sees; it names the network in Vela's summary.
        timeout_s: how long Vela may run.
        executable: the vela command; default ``python -m ethosu.vela`` with the Vela this
            Python imports.

    Returns:
        The summary, the compiled model, one placement record per input op, Vela's version.

    Raises:
        ModelFileError: ``model`` is not a TFLite flatbuffer.
        MissingDependencyError: Vela is not installed (or ``executable`` does not exist).
        ConversionError: Vela failed, timed out or printed no summary.
        KilledError: Vela was killed from outside edgeq (exit 128 + the signal).
    """
    source = read_model(model, f"{name}.tflite")  # fail on a bad model before starting Vela
    command = _vela_command(executable)
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", name) or "model"
    flags = _flags(accelerator, system_config, memory_mode, config_file, extra_args)
    with tempfile.TemporaryDirectory(prefix="edgeq-vela-") as tmp:
        src, out = Path(tmp) / f"{stem}.tflite", Path(tmp) / "out"
        src.write_bytes(model)
        argv = [*command, str(src), "--output-dir", str(out), *flags]
        proc = _run(argv, cwd=tmp, timeout_s=timeout_s)
        raise_if_killed(STAGE, proc.returncode)  # by the OOM killer, a job limit, Ctrl-C
        if proc.returncode != 0:
            raise ConversionError(
                STAGE, f"vela exited with status {proc.returncode}: "
                f"{_last_line(proc.stderr, proc.stdout)}",
                hint=f"run 'vela {stem}.tflite {' '.join(flags)}' to see its full output",
            )
        compiled_path = out / f"{stem}_vela.tflite"
        if not compiled_path.is_file():
            raise ConversionError(STAGE, f"vela wrote no {compiled_path.name}")
        compiled = compiled_path.read_bytes()
        rows, perf_note = read_rows(out, stem)
    summary = parse_summary(proc.stdout)
    compiled_info = read_model(compiled, compiled_path.name)
    placements, notes = vela_placements(source, compiled_info, proc.stdout)
    placements, notes = _by_index(source, placements, notes, rows, proc.stdout)
    cpu = sum(p.placement == "cpu" for p in placements)
    if cpu != summary.cpu_ops:
        notes += (f"Vela counts {summary.cpu_ops} CPU operator(s); the compiled model keeps "
                  f"{cpu} of the input model's ops for the CPU",)
    notes += perf_note
    version = vela_version() if executable is None else _version_of(command)
    streams = compiled_info.op_names.count(NPU_OP)
    layers, advice = layers_and_advice(
        source, placements, rows, summary.cycles, accelerator, streams,
        config_file or (DEFAULT_CONFIG if system_config or memory_mode else None),
        system_config, memory_mode)
    return VelaResult(summary, compiled, placements, version, notes, rows, layers, streams,
                      tuple(advice))


def _by_index(source: ModelInfo, placements: tuple[OpPlacement, ...], notes: tuple[str, ...],
              rows: tuple[VelaRow, ...] | None, stdout: str
              ) -> tuple[tuple[OpPlacement, ...], tuple[str, ...]]:
    """Vela's own placement by op index (its debug database) where matching the compiled
    model by tensor names could not tell: a model with unnamed tensors, which Vela names
    '<unnamed>'. The name-matching notes are then artefacts of the names and are dropped."""
    from edgeq.adapters.vela_perf import placement_by_index

    where = placement_by_index(rows, len(source.ops)) if rows is not None else None
    if where is None or where == [p.placement for p in placements]:
        return placements, notes
    reasons = cpu_reasons(stdout)
    fixed = []
    for p, here in zip(placements, where):
        if p.placement == here:
            fixed.append(p)
        elif here == "npu":
            fixed.append(OpPlacement(p.index, p.op, "npu", NPU_REASON))
        else:
            said = next((text for said in reasons.values() for op, text in said if op == p.op),
                        None)
            fixed.append(OpPlacement(p.index, p.op, "cpu", "not mapped to the NPU" + (
                f": {said}" if said else " (Vela printed no reason)")))
    return tuple(fixed), ("op placement from Vela's debug database (by op index): the "
                          "compiled model's tensor names do not match the input model's",)


# --- running vela -------------------------------------------------------------------------------


def _vela_command(executable: str | None) -> list[str]:
    if executable is not None:
        return [executable]
    # The Vela this interpreter imports (the one vela_version() reads), run as every Python
    # child of edgeq is: isolated, and ended with its parent (edgeq.process.spawn).
    try:
        found = importlib.util.find_spec("ethosu.vela") is not None
    except ImportError:
        found = False
    if found:
        return python_command("ethosu.vela")
    raise MissingDependencyError(_WHAT, _INSTALL)


def _flags(
    accelerator: str,
    system_config: str | None,
    memory_mode: str | None,
    config_file: str | None,
    extra_args: tuple[str, ...],
) -> list[str]:
    flags = ["--accelerator-config", accelerator]
    if config_file is None and (system_config or memory_mode):
        config_file = DEFAULT_CONFIG  # the sections live in a config file; Vela wants it named
    if config_file is not None:
        flags += ["--config", _config_path(config_file)]
    if system_config:
        flags += ["--system-config", system_config]
    if memory_mode:
        flags += ["--memory-mode", memory_mode]
    # Without it Vela prints no cycle counts and no inference time. --verbose-performance
    # writes the per-layer table and --enable-debug-db the database that ties its rows to the
    # input model's ops; neither changes the compiled model (checked on Vela 5.2.0).
    return [*flags, "--verbose-cycle-estimate", "--verbose-performance", "--enable-debug-db",
            *extra_args]


def _config_path(config: str) -> str:
    # Vela reads a relative "Vendor/file.ini" as a file bundled in its config_files folder, and
    # any other path relative to its working directory, which here is a temporary one.
    parts = Path(config).parts
    if len(parts) == 2 and not config.startswith((".", "~", os.sep)):
        return config
    return str(Path(config).expanduser().resolve())


def _run(argv: list[str], *, cwd: str, timeout_s: int) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, errors="replace",
                              timeout=timeout_s, check=False)
    except (FileNotFoundError, PermissionError) as exc:
        raise MissingDependencyError(_WHAT, _INSTALL) from exc
    except subprocess.TimeoutExpired as exc:
        raise ConversionError(STAGE, f"vela did not finish within {timeout_s} s",
                              hint="raise the timeout, or try --optimise Size") from exc


def _version_of(command: list[str]) -> str:
    try:
        proc = subprocess.run([*command, "--version"], capture_output=True, text=True,
                              timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else "unknown"


def _last_line(*texts: str) -> str:
    for text in texts:
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        if lines:
            # A traceback ends "ethosu.vela.errors.CliOptionError: <message>"; keep the message.
            return re.sub(r"^[\w.]+(Error|Exception): ", "", lines[-1])[:300]
    return "no output"


# --- the summary --------------------------------------------------------------------------------

# key -> (label as Vela prints it, pattern of the rest of the line); these lines always appear.
_REQUIRED = {
    "accelerator": ("Accelerator configuration", r"\s+(\S+)"),
    "system_config": ("System configuration", r"\s+(\S+)"),
    "memory_mode": ("Memory mode", r"\s+(\S+)"),
    "clock_mhz": ("Accelerator clock", r"\s+(\d+) MHz"),
    "cpu_ops": ("CPU operators", r" = (\d+)"),
    "npu_ops": ("NPU operators", r" = (\d+)"),
    "macs": ("Neural network macs", r"\s+(\d+) MACs/batch"),
}
# Printed only with --verbose-cycle-estimate.
_ESTIMATES = {
    "npu_cycles": ("NPU cycles", r"\s+(\d+) cycles/batch"),
    "cycles": ("Total cycles", r"\s+(\d+) cycles/batch"),
    "inference_ms": ("Batch Inference time", r"\s+([\d.]+) ms"),
}
# Printed only for the memory areas in use.
_MEMORY = {"sram_bytes": "SRAM", "dram_bytes": "DRAM", "onchip_flash_bytes": "On-chip Flash",
           "offchip_flash_bytes": "Off-chip Flash"}
_HEADER = "Network summary for "


def parse_summary(stdout: str) -> VelaSummary:
    """Reads Vela's network summary from its stdout.

    Raises:
        ConversionError: no summary, or one without a line Vela always prints.
    """
    lines = stdout.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith(_HEADER)]
    if not starts:
        raise ConversionError(STAGE, "vela printed no network summary",
                              hint=f"its last line was: {_last_line(stdout)}")
    block = "\n".join(lines[starts[-1]:])

    def find(label: str, rest: str) -> str | None:
        match = re.search(rf"^{re.escape(label)}{rest}", block, re.MULTILINE)
        return match.group(1) if match else None

    text: dict[str, str] = {}
    for key, (label, rest) in _REQUIRED.items():
        found = find(label, rest)
        if found is None:
            raise ConversionError(STAGE, f"vela's network summary has no '{label}' line")
        text[key] = found
    estimates = {key: find(label, rest) for key, (label, rest) in _ESTIMATES.items()}
    memory = {key: find(f"Total {area} used", r"\s+([\d.]+) KiB") for key, area in _MEMORY.items()}
    return VelaSummary(
        network=lines[starts[-1]][len(_HEADER):].strip(),
        accelerator=text["accelerator"],
        system_config=text["system_config"],
        memory_mode=text["memory_mode"],
        clock_mhz=int(text["clock_mhz"]),
        # Vela prints KiB with two decimals; 12.34 KiB -> round(12.34 * 1024) bytes.
        **{key: round(float(kib) * 1024) if kib else 0 for key, kib in memory.items()},
        npu_ops=int(text["npu_ops"]),
        cpu_ops=int(text["cpu_ops"]),
        macs=int(text["macs"]),
        npu_cycles=_int_or_none(estimates["npu_cycles"]),
        cycles=_int_or_none(estimates["cycles"]),
        inference_ms=float(estimates["inference_ms"]) if estimates["inference_ms"] else None,
        raw=stdout,
    )


def _int_or_none(value: str | None) -> int | None:
    return int(value) if value is not None else None


# --- placement ----------------------------------------------------------------------------------

# Regor (Vela 5.x's default core): "Warning (supported operators) operator: GATHER, ofm: '<name>'" then
# "Reason: ..." and more lines up to a blank one. The legacy core: "Warning: CONV_2D '<name>' is
# not supported on the NPU. Placing on CPU instead" then " - <constraint>" lines, or
# "Info: GATHER '<name>' is a CPU only op".
_WARNINGS = (
    re.compile(r"^Warning \(supported operators\) operator: (\w+), ofm: '(.*)'$"),
    re.compile(r"^Warning: (\w+) '(.*)' is not supported on the NPU\. Placing on CPU instead$"),
)
_CPU_ONLY = re.compile(r"^Info: (\w+) '(.*)' is a CPU only op$")


def cpu_reasons(stdout: str) -> dict[str, list[tuple[str, str]]]:
    """Vela's reasons for the ops it leaves on the CPU: output tensor name -> [(op, reason)].

    Keyed by tensor name because Regor reports a fused activation as an op of its own under
    the name of the op it is fused into (a float CONV_2D with RELU is warned about as RELU).
    """
    reasons: dict[str, list[tuple[str, str]]] = {}
    lines = stdout.splitlines()
    for i, line in enumerate(lines):
        if match := _CPU_ONLY.match(line):
            op, name = match.groups()
            reasons.setdefault(name, []).append((op, f"Vela has no NPU implementation of {op}"))
            continue
        match = next((m for m in (p.match(line) for p in _WARNINGS) if m), None)
        if match is not None:
            op, name = match.groups()
            detail = _join_detail(lines[i + 1:]) or "no reason given"
            reasons.setdefault(name, []).append((op, detail))
    return reasons


def _join_detail(lines: list[str]) -> str:
    """The lines after a warning, up to a blank line, as one line of clauses."""
    text, indent = "", 0
    for line in lines:
        stripped = line.strip()
        if not stripped or any(p.match(line) for p in (*_WARNINGS, _CPU_ONLY)):
            break
        depth = len(line) - len(line.lstrip())
        clause = stripped.removeprefix("Reason:").removeprefix("- ").strip()
        # The legacy core wraps a constraint onto deeper-indented lines without a "- ", and a
        # line ending in ":" introduces the next; anything else starts a new clause.
        wrapped = depth > indent and not stripped.startswith("- ")
        text += (" " if text and (wrapped or text.endswith(":")) else "; " if text else "") + clause
        indent = depth if not wrapped else indent
    return text


def vela_placements(
    source: ModelInfo, compiled: ModelInfo, stdout: str
) -> tuple[tuple[OpPlacement, ...], tuple[str, ...]]:
    """Where each op of ``source`` runs once Vela has compiled it into ``compiled``.

    Vela replaces what it maps with ``ethos-u`` custom ops and keeps every other op, under the
    same output tensor name, for the CPU; an input op is matched to those kept by op type and
    output names. Returns the records in the input's execution order and notes on anything that
    did not match.
    """
    kept = Counter(_key(op, compiled) for op in compiled.ops if op.op != NPU_OP)
    reasons = cpu_reasons(stdout)
    records, explained = [], set()
    for op in source.ops:
        key = _key(op, source)
        if kept[key] <= 0:
            records.append(OpPlacement(op.index, op.op, "npu", NPU_REASON))
            continue
        kept[key] -= 1
        name = key[1][0] if key[1] else ""
        explained.add(name)
        said = [text if said_op == op.op else f"reported as {said_op}: {text}"
                for said_op, text in reasons.get(name, ())]
        reason = "not mapped to the NPU" + (f": {'; '.join(said)}" if said else
                                            " (Vela printed no reason)")
        records.append(OpPlacement(op.index, op.op, "cpu", reason))
    notes = [f"the compiled model has {op} ('{names[0] if names else ''}') that the input model "
             "does not" for (op, names), n in kept.items() for _ in range(n)]
    notes += [f"Vela reported {op} ('{name}') as a CPU op but the compiled model does not keep "
              "it" for name, said in reasons.items() if name not in explained for op, _ in said]
    return tuple(records), tuple(notes)


def _key(op: OpInfo, info: ModelInfo) -> tuple[str, tuple[str, ...]]:
    return op.op, tuple(info.tensors[i].name for i in op.outputs if i >= 0)
