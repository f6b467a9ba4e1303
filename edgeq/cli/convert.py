"""`edgeq convert`: a Keras model to a verified integer TFLite model for a target (the
library's edgeq.commands.convert), and `--emulate`, the converted model on the emulated device."""

from __future__ import annotations


import click

from edgeq.cli.options import data_check_options, preprocess_options, tflm_tree_option

CONVERT_EXAMPLES = """
\b
Examples:
  edgeq convert model.keras --target cortex-m4 --data calib.npz --eval-data test.npz
  edgeq convert ic_resnet8.h5 --target arm-cpu --data cifar_sample.npz --out build/resnet8
  edgeq convert saved_model/ --target coral --data images/ --input-scale 1/255
  edgeq convert model.keras -t cortex-m4 -d calib.npz --method qat --train-data train.npz
"""


@click.command(epilog=CONVERT_EXAMPLES)
@click.argument("model", type=click.Path())
@click.option("--target", "-t", required=True, help="Target profile name (edgeq targets) or .toml path.")
@click.option("--data", "-d", required=True, type=click.Path(),
              help="Representative data: .npz (x[, y]), .npy or an image directory.")
@click.option("--eval-data", type=click.Path(), help="Held-out data with labels for accuracy.")
@click.option("--out", "-o", type=click.Path(), help="Output directory [edgeq-out/MODEL-TARGET].")
@click.option("--method", default="ptq", show_default=True,
              type=click.Choice(["ptq", "qat", "auto"]),
              help="ptq; qat: fine-tune with fake quantization (needs --train-data); auto: PTQ, "
                   "then partial float, then QAT until --max-drop is met.")
@click.option("--train-data", type=click.Path(),
              help="QAT (and auto's QAT stage): labelled training data (.npz x, y or folders).")
@click.option("--epochs", default=3, show_default=True, help="QAT: fine-tuning epochs.")
@click.option("--lr", type=float, help="QAT: learning rate [1% of the model's base rate].")
@click.option("--batch-size", default=32, show_default=True, help="QAT: training batch size.")
@click.option("--seed", default=0, show_default=True, help="QAT: seed for shuffling and splits.")
@click.option("--qat-skip", multiple=True, metavar="LAYER",
              help="QAT: train this layer without fake quantization (repeatable; targets with "
              "float fallback); the converter calibrates it from --data.")
@click.option("--strategy", default="none", show_default=True,
              type=click.Choice(["none", "mirrored", "multiworker"]),
              help="QAT: train under tf.distribute MirroredStrategy / MultiWorkerMirroredStrategy.")
@click.option("--calibration", default="minmax", show_default=True,
              type=click.Choice(["minmax", "percentile", "entropy", "mse", "auto"]),
              help="Activation ranges; auto tries all and keeps the best on the eval data.")
@click.option("--percentile", default=99.99, show_default=True,
              help="Percentile for --calibration percentile.")
@click.option("--equalize", is_flag=True,
              help="Cross-layer equalization first (helps per-tensor targets on depthwise nets).")
@click.option("--int16-activations", is_flag=True,
              help="16x8 quantization (int16 activations) where the target allows it.")
@click.option("--recipe", help="Precision recipe: int8 (default on most targets), a16w8, "
              "dynamic_wi8_afp32, float16, wi4_afp32, wi4_block32_afp32 (edgeq targets NAME).")
@click.option("--smooth", type=float, metavar="ALPHA",
              help="SmoothQuant: move activation outliers into the following Dense weights.")
@click.option("--substitute", multiple=True, type=click.Choice(["gelu"]),
              help="Rewrite an op the target lacks: gelu -> x*sigmoid(1.702x) (TFLite Micro "
              "has no GELU kernel); the report gives float top-1 before and after.")
@click.option("--clip", metavar="BOUND|auto",
              help="Clip activations before quantizing: a number clips GELU outputs at it "
              "(10 = GELU10); auto searches a bound per activation (MSE on --data).")
@click.option("--diagnostics", is_flag=True,
              help="Per-tensor diagnostics also for minmax (always on for other methods).")
@click.option("--html", is_flag=True,
              help="Also write report.html: one self-contained page with charts (accuracy, "
              "per-tensor error, activation histograms) and the op table; runs the statistics "
              "pass.")
@click.option("--calibration-samples", default=500, show_default=True,
              help="Calibrate on N samples spread evenly through --data.")
@click.option("--eval-samples", type=int,
              help="Evaluate on N samples spread evenly through the evaluation data [all].")
@preprocess_options
@click.option("--max-drop", type=float, help="Fail (exit 4) if top-1 drops more than PP points.")
@click.option("--labels", type=click.Path(),
              help="Class names, one per line (android-arm64 writes them as labels.txt).")
@click.option("--allow-unsafe", is_flag=True,
              help="Load a Keras model whose config carries code (Lambda layers, lambdas, "
                   "custom objects): runs code from the file; only for trusted files.")
