"""`convert`: the pipeline driver. It runs the stages in order and returns values.

    options -> load -> check data -> float reference -> quantize -> place ops -> compile
            -> verify -> report and gates -> emit

With `--method qat` the quantize stage is PTQ (the baseline the report compares against), then
quantization-aware training from the float weights (`edgeq.pipeline.qat`), whose model is the
one placed, verified and written. `--method auto` hands the PTQ outcome to the autopilot.

Each stage is a plain function in `edgeq.pipeline`; this driver only sequences them, times them
and checks an invariant after the converter. The options and their checks live in
`convert_options`, the report's assembly in `edgeq.outputs.run_report`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Protocol

import numpy as np

from edgeq.commands.convert_options import (ConvertOptions, check_options, check_paths,
                                            choose_recipe, output_dir, output_names, stem)
from edgeq.commands.convert_data import early_data, model_data
from edgeq.data import Dataset
from edgeq.errors import ConversionError, DataError, EdgeqError, UsageError
from edgeq.formats.kernel_limits import check_scales
from edgeq.formats.tflite import ModelInfo, read_model
from edgeq.outputs.atomic import check_free, check_out_dir, claim, write_outputs
from edgeq.outputs.report import Report
from edgeq.outputs.run_report import RunValues, convert_report
from edgeq.process.supervise import mark
from edgeq.targets import Target, load_target

if TYPE_CHECKING:
    from edgeq.pipeline.qat import QATSettings
    from edgeq.recipes import Recipe

ProgressFn = Callable[[int, int], None]


class Progress(Protocol):
    """What the caller (the CLI) shows while the pipeline runs; the library never prints."""

    def stage(self, name: str) -> None: ...

    def task(self, name: str, total: int) -> ProgressFn: ...

    def epoch(self, epoch: int, epochs: int, metrics: dict[str, float]) -> None:
        """One finished training epoch (QAT): loss, accuracy, val_loss, val_accuracy, lr."""
        ...

    def warning(self, text: str) -> None:
        """A data warning, found before the work starts (optional: looked up with getattr)."""
        ...


class _Silent:
    def stage(self, name: str) -> None:
        pass

    def warning(self, text: str) -> None:
        pass

    def task(self, name: str, total: int) -> ProgressFn:
        return lambda done, total: None

    def epoch(self, epoch: int, epochs: int, metrics: dict[str, float]) -> None:
        pass


@dataclass(frozen=True)
class ConvertResult:
    report: Report
    files: dict[str, Path]
    gate_error: EdgeqError | None  # a failed budget or accuracy gate; outputs are still written

    @property
    def ok(self) -> bool:
        return self.gate_error is None


@dataclass(frozen=True)
class _Plan:
    """Everything decided before the model is loaded."""

    opts: ConvertOptions
    target: Target
    recipe: Recipe
    qat: QATSettings | None
    out_dir: Path
    names: list[str]
    labels: list[str] | None


class _Timer:
    """Runs a stage: marks it for the crash supervisor, shows it, times it."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.stages: list[dict] = []

    def __call__(self, name: str, fn, *args, **kwargs):
        mark(name)
        self.progress.stage(name)
        t0 = time.perf_counter()
        value = fn(*args, **kwargs)
        self.stages.append({"name": name, "seconds": round(time.perf_counter() - t0, 3)})
        return value


def convert(opts: ConvertOptions, progress: Progress | None = None) -> ConvertResult:
    """Convert a float Keras model to a verified full-integer TFLite model for a target.

    Raises:
        InputError: bad model, data, target or output path (exit 2), before any output exists.
        TargetConstraintError: an op the target cannot run (exit 3); nothing is written.
        ConversionError: the converter or an interpreter failed for another reason (exit 1).
    """
    from edgeq.adapters.tf_tempdir import private_tempdir

    plan = _plan(opts)
    # An existing output directory is this run's from here on (another run on it exits 2), and
    # TensorFlow's temporary files go to a directory that is removed at the end.
    with claim(plan.out_dir, create=False), private_tempdir():
        return _run(plan, progress or _Silent())


