"""What `convert` is asked to do: its options as one value, the checks on them that need no
model (run before anything is loaded), the recipe the target can run, and the output names."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from edgeq.data import Preprocess, precheck
from edgeq.errors import DataError, TargetConstraintError, UsageError
from edgeq.formats.input_files import check_file_or_dir
from edgeq.recipes import Recipe, decode
from edgeq.targets import Target

METHODS = ("ptq", "auto", "qat")
CALIBRATIONS = ("minmax", "percentile", "entropy", "mse", "auto")


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
    substitute: tuple[str, ...] = ()  # edgeq.transforms.substitute: rewrites of missing ops
    clip: str | None = None  # edgeq.transforms.clip: "auto" or a GELU bound (10 = GELU10)
    preprocess: Preprocess = field(default_factory=Preprocess)
    calibration_samples: int = 500
    eval_samples: int | None = None
    max_drop: float | None = None
    labels: str | None = None  # class names, one per line (Android export writes labels.txt)
    overwrite: bool = False
    allow_unsafe: bool = False
    measure_latency: bool = True
    strict_data: bool = False  # data sanity warnings (edgeq.data.checks) are an error (exit 2)
    input_range: tuple[float, float] | None = None  # the model's training-time input range
    # --method qat (edgeq.pipeline.qat): labelled training data and the fine-tuning schedule
    train_data: str | None = None
    epochs: int = 3
    lr: float | None = None  # None: 1 % of the model's base learning rate
    batch_size: int = 32
    seed: int = 0
    qat_skip: tuple[str, ...] = ()
    strategy: str = "none"  # none | mirrored | multiworker (tf.distribute)
    # TFLM targets: write an offline arena plan when it beats TFLM's own (pipeline.arena_stage)
    arena_plan: bool = True


def output_dir(opts: ConvertOptions, target: Target) -> Path:
    if opts.out:
        return Path(opts.out)
    return Path("edgeq-out") / f"{stem(opts.model)}-{target.name}"


def output_names(opts: ConvertOptions, target: Target) -> list[str]:
    tag = choose_recipe(opts, target).name
    if target.export.layout == "android":
        from edgeq.outputs.android import android_names

        model, *assets = android_names(opts.labels is not None)
        return [model, "report.json", "report.md", *assets,
                *(["report.html"] if opts.html else [])]
    if opts.method == "qat":
        tag = f"qat_{tag}"
    names = [f"{stem(opts.model)}_{tag}.tflite", "report.json", "report.md"]
    if target.compiler is not None and target.compiler.name == "vela":
        names.append(f"{stem(opts.model)}_{tag}_vela.tflite")
    if target.compiler is not None and target.compiler.name == "edgetpu_compiler":
        names.append(f"{stem(opts.model)}_{tag}_edgetpu.tflite")
    if opts.html:  # last: names[3] is the compiled model when there is one
        names.append("report.html")
    return names


def stem(model: str) -> str:
    p = Path(model)
    return (p.name if p.is_dir() else p.stem) or "model"


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


def check_options(opts: ConvertOptions) -> None:
    """Options that contradict each other or are out of range: exit 2 before any work.

    Raises:
        UsageError: naming the option and what to pass instead.
    """
    from edgeq.transforms.stage import check_options as check_rewrites

    check_rewrites(opts)  # --substitute / --clip
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
        _check_auto(opts)
    if opts.method != "qat":
        _check_not_qat(opts)
        return
    if opts.train_data is None:
        raise UsageError("--method qat needs labelled training data",
                         hint="pass --train-data PATH (.npz with x and y, or class folders)")
    if opts.int16_activations or opts.smooth is not None:
        raise UsageError("--method qat trains int8 fake quantization; it does not combine with "
                         "--int16-activations/a16w8 or --smooth",
                         hint="drop those options, or use --method ptq")


def _check_auto(opts: ConvertOptions) -> None:
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


def _check_not_qat(opts: ConvertOptions) -> None:
    qat_only = [o for o, v in (("--qat-skip", opts.qat_skip),
                               ("--strategy", opts.strategy != "none")) if v]
    if opts.method != "auto" and opts.train_data is not None:
        qat_only.insert(0, "--train-data")
    if qat_only:
        raise UsageError(f"{', '.join(qat_only)} only apply to --method qat"
                         + (" (and --train-data to auto)" if opts.method != "auto" else ""))


def check_paths(opts: ConvertOptions) -> None:
    """Cheap checks first: a typo in a data path should not wait for TensorFlow to load."""
    for option, path in (("--data", opts.data), ("--eval-data", opts.eval_data),
                         ("--train-data", opts.train_data)):
        if path is not None:
            check_file_or_dir(path, option, error=DataError)
            precheck(path, {"--data": "calibration", "--eval-data": "evaluation"}.get(
                option, "training"))