@click.option("--no-latency", is_flag=True, help="Skip the host latency measurement.")
@data_check_options
@click.option("--overwrite", is_flag=True, help="Replace existing output files.")
@click.option("--emulate", "emulate_", is_flag=True,
              help="Also run the model's TFLite Micro firmware on QEMU (Cortex-M targets): "
              "report.json gets an emulator section (see edgeq emulate).")
@tflm_tree_option
@click.option("--no-arena-plan", is_flag=True,
              help="TFLite Micro targets: keep TFLM's own arena plan (by default edgeq writes "
              "an offline plan into the model when it needs less RAM).")
@click.option("--json", "as_json", is_flag=True, help="Print report.json to stdout instead of a table.")
def convert(model: str, target: str, data: str, eval_data: str | None, out: str | None,
            method: str, train_data: str | None, epochs: int, lr: float | None,
            batch_size: int, seed: int, qat_skip: tuple[str, ...], strategy: str,
            calibration: str, percentile: float, equalize: bool,
            int16_activations: bool, recipe: str | None, smooth: float | None,
            substitute: tuple[str, ...], clip: str | None,
            diagnostics: bool, html: bool, calibration_samples: int,
            eval_samples: int | None,
            input_scale: str | None, mean: str | None, std: str | None, max_drop: float | None,
            labels: str | None, allow_unsafe: bool, no_latency: bool, input_range: str | None,
            strict_data: bool, overwrite: bool, emulate_: bool, tflm_tree: str | None,
            no_arena_plan: bool, as_json: bool) -> None:
    """Convert MODEL (.keras, .h5 or SavedModel dir) to a full-integer TFLite model for a target,
    verify it on the target's runtime and write the model and report.json/report.md (and
    report.html with --html)."""
    # The command's own modules, not edgeq.api (which imports every command and LiteRT's
    # schema): a data mistake is reported before anything else heavy is imported.
    from edgeq.commands.convert import convert as run_convert
    from edgeq.commands.convert_options import ConvertOptions
    from edgeq.data import Preprocess
    from edgeq.data.checks import parse_range

    opts = ConvertOptions(
        model=model, target=target, data=data, eval_data=eval_data, out=out, method=method,
        calibration=calibration, percentile=percentile, equalize=equalize,
        int16_activations=int16_activations, diagnostics=diagnostics, html=html, recipe=recipe,
        smooth=smooth, substitute=tuple(substitute), clip=clip,
        preprocess=Preprocess.parse(input_scale, mean, std),
        calibration_samples=calibration_samples, eval_samples=eval_samples, max_drop=max_drop,
        labels=labels, overwrite=overwrite, allow_unsafe=allow_unsafe, measure_latency=not no_latency,
        train_data=train_data, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed,
        qat_skip=tuple(qat_skip), strategy=strategy, strict_data=strict_data,
        arena_plan=not no_arena_plan, input_range=parse_range(input_range),
    )
    from edgeq.cli.render import RichProgress, print_report

    if emulate_:  # fail on a missing tool or tree before the conversion, not after it
        from edgeq.emulator.toolchain import find_toolchain, resolve_tree

        find_toolchain()
        resolve_tree(tflm_tree)
    with RichProgress(enabled=not as_json) as progress:
        result = run_convert(opts, progress)
    emulated = _emulate_converted(result, target, eval_data or data, opts, tflm_tree) \
        if emulate_ else None
    if as_json:
        click.echo(result.report.to_json() if emulated is None else emulated[1], nl=False)
    else:
        print_report(result.report, result.files, warnings_shown=progress.enabled)
        if emulated is not None:
            from edgeq.emulator.render import print_emulation

            print_emulation(emulated[0])
    if result.gate_error is not None:
        raise result.gate_error


def _emulate_converted(result, target: str, eval_data: str, opts, tflm_tree: str | None):
    """convert --emulate: the converted model on the emulator; its section goes into the
    report.json just written. Returns the result and the new report text."""
    from edgeq.emulator.emulate import emulate as run_emulation
    from edgeq.outputs.atomic import write_outputs

    model = next(p for n, p in result.files.items()
                 if n.endswith(".tflite") and not n.endswith("_edgetpu.tflite"))
    from edgeq.emulator.render import build_progress

    emu = run_emulation(model, target, eval_data=eval_data, preprocess=opts.preprocess,
                        eval_samples=opts.eval_samples, tflm_tree=tflm_tree,
                        progress=build_progress(target))
    # The report gets the emulator section; report.md and report.html are rendered again
    # with it (per-op cycles named by the user's layers).
    result.report.emulator = emu.to_dict()
    text = result.report.to_json()
    outputs = {"report.json": text.encode()}
    if "report.md" in result.files:
        outputs["report.md"] = result.report.to_markdown().encode()
    if "report.html" in result.files:
        from edgeq.outputs.report_html import render

        outputs["report.html"] = render(result.report).encode()
    write_outputs(result.files["report.json"].parent, outputs, overwrite=True)
    return emu, text
