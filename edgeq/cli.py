"""The `edgeq` command line: parse options, call `edgeq.api`, render the result, map errors to
exit codes. No conversion logic lives here, and nothing heavy is imported at start-up so that
`edgeq --help` answers at once."""

from __future__ import annotations

import json
import os
import signal
import sys
import traceback
import warnings
import click

from edgeq import __version__
from edgeq.errors import EdgeqError
from edgeq.status import INTERRUPTED, ExitStatus

CONVERT_EXAMPLES = """
\b
Examples:
  edgeq convert model.keras --target cortex-m4 --data calib.npz --eval-data test.npz
  edgeq convert ic_resnet8.h5 --target arm-cpu --data cifar_sample.npz --out build/resnet8
  edgeq convert saved_model/ --target coral --data images/ --input-scale 1/255
  edgeq convert model.keras -t cortex-m4 -d calib.npz --method qat --train-data train.npz
"""

ANALYZE_EXAMPLES = """
\b
Examples:
  edgeq analyze person_detect.tflite --target cortex-m4
  edgeq analyze model_int8.tflite --target cortex-m7 --json
  edgeq analyze deeplab_quant.tflite --target coral
  edgeq analyze model.keras --target coral --data calib.npz
"""

INSPECT_EXAMPLES = """
\b
Examples:
  edgeq inspect model_int8_edgetpu.tflite
  edgeq inspect compiled/model_edgetpu.tflite --source model_int8.tflite --json
"""

VERIFY_EXAMPLES = """
\b
Examples:
  edgeq verify model_int8.tflite --target cortex-m4 --eval-data test.npz --report new.json
  edgeq verify model_int8.tflite --target cortex-m4 --eval-data test.npz \\
      --baseline release/report.json --max-drop 0.5 --max-growth 10
  edgeq verify model_int8.tflite --target arm-cpu --eval-data test.npz \\
      --baseline release/report.json --max-latency-growth 25
"""

EMBED_EXAMPLES = """
\b
Examples:
  edgeq embed model_int8.tflite --out firmware/model --name g_model
  edgeq embed model_int8.tflite --out build/model --target cortex-m4 --overwrite
"""

EMULATE_EXAMPLES = """
\b
Examples:
  edgeq emulate model_int8.tflite --target cortex-m4 --eval-data test.npz --json
  edgeq emulate kws_int8.tflite -t cortex-m7 --tflm-tree ~/tflm_tree
  edgeq emulate model_int8.tflite -t cortex-m4 --eval-data test.npz \\
      --baseline release/emulate.json --max-drop 0.5 --max-growth 5
"""

TARGETS_EXAMPLES = """
\b
Examples:
  edgeq targets
  edgeq targets cortex-m4
  edgeq targets coral --json
"""


class _State:
    debug = False


