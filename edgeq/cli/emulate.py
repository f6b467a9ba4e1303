"""`edgeq emulate`: a .tflite built into TFLite Micro firmware and run on QEMU."""

from __future__ import annotations

import json

import click

from edgeq.cli.options import preprocess_options, tflm_tree_option

EMULATE_EXAMPLES = """
\b
Examples:
  edgeq emulate model_int8.tflite --target cortex-m4 --eval-data test.npz --json
  edgeq emulate kws_int8.tflite -t cortex-m33 --tflm-tree ~/tflm_tree
  edgeq emulate --prepare --target cortex-m4      # build the core's TFLM library ahead of time
  edgeq emulate model_int8.tflite -t cortex-m4 --eval-data test.npz \\
      --baseline release/emulate.json --max-drop 0.5 --max-growth 5
"""


@click.command(epilog=EMULATE_EXAMPLES)
@click.argument("model", type=click.Path(), required=False)
@click.option("--target", "-t", required=True, help="A target with an emulator: cortex-m4, "
              "cortex-m7, cortex-m33, cortex-m55, cortex-m85, or a profile extending one "
              "(edgeq targets NAME shows its [emulator] table); with --prepare also 'all'.")
@click.option("--prepare", is_flag=True, help="Only build the target core's TFLite Micro "
              "library (framework and every kernel, once per tree, core flags and compiler) "
              "into the cache, e.g. in a CI image or Dockerfile; no MODEL.")
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
def emulate(model: str | None, target: str, prepare: bool, eval_data: str | None, eval_samples: int | None,
            input_scale: str | None, mean: str | None, std: str | None, tflm_tree: str | None,
            clock_mhz: float | None, baseline: str | None, max_drop: float | None,
            max_growth: float | None, report_path: str | None, as_json: bool) -> None:
    """Build MODEL.tflite into TFLite Micro firmware (CMSIS-NN kernels, arm-none-eabi-gcc) for
    the target's Cortex-M, run it on QEMU over the inputs, compare every output byte with the
    TFLM interpreter, and estimate cycles from the instructions QEMU counted. Needs
    gcc-arm-none-eabi, libnewlib-arm-none-eabi, libstdc++-arm-none-eabi-newlib and
    qemu-system-arm (Debian 12); the TFLite Micro + CMSIS-NN tree ships with edgeq."""
    from edgeq.emulator.toolchain import find_toolchain

    # The whole toolchain first, before the heavy imports: a missing package is one line in
    # well under 2 s, before anything is read, unpacked or compiled.
    find_toolchain()
    from edgeq.data import Preprocess
    from edgeq.emulator import gate
    from edgeq.emulator.emulate import emulate as run_emulation
    from edgeq.emulator.render import build_progress
    from edgeq.errors import UsageError

    if prepare:
        if model is not None:
            raise UsageError("--prepare builds a core's library and takes no MODEL",
                             hint=f"run 'edgeq emulate --prepare -t {target}', then emulate")
        _prepare(target, tflm_tree)
        return
    if model is None:
        raise UsageError("edgeq emulate needs a MODEL.tflite (or --prepare)",
                         hint="edgeq emulate model_int8.tflite --target cortex-m4")

    if (max_drop is not None or max_growth is not None) and baseline is None:
        raise UsageError("--max-drop and --max-growth compare with a baseline",
                         hint="pass --baseline old_report.json")
    if clock_mhz is not None and not clock_mhz > 0:
        raise UsageError("--clock-mhz must be greater than 0")
    if report_path:  # before the run: a path that cannot take the report fails at once
        from pathlib import Path

        from edgeq.formats.input_files import check_output_path
        from edgeq.outputs.atomic import check_file_path

        check_file_path(Path(report_path), "--report")
        check_output_path(report_path, "--report")
    base = gate.read_baseline(baseline) if baseline else None
    result = run_emulation(model, target, eval_data=eval_data,
                           preprocess=Preprocess.parse(input_scale, mean, std),
                           eval_samples=eval_samples, tflm_tree=tflm_tree,
                           clock_hz=int(clock_mhz * 1e6) if clock_mhz else None,
                           progress=build_progress(target))
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


def _prepare(target: str, tflm_tree: str | None) -> None:
    from edgeq.emulator.emulate import emulated_targets, prepare
    from edgeq.emulator.render import build_progress

    for name in emulated_targets() if target == "all" else [target]:
        lib = prepare(name, tflm_tree=tflm_tree, progress=build_progress(name))
        state = f"built {lib.compiled} of {lib.files} files" if lib.compiled else "ready"
        click.echo(f"{name}: TFLM library {state} in {lib.seconds:.0f} s ({lib.archive})")
