"""Stage 3b, quantization-aware training: fine-tune a fake-quantized copy of the float model.

The recipe (design/BACKGROUND.md, QAT): start from the trained float weights, fine-tune for a
short schedule (`epochs`, default 3) with Adam at about 1 % of the base learning rate, annealed
by cosine decay, and keep the epoch with the best accuracy on a validation split held out from
the training data (so the evaluation data stays untouched by every choice made here). Labels
are required: QAT fine-tunes a classifier with sparse categorical cross-entropy.

The float model must be a tf_keras model (tfmot's framework; see `edgeq.transforms.bridge`). Training is
seeded and feeds the samples in an order drawn from the seed, so a run is repeatable.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import numpy as np

from edgeq.data import Dataset
from edgeq.errors import DataError, TargetConstraintError, UsageError
from edgeq.targets import Target

STRATEGIES = ("none", "mirrored", "multiworker")
LR_FRACTION = 0.01  # QAT learning rate / base learning rate
DEFAULT_BASE_LR = 1e-3  # Adam's default, when the model file names no optimizer
VALIDATION_FRACTION = 0.1

EpochFn = Callable[[int, int, dict], None]  # (epoch, epochs, metrics)


@dataclass(frozen=True)
class QATSettings:
    epochs: int = 3
    lr: float | None = None  # None: LR_FRACTION * base_lr
    base_lr: float = DEFAULT_BASE_LR
    batch_size: int = 32
    seed: int = 0
    skip: tuple[str, ...] = ()  # layers left without fake quantization
    # layers tfmot has no quantization for (check_layers): trained without fake quantization,
    # then quantized by the converter from --data like PTQ (not kept float as `skip` is)
    unquantizable: tuple[str, ...] = ()
    strategy: str = "none"
    per_tensor_weights: bool = False

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else LR_FRACTION * self.base_lr


@dataclass
class QATOutcome:
    model: Any  # the fake-quantized tf_keras model, weights of the best epoch
    history: list[dict]  # per epoch: loss, accuracy, val_loss, val_accuracy, lr at its end
    best_epoch: int
    learning_rate: float
    from_logits: bool
    train_n: int
    val_n: int
    replicas: int
    seconds: float
    skipped: list[str] = field(default_factory=list)

    def summary(self, settings: QATSettings) -> dict:
        return {"epochs": settings.epochs, "best_epoch": self.best_epoch,
                "learning_rate": self.learning_rate, "base_learning_rate": settings.base_lr,
                "schedule": "cosine decay", "optimizer": "adam",
                "batch_size": settings.batch_size, "seed": settings.seed,
                "loss": "sparse categorical cross-entropy"
                + (" (from logits)" if self.from_logits else ""),
                "train_samples": self.train_n, "validation_samples": self.val_n,
                "validation": "held-out split of the training data",
                "strategy": settings.strategy, "replicas": self.replicas,
                "skipped_layers": list(self.skipped), "seconds": round(self.seconds, 3),
                "history": self.history}


def base_learning_rate(model_path: str) -> float:
    """The learning rate the model was compiled with, when its file records one (a .keras
    archive's compile_config, a legacy .h5's training_config); else Adam's default."""
    from pathlib import Path

    from edgeq.errors import ModelFileError
    from edgeq.formats import keras_files

    # Read before the loader's checks, so through the same bounded readers: a FIFO named
    # model.keras must not block here, nor a config bomb inflate.
    p = Path(model_path)
    optimizer = None
    try:
        if p.suffix.lower() == ".keras":
            config = keras_files.keras_config(p)
            compiled = config.get("compile_config") if isinstance(config, dict) else None
            optimizer = (compiled or {}).get("optimizer") if isinstance(compiled, dict) else None
        elif p.suffix.lower() in (".h5", ".hdf5"):
            training = keras_files.h5_json_attribute(p, "training_config")
            optimizer = training.get("optimizer_config") if isinstance(training, dict) else None
    except ModelFileError:
        return DEFAULT_BASE_LR  # the loader reports unreadable files with a better message
    lr = ((optimizer or {}).get("config") or {}).get("learning_rate") \
        if isinstance(optimizer, dict) else None
    return float(lr) if isinstance(lr, (int, float)) and lr > 0 else DEFAULT_BASE_LR


