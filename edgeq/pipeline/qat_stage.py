"""The QAT stage of `edgeq convert` (--method qat, and the last stage of --method auto):
check the schedule, bridge the float model to tf_keras, verify the PTQ baseline, fine-tune
with fake quantization (`edgeq.pipeline.qat`), convert, and lay the figures side by side.
"""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path

from edgeq.data import Dataset
from edgeq.errors import UsageError
from edgeq.pipeline import qat
from edgeq.targets import Target


def for_auto(opts, target, loaded, calib, evaluation, float_outputs, timed, progress):
    """Stage 3 of --method auto: QAT from the best result so far, its prerequisites (training
    data, the tf_keras bridge, tfmot's layer support) checked only when it is reached."""
    from edgeq.data import load_dataset, output_classes

    def stage(best):
        qat_settings = settings(replace(opts, method="qat"), target, full_integer=True)
        train = timed("check training data", load_dataset, opts.train_data, loaded.input_spec,
                      opts.preprocess, role="training", require_labels=True,
                      classes=output_classes(loaded.output_shapes[0]))
        bridged, qat_settings = timed("bridge to tf_keras", bridge, loaded, train, qat_settings,
                                      target)
        return run(target, loaded, bridged, calib, evaluation, train, float_outputs, best,
                   qat_settings, timed, progress)

    return stage


def settings(opts, target: Target, *, full_integer: bool):
    """The QAT schedule asked for, checked before anything loads (None for PTQ)."""
    if opts.method != "qat":
        return None
    if not full_integer:
        raise UsageError("--method qat makes full-integer models; weight-only recipes need no "
                         "training", hint="drop --recipe, or use --method ptq")
    settings = qat.QATSettings(
        epochs=opts.epochs, lr=opts.lr, base_lr=qat.base_learning_rate(opts.model),
        batch_size=opts.batch_size, seed=opts.seed, skip=tuple(opts.qat_skip),
        strategy=opts.strategy,
        per_tensor_weights=target.quantization.weight_granularity == "per-tensor")
    qat.check_settings(settings, target)
    return settings


def bridge(loaded, train: Dataset, settings, target: Target):
    """The float model in tf_keras (tfmot's framework), its layers checked against tfmot."""
    from edgeq.transforms.bridge import to_tf_keras

    bridged = to_tf_keras(loaded.keras_model("--method qat"), train.x[: min(32, train.n)])
    settings = qat.check_layers(bridged.model, settings, target)
    note = qat.unquantizable_note(bridged.model, settings)
    if note:
        bridged.notes.append(note)
    return bridged, settings


def run(target, loaded, bridged, calib, evaluation, train, float_outputs, ptq_result,
        settings, timed, progress):
    """Stage 3b: verify the PTQ baseline, fine-tune the bridged model with fake quantization,
    convert it. Returns the QAT QuantizeResult, the report's `qat` section and notes."""
    from edgeq.transforms.bridge import TOLERANCE
    from edgeq.pipeline import quantize, verify
    from edgeq.pipeline.load import from_keras_model

    baseline = timed("verify PTQ baseline", verify.verify, ptq_result.model, target,
                     evaluation.x, evaluation.y, float_outputs,
                     progress=progress.task("checking the PTQ baseline", evaluation.n),
                     measure_latency=False)
    on_epoch = getattr(progress, "epoch", None)
    outcome = timed("quantization-aware training", qat.fine_tune, bridged.model, train,
                    settings, on_epoch=on_epoch)
    trained = from_keras_model(outcome.model, Path(loaded.path), loaded.format, loaded.loader, [])
    conv = quantize.converter_settings(target)
    if settings.skip:
        result, float_ops = timed("convert QAT model", _convert_with_float_layers, trained,
                                  target, calib, conv, settings.skip)
    else:
        result = timed("convert QAT model", quantize.quantize_minmax, trained, target, calib,
                       conv, progress=progress.task("converting the QAT model", calib.n))
        float_ops = []
    result = replace(result, method="qat", calibration="learned in training")
    section = {
        "ptq_baseline": {"calibration": ptq_result.calibration,
                         "accuracy": asdict(baseline.accuracy),
                         "fidelity": asdict(baseline.fidelity),
                         "seconds": round(ptq_result.seconds, 3)},
        "training": outcome.summary(settings),
        "bridge": {"from": loaded.loader, "rebuilt_in_tf_keras": bridged.bridged,
                   "max_abs_diff": bridged.max_abs_diff, "tolerance": TOLERANCE},
        "convert_seconds": round(result.seconds, 3),
        "float_ops": float_ops,
    }
    notes = [*bridged.notes,
             f"QAT: {settings.epochs} epoch(s) from the float weights, best epoch "
             f"{outcome.best_epoch} on {outcome.val_n} held-out training samples; the converter "
             "takes the trained fake-quant ranges and reads --data only for what they leave open"]
    if settings.skip:
        notes.append(f"QAT: --qat-skip {', '.join(settings.skip)}: {len(float_ops)} op(s) kept "
                     "in float in the converted model (the converter's node denylist)")
    if bridged.bridged:
        notes.append(f"QAT: Keras 3 model rebuilt in tf_keras for tfmot; float outputs agree "
                     f"within {bridged.max_abs_diff:.2e}")
    return result, section, notes