def _run(plan: _Plan, progress: Progress) -> ConvertResult:
    from edgeq.pipeline import compile as compile_stage
    from edgeq.pipeline import gate, place, qat_stage, verify
    from edgeq.pipeline.load import load_model

    timed = _Timer(progress)
    opts, target = plan.opts, plan.target
    if plan.qat is not None and plan.qat.strategy == "multiworker":
        from edgeq.pipeline.qat import start_strategy

        start_strategy(plan.qat.strategy)  # before TF runs anything (collective ops)
    early = early_data(plan, timed, progress)  # before TensorFlow: a data mistake in seconds
    loaded = timed("load", load_model, opts.model, allow_unsafe=opts.allow_unsafe,
                   checked=early.keras_check if early is not None else None)
    calib, evaluation, train, warnings = model_data(plan, loaded, timed, progress, early)
    float_outputs = timed("float reference", _float_reference, loaded, evaluation)
    bridged = None
    if plan.qat is not None:
        bridged, qat_settings = timed("bridge to tf_keras", qat_stage.bridge, loaded, train,
                                      plan.qat, target)
        plan = replace(plan, qat=qat_settings)

    notes: list[str] = []
    if opts.smooth is not None:
        loaded = timed("smooth", _smooth, loaded, calib, opts.smooth)
    from edgeq.transforms import stage as rewrite_stage

    rewrites: list[dict] = []
    if rewrite_stage.wanted(opts):
        loaded, rewrites, float_outputs = timed("rewrite", rewrite_stage.apply, opts, target,
                                                loaded, calib, evaluation, float_outputs)
    loaded, outcome, quantized, autopilot, qat = _quantize_stages(
        plan, loaded, bridged, calib, evaluation, train, float_outputs, timed, progress, notes)

    info = _check_converted(quantized.model, opts.model)
    # The runtimes abort (SIGABRT) on some scales (edgeq.formats.kernel_limits): name them
    # before the verify stage runs the model in this process.
    check_scales(info, f"{opts.model} (converted)",
                 "tflm" if target.runtime.name == "tflm" else "litert")
    arena_plan = None
    if opts.arena_plan and target.runtime.name == "tflm" and target.compiler is None:
        from edgeq.pipeline.arena_stage import plan_and_check

        arena_plan = timed("arena plan", plan_and_check, quantized.model, target,
                           source=f"{opts.model} (converted)")
        if arena_plan.applied:  # the planned model is the one placed, verified and written
            quantized = replace(quantized, model=arena_plan.model)
            info = _check_converted(quantized.model, opts.model)
    placements = timed("place ops", place.place_ops, info, target, *loaded.layer_scope())
    place.check_placeable(placements, target)
    compiled = timed("compile", compile_stage.compile_for_target, quantized.model, target,
                     placements, f"{stem(opts.model)}_int8")
    if compiled is not None:
        placements = compiled.placements
    eval_progress = progress.task(f"evaluating on {target.runtime.name}", evaluation.n)
    result = timed("verify", verify.verify, quantized.model, target, evaluation.x, evaluation.y,
                   float_outputs, progress=eval_progress, measure_latency=opts.measure_latency)
    memory = gate.check_memory(target, len(quantized.model), result.arena,
                              read_model(quantized.model))
    if qat:
        qat["side_by_side"] = qat_stage.side_by_side(qat, result, timed.stages)

    report = convert_report(RunValues(
        opts=opts, target=target, recipe=plan.recipe, loaded=loaded, model=quantized.model,
        method=quantized.method, calibration=quantized.calibration, info=info, outcome=outcome,
        placements=placements, compiled=compiled, verified=result, memory=memory, calib=calib,
        evaluation=evaluation, train=train, data_warnings=warnings, stages=timed.stages,
        qat=qat, autopilot=autopilot, rewrites=rewrites, notes=notes,
        model_path=str(plan.out_dir / plan.names[0]), arena_plan=arena_plan))
    gate_error = _gate_error(target, memory, result.accuracy, opts.max_drop, report, info)
    files = _emit(plan, report, quantized.model, compiled, info, calib, progress)
    return ConvertResult(report, files, gate_error)


