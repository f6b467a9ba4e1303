"""Terminal rendering for the CLI (rich): progress while the pipeline runs, summary tables."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from edgeq.outputs.report import Report, tensor_label
from edgeq.outputs.text import terminal


PIPE_WIDTH = 200  # columns for tables written to a file or pipe, where no terminal sets one


def plain(value: Any) -> str:
    """Text from a file, a name or a path, for console.print and table cells: control
    characters shown escaped (edgeq.outputs.text.terminal) and rich markup escaped, so a
    name like `[/]` or one holding ESC sequences prints as itself and never styles, breaks
    or drives the terminal. Every interpolated value below goes through it."""
    return escape(terminal(value))


def _stdout_console() -> Console:
    """Rich sizes tables to the terminal, and to 80 columns when there is none, which cut the
    cells of wide tables in files and pipes. Off a terminal (and without $COLUMNS) tables get
    room to keep their natural width; whatever is still too wide wraps inside its cell."""
    if sys.stdout.isatty() or os.environ.get("COLUMNS"):
        return Console(emoji=False)  # ':name:' in a name stays text
    return Console(width=PIPE_WIDTH, emoji=False)


def _stderr_console() -> Console:
    # The library captures file descriptor 2 while native tools run (to keep their chatter out
    # of the terminal); a private duplicate of the descriptor keeps progress visible meanwhile.
    return Console(file=os.fdopen(os.dup(2), "w", buffering=1), stderr=True, emoji=False)


class RichProgress:
    """Implements `edgeq.api.Progress` with rich progress bars on stderr."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self._console = _stderr_console() if enabled else None
        self._bar: Progress | None = None

    def __enter__(self) -> "RichProgress":
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._bar is not None:
            self._bar.stop()

    def stage(self, name: str) -> None:
        if self._console is not None:
            self._console.print(f"[dim]·[/] {plain(name)}")

    def warning(self, text: str) -> None:
        if self._console is not None:
            self._console.print(f"[yellow]warning:[/] {plain(text)}")

    def epoch(self, epoch: int, epochs: int, metrics: dict[str, float]) -> None:
        if self._console is not None:
            m = metrics
            self._console.print(
                f"  epoch {epoch}/{epochs}: loss {m['loss']:.4f}, accuracy "
                f"{100 * m['accuracy']:.2f}%, val loss {m['val_loss']:.4f}, val accuracy "
                f"{100 * m['val_accuracy']:.2f}%, lr {m['lr']:.3g}")

    def task(self, name: str, total: int):
        if self._console is None:
            return lambda done, total: None
        if self._bar is None:  # started on first use: an idle live display prints a blank line
            self._bar = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TimeElapsedColumn(), console=self._console, transient=False,
            )
            self._bar.start()
        task_id = self._bar.add_task(plain(name), total=total)
        bar = self._bar
        return lambda done, total: bar.update(task_id, completed=done, total=total)


def print_report(report: Report, files: dict[str, Path], *,
                 warnings_shown: bool = False) -> None:
    """The summary of a convert run. ``warnings_shown``: the data warnings were printed as the
    run found them (RichProgress), so they are counted here, not printed a second time."""
    console = _stdout_console()
    table = Table(title=f"edgeq: {plain(Path(report.model['path']).name)} → "
                  f"{plain(report.target)}",
                  show_header=False)
    table.add_column(style="bold")
    table.add_column()
    for label, value in report.summary_rows():
        table.add_row(plain(label), plain(value))
    console.print(table)
    _print_ethos_u(console, report.vela, report.ops)
    if report.calibration_candidates:
        cands = Table(title="calibration methods (auto)")
        for col in ("method", "top-1", "agreement", "SQNR dB", "chosen"):
            cands.add_column(col)
        for c in report.calibration_candidates:
            a, f = c["accuracy"], c["fidelity"]
            cands.add_row(plain(c["calibration"] + (" + equalize" if c.get("equalized") else "")),
                          _pct(a["quantized"]), _pct(a["agreement"]),
                          "identical" if f["sqnr_db"] is None else f"{f['sqnr_db']:.1f}",
                          "✓" if c["chosen"] else "")
        console.print(cands)
    if report.layers:
        worst = Table(title="worst tensors (SQNR vs float)")
        for col in ("tensor", "range", "clipped", "SQNR dB"):
            worst.add_column(col)
        for r in report.layers[:5]:
            worst.add_row(plain(tensor_label(r)[-48:]), f"[{r['lo']:.3g}, {r['hi']:.3g}]",
                          f"{100 * r['clipped_fraction']:.3f}%",
                          "identical" if r["sqnr_db"] is None else f"{r['sqnr_db']:.1f}")
        console.print(worst)
    if report.qat.get("side_by_side"):
        side = Table(title=f"float / PTQ / QAT ({report.accuracy['runtime']}, "
                     f"n={report.accuracy['n']})")
        for col in ("model", "top-1", "drop pp", "agreement", "SQNR dB", "seconds"):
            side.add_column(col)
        for r in report.qat["side_by_side"]:
            side.add_row(plain(r["model"]), _pct(r["top1"]),
                         "—" if r["drop_pp"] is None else f"{r['drop_pp']:+.2f}",
                         _pct(r["agreement"]),
                         "—" if r["sqnr_db"] is None else f"{r['sqnr_db']:.1f}",
                         "—" if r["seconds"] is None else f"{r['seconds']:.1f}")
        console.print(side)
    if report.autopilot:
        stages = Table(title=f"auto: stages tried (budget {report.autopilot['budget_pp']:g} pp)")
        for col in ("stage", "model", "top-1", "drop pp", "bytes", "host latency", "meets",
                    "chosen"):
            stages.add_column(col)
        for r in report.autopilot["stages"]:
            stages.add_row(plain(r["stage"]), plain(r["name"]), _pct(r["accuracy"]),
                           f"{r['drop_pp']:+.2f}",
                           str(r["bytes"]),
                           "" if r["latency_ms"] is None else f"{r['latency_ms']:.3f} ms",
                           "yes" if r["met_budget"] else "no", "✓" if r["chosen"] else "")
        console.print(stages)
        for option in report.autopilot.get("options", []):
            console.print(f"[yellow]option:[/] {plain(option)}")
    warned = report.data.get("warnings", [])
    if warned and warnings_shown:
        console.print(f"[yellow]data warnings:[/] {len(warned)}, shown above (report.json "
                      "data.warnings)")
    for warning in warned if not warnings_shown else ():
        console.print(f"[yellow]data warning:[/] {plain(warning)}")
    for note in report.notes:
        console.print(f"[yellow]note:[/] {plain(note)}")
    for name, gate in report.gates.items():
        if not gate.get("ok", True):
            console.print(f"[red]gate failed:[/] {plain(name)}")
    console.print("wrote: " + ", ".join(plain(p) for p in files.values()))