def _convert_with_float_layers(trained, target: Target, calib: Dataset, conv,
                               skip: tuple[str, ...]):
    """Convert the QAT model with the ops of the skipped layers denylisted: they stay float in
    the model (DEQUANTIZE/QUANTIZE around them), as the target's float fallback runs them.

    Raises:
        ConversionError: no op of a skipped layer could be found by name in the model."""
    import time

    from edgeq.adapters import tf_calibration
    from edgeq.edgetpu.placement import keras_layer
    from edgeq.errors import ConversionError
    from edgeq.pipeline.quantize import QuantizeResult
    from edgeq.formats.tflite import read_model

    t0 = time.perf_counter()
    x = calib.x
    calibrated = tf_calibration.calibrated_model(
        trained.batch1_function, lambda: (x[i:i + 1] for i in range(len(x))), conv,
        target_name=target.name)
    info = read_model(calibrated)
    names, ops = [], []
    for op in info.ops:
        layer = keras_layer(op, info, *trained.layer_scope())
        if layer in skip and op.outputs:
            names.append(info.tensors[op.outputs[0]].name)
            ops.append({"index": op.index, "op": op.op, "layer": layer})
    missing = sorted(set(skip) - {o["layer"] for o in ops})
    if missing:
        raise ConversionError("convert QAT model", f"no op of layer(s) {', '.join(missing)} "
                              "found by name in the converted graph, so they cannot be kept "
                              "float", hint="drop --qat-skip for them")
    model = tf_calibration.quantize_calibrated(calibrated, conv, target_name=target.name,
                                               denylist=tuple(names))
    return QuantizeResult(model, "qat", "learned in training", len(x),
                          time.perf_counter() - t0, ""), ops


def side_by_side(section: dict, result, stages: list[dict]) -> list[dict]:
    """Float, PTQ and QAT on the same evaluation data and runtime, for the report's table."""
    acc, base = asdict(result.accuracy), section["ptq_baseline"]
    seconds = {s["name"]: s["seconds"] for s in stages}
    qat_seconds = sum(seconds.get(k, 0.0) for k in ("bridge to tf_keras",
                                                     "quantization-aware training",
                                                     "convert QAT model"))
    return [
        {"model": "float", "top1": acc["float"], "drop_pp": 0.0 if acc["float"] is not None
         else None, "agreement": 1.0, "sqnr_db": None, "seconds": None},
        {"model": f"ptq ({base['calibration']})", "top1": base["accuracy"]["quantized"],
         "drop_pp": base["accuracy"]["drop_pp"], "agreement": base["accuracy"]["agreement"],
         "sqnr_db": base["fidelity"]["sqnr_db"], "seconds": seconds.get("quantize")},
        {"model": "qat", "top1": acc["quantized"], "drop_pp": acc["drop_pp"],
         "agreement": acc["agreement"], "sqnr_db": asdict(result.fidelity)["sqnr_db"],
         "seconds": round(qat_seconds, 3)},
    ]