def check_settings(settings: QATSettings, target: Target) -> None:
    """Option checks that need no model (fail before anything loads).

    Raises:
        UsageError: bad epochs, learning rate, batch size or strategy (exit 2).
        TargetConstraintError: --qat-skip on a target that runs integer kernels only (exit 3).
    """
    if settings.epochs < 1:
        raise UsageError("--epochs must be at least 1")
    if settings.lr is not None and not settings.lr > 0:
        raise UsageError("--lr must be a positive learning rate (e.g. 1e-5)")
    if settings.batch_size < 1:
        raise UsageError("--batch-size must be at least 1")
    if settings.strategy not in STRATEGIES:
        raise UsageError(f"--strategy {settings.strategy} is not known",
                         hint=f"use one of: {', '.join(STRATEGIES)}")
    if settings.skip and target.quantization.float_fallback == "none":
        raise TargetConstraintError(
            f"target '{target.name}' cannot keep layer(s) {', '.join(settings.skip)} in float: "
            "it runs integer kernels only (no float fallback), so every layer must be quantized",
            hint="drop --qat-skip and replace the layer, use --method ptq, or choose a target "
                 "with float fallback (arm-cpu)",
        )


def check_layers(model: Any, settings: QATSettings, target: Target) -> QATSettings:
    """The settings with the layers tfmot cannot quantize (and --qat-skip does not name) set
    aside: they train without fake quantization and the converter calibrates them from --data,
    so QAT runs on models with LayerNormalization or MultiHeadAttention instead of refusing.

    Raises:
        UsageError: --qat-skip names a layer the model does not have (exit 2).
    """
    from edgeq.adapters import tfmot

    names = {layer.name for layer in model.layers}
    unknown = [s for s in settings.skip if s not in names]
    if unknown:
        raise UsageError(f"--qat-skip {', '.join(unknown)}: no such layer in the model",
                         hint=f"layers: {', '.join(sorted(names))}")
    blocked = tuple(n for n, _ in tfmot.unsupported_layers(model) if n not in settings.skip)
    return replace(settings, unquantizable=blocked)


def unquantizable_note(model: Any, settings: QATSettings) -> str | None:
    if not settings.unquantizable:
        return None
    kinds = {layer.name: type(layer).__name__ for layer in model.layers}
    listed = ", ".join(f"{n} ({kinds.get(n, '?')})" for n in settings.unquantizable)
    return (f"QAT: tfmot's 8-bit scheme has no quantization for {listed}: trained without fake "
            "quantization; the converter quantizes them from --data like PTQ (--qat-skip keeps "
            "a layer float instead, on targets with float fallback)")