def print_target(target: Any) -> None:
    console = _stdout_console()
    table = Table(title=f"target {plain(target.name)}", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    data = target.to_dict()
    for key, value in data.items():
        if isinstance(value, dict):
            for sub, v in value.items():
                table.add_row(plain(f"{key}.{sub}"), plain(_fmt(v)))
        else:
            table.add_row(plain(key), plain(_fmt(value)))
    console.print(table)


def print_target_list(targets: list[Any]) -> None:
    console = _stdout_console()
    table = Table(title="edgeq targets")
    for col in ("name", "runs on", "weights", "I/O", "flash", "RAM"):
        table.add_column(col)
    for t in targets:
        q, m = t.quantization, t.memory
        table.add_row(plain(t.name), plain(f"{t.runtime.placement} ({t.runtime.name})"),
                      plain(q.weight_granularity), plain(f"{q.input_dtype}/{q.output_dtype}"),
                      _size(m.flash_bytes), _size(m.ram_bytes))
    console.print(table)
    console.print("edgeq targets NAME shows a profile in full, with its device.")


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}%"


def _size(n: int) -> str:
    if not n:
        return "-"
    return f"{n // 1024} KiB" if n < (1 << 20) else f"{n / (1 << 20):g} MiB"


def _fmt(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value) if value else "(any)"
    return str(value)


# A terminal table of 20,000 rows took a minute to lay out (rich measures every cell) and
# nobody reads it; the rows past this are counted, and `--json` has them all.
MAX_OP_ROWS = 500


def print_analysis(analysis: Any) -> None:
    console = _stdout_console()
    table = Table(title=f"{plain(Path(analysis.model_path).name)} on "
                  f"{plain(analysis.target.name)}")
    layers = any(op.layer for op in analysis.ops)
    for col in ("#", "op", *(("layer",) if layers else ()), "runs on", "reason"):
        table.add_column(col)
    for op in analysis.ops[:MAX_OP_ROWS]:
        style = "red" if op.placement == "none" else (
            "yellow" if op.placement == "cpu" and analysis.target.runtime.placement != "cpu"
            else None)
        table.add_row(str(op.index), plain(op.op), *((plain(op.layer or ""),) if layers else ()),
                      plain(op.placement), plain(op.reason), style=style)
    console.print(table)
    hidden = analysis.ops[MAX_OP_ROWS:]
    if hidden:
        off = sum(op.placement == "none" for op in hidden)
        console.print(f"... and {len(hidden)} more op(s), not shown"
                      + (f" ({off} of them with no place to run)" if off else "")
                      + "; --json lists every op", markup=False)
    if analysis.compiler and analysis.compiler["key"] == "edgetpu":
        from edgeq.outputs.report import edgetpu_rows

        for label, value in edgetpu_rows(analysis.compiler["summary"]):
            console.print(f"[bold]{plain(label)}:[/] {plain(value)}")
    if analysis.compiler and analysis.compiler["key"] == "vela":
        _print_ethos_u(console, analysis.compiler["summary"],
                       [op.to_dict() for op in analysis.ops])
    for note in (*analysis.notes, *(analysis.compiler or {}).get("notes", ())):
        console.print(f"[yellow]note:[/] {plain(note)}")
    mem = analysis.memory
    console.print(f"flash (model): {mem.flash_bytes / 1024:.1f} KiB"
                  + (f" of {mem.budget_flash_bytes / 1024:.0f} KiB" if mem.budget_flash_bytes else ""))
    if mem.arena_bytes is not None:
        console.print(f"RAM (TFLM arena): {mem.arena_bytes / 1024:.1f} KiB (head "
                      f"{mem.arena_head_bytes} B, tail {mem.arena_tail_bytes} B)"
                      + (f" of {mem.budget_ram_bytes / 1024:.0f} KiB" if mem.budget_ram_bytes else ""))
    if analysis.arena_plan is not None:
        from edgeq.outputs.report_mcu import arena_plan_rows

        for label, value in arena_plan_rows({"arena_plan": analysis.arena_plan}):
            console.print(f"{label}: {plain(value)}")
    for overrun in mem.overruns:
        console.print(f"[red]over budget:[/] {plain(overrun)}")


