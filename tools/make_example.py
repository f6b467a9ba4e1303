"""Rebuilds the bundled example in representative_data/: a small Keras 3 CNN trained on the
8x8 scikit-learn digits (../shared/fixtures/data/digits.npz), its calibration and held-out
evaluation samples.

    python tools/make_example.py [--fixtures ../shared/fixtures]

The model takes 8x8x1 float inputs in 0..1 (raw pixels 0..16 divided by 16), so the data files
hold raw uint8 pixels and the README's command passes --input-scale 1/16.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fixtures", default=str(ROOT.parent / "shared" / "fixtures"))
    ap.add_argument("--out", default=str(ROOT / "representative_data"))
    args = ap.parse_args()

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    keras.utils.set_random_seed(0)
    d = np.load(Path(args.fixtures) / "data" / "digits.npz")
    x, y = d["x"], d["y"].astype(np.int64)
    order = np.random.default_rng(0).permutation(len(x))
    x, y = x[order], y[order]
    train_x, train_y = x[:1297], y[:1297]
    test_x, test_y = x[1297:], y[1297:]

    model = keras.Sequential([
        keras.Input(shape=(8, 8, 1), name="pixels"),
        keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
        keras.layers.Conv2D(32, 3, strides=2, padding="same", activation="relu"),
        keras.layers.Flatten(),
        keras.layers.Dense(64, activation="relu"),
        keras.layers.Dense(10, activation="softmax"),
    ], name="digits_cnn")
    model.compile(optimizer=keras.optimizers.Adam(2e-3),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(train_x[..., None] / 16.0, train_y, epochs=30, batch_size=64, verbose=0)
    _, acc = model.evaluate(test_x[..., None] / 16.0, test_y, verbose=0)
    print(f"float held-out accuracy: {acc:.4f} on {len(test_x)} samples")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    # Saved uncompiled: the optimizer state would triple the file and edgeq does not need it.
    plain = keras.models.clone_model(model)
    plain.set_weights(model.get_weights())
    plain.save(out / "digits_cnn.keras")
    # 200 training images calibrate; the 500 never-seen images evaluate.
    np.savez_compressed(out / "digits_calibration.npz", x=train_x[:200], y=train_y[:200])
    np.savez_compressed(out / "digits_eval.npz", x=test_x, y=test_y)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
