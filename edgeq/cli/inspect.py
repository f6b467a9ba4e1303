"""`edgeq inspect`: a .tflite as it is (ops, tensors, Edge TPU compilation)."""

from __future__ import annotations

import json

import click

INSPECT_EXAMPLES = """
\b
Examples:
  edgeq inspect model_int8_edgetpu.tflite
  edgeq inspect compiled/model_edgetpu.tflite --source model_int8.tflite --json
"""


@click.command(epilog=INSPECT_EXAMPLES)
@click.argument("model", type=click.Path())
@click.option("--source", type=click.Path(),
              help="The model that was compiled [X.tflite beside X_edgetpu.tflite].")
@click.option("--json", "as_json", is_flag=True, help="Print the inspection as JSON.")
def inspect(model: str, source: str | None, as_json: bool) -> None:
    """Read a .tflite MODEL: its ops, inputs and outputs; for a model compiled by
    edgetpu_compiler, how many ops the edgetpu-custom-op replaced and which ops remain on the
    CPU, in order."""
    from edgeq.commands.inspect import inspect_model

    result = inspect_model(model, source)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
    else:
        from edgeq.cli.render import print_inspection

        print_inspection(result.to_dict())