def _quiet_tensorflow() -> None:
    """TF and absl write start-up chatter to stderr; users see it only with --debug."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    warnings.filterwarnings("ignore")
    import logging

    for name in ("tensorflow", "absl", "keras", "h5py"):
        logging.getLogger(name).setLevel(logging.ERROR)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgeq")
@click.option("--debug", is_flag=True, help="Show tracebacks and the tools' own output.")
def cli(debug: bool) -> None:
    """edgeq: a Keras model to a verified, deployable integer TFLite model for an edge device."""
    _State.debug = debug
    if not debug:
        _quiet_tensorflow()


@cli.command(epilog=CONVERT_EXAMPLES)
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
@click.option("--diagnostics", is_flag=True,
              help="Per-tensor diagnostics also for minmax (always on for other methods).")
@click.option("--html", is_flag=True,
              help="Also write report.html: one self-contained page with charts (accuracy, "
              "per-tensor error, activation histograms) and the op table; runs the statistics "
              "pass.")
@click.option("--calibration-samples", default=500, show_default=True,
              help="Use the first N representative samples.")
@click.option("--eval-samples", type=int, help="Use the first N evaluation samples [all].")
@click.option("--input-scale", help="Multiply raw inputs by this (e.g. 1/255) before --mean/--std.")
@click.option("--mean", help="Subtract per-channel mean(s), e.g. 127.5 or 0.485,0.456,0.406.")
@click.option("--std", help="Divide by per-channel std(s), e.g. 127.5.")
@click.option("--max-drop", type=float, help="Fail (exit 4) if top-1 drops more than PP points.")
@click.option("--labels", type=click.Path(),
              help="Class names, one per line (android-arm64 writes them as labels.txt).")
@click.option("--allow-unsafe", is_flag=True,
              help="Load a Keras model whose config carries code (Lambda layers, lambdas, "
                   "custom objects): runs code from the file; only for trusted files.")
@click.option("--no-latency", is_flag=True, help="Skip the host latency measurement.")
@click.option("--strict-data", is_flag=True,
              help="Stop (exit 2) on data warnings: data sets that disagree with each other or "
                   "with the model's first layer, raw 0..255 floats, constant or repeated "
                   "samples.")
@click.option("--overwrite", is_flag=True, help="Replace existing output files.")
@click.option("--emulate", "emulate_", is_flag=True,
              help="Also run the model's TFLite Micro firmware on QEMU (Cortex-M targets): "
              "report.json gets an emulator section (see edgeq emulate).")
@click.option("--tflm-tree", type=click.Path(),
              help="--emulate: TFLite Micro tree with CMSIS-NN [$EDGEQ_TFLM_TREE].")
@click.option("--json", "as_json", is_flag=True, help="Print report.json to stdout instead of a table.")
def convert(model: str, target: str, data: str, eval_data: str | None, out: str | None,
            method: str, train_data: str | None, epochs: int, lr: float | None,
            batch_size: int, seed: int, qat_skip: tuple[str, ...], strategy: str,
            calibration: str, percentile: float, equalize: bool,
            int16_activations: bool, recipe: str | None, smooth: float | None,
            diagnostics: bool, html: bool, calibration_samples: int,
            eval_samples: int | None,
            input_scale: str | None, mean: str | None, std: str | None, max_drop: float | None,
            labels: str | None, allow_unsafe: bool, no_latency: bool, strict_data: bool,
            overwrite: bool, emulate_: bool, tflm_tree: str | None, as_json: bool) -> None:
    """Convert MODEL (.keras, .h5 or SavedModel dir) to a full-integer TFLite model for a target,
    verify it on the target's runtime and write the model and report.json/report.md (and
    report.html with --html)."""
    from edgeq import api
    from edgeq.data import Preprocess

    opts = api.ConvertOptions(
        model=model, target=target, data=data, eval_data=eval_data, out=out, method=method,
        calibration=calibration, percentile=percentile, equalize=equalize,
        int16_activations=int16_activations, diagnostics=diagnostics, html=html, recipe=recipe,
        smooth=smooth,
        preprocess=Preprocess.parse(input_scale, mean, std),
        calibration_samples=calibration_samples, eval_samples=eval_samples, max_drop=max_drop,
        labels=labels, overwrite=overwrite, allow_unsafe=allow_unsafe, measure_latency=not no_latency,
        train_data=train_data, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed,
        qat_skip=tuple(qat_skip), strategy=strategy, strict_data=strict_data,
    )
    from edgeq.console import RichProgress, print_report

    if emulate_:  # fail on a missing tool or tree before the conversion, not after it
        from edgeq.emulator.toolchain import find_toolchain, resolve_tree

        find_toolchain()
        resolve_tree(tflm_tree)
    with RichProgress(enabled=not as_json) as progress:
        result = api.convert(opts, progress)
    emulated = _emulate_converted(result, target, eval_data or data, opts, tflm_tree) \
        if emulate_ else None
    if as_json:
        click.echo(result.report.to_json() if emulated is None else emulated[1], nl=False)
    else:
        print_report(result.report, result.files)
        if emulated is not None:
            from edgeq.emulator.render import print_emulation

            print_emulation(emulated[0])
    if result.gate_error is not None:
        raise result.gate_error


def _emulate_converted(result, target: str, eval_data: str, opts, tflm_tree: str | None):
    """convert --emulate: the converted model on the emulator; its section goes into the
    report.json just written. Returns the result and the new report text."""
    from edgeq.emulator.emulate import emulate as run_emulation
    from edgeq.outputs import write_outputs

    model = next(p for n, p in result.files.items()
                 if n.endswith(".tflite") and not n.endswith("_edgetpu.tflite"))
    emu = run_emulation(model, target, eval_data=eval_data, preprocess=opts.preprocess,
                        eval_samples=opts.eval_samples, tflm_tree=tflm_tree)
    path = result.files["report.json"]
    report = json.loads(path.read_text())
    report["emulator"] = emu.to_dict()
    text = json.dumps(report, indent=2) + "\n"
    md = result.files.get("report.md")
    outputs = {path.name: text.encode()}
    if md is not None:
        outputs[md.name] = md.read_bytes() + _emulator_markdown(emu).encode()
    write_outputs(path.parent, outputs, overwrite=True)
    return emu, text


def _emulator_markdown(emu) -> str:
    same = "byte-identical to" if emu.outputs_identical else \
        f"{emu.mismatched_samples} of {emu.samples} samples differ from"
    top1 = "" if emu.top1 is None else \
        f"- top-1 on the emulated device: {100 * emu.top1['device']:.2f}%\n"
    return (f"\n## Emulated device ({emu.core}, QEMU {emu.machine})\n\n"
            f"- TFLite Micro + CMSIS-NN firmware, {emu.samples} samples: outputs {same} the "
            "TFLM interpreter's\n" + top1 +
            f"- {emu.instructions_per_inference:,} instructions per inference; estimated "
            f"{emu.estimated_cycles:,} cycles = {emu.estimated_ms:.2f} ms at "
            f"{emu.clock_hz / 1e6:g} MHz (an estimate: CPI {emu.cpi}, "
            f"{'calibrated' if emu.cost_model_calibrated else 'uncalibrated'})\n"
            f"- arena on the device: {emu.arena_bytes:,} B (embed recommends "
            f"{emu.arena_declared:,} B)\n")


@cli.command(epilog=ANALYZE_EXAMPLES)
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
    from edgeq.analyze import analyze as run_analysis
    from edgeq.pipeline.gate import enforce_memory
    from edgeq.pipeline.place import check_placeable

    result = run_analysis(model, target, data, allow_unsafe=allow_unsafe)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
    else:
        from edgeq.console import print_analysis

        print_analysis(result)
    check_placeable(result.ops, result.target)
    enforce_memory(result.target, result.memory, result.info)


@cli.command(epilog=INSPECT_EXAMPLES)
@click.argument("model", type=click.Path())
@click.option("--source", type=click.Path(),
              help="The model that was compiled [X.tflite beside X_edgetpu.tflite].")
@click.option("--json", "as_json", is_flag=True, help="Print the inspection as JSON.")
def inspect(model: str, source: str | None, as_json: bool) -> None:
    """Read a .tflite MODEL: its ops, inputs and outputs; for a model compiled by
    edgetpu_compiler, how many ops the edgetpu-custom-op replaced and which ops remain on the
    CPU, in order."""
    from edgeq.inspect import inspect_model

    result = inspect_model(model, source)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
    else:
        from edgeq.console import print_inspection

        print_inspection(result.to_dict())


@cli.command(epilog=VERIFY_EXAMPLES)
@click.argument("model", type=click.Path())
@click.option("--target", "-t", required=True, help="Target profile name or .toml path.")
@click.option("--eval-data", required=True, type=click.Path(),
              help="Labelled data (.npz x, y or a class-folder image directory).")
@click.option("--baseline", type=click.Path(), help="report.json to compare with.")
@click.option("--max-drop", type=float,
              help="With --baseline: fail (exit 4) if top-1 fell more than PP points [0].")
@click.option("--max-growth", type=float,
              help="With --baseline: fail (exit 4) if model size or TFLM arena grew more than "
                   "PCT percent [0].")
@click.option("--max-latency-growth", type=float, metavar="PCT",
              help="With --baseline: also gate on host latency; off by default, as host "
                   "timings vary between runs (~20% for microsecond models).")
@click.option("--eval-samples", type=int, help="Use N samples spread through the data [all].")
@click.option("--input-scale", help="Multiply raw inputs by this (e.g. 1/255) before --mean/--std.")
@click.option("--mean", help="Subtract per-channel mean(s).")
@click.option("--std", help="Divide by per-channel std(s).")
@click.option("--report", "report_path", type=click.Path(),
              help="Write this run's figures as JSON (usable as the next --baseline).")
@click.option("--no-latency", is_flag=True, help="Skip the host latency measurement.")
@click.option("--strict-data", is_flag=True,
              help="Stop (exit 2) when the data looks wrong for the model's input.")
@click.option("--emulate", "emulate_", is_flag=True,
              help="Also run the firmware on QEMU (Cortex-M targets) and gate on the emulated "
              "device's top-1 (--max-drop) and estimated cycles (--max-growth).")
@click.option("--tflm-tree", type=click.Path(),
              help="--emulate: TFLite Micro tree with CMSIS-NN [$EDGEQ_TFLM_TREE].")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def verify(model: str, target: str, eval_data: str, baseline: str | None,
           max_drop: float | None, max_growth: float | None,
           max_latency_growth: float | None, eval_samples: int | None,
           input_scale: str | None, mean: str | None, std: str | None,
           report_path: str | None, no_latency: bool, strict_data: bool, emulate_: bool,
           tflm_tree: str | None, as_json: bool) -> None:
    """Measure a .tflite MODEL on the target's runtime (TFLite Micro for microcontrollers) and,
    with --baseline, fail with exit 4 when it got worse: a CI regression gate."""
    from pathlib import Path

    from edgeq.data import Preprocess
    from edgeq.outputs import check_file_path, write_outputs
    from edgeq.regression import verify_model

    if report_path:
        check_file_path(Path(report_path), "--report")
    outcome = verify_model(model, target, eval_data, baseline=baseline, max_drop=max_drop,
                           max_growth=max_growth, max_latency_growth=max_latency_growth,
                           preprocess=Preprocess.parse(input_scale, mean, std),
                           eval_samples=eval_samples, measure_latency=not no_latency,
                           strict_data=strict_data)
    emulated = None
    if emulate_:
        import dataclasses

        from edgeq.emulator.gate import emulate_checked

        emulated, found = emulate_checked(
            model, target, eval_data, baseline=baseline, max_drop=max_drop,
            max_growth=max_growth, preprocess=Preprocess.parse(input_scale, mean, std),
            eval_samples=eval_samples, tflm_tree=tflm_tree)
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
        from edgeq.console import print_verify

        print_verify(outcome)
        if emulated is not None:
            from edgeq.emulator.render import print_emulation

            print_emulation(emulated)
    if outcome.error() is not None:
        raise outcome.error()


@cli.command(epilog=EMBED_EXAMPLES)
@click.argument("model", type=click.Path())
@click.option("--out", "-o", required=True, type=click.Path(), help="Directory for the sources.")
@click.option("--name", default="g_model", show_default=True, help="C++ symbol of the array.")
@click.option("--target", "-t", help="Also check the model's ops and memory against this target.")
@click.option("--overwrite", is_flag=True, help="Replace existing files.")
def embed(model: str, out: str, name: str, target: str | None, overwrite: bool) -> None:
    """Write MODEL.tflite as C++ sources for firmware: NAME.h/NAME.cc (the 16-byte aligned
    array, its length and a recommended tensor arena size) and NAME_ops.h (a TFLite Micro op
    resolver registering exactly the model's ops)."""
    from pathlib import Path

    from edgeq.embed import embed_model
    from edgeq.errors import ModelFileError
    from edgeq.outputs import check_free, check_out_dir, write_outputs

    check_out_dir(Path(out))
    p = Path(model)
    if not p.is_file():
        raise ModelFileError(p, "not found", hint="pass the .tflite file to embed")
    check_free(Path(out), [f"{name}.h", f"{name}.cc", f"{name}_ops.h"], overwrite)
    data = p.read_bytes()
    arena = None
    if target:
        from edgeq.analyze import analyze as run_analysis
        from edgeq.pipeline.gate import enforce_memory
        from edgeq.pipeline.place import check_placeable

        analysis = run_analysis(p, target)
        check_placeable(analysis.ops, analysis.target)
        enforce_memory(analysis.target, analysis.memory, analysis.info)
        arena = analysis.arena
    from edgeq.embed import kernel_variant

    variant = kernel_variant(analysis.target) if target else None
    result = embed_model(data, name, source=str(p), arena=arena, cmsis_nn=variant)
    files = write_outputs(Path(out), result.files, overwrite=overwrite)
    click.echo(f"{result.name}: {result.model_len} bytes, {len(result.ops)} op type(s), "
               f"tensor arena {result.arena_size} B (measured {result.arena_measured} B + margin)")
    click.echo("wrote: " + ", ".join(str(f) for f in files.values()))


@cli.command(epilog=EMULATE_EXAMPLES)
@click.argument("model", type=click.Path())
@click.option("--target", "-t", required=True, help="A target with an emulator: cortex-m4, "
              "cortex-m7 (edgeq targets NAME shows its [emulator] table).")
@click.option("--eval-data", type=click.Path(),
              help="Inputs (and labels for top-1) [seeded random inputs].")
@click.option("--eval-samples", type=int, help="Use N samples spread through the data [all; 8 "
              "random ones without --eval-data].")
@click.option("--input-scale", help="Multiply raw inputs by this (e.g. 1/255) before --mean/--std.")
@click.option("--mean", help="Subtract per-channel mean(s).")
@click.option("--std", help="Divide by per-channel std(s).")
@click.option("--tflm-tree", type=click.Path(),
              help="TFLite Micro tree with CMSIS-NN (a directory or .tar.gz) [$EDGEQ_TFLM_TREE].")
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

        from edgeq.outputs import write_outputs

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


@cli.command(epilog=TARGETS_EXAMPLES)
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the profile(s) as JSON.")
@click.option("--supported-ops", is_flag=True,
              help="Print the target's supported-ops table with each op's limitations.")
def targets(name: str | None, as_json: bool, supported_ops: bool) -> None:
    """List the target profiles, or show one."""
    from edgeq.targets import list_targets, load_target

    if supported_ops and not name:
        raise click.UsageError("--supported-ops needs a target name, e.g. edgeq targets coral "
                               "--supported-ops")
    if name and supported_ops:
        from edgeq.targets import supported_ops_table

        rows = supported_ops_table(load_target(name))
        if as_json:
            click.echo(json.dumps(rows, indent=2))
        else:
            from edgeq.console import print_supported_ops

            print_supported_ops(name, rows)
        return
    if name:
        profile = load_target(name)
        if as_json:
            click.echo(json.dumps(profile.to_dict(), indent=2))
        else:
            from edgeq.console import print_target

            print_target(profile)
        return
    profiles = list_targets()
    if as_json:
        click.echo(json.dumps([p.to_dict() for p in profiles], indent=2))
        return
    from edgeq.console import print_target_list

    print_target_list(profiles)


def main(argv: list[str] | None = None) -> int:
    """Console entry point; returns the exit status (the script wrapper exits with it).

    Called without ``argv`` (the `edgeq` script, `python -m edgeq`), commands that run native
    conversion code in-process run under a supervisor process (edgeq.process.supervise) that turns a
    crash or hang into one error line; called with ``argv`` (tests, scripts), in this process.
    """
    if argv is None:
        from edgeq.process import supervise

        if supervise.wanted(sys.argv[1:]):
            return supervise.run(sys.argv[1:])
        supervise.guard_interrupts()
        code = _run(argv, program=True)
        if supervise.interrupted() and code == ExitStatus.OK:  # swallowed by a callback late
            _error(INTERRUPTED)
            code = int(ExitStatus.INTERRUPTED)
        supervise.report_exit(code)
        # The work is done; a Ctrl-C during interpreter shutdown (TF's threads, garbage
        # collection) would only print a stray KeyboardInterrupt traceback.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        return code
    return _run(argv)


def _run(argv: list[str] | None, program: bool = False) -> int:
    try:
        if program:  # the start-up imports are done: Ctrl-C may now unwind the work cleanly
            from edgeq.entry import arm

            arm()
        cli.main(args=argv, prog_name="edgeq", standalone_mode=False)
    except click.exceptions.Exit as exc:  # --help, --version
        return int(exc.exit_code)
    except click.ClickException as exc:  # usage errors found by click itself
        exc.show()
        return int(ExitStatus.BAD_INPUT)
    except click.exceptions.Abort:
        _error(INTERRUPTED)
        return int(ExitStatus.INTERRUPTED)
    except EdgeqError as exc:
        if _State.debug:
            traceback.print_exc()
        _error(str(exc))
        return int(exc.exit_status)
    except KeyboardInterrupt:
        _error(INTERRUPTED)
        return int(ExitStatus.INTERRUPTED)
    except Exception as exc:  # a bug: say so plainly; the traceback is one flag away
        if _State.debug:
            traceback.print_exc()
        first = (str(exc).strip().splitlines() or [""])[0]
        _error(f"internal error: {type(exc).__name__}: {first} "
               "(rerun with --debug for the traceback, and please report it)")
        return int(ExitStatus.ERROR)
    return int(ExitStatus.OK)


def _error(message: str) -> None:
    click.echo(f"edgeq: error: {message}", err=True)

