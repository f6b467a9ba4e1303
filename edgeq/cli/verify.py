"""`edgeq verify`: a .tflite measured on its target's runtime, gated against a baseline."""

from __future__ import annotations

import json

import click

from edgeq.cli.options import data_check_options, preprocess_options, tflm_tree_option

VERIFY_EXAMPLES = """
\b
Examples:
  edgeq verify model_int8.tflite --target cortex-m4 --eval-data test.npz --report new.json
  edgeq verify model_int8.tflite --target cortex-m4 --eval-data test.npz \\
      --baseline report.json --max-latency-growth 25
  edgeq verify new_int8.tflite --target cortex-m4 --eval-data test.npz \\
      --baseline release/report.json --max-drop 0.5 --max-growth 10
"""


@click.command(epilog=VERIFY_EXAMPLES)
@click.argument("model", type=click.Path())
@click.option("--target", "-t", required=True, help="Target profile name or .toml path.")
@click.option("--eval-data", required=True, type=click.Path(),
              help="Labelled data (.npz x, y or a class-folder image directory).")
@click.option("--baseline", type=click.Path(),
              help="report.json to compare with: of the same model (the same file, or a new "
                   "build with the same inputs and outputs) and target.")
@click.option("--allow-different-model", is_flag=True,
              help="With --baseline: compare even though the baseline was made for a model "
                   "with other inputs or outputs.")
@click.option("--allow-different-target", is_flag=True,
              help="With --baseline: compare even though the baseline was measured for "
                   "another target (checks that mean nothing across targets are skipped).")
@click.option("--max-drop", type=float,
              help="With --baseline: fail (exit 4) if top-1 fell more than PP points [0].")
@click.option("--max-growth", type=float,
              help="With --baseline: fail (exit 4) if model size or TFLM arena grew more than "
                   "PCT percent [0].")
@click.option("--max-latency-growth", type=float, metavar="PCT",
              help="With --baseline: also gate on host latency; off by default, as host "
                   "timings vary between runs (~20% for microsecond models).")
@click.option("--eval-samples", type=int, help="Use N samples spread through the data [all].")
@preprocess_options
@click.option("--report", "report_path", type=click.Path(),
              help="Write this run's figures as JSON (usable as the next --baseline).")
@click.option("--no-latency", is_flag=True, help="Skip the host latency measurement.")
@data_check_options
@click.option("--emulate", "emulate_", is_flag=True,
              help="Also run the firmware on QEMU (Cortex-M targets) and gate on the emulated "
              "device's top-1 (--max-drop) and estimated cycles (--max-growth).")
@tflm_tree_option
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def verify(model: str, target: str, eval_data: str, baseline: str | None,
           max_drop: float | None, max_growth: float | None,
           max_latency_growth: float | None, eval_samples: int | None,
           input_scale: str | None, mean: str | None, std: str | None,
           report_path: str | None, no_latency: bool, input_range: str | None,
           strict_data: bool, allow_different_model: bool, allow_different_target: bool,
           emulate_: bool,
           tflm_tree: str | None, as_json: bool) -> None:
    """Measure a .tflite MODEL on the target's runtime (TFLite Micro for microcontrollers) and,
    with --baseline, fail with exit 4 when it got worse: a CI regression gate."""
    from pathlib import Path

    from edgeq.data import Preprocess
    from edgeq.data.checks import parse_range
    from edgeq.formats.input_files import check_output_path
    from edgeq.outputs.atomic import check_file_path, write_outputs
    from edgeq.commands.verify import verify_model

    if report_path:
        check_file_path(Path(report_path), "--report")
        check_output_path(report_path, "--report")
    outcome = verify_model(model, target, eval_data, baseline=baseline, max_drop=max_drop,
                           max_growth=max_growth, max_latency_growth=max_latency_growth,
                           preprocess=Preprocess.parse(input_scale, mean, std),
                           eval_samples=eval_samples, measure_latency=not no_latency,
                           strict_data=strict_data, input_range=parse_range(input_range),
                           allow_different_model=allow_different_model,
                           allow_different_target=allow_different_target)
    emulated = None
    if emulate_:
        import dataclasses

        from edgeq.emulator.gate import emulate_checked
        from edgeq.emulator.render import build_progress

        emulated, found = emulate_checked(
            model, target, eval_data, baseline=baseline, max_drop=max_drop,
            max_growth=max_growth, preprocess=Preprocess.parse(input_scale, mean, std),
            eval_samples=eval_samples, tflm_tree=tflm_tree, progress=build_progress(target))
        outcome = dataclasses.replace(outcome, checks=(*outcome.checks, *found))
    payload = outcome.to_dict()
    if emulated is not None:
        payload["emulator"] = emulated.to_dict()
    body = json.dumps(payload, indent=2) + "\n"
    if report_path:
        out = Path(report_path)
        write_outputs(out.parent, {out.name: body.encode()},
                      overwrite=True)
    if as_json:
        click.echo(body, nl=False)
    else:
        from edgeq.cli.render import print_verify

        print_verify(outcome)
        if emulated is not None:
            from edgeq.emulator.render import print_emulation

            print_emulation(emulated)
    if outcome.error() is not None:
        raise outcome.error()
