"""`edgeq embed`: a .tflite as C++ sources for TensorFlow Lite Micro firmware."""

from __future__ import annotations

import click

EMBED_EXAMPLES = """
\b
Examples:
  edgeq embed model_int8.tflite --out firmware/model --name g_model
  edgeq embed model_int8.tflite --out build/model --target cortex-m4 --overwrite
  cmake -B build -DEDGEQ_CMAKE_DIR="$(edgeq embed --cmake-dir)"   # include() EdgeqEmbed.cmake
"""


def _print_cmake_dir(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    from edgeq.outputs.embed import cmake_dir

    click.echo(str(cmake_dir()))
    ctx.exit(0)


@click.command(epilog=EMBED_EXAMPLES)
@click.argument("model", type=click.Path())
@click.option("--out", "-o", required=True, type=click.Path(), help="Directory for the sources.")
@click.option("--name", default="g_model", show_default=True, help="C++ symbol of the array.")
@click.option("--target", "-t", help="Also check the model's ops and memory against this target.")
@click.option("--overwrite", is_flag=True, help="Replace existing files.")
@click.option("--cmake-dir", is_flag=True, is_eager=True, expose_value=False,
              callback=_print_cmake_dir, help="Print the directory of edgeq's CMake helpers "
              "(include(DIR/EdgeqEmbed.cmake) gives edgeq_add_model()) and exit.")
def embed(model: str, out: str, name: str, target: str | None, overwrite: bool) -> None:
    """Write MODEL.tflite as C++ sources for firmware: NAME.h/NAME.cc (the 16-byte aligned
    array, its length and a recommended tensor arena size) and NAME_ops.h (a TFLite Micro op
    resolver registering exactly the model's ops)."""
    from pathlib import Path

    from edgeq.outputs.embed import embed_model, kernel_variant
    from edgeq.errors import ModelFileError
    from edgeq.outputs.atomic import check_free, check_out_dir, write_outputs

    check_out_dir(Path(out))
    p = Path(model)
    if not p.is_file():
        raise ModelFileError(p, "not found", hint="pass the .tflite file to embed")
    check_free(Path(out), [f"{name}.h", f"{name}.cc", f"{name}_ops.h"], overwrite)
    data = p.read_bytes()
    arena = None
    if target:
        from edgeq.commands.analyze import analyze as run_analysis
        from edgeq.pipeline.gate import enforce_memory
        from edgeq.pipeline.place import check_placeable

        analysis = run_analysis(p, target)
        check_placeable(analysis.ops, analysis.target)
        enforce_memory(analysis.target, analysis.memory, analysis.info)
        arena = analysis.arena
    # The arena covers the target core's CMSIS-NN buffers (DSP or Helium); without a target,
    # the larger of the two.
    variant = kernel_variant(analysis.target) if target else None
    result = embed_model(data, name, source=str(p), arena=arena, cmsis_nn=variant)
    files = write_outputs(Path(out), result.files, overwrite=overwrite)
    click.echo(f"{result.name}: {result.model_len} bytes, {len(result.ops)} op type(s), "
               f"tensor arena {result.arena_size} B (measured {result.arena_measured} B + margin)")
    click.echo("wrote: " + ", ".join(str(f) for f in files.values()))