def _plan(opts: ConvertOptions) -> _Plan:
    """The checks that need no model, in the order a user's mistakes are cheapest to find."""
    from edgeq.pipeline import qat_stage

    target = load_target(opts.target)
    recipe = choose_recipe(opts, target)
    if recipe.activations == "int16":
        opts = replace(opts, int16_activations=True)
    check_options(opts)
    qat_settings = qat_stage.settings(opts, target, full_integer=recipe.full_integer)
    check_paths(opts)
    out_dir = output_dir(opts, target)
    check_out_dir(out_dir)
    names = output_names(opts, target)
    check_free(out_dir, names, opts.overwrite)
    if opts.labels is not None and target.export.layout != "android":
        raise UsageError("--labels is written by the Android export only",
                         hint="use --target android-arm64 (or a profile with [export] "
                              "layout = \"android\"), or drop --labels")
    labels = None
    if opts.labels is not None:
        from edgeq.outputs.android import read_labels

        labels = read_labels(opts.labels)
    return _Plan(opts, target, recipe, qat_settings, out_dir, names, labels)


def _quantize_stages(plan: _Plan, loaded, bridged, calib: Dataset, evaluation: Dataset,
                     train: Dataset | None, float_outputs, timed: _Timer, progress: Progress,
                     notes: list[str]):
    """PTQ (or weight-only), then the autopilot or QAT when asked. Returns the (maybe
    equalized) model, the PTQ outcome, the chosen QuantizeResult and the autopilot and QAT
    report sections; appends the stages' notes to ``notes``."""
    from edgeq.pipeline import ptq, qat_stage, quantize

    opts, target = plan.opts, plan.target
    if plan.recipe.full_integer:
        search_opts = replace(opts, calibration="auto") if opts.method == "auto" else opts
        loaded, outcome, found = _quantize(search_opts, target, loaded, calib, evaluation,
                                           float_outputs, timed, progress)
        notes += found
    else:
        outcome = ptq.PTQOutcome(timed("quantize", quantize.quantize_weights_only, loaded,
                                       plan.recipe), None, [], [])
    quantized = outcome.result
    if opts.int16_activations and target.runtime.name == "litert":
        from edgeq.pipeline.runs import check_int16

        timed("check int16 kernels", check_int16, quantized.model, calib.x, target.name)
    autopilot_section = None
    if opts.method == "auto":
        if evaluation.y is None:
            raise DataError(opts.eval_data, "has no labels (y)", hint="--method auto measures "
                            "top-1 against its budget: pass --eval-data with labels")
        from edgeq.pipeline import autopilot

        qat_runner = None
        if opts.train_data is not None:
            qat_runner = qat_stage.for_auto(opts, target, loaded, calib, evaluation,
                                            float_outputs, timed, progress)
        auto = autopilot.run(target, opts.max_drop, outcome, loaded,
                             quantize.converter_settings(target), evaluation, float_outputs,
                             calib=calib, qat=qat_runner, measure_latency=opts.measure_latency,
                             timed=timed, task=progress.task)
        quantized, autopilot_section = auto.result, auto.section
        notes += auto.notes
    qat_section: dict = {}
    if plan.qat is not None:
        quantized, qat_section, found = qat_stage.run(target, loaded, bridged, calib,
                                                      evaluation, train, float_outputs,
                                                      quantized, plan.qat, timed, progress)
        notes += found
    return loaded, outcome, quantized, autopilot_section, qat_section


def _emit(plan: _Plan, report: Report, model: bytes, compiled, info: ModelInfo,
          calib: Dataset, progress: Progress) -> dict[str, Path]:
    """Every output file at once (edgeq.outputs.atomic): the model, the reports, the compiled
    model and the Android assets."""
    opts, target, names = plan.opts, plan.target, plan.names
    outputs = {names[0]: model, "report.json": report.to_json().encode(),
               "report.md": report.to_markdown().encode()}
    if compiled is not None and compiled.model is not None:
        outputs[names[3]] = compiled.model
    if target.export.layout == "android":
        from edgeq.outputs.android import android_files

        labels = plan.labels or calib.classes or None
        outputs |= android_files(model, info, opts.preprocess, labels,
                                 source=str(opts.model), target=target.name,
                                 threads=target.runtime.threads)
    if opts.html:
        from edgeq.outputs.report_html import render

        outputs["report.html"] = render(report).encode()
    mark("emit")
    progress.stage("emit")
    return write_outputs(plan.out_dir, outputs, overwrite=opts.overwrite)


