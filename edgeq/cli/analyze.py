"""`edgeq analyze`: where each op of a model runs on a target and what memory it needs."""

from __future__ import annotations

import json

import click

ANALYZE_EXAMPLES = """
\b
Examples:
  edgeq analyze person_detect.tflite --target cortex-m4
  edgeq analyze model_int8.tflite --target cortex-m7 --json
  edgeq analyze deeplab_quant.tflite --target coral
  edgeq analyze model.keras --target coral --data calib.npz
"""


@click.command(epilog=ANALYZE_EXAMPLES)
@click.argument("model", type=click.Path())
@click.option("--target", "-t", required=True, help="Target profile name or .toml path.")
@click.option("--data", "-d", type=click.Path(),
              help="Calibration data when MODEL is a Keras model [synthetic inputs].")
@click.option("--allow-unsafe", is_flag=True,
              help="Load a Keras model or SavedModel that would run code (as for convert); "
                   "only for trusted files.")
@click.option("--json", "as_json", is_flag=True, help="Print the analysis as JSON.")
def analyze(model: str, target: str, data: str | None, allow_unsafe: bool,
            as_json: bool) -> None:
    """Show where each op of MODEL (.tflite, or a Keras model converted first) runs on a
    target, why, and what memory it needs (the TFLite Micro arena on microcontrollers, the
    parameter cache on the Edge TPU). Exit 3 when it does not fit or cannot compile."""
    from edgeq.commands.analyze import analyze as run_analysis
    from edgeq.pipeline.gate import enforce_memory
    from edgeq.pipeline.place import check_placeable

    result = run_analysis(model, target, data, allow_unsafe=allow_unsafe)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
    else:
        from edgeq.cli.render import print_analysis

        print_analysis(result)
    check_placeable(result.ops, result.target)
    enforce_memory(result.target, result.memory, result.info)
