"""The library API: `convert()` drives the pipeline stages in order and returns values.

    load -> check data -> float reference -> quantize -> place ops -> verify -> gate -> emit

With `--method qat` the quantize stage is PTQ (the baseline the report compares against), then
quantization-aware training from the float weights (`edgeq.pipeline.qat`), whose model is the
one placed, verified and written.

Each stage is a plain function in `edgeq.pipeline`; this driver only sequences them, times
them, checks an invariant after the converter, and builds the report.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Protocol

import numpy as np

from edgeq.data import (Dataset, Preprocess, check_input_spec, load_dataset, output_classes,
                        precheck)
from edgeq.errors import (
    ConversionError,
    DataError,
    EdgeqError,
    InputError,
    TargetConstraintError,
    UsageError,
)
from edgeq.formats.kernel_limits import check_scales
from edgeq.recipes import Recipe, decode
from edgeq.outputs import check_free, check_out_dir, write_outputs
from edgeq.report import Report
from edgeq.process.supervise import mark
from edgeq.targets import Target, load_target
from edgeq.formats.tflite import ModelInfo, read_model

METHODS = ("ptq", "auto", "qat")
CALIBRATIONS = ("minmax", "percentile", "entropy", "mse", "auto")

ProgressFn = Callable[[int, int], None]
HISTOGRAM_TENSORS = 6  # the worst tensors whose activation histograms the report keeps


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
class ConvertOptions:
    model: str
    target: str
    data: str
    eval_data: str | None = None
    out: str | None = None
    method: str = "ptq"
    calibration: str = "minmax"
    percentile: float = 99.99
    equalize: bool = False  # cross-layer equalization before quantizing
    int16_activations: bool = False  # 16x8 where the target allows it
    diagnostics: bool = False  # per-tensor diagnostics also for minmax (costs a stats pass)
    html: bool = False  # also write report.html (turns the statistics pass on for its histograms)
    recipe: str | None = None  # precision recipe (edgeq.recipes); None: the target's default
    smooth: float | None = None  # SmoothQuant alpha for LayerNorm -> Dense patterns
    preprocess: Preprocess = field(default_factory=Preprocess)
    calibration_samples: int = 500
    eval_samples: int | None = None
    max_drop: float | None = None
    labels: str | None = None  # class names, one per line (Android export writes labels.txt)
    overwrite: bool = False
    allow_unsafe: bool = False
    measure_latency: bool = True
    strict_data: bool = False  # data sanity warnings (edgeq.data_check) are an error (exit 2)
    # --method qat (edgeq.pipeline.qat): labelled training data and the fine-tuning schedule
    train_data: str | None = None
    epochs: int = 3
    lr: float | None = None  # None: 1 % of the model's base learning rate
    batch_size: int = 32
    seed: int = 0
    qat_skip: tuple[str, ...] = ()
    strategy: str = "none"  # none | mirrored | multiworker (tf.distribute)


@dataclass(frozen=True)
class ConvertResult:
    report: Report
    files: dict[str, Path]
    gate_error: EdgeqError | None  # a failed budget or accuracy gate; outputs are still written

    @property
    def ok(self) -> bool:
        return self.gate_error is None


def output_dir(opts: ConvertOptions, target: Target) -> Path:
    if opts.out:
        return Path(opts.out)
    return Path("edgeq-out") / f"{_stem(opts.model)}-{target.name}"


def output_names(opts: ConvertOptions, target: Target) -> list[str]:
    tag = choose_recipe(opts, target).name
    if target.export.layout == "android":
        from edgeq.android import android_names

        model, *assets = android_names(opts.labels is not None)
        return [model, "report.json", "report.md", *assets,
                *(["report.html"] if opts.html else [])]
    if opts.method == "qat":
        tag = f"qat_{tag}"
    names = [f"{_stem(opts.model)}_{tag}.tflite", "report.json", "report.md"]
    if target.compiler is not None and target.compiler.name == "vela":
        names.append(f"{_stem(opts.model)}_{tag}_vela.tflite")
    if target.compiler is not None and target.compiler.name == "edgetpu_compiler":
        names.append(f"{_stem(opts.model)}_{tag}_edgetpu.tflite")
    if opts.html:  # last: names[3] is the compiled model when there is one
        names.append("report.html")
    return names


def choose_recipe(opts: ConvertOptions, target: Target) -> Recipe:
    """The recipe asked for (or the target's default), if the target can run it.

    Raises:
        UsageError: not a recipe name, or options that do not go with it (exit 2).
        TargetConstraintError: the target cannot run that recipe (exit 3), with the reason.
    """
    recipe = decode(opts.recipe or target.quantization.recipes[0])
    accepted = [decode(r).canonical for r in target.quantization.recipes]
    if recipe.canonical not in accepted:
        raise TargetConstraintError(
            f"target '{target.name}' cannot run recipe '{recipe.name}': "
            + _why_not(recipe, target),
            hint=f"use one of: {', '.join(target.quantization.recipes)}",
        )
    if not recipe.full_integer and (opts.calibration != "minmax" or opts.equalize):
        raise UsageError(f"recipe '{recipe.name}' quantizes weights only; --calibration and "
                         "--equalize apply to full-integer recipes")
    return recipe


def _why_not(recipe: Recipe, target: Target) -> str:
    if not recipe.full_integer and target.quantization.float_fallback == "none":
        return (f"it runs integer-only models and has no kernels for {recipe.activations} "
                "activations (dynamic-range / weight-only models compute in float)")
    if recipe.activations == "int16" and not target.quantization.int16_activations:
        return "its kernels take int8 activations, not int16"
    return "the profile does not list it"


def convert(opts: ConvertOptions, progress: Progress | None = None) -> ConvertResult:
    """Convert a float Keras model to a verified full-integer TFLite model for a target.

    Raises:
        InputError: bad model, data, target or output path (exit 2), before any output exists.
        TargetConstraintError: an op the target cannot run (exit 3); nothing is written.
        ConversionError: the converter or an interpreter failed for another reason (exit 1).
    """
    from edgeq.pipeline import compile as compile_stage
    from edgeq.pipeline import gate, place, ptq, qat_stage, quantize, verify
    from edgeq.pipeline.load import load_model

    progress = progress or _Silent()
    stages: list[dict] = []

    def timed(name: str, fn, *args, **kwargs):
        mark(name)
        progress.stage(name)
        t0 = time.perf_counter()
        value = fn(*args, **kwargs)
        stages.append({"name": name, "seconds": round(time.perf_counter() - t0, 3)})
        return value

    target = load_target(opts.target)
    recipe = choose_recipe(opts, target)
    if recipe.activations == "int16":
        opts = replace(opts, int16_activations=True)
    _check_options(opts)
    qat_settings = qat_stage.settings(opts, target, full_integer=recipe.full_integer)
    _check_paths(opts)
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
        from edgeq.android import read_labels

        labels = read_labels(opts.labels)
    if qat_settings is not None and qat_settings.strategy == "multiworker":
        from edgeq.pipeline.qat import start_strategy

        start_strategy(qat_settings.strategy)  # before TF runs anything (collective ops)
    loaded = timed("load", load_model, opts.model, allow_unsafe=opts.allow_unsafe)
    check_input_spec(loaded.input_spec, opts.model)  # before any sample is read or made
    classes = output_classes(loaded.output_shapes[0])  # labels index the first output
    if labels is not None and loaded.output_shapes[0][-1:] != (len(labels),):
        raise DataError(opts.labels, f"has {len(labels)} labels but the model's output has "
                        f"shape {list(loaded.output_shapes[0])}",
                        hint="one label per output class, in output order")
    calib, evaluation = timed("check data", _load_data, opts, loaded.input_spec, classes)
    train = bridged = None
    if qat_settings is not None:  # QAT's own checks come before the PTQ baseline's work
        train = timed("check training data", load_dataset, opts.train_data, loaded.input_spec,
                      opts.preprocess, role="training", require_labels=True, classes=classes)
    data_warnings = timed("data sanity", _data_sanity, opts, loaded, calib, evaluation, train)
    for warning in data_warnings:
        progress_warning = getattr(progress, "warning", None)  # optional in a caller's Progress
        if progress_warning is not None:
            progress_warning(warning)
    float_outputs = timed("float reference", _float_reference, loaded, evaluation)
    if qat_settings is not None:
        bridged = timed("bridge to tf_keras", qat_stage.bridge, loaded, train, qat_settings,
                        target)

    extra_notes: list[str] = []
    if opts.smooth is not None:
        loaded = timed("smooth", _smooth, loaded, calib, opts.smooth)
    if recipe.full_integer:
        search_opts = replace(opts, calibration="auto") if opts.method == "auto" else opts
        loaded, outcome, notes = _quantize(search_opts, target, loaded, calib, evaluation,
                                           float_outputs, timed, progress)
        extra_notes += notes
    else:
        outcome = ptq.PTQOutcome(timed("quantize", quantize.quantize_weights_only, loaded,
                                       recipe), None, [], [])
    quantized = outcome.result
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
                             qat=qat_runner, measure_latency=opts.measure_latency, timed=timed,
                             task=progress.task)
        quantized, autopilot_section = auto.result, auto.section
        extra_notes += auto.notes
    qat_section: dict = {}
    if qat_settings is not None:
        quantized, qat_section, notes = qat_stage.run(target, loaded, bridged, calib,
                                                      evaluation, train, float_outputs,
                                                      quantized, qat_settings, timed, progress)
        extra_notes += notes
    info = _check_converted(quantized.model, opts.model)
    # The runtimes abort (SIGABRT) on some scales (edgeq.formats.kernel_limits): name them before the
    # verify stage runs the model in this process.
    check_scales(info, f"{opts.model} (converted)",
                 "tflm" if target.runtime.name == "tflm" else "litert")
    placements = timed("place ops", place.place_ops, info, target, *loaded.layer_scope())
    place.check_placeable(placements, target)
    compiled = timed("compile", compile_stage.compile_for_target, quantized.model, target,
                     placements, f"{_stem(opts.model)}_int8")
    if compiled is not None:
        placements = compiled.placements

    eval_progress = progress.task(f"evaluating on {target.runtime.name}", evaluation.n)
    result = timed("verify", verify.verify, quantized.model, target, evaluation.x, evaluation.y,
                   float_outputs, progress=eval_progress, measure_latency=opts.measure_latency)
    memory = gate.check_memory(target, len(quantized.model), result.arena,
                                read_model(quantized.model))
    if qat_section:
        qat_section["side_by_side"] = qat_stage.side_by_side(qat_section, result, stages)

    model_name = names[0]
    report = Report(
        target=target.name,
        method=quantized.method,
        calibration=quantized.calibration,
        calibration_requested=opts.calibration,
        recipe=recipe.on_target(target.quantization.weight_granularity,
                                target.quantization.dense_granularity).to_dict(),
        model={"path": str(opts.model), "format": loaded.format, "loader": loaded.loader,
               "input": {"name": loaded.input_spec.name, "shape": list(loaded.input_spec.shape),
                         "dtype": loaded.input_spec.dtype},
               "outputs": [list(s) for s in loaded.output_shapes]},
        output={"path": str(out_dir / model_name), "bytes": len(quantized.model),
                "weight_bytes": info.weight_bytes,
                "sha256": hashlib.sha256(quantized.model).hexdigest(),
                "input_dtype": info.input_tensors[0].dtype,
                "output_dtype": info.output_tensors[0].dtype},
        ops=[p.to_dict() for p in placements],
        accuracy=asdict(result.accuracy),
        fidelity=asdict(result.fidelity),
        latency_ms=asdict(result.latency) if result.latency else None,
        memory={k: v for k, v in asdict(memory).items() if k != "overruns"},
        runtimes={"tflm_vs_litert": [asdict(d) for d in result.tflm_vs_litert]}
        if result.tflm_vs_litert else {},
        calibration_candidates=outcome.candidates,
        layers=_with_histograms(outcome.diagnostics, outcome.stats),
        statistics=_statistics_summary(outcome.stats),
        data={"calibration": _data_summary(calib), "evaluation": _data_summary(evaluation),
              **({"training": _data_summary(train)} if train is not None else {}),
              "evaluated_on_calibration_data": opts.eval_data is None,
              "warnings": data_warnings},
        stages=stages,
        vela=compiled.summary if compiled is not None and compiled.compiler == "vela" else None,
        edgetpu=compiled.summary
        if compiled is not None and compiled.compiler == "edgetpu_compiler" else None,
        compiler={"name": compiled.compiler, "version": compiled.version,
                  "notes": list(compiled.notes)} if compiled is not None else {},
        target_profile=target.to_dict(),
        qat=qat_section,
        autopilot=autopilot_section,
        notes=_notes(loaded.notes, calib, evaluation, opts.eval_data is None) + extra_notes,
    )
    gate_error = _gate_error(target, memory, result.accuracy, opts.max_drop, report, info)
    if opts.eval_data is None:
        report.notes.append("evaluated on the calibration data; pass --eval-data for held-out figures")
    if memory.recommended_arena_bytes is not None:
        report.notes.append(f"{gate.ARENA_MARGIN_NOTE}: {memory.recommended_arena_bytes} B")

    if compiled is not None:
        report.notes.extend(compiled.notes)
    outputs = {model_name: quantized.model, "report.json": report.to_json().encode(),
               "report.md": report.to_markdown().encode()}
    if compiled is not None and compiled.model is not None:
        outputs[names[3]] = compiled.model
    if target.export.layout == "android":
        from edgeq.android import android_files

        labels = labels or calib.classes or None
        outputs |= android_files(quantized.model, info, opts.preprocess, labels,
                                 source=str(opts.model), target=target.name,
                                 threads=target.runtime.threads)
    if opts.html:
        outputs["report.html"] = report.to_html().encode()
    mark("emit")
    progress.stage("emit")
    files = write_outputs(out_dir, outputs, overwrite=opts.overwrite)
    return ConvertResult(report, files, gate_error)


def _check_options(opts: ConvertOptions) -> None:
    if opts.method not in METHODS:
        raise UsageError(
            f"--method {opts.method} is not available in this version",
            hint=f"use one of: {', '.join(METHODS)}",
        )
    if opts.calibration not in CALIBRATIONS:
        raise UsageError(
            f"--calibration {opts.calibration} is not available in this version",
            hint=f"use one of: {', '.join(CALIBRATIONS)}",
        )
    if opts.int16_activations and opts.calibration != "minmax":
        raise UsageError(
            "--int16-activations uses the converter's min/max calibration",
            hint="drop --calibration, or drop --int16-activations",
        )
    if not 50.0 < opts.percentile < 100.0:
        raise UsageError("--percentile must be between 50 and 100 (e.g. 99.99)")
    if opts.calibration_samples < 1:
        raise UsageError("--calibration-samples must be at least 1")
    if opts.smooth is not None and not 0.0 < opts.smooth <= 1.0:
        raise UsageError("--smooth takes SmoothQuant's alpha, in (0, 1] (0.5 is the usual value)")
    if opts.max_drop is not None and not opts.max_drop >= 0:
        raise UsageError("--max-drop must be a number of percentage points >= 0")
    if opts.eval_samples is not None and opts.eval_samples < 1:
        raise UsageError("--eval-samples must be at least 1")
    if opts.method == "auto":
        if opts.max_drop is None:
            raise UsageError("--method auto works to an accuracy budget",
                             hint="pass --max-drop PP (top-1 points it may lose) and --eval-data "
                                  "with labels")
        if opts.eval_data is None:
            raise UsageError("--method auto measures each stage on held-out data",
                             hint="pass --eval-data PATH with labels")
        if opts.calibration != "minmax" or opts.int16_activations:
            raise UsageError("--method auto chooses the calibration itself",
                             hint="drop --calibration / --int16-activations")
    if opts.method != "qat":
        qat_only = [o for o, v in (("--qat-skip", opts.qat_skip),
                                   ("--strategy", opts.strategy != "none")) if v]
        if opts.method != "auto" and opts.train_data is not None:
            qat_only.insert(0, "--train-data")
        if qat_only:
            raise UsageError(f"{', '.join(qat_only)} only apply to --method qat"
                             + (" (and --train-data to auto)" if opts.method != "auto" else ""))
        return
    if opts.train_data is None:
        raise UsageError("--method qat needs labelled training data",
                         hint="pass --train-data PATH (.npz with x and y, or class folders)")
    if opts.int16_activations or opts.smooth is not None:
        raise UsageError("--method qat trains int8 fake quantization; it does not combine with "
                         "--int16-activations/a16w8 or --smooth",
                         hint="drop those options, or use --method ptq")


def _check_paths(opts: ConvertOptions) -> None:
    """Cheap checks first: a typo in a data path should not wait for TensorFlow to load."""
    for option, path in (("--data", opts.data), ("--eval-data", opts.eval_data),
                         ("--train-data", opts.train_data)):
        if path is not None and not Path(path).exists():
            raise DataError(path, "no such file or folder", hint=f"check the path given to {option}")
        if path is not None:
            precheck(path, {"--data": "calibration", "--eval-data": "evaluation"}.get(
                option, "training"))


def _load_data(opts: ConvertOptions, spec, classes: int | None) -> tuple[Dataset, Dataset]:
    # Labels are checked in every set: without --eval-data the calibration set is evaluated.
    full = load_dataset(opts.data, spec, opts.preprocess, role="calibration", classes=classes)
    calib = full.spread(opts.calibration_samples)
    if opts.eval_data is None:
        evaluation = full
    else:
        evaluation = load_dataset(opts.eval_data, spec, opts.preprocess, role="evaluation",
                                  classes=classes)
    if opts.eval_samples is not None:
        evaluation = evaluation.spread(opts.eval_samples)
    return calib, evaluation


def _data_sanity(opts: ConvertOptions, loaded, calib: Dataset, evaluation: Dataset,
                 train: Dataset | None) -> list[str]:
    """Warnings when the data sets disagree with each other or with the model's first layer
    (edgeq.data_check); with --strict-data they stop the run (exit 2) before any work."""
    from edgeq import data_check

    expectation = None
    if loaded.format != "savedmodel" and loaded.owner is not None:
        expectation = data_check.expect(loaded.owner)
    warnings = data_check.check(
        [("calibration", calib), ("evaluation", evaluation), ("training", train)],
        expectation, identity_preprocess=opts.preprocess.is_identity())
    if warnings and opts.strict_data:
        raise InputError("data sanity (--strict-data): " + " | ".join(warnings),
                         hint="fix the data, or drop --strict-data to go on with warnings")
    return warnings


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
    from edgeq.smooth import smooth_model

    result = smooth_model(loaded.keras_model("--smooth"), calib.x[: min(256, calib.n)],
                          alpha=alpha)
    notes = [f"SmoothQuant (alpha {alpha}): smoothed {', '.join(result.smoothed) or 'nothing'};"
             f" float outputs changed by at most {result.max_abs_diff:.2e}", *result.skipped]
    return loaded.replaced_by(result.model, notes)


def _equalize(loaded, calib: Dataset):
    from edgeq.equalize import equalize_model

    result = equalize_model(loaded.keras_model("--equalize"), calib.x[: min(32, calib.n)])
    notes = [f"cross-layer equalization: {len(result.pairs)} layer pair(s) "
             f"({', '.join(f'{a}→{b}' for a, b in result.pairs) or 'none'}); float outputs "
             f"changed by at most {result.max_abs_diff:.2e}", *result.skipped]
    return loaded.replaced_by(result.model, notes)


def _with_histograms(rows: list[dict], stats, worst: int = HISTOGRAM_TENSORS) -> list[dict]:
    """The diagnostics rows, the worst few carrying a compact histogram of their calibration
    activations (for the HTML report's range plots)."""
    if stats is None:
        return rows
    from edgeq.pipeline.calibrate import compact_histogram

    out = []
    for i, row in enumerate(rows):
        h = stats.histograms.get(row["tensor"]) if i < worst else None
        summary = compact_histogram(h) if h is not None else None
        out.append({**row, "histogram": summary} if summary is not None else row)
    return out


def _statistics_summary(stats) -> dict:
    if stats is None:
        return {}
    return {"tensors": len(stats.histograms), "seconds": round(stats.stats_seconds, 3),
            "converter_calibrate_only_seconds": round(stats.converter_seconds, 3),
            "ratio": round(stats.overhead_ratio, 3)}


def _notes(model_notes: list[str], calib: Dataset, evaluation: Dataset, same: bool) -> list[str]:
    notes = list(model_notes) + [f"calibration data: {n}" for n in calib.notes]
    if not same:
        notes += [f"evaluation data: {n}" for n in evaluation.notes]
    return notes


def _data_summary(ds: Dataset) -> dict:
    return {"path": ds.source, "n": ds.n, "labels": ds.y is not None,
            "stats": {k: (round(v, 6) if isinstance(v, float) else v) for k, v in ds.stats.items()}}


def _stem(model: str) -> str:
    p = Path(model)
    return (p.name if p.is_dir() else p.stem) or "model"