def _float_reference(loaded, evaluation: Dataset) -> list[np.ndarray]:
    outputs = loaded.predict(evaluation.x)
    for out in outputs:
        if not np.all(np.isfinite(out)):
            raise DataError(
                evaluation.source,
                "the float model gives NaN/Inf outputs on this data",
                hint="check the input scaling (--input-scale/--mean/--std) and the model",
            )
    return outputs


def _check_converted(model: bytes, source: str) -> ModelInfo:
    """Invariants of every edgeq output: one subgraph, static shapes, integer I/O as asked."""
    info = read_model(model, f"{source} (converted)")
    if info.subgraphs != 1:
        raise ConversionError("quantize", f"the converter produced {info.subgraphs} subgraphs")
    if info.dynamic_tensors:
        t = info.dynamic_tensors[0]
        raise ConversionError("quantize", f"tensor '{t.name}' kept a dynamic shape {t.shape_signature}")
    return info


def _gate_error(target, memory, accuracy, max_drop, report: Report,
                info: ModelInfo) -> EdgeqError | None:
    from edgeq.pipeline import gate

    errors: list[EdgeqError] = []
    for check in (lambda: gate.enforce_memory(target, memory, info),
                  lambda: gate.enforce_accuracy(accuracy, max_drop)):
        try:
            check()
        except EdgeqError as exc:
            errors.append(exc)
    report.gates = {
        "memory": {"ok": not memory.overruns, "overruns": list(memory.overruns)},
        "accuracy": {"ok": not any(e.exit_status == 4 for e in errors), "max_drop_pp": max_drop},
    }
    # Budget overruns (exit 3) outrank an accuracy gate (exit 4): the model cannot ship at all.
    return errors[0] if errors else None


def _quantize(opts, target, loaded, calib, evaluation, float_outputs, timed, progress):
    """Stage 3: PTQ with the asked calibration; returns the (maybe equalized) model, the
    outcome and notes for the report."""
    from edgeq.pipeline import ptq, quantize

    settings = quantize.converter_settings(target, int16_activations=opts.int16_activations)
    if opts.equalize:
        loaded = timed("equalize", _equalize, loaded, calib)

    def search(model, method):
        return ptq.run_ptq(model, target, settings, calib, evaluation, float_outputs,
                           method=method, percentile=opts.percentile,
                           diagnostics=opts.diagnostics or opts.html, timed=timed,
                           task=progress.task)

    outcome = search(loaded, opts.calibration)
    notes: list[str] = []
    if _auto_tries_equalization(opts, target, loaded):
        # Per-tensor weights are where equalization pays; auto tries it too and keeps it only
        # when it wins on the evaluation data.
        try:
            eq_loaded = timed("equalize", _equalize, loaded, calib)
        except EdgeqError as exc:
            notes.append(f"auto: cross-layer equalization not tried ({exc})")
        else:
            outcome, won = ptq.better_of(outcome, search(eq_loaded, "auto"))
            if won:
                loaded = eq_loaded
            notes.append("auto: tried every method with and without cross-layer "
                         f"equalization; {'with' if won else 'without'} won")
    return loaded, outcome, notes


def _auto_tries_equalization(opts: ConvertOptions, target: Target, loaded) -> bool:
    return (opts.calibration == "auto" and not opts.equalize
            and target.quantization.weight_granularity == "per-tensor"
            and loaded.format != "savedmodel")


def _smooth(loaded, calib: Dataset, alpha: float):
    from edgeq.transforms.smooth import smooth_model

    result = smooth_model(loaded.keras_model("--smooth"), calib.x[: min(256, calib.n)],
                          alpha=alpha)
    notes = [f"SmoothQuant (alpha {alpha}): smoothed {', '.join(result.smoothed) or 'nothing'};"
             f" float outputs changed by at most {result.max_abs_diff:.2e}", *result.skipped]
    return loaded.replaced_by(result.model, notes)


def _equalize(loaded, calib: Dataset):
    from edgeq.transforms.equalize import equalize_model

    result = equalize_model(loaded.keras_model("--equalize"), calib.x[: min(32, calib.n)])
    notes = [f"cross-layer equalization: {len(result.pairs)} layer pair(s) "
             f"({', '.join(f'{a}→{b}' for a, b in result.pairs) or 'none'}); float outputs "
             f"changed by at most {result.max_abs_diff:.2e}", *result.skipped]
    return loaded.replaced_by(result.model, notes)
