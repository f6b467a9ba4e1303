"""`edgeq emulate`: a .tflite built into TFLite Micro firmware and run on QEMU."""

from __future__ import annotations

import json

import click

from edgeq.cli.options import preprocess_options, tflm_tree_option

EMULATE_EXAMPLES = """
\b
Examples:
  edgeq emulate model_int8.tflite --target cortex-m4 --eval-data test.npz --json
  edgeq emulate kws_int8.tflite -t cortex-m7 --tflm-tree ~/tflm_tree
  edgeq emulate model_int8.tflite -t cortex-m4 --eval-data test.npz \\
      --baseline release/emulate.json --max-drop 0.5 --max-growth 5
"""


@click.command(epilog=EMULATE_EXAMPLES)
@click.argument("model", type=click.Path())
@click.option("--target", "-t", required=True, help="A target with an emulator: cortex-m4, "
              "cortex-m7 (edgeq targets NAME shows its [emulator] table).")
@click.option("--eval-data", type=click.Path(),
              help="Inputs (and labels for top-1) [seeded random inputs].")
@click.option("--eval-samples", type=int, help="Use N samples spread through the data [all; 8 "
              "random ones without --eval-data].")
@preprocess_options
@tflm_tree_option
@click.option("--clock-mhz", type=float, help="Device clock for the ms estimate [the profile's].")
@click.option("--baseline", type=click.Path(), help="A report with an emulator section to compare.")
@click.option("--max-drop", type=float,
              help="Fail (exit 4) if emulated top-1 fell more than PP points below the baseline.")
@click.option("--max-growth", type=float,
              help="Fail (exit 4) if estimated cycles grew more than PCT percent.")
@click.option("--report", "report_path", type=click.Path(),
              help="Write the result as JSON (usable as the next --baseline).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def emulate(model: str, target: str, eval_data: str | None, eval_samples: int | None,
            input_scale: str | None, mean: str | None, std: str | None, tflm_tree: str | None,
            clock_mhz: float | None, baseline: str | None, max_drop: float | None,
            max_growth: float | None, report_path: str | None, as_json: bool) -> None:
    """Build MODEL.tflite into TFLite Micro firmware (CMSIS-NN kernels, arm-none-eabi-gcc) for
    the target's Cortex-M, run it on QEMU over the inputs, compare every output byte with the
    TFLM interpreter, and estimate cycles from the instructions QEMU counted. Needs
    gcc-arm-none-eabi, libnewlib-arm-none-eabi, qemu-system-arm and a TFLM tree."""
    from edgeq.data import Preprocess
    from edgeq.emulator import gate
    from edgeq.emulator.emulate import emulate as run_emulation
    from edgeq.errors import UsageError

    if (max_drop is not None or max_growth is not None) and baseline is None:
        raise UsageError("--max-drop and --max-growth compare with a baseline",
                         hint="pass --baseline old_report.json")
    if clock_mhz is not None and not clock_mhz > 0:
        raise UsageError("--clock-mhz must be greater than 0")
    base = gate.read_baseline(baseline) if baseline else None
    result = run_emulation(model, target, eval_data=eval_data,
                           preprocess=Preprocess.parse(input_scale, mean, std),
                           eval_samples=eval_samples, tflm_tree=tflm_tree,
                           clock_hz=int(clock_mhz * 1e6) if clock_mhz else None)
    found = gate.checks(result, base, max_drop, max_growth) if base is not None else []
    body = json.dumps(gate.report(result, found, baseline), indent=2) + "\n"
    if report_path:
        from pathlib import Path

        from edgeq.outputs.atomic import write_outputs

        out = Path(report_path)
        write_outputs(out.parent, {out.name: body.encode()}, overwrite=True)
    if as_json:
        click.echo(body, nl=False)
    else:
        from edgeq.emulator.render import print_emulation

        print_emulation(result, found)
    err = gate.error(found, baseline or "baseline")
    if err is not None:
        raise err