def print_inspection(d: dict[str, Any]) -> None:
    console = _stdout_console()
    console.print(f"[bold]{plain(d['model'])}[/]: {d['bytes']} B, {d['ops_total']} op(s), "
                  f"{d['subgraphs']} subgraph(s)")
    for role in ("inputs", "outputs"):
        for t in d[role]:
            q = f", scale {t['scale']:.6g}, zero point {t['zero_point']}" if "scale" in t else ""
            console.print(f"  {role[:-1]} {plain(t['name'])}: {plain(t['shape'])} "
                          f"{plain(t['dtype'])}{q}")
    e = d.get("edgetpu")
    if e is None:
        console.print("ops: " + ", ".join(plain(op) for op in d["op_sequence"]))
        console.print("not compiled for the Edge TPU (no edgetpu-custom-op)")
        return
    replaced = (f"replaced {e['ops_on_tpu']} of the {e['source_ops_total']} ops of "
                f"{plain(e['source'])}" if "source" in e else
                "the number of ops it replaced needs the source model (--source X.tflite)")
    console.print(f"Edge TPU: {e['custom_ops']} edgetpu-custom-op(s) "
                  f"({', '.join(str(b) for b in e['executable_bytes'])} B executable); {replaced}")
    if e["cpu_ops"]:
        console.print(f"{len(e['cpu_ops'])} op(s) remain on the CPU, in order:")
        for op in e["cpu_ops"]:
            console.print(f"  {op['index']}: {plain(op['op'])}")
    else:
        console.print("every op runs on the Edge TPU")


def print_supported_ops(name: str, rows: list[dict[str, Any]]) -> None:
    console = _stdout_console()
    table = Table(title=f"{plain(name)}: supported ops")
    for col in ("op", "max version", "limitations"):
        table.add_column(col)
    for r in rows:
        table.add_row(plain(r["op"]), "" if r["max_version"] is None else str(r["max_version"]),
                      "\n".join(f"• {plain(m)}" for m in r["limitations"]))
    console.print(table)
    console.print("Ops not listed run on the CPU; see edgeq analyze MODEL --target "
                  + plain(name))


def print_verify(outcome: Any) -> None:
    console = _stdout_console()
    acc = "n/a" if outcome.accuracy is None else f"{100 * outcome.accuracy:.2f}%"
    console.print(f"[bold]{plain(outcome.model)}[/] on {plain(outcome.target)}: top-1 {acc} on "
                  f"{plain(outcome.runtime)} (n={outcome.n}), {outcome.model_bytes} B"
                  + (f", arena {outcome.arena_bytes} B" if outcome.arena_bytes else "")
                  + (f", host latency {outcome.latency_ms:.3f} ms" if outcome.latency_ms else ""))
    for warning in outcome.data.get("warnings", []):
        console.print(f"[yellow]data warning:[/] {plain(warning)}")
    for note in getattr(outcome, "notes", ()):
        console.print(f"[yellow]note:[/] {plain(note)}")
    for c in outcome.checks:
        mark = "[green]ok[/]" if c.ok else "[red]FAIL[/]"
        console.print(f"  {mark} {plain(c.detail)}")
    for skipped in getattr(outcome, "skipped", ()):
        console.print(f"  [dim]skipped[/] {plain(skipped)}")


def _print_ethos_u(console: Console, vela: dict[str, Any] | None, ops: list[dict[str, Any]]
                   ) -> None:
    """Vela's per-layer estimate, top layers, and the advice (edgeq.outputs.vela_report)."""
    from edgeq.outputs.vela_report import terminal_rows

    for label, value in terminal_rows(vela, ops):
        console.print(f"[bold]{plain(label)}:[/] {plain(value)}")
