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
@click.option("--no-arena-plan", is_flag=True,
              help="Embed the model as it is: no offline arena plan, even where it would need "
              "less RAM than TFLite Micro's own plan.")
def embed(model: str, out: str, name: str, target: str | None, overwrite: bool,
          no_arena_plan: bool) -> None:
    """Write MODEL.tflite as C++ sources for firmware: NAME.h/NAME.cc (the 16-byte aligned
    array, its length and a recommended tensor arena size) and NAME_ops.h (a TFLite Micro op
    resolver registering exactly the model's ops)."""
    from pathlib import Path

    from edgeq.outputs.embed import embed_model, kernel_variant
    from edgeq.errors import ModelFileError
    from edgeq.formats.input_files import TFLITE_MAX, check_file, read_file
    from edgeq.outputs.atomic import check_free, check_out_dir, claim, write_outputs
    from edgeq.outputs.text import terminal

    check_out_dir(Path(out))
    p = Path(model)
    check_file(p, "model", error=ModelFileError, hint="pass the .tflite file to embed")
    if p.suffix.lower() in (".keras", ".h5", ".hdf5"):
        raise ModelFileError(p, "is a Keras model; embed takes a converted .tflite",
                             hint=f"convert it first: edgeq convert {p} --target NAME --data "
                                  "calib.npz, then embed the .tflite it writes")
    names = [f"{name}.h", f"{name}.cc", f"{name}_ops.h"]
    check_free(Path(out), names, overwrite)
    data = read_file(p, "model", TFLITE_MAX, error=ModelFileError,
                     hint="pass the .tflite file to embed")
    with claim(Path(out), create=False):  # another run on it exits 2; checked again here
        check_free(Path(out), names, overwrite)
        arena = analysis = None
        notes: list[str] = []
        if target:
            from edgeq.commands.analyze import analyze as run_analysis
            from edgeq.pipeline.place import check_placeable, io_notes

            analysis = run_analysis(p, target)
            check_placeable(analysis.ops, analysis.target)
            arena = analysis.arena
            notes = io_notes(analysis.info, analysis.target)
        # The arena covers the target core's CMSIS-NN buffers (DSP or Helium); without a
        # target, the larger of the two.
        variant = kernel_variant(analysis.target) if analysis is not None else None
        plan = None
        if not no_arena_plan and (analysis is None or (analysis.target.runtime.name == "tflm"
                                                       and analysis.target.compiler is None)):
            from edgeq.pipeline.arena_stage import embed_plan, planned_arena

            plan = embed_plan(p, data, analysis.target if analysis is not None else None)
            if plan.applied:
                data = plan.model
                arena = planned_arena(arena, plan) if arena is not None else None
        if analysis is not None:  # the budget holds for the model that ships (planned or not)
            from edgeq.pipeline.gate import check_memory, enforce_memory

            memory = check_memory(analysis.target, len(data), arena, analysis.info) \
                if plan is not None and plan.applied else analysis.memory
            enforce_memory(analysis.target, memory, analysis.info)
        result = embed_model(data, name, source=str(p), arena=arena, cmsis_nn=variant)
        files = write_outputs(Path(out), result.files, overwrite=overwrite)
        if plan is not None:
            click.echo(f"arena plan: {'written' if plan.applied else 'not written'} "
                       f"({plan.reason})")
    click.echo(f"{result.name}: {result.model_len} bytes, {len(result.ops)} op type(s), "
               f"tensor arena {result.arena_size} B (measured {result.arena_measured} B + margin)")
    click.echo("wrote: " + ", ".join(terminal(f) for f in files.values()))
    for note in notes:  # names the model's tensors: text from the file
        click.echo(f"note: {terminal(note)}")
