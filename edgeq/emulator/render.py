"""Renders an emulator result for the terminal (the CLI's side; the library never prints)."""

from __future__ import annotations

import sys
import time
from typing import Any, Callable

from rich.console import Console
from rich.table import Table

from edgeq.cli.render import plain


def print_emulation(result: Any, found_checks: list[Any] | None = None) -> None:
    console = Console(emoji=False)
    r = result
    same = ("[green]byte-identical[/] to the TFLM interpreter" if r.outputs_identical else
            f"[red]{r.mismatched_samples} of {r.samples} samples differ[/] from the TFLM "
            f"interpreter (first: sample {r.first_mismatch}, max |diff| {r.max_abs_diff:g})")
    console.print(f"[bold]{plain(r.model)}[/] on {r.core} (QEMU {r.machine}, TFLite Micro + CMSIS-NN): "
                  f"{r.samples} samples, outputs {same}")
    if r.top1 is not None:
        console.print(f"  top-1 on the emulated device {100 * r.top1['device']:.2f}% "
                      f"(interpreter {100 * r.top1['interpreter']:.2f}%, "
                      f"{r.top1['labels']} labels)")
    console.print(f"  top-1 class agreement with the interpreter {100 * r.agreement:.2f}%")
    if r.mismatch_ops:
        m = r.mismatch_ops[0]
        console.print(f"  [red]first op whose output differs (sample {r.mismatch_sample}): "
                      f"#{m.index} {plain(m.op)} -> {plain(m.tensor)} ({m.differing_bytes} of {m.bytes} "
                      f"bytes)[/]; {len(r.mismatch_ops)} of the ops differ in all")
    elif not r.outputs_identical and r.op_outputs_compared:
        console.print(f"  every op's output matched on sample {r.mismatch_sample}")
    if r.locate_note:
        console.print(f"  {plain(r.locate_note)}")
    console.print(f"  {r.instructions_per_inference:,} instructions per inference -> estimated "
                  f"{r.estimated_cycles:,} cycles = {r.estimated_ms:.2f} ms at "
                  f"{r.clock_hz / 1e6:g} MHz [dim](estimate: CPI {r.cpi}, "
                  f"{'calibrated' if r.cost_model_calibrated else 'UNCALIBRATED on this core'})"
                  "[/]")
    margin = r.arena_declared - r.arena_bytes - 16
    console.print(f"  arena {r.arena_bytes:,} B used on the device (declared {r.arena_declared:,}"
                  f" B, margin {margin:+,} B; host interpreter {r.arena_host:,} B); firmware {r.firmware_text_bytes:,} "
                  f"B code+constants, {r.firmware_ram_bytes:,} B RAM")
    if not r.arena_fits:
        console.print(f"  [red]the device build needs {r.arena_bytes + 16:,} B of arena: more "
                      f"than the {r.arena_declared:,} B `edgeq embed` recommends[/] (its "
                      "optimized kernels' scratch buffers); declare at least that much")
    if r.arena_plan:
        a = r.arena_plan
        same = ("byte-identical to" if a["outputs_identical_to_unplanned"]
                else "[red]differ from[/]")
        console.print(f"  offline arena plan: outputs {same} the unplanned model's on the device;"
                      f" arena {a['device_arena_bytes']:,} B vs "
                      f"{a['device_arena_unplanned_bytes']:,} B unplanned (plan predicts {a['predicted_head_bytes']} B head vs "
                      f"TFLM's {a['predicted_tflm_head_bytes']} B on {a['kernels']}: "
                      f"{'matches' if a['arena_matches_plan'] else '[red]does not match[/]'})")
    built = "from the cache" if r.build_cached else f"{r.objects_compiled} files compiled"
    console.print(f"  build {r.build_seconds:.1f} s ({built}), QEMU run {r.run_seconds:.1f} s")
    if r.top_ops:
        table = Table(title="most expensive ops (estimated)", title_justify="left")
        for col in ("#", "op", "layer", "instructions", "est. cycles", "share"):
            table.add_column(col, justify="left" if col in ("op", "layer") else "right")
        for o in r.top_ops:
            table.add_row(str(o.index), plain(o.op), plain(o.layer), f"{o.instructions:,}",
                          f"{o.estimated_cycles:,}", f"{100 * o.share:.1f}%")
        console.print(table)
    for c in found_checks or []:
        console.print(f"  {'[green]ok[/]' if c.ok else '[red]FAIL[/]'} {plain(c.detail)}")


def build_progress(target: str) -> Callable[[int, int], None]:
    """A progress callback for a library build: files compiled of total on stderr (one line
    rewritten on a terminal; otherwise a line every 10 % so CI logs stay short)."""
    tty = sys.stderr.isatty()
    state = {"start": time.monotonic(), "last": -1}

    def report(done: int, total: int) -> None:
        step = done * 10 // max(total, 1)
        if not tty and step == state["last"] and done != total:
            return
        state["last"] = step
        secs = time.monotonic() - state["start"]
        line = (f"edgeq: preparing the TFLite Micro library for {target} (once per core): "
                f"{done}/{total} files compiled, {secs:.0f} s")
        if tty:
            sys.stderr.write("\r" + line + ("\n" if done == total else ""))
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()

    return report