def split(train: Dataset, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_val, y_val): a seeded shuffle, VALIDATION_FRACTION held out."""
    if train.y is None:
        raise DataError(train.source, "(training) quantization-aware training needs labels `y`",
                        hint="give an .npz with x and y, or a folder with one sub-folder per class")
    if train.n < 2:
        raise DataError(train.source, "(training) needs at least 2 samples (train + validation)")
    order = np.random.default_rng(seed).permutation(train.n)
    n_val = max(1, int(round(VALIDATION_FRACTION * train.n)))
    val, fit = order[:n_val], order[n_val:]
    return train.x[fit], train.y[fit], train.x[val], train.y[val]


def fine_tune(model: Any, train: Dataset, settings: QATSettings, *,
              on_epoch: EpochFn | None = None) -> QATOutcome:
    """Fake-quantize `model` (tf_keras) and fine-tune it on `train` by the recipe above."""
    import tensorflow as tf
    import tf_keras

    from edgeq.adapters import tfmot

    t0 = time.perf_counter()
    x, y, xv, yv = split(train, settings.seed)
    from_logits = _outputs_are_logits(model, x[: min(64, len(x))], train.source, int(y.max()))
    tf_keras.utils.set_random_seed(settings.seed)
    strategy = start_strategy(settings.strategy)
    replicas = strategy.num_replicas_in_sync if strategy is not None else 1
    steps = settings.epochs * -(-len(x) // settings.batch_size)
    with strategy.scope() if strategy is not None else contextlib.nullcontext():
        qat = tfmot.quantize(model, skip=settings.skip + settings.unquantizable,
                             per_tensor_weights=settings.per_tensor_weights)
        schedule = tf_keras.optimizers.schedules.CosineDecay(settings.learning_rate, steps)
        qat.compile(optimizer=tf_keras.optimizers.Adam(schedule),
                    loss=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits),
                    metrics=["accuracy"])
    rng = np.random.default_rng(settings.seed)
    history: list[dict] = []
    best, best_epoch = None, 0
    for epoch in range(1, settings.epochs + 1):
        order = rng.permutation(len(x))
        fit = qat.fit(x[order], y[order], batch_size=settings.batch_size, epochs=1,
                      shuffle=False, verbose=0)
        val_loss, val_acc = qat.evaluate(xv, yv, batch_size=256, verbose=0)
        row = {"epoch": epoch, "loss": _f(fit.history["loss"][-1]),
               "accuracy": _f(fit.history["accuracy"][-1]), "val_loss": _f(val_loss),
               "val_accuracy": _f(val_acc),
               "lr": _f(schedule(tf.constant(epoch * steps // settings.epochs)))}
        history.append(row)
        if best is None or row["val_accuracy"] > history[best_epoch - 1]["val_accuracy"]:
            best, best_epoch = qat.get_weights(), epoch
        if on_epoch is not None:
            on_epoch(epoch, settings.epochs, row)
    qat.set_weights(best)
    for row in history:
        row["best"] = row["epoch"] == best_epoch
    return QATOutcome(qat, history, best_epoch, settings.learning_rate, from_logits, len(x),
                      len(xv), replicas, time.perf_counter() - t0, list(settings.skip))


def _outputs_are_logits(model: Any, x: np.ndarray, source: str, max_label: int) -> bool:
    """Class scores from the float model decide the loss: probabilities (softmax output) or
    logits. A model without one (N, classes) output is not a classifier QAT can fine-tune."""
    if len(model.outputs) != 1 or len(model.outputs[0].shape) != 2:
        raise UsageError(
            "--method qat fine-tunes classifiers: the model needs one output of class scores "
            f"(N, classes); it has {[tuple(o.shape) for o in model.outputs]}",
            hint="use --method ptq for this model")
    out = np.asarray(model(x, training=False), dtype=np.float64)
    if max_label >= out.shape[1]:
        raise DataError(source, f"(training) label {max_label} is out of range for a model "
                        f"with {out.shape[1]} classes", hint="labels must be 0..classes-1")
    probabilities = bool(np.all(out >= 0) and np.allclose(out.sum(axis=1), 1.0, atol=1e-3))
    return not probabilities


_STRATEGIES: dict[str, Any] = {}  # one tf.distribute strategy per process and kind


def start_strategy(name: str) -> Any:
    """The tf.distribute strategy for `name` (None for "none"), created once per process.

    Call it before TensorFlow runs anything when `name` is "multiworker": with TF_CONFIG naming
    several workers, MultiWorkerMirroredStrategy configures collective ops, which TF allows
    only at program start. Each worker runs the same edgeq command (tf.distribute's contract);
    without TF_CONFIG it is one worker (on CPU: one replica).
    """
    if name == "none":
        return None
    if name not in _STRATEGIES:
        import tensorflow as tf

        _STRATEGIES[name] = (tf.distribute.MirroredStrategy() if name == "mirrored"
                             else tf.distribute.MultiWorkerMirroredStrategy())
    return _STRATEGIES[name]


def _f(value: Any) -> float:
    return round(float(value), 6)
