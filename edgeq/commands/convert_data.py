"""convert's data stage: every data file (calibration, evaluation, training) loaded and checked
against the model, and the sanity warnings across them (edgeq.data.checks).

It runs twice over one set of files when it can: first against what the Keras file's config
states (`early_data`, before TensorFlow is imported, so a data mistake is reported in seconds),
then against the loaded model (`model_data`), which keeps the early data sets when the model
agrees with its config and adds the checks only the loaded model can make (a Normalization
layer's adapted statistics).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from edgeq.commands.convert_options import ConvertOptions
from edgeq.data import Dataset, InputSpec, check_input_spec, load_dataset, output_classes
from edgeq.errors import DataError, InputError
from edgeq.formats.keras_signature import declared_io

if TYPE_CHECKING:
    from edgeq.pipeline.load import KerasFileCheck


@dataclass(frozen=True)
class _EarlyData:
    """The data as checked against the model file's config, before the model was loaded."""

    spec: InputSpec
    classes: int | None
    sets: tuple[Dataset, Dataset, Dataset | None]  # calibration, evaluation, training
    warnings: tuple[str, ...]
    keras_check: KerasFileCheck | None  # what check_keras_file read (load_model reuses it)


def early_data(plan, timed, progress) -> _EarlyData | None:
    """Every data file checked against the input shape, dtype and class count the Keras file's
    config states (edgeq.formats.keras_signature), or a SavedModel's serving signature
    (edgeq.formats.savedmodel_signature), before TensorFlow is imported: a wrong
    shape, key, label or value fails in seconds, not after the model loads. A Keras file passes
    the safe-loading policy first (as load_model would), so a refused model is still refused
    before its data is read (a SavedModel's graph policy needs TensorFlow and runs on loading;
    its signature is only read). None when the file does not state the input: the checks then
    run after loading, as before."""
    from edgeq.pipeline.load import check_keras_file

    opts = plan.opts
    path = Path(opts.model)
    if path.is_dir():  # a SavedModel: its serving signature, read as data
        from edgeq.formats.savedmodel_signature import savedmodel_io

        declared, check = savedmodel_io(path), None
    elif path.suffix.lower() in (".keras", ".h5", ".hdf5") and path.is_file():
        check = check_keras_file(path, allow_unsafe=opts.allow_unsafe)
        declared = declared_io(check.config)
    else:
        return None
    if declared is None:
        return None
    spec = InputSpec(declared.input_shape, declared.input_dtype, declared.input_name)
    expectation = _config_expectation(opts, declared)
    sets, warnings = _check_sets(plan, spec, declared.classes, timed, expectation, early=True,
                                 output_shape=declared.output_shape)
    _show(progress, warnings)
    return _EarlyData(spec, declared.classes, sets, tuple(warnings), check)


def _config_expectation(opts: ConvertOptions, declared):
    from edgeq.data import checks as data_check

    if opts.input_range is not None:
        return data_check.expect_range(*opts.input_range)
    if declared.rescaling is not None:
        return data_check.expect_rescaling(*declared.rescaling)
    return None


def _check_sets(plan, spec: InputSpec, classes: int | None, timed,
                expectation, *, early: bool, loaded=None, output_shape=None):
    """Load and check every data set against ``spec`` and ``classes``, then the sanity
    warnings across them (with --strict-data an error)."""
    opts = plan.opts
    check_input_spec(spec, opts.model)  # before any sample is read or made
    if plan.labels is not None and output_shape and output_shape[-1:] != (len(plan.labels),):
        raise DataError(opts.labels, f"has {len(plan.labels)} labels but the model's output has "
                        f"shape {list(output_shape)}",
                        hint="one label per output class, in output order")
    calib, evaluation = timed("check data", _load_data, opts, spec, classes)
    train = None
    if plan.qat is not None:  # QAT's own checks come before the PTQ baseline's work
        train = timed("check training data", load_dataset, opts.train_data, spec,
                      opts.preprocess, role="training", require_labels=True, classes=classes)
    if early:
        warnings = timed("data sanity", _sanity, opts, expectation, calib, evaluation, train)
    else:
        warnings = timed("data sanity", _data_sanity, opts, loaded, calib, evaluation, train)
    return (calib, evaluation, train), warnings


def _show(progress, warnings, shown=()) -> None:
    progress_warning = getattr(progress, "warning", None)  # optional in a caller's Progress
    for warning in warnings if progress_warning is not None else ():
        if warning not in shown:
            progress_warning(warning)


def model_data(plan, loaded, timed, progress, early: _EarlyData | None = None):
    """The data sets checked against the loaded model: calibration, evaluation, training (QAT)
    and the sanity warnings across them. Data checked early against the config is kept when
    the loaded model agrees with the config (it always should), and loaded again otherwise."""
    opts = plan.opts
    classes = output_classes(loaded.output_shapes[0])  # labels index the first output
    spec = loaded.input_spec
    if plan.labels is not None and loaded.output_shapes[0][-1:] != (len(plan.labels),):
        raise DataError(opts.labels, f"has {len(plan.labels)} labels but the model's output has "
                        f"shape {list(loaded.output_shapes[0])}",
                        hint="one label per output class, in output order")
    if early is not None and (early.spec.shape, early.spec.dtype, early.classes) == (
            spec.shape, spec.dtype, classes):
        calib, evaluation, train = early.sets
        # The loaded model may know more than its config (a Normalization layer's statistics).
        warnings = timed("data sanity (loaded model)", _data_sanity, opts, loaded, calib,
                         evaluation, train)
    else:
        (calib, evaluation, train), warnings = _check_sets(plan, spec, classes, timed, None,
                                                           early=False, loaded=loaded)
    _show(progress, warnings, early.warnings if early is not None else ())
    return calib, evaluation, train, warnings


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
    (edgeq.data.checks); with --strict-data they stop the run (exit 2) before any work."""
    from edgeq.data import checks as data_check

    expectation = None
    keras_model = loaded.owner if loaded.format != "savedmodel" else None
    if opts.input_range is not None:  # the user's word outranks what the first layer implies
        expectation = data_check.expect_range(*opts.input_range)
    elif keras_model is not None:
        expectation = data_check.expect(keras_model)
    # Where neither the user nor a Rescaling/Normalization layer states the range, the float
    # model's first layer on the data is the evidence left (edgeq.data.first_layer).
    probe = keras_model if expectation is None else None
    return _sanity(opts, expectation, calib, evaluation, train, probe)


def _sanity(opts: ConvertOptions, expectation, calib: Dataset, evaluation: Dataset,
            train: Dataset | None, probe=None) -> list[str]:
    from edgeq.data import checks as data_check

    sets = [("calibration", calib), ("evaluation", evaluation), ("training", train)]
    warnings = data_check.check(sets, expectation,
                                identity_preprocess=opts.preprocess.is_identity())
    if probe is not None:
        from edgeq.data.first_layer import first_layer_warnings

        warnings += first_layer_warnings(probe, sets)
    if warnings and opts.strict_data:
        raise InputError("data sanity (--strict-data): " + " | ".join(warnings),
                         hint="fix the data, or drop --strict-data to go on with warnings")
    return warnings
