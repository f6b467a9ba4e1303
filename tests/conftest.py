"""Shared test fixtures: paths to ../shared/fixtures and a small Keras 3 MNIST CNN trained once
per test session (4,000 training / 1,000 held-out digits from mnist_5k.npz)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(os.environ.get("EDGEQ_FIXTURES", ROOT.parent / "shared" / "fixtures"))
EXAMPLE = ROOT / "representative_data"
# Set by .ci/run: in CI the emulator's toolchain is installed, so a test that would skip for a
# missing tool fails instead, and a missing install step shows.
REQUIRE_EMULATOR = os.environ.get("EDGEQ_REQUIRE_EMULATOR") == "1"


def emulator_toolchain():
    """The emulator's toolchain, or a skip naming the apt-get line (a failure in CI)."""
    from edgeq.emulator.toolchain import find_toolchain
    from edgeq.errors import MissingDependencyError

    try:
        return find_toolchain()
    except MissingDependencyError as exc:
        if REQUIRE_EMULATOR:
            pytest.fail(f"EDGEQ_REQUIRE_EMULATOR=1 and {exc}")
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def fixtures() -> Path:
    if not FIXTURES.is_dir():
        pytest.fail(f"fixtures not found at {FIXTURES}; set EDGEQ_FIXTURES")
    return FIXTURES


@pytest.fixture(scope="session")
def mnist_xy(fixtures: Path) -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 MNIST digits as float32 (N, 28, 28, 1) in [0, 1] and int64 labels, shuffled
    with a fixed seed (the file is sorted by class)."""
    d = np.load(fixtures / "data" / "mnist_5k.npz")
    order = np.random.default_rng(1).permutation(len(d["y"]))
    return (d["x"][order][..., None] / 255.0).astype("float32"), d["y"][order].astype(np.int64)


@pytest.fixture(scope="session")
def mnist_model(fixtures: Path, tmp_path_factory) -> dict[str, Path]:
    """A Keras 3 CNN trained here on 4,000 MNIST digits; 1,000 others are held out."""
    import keras

    keras.utils.set_random_seed(1)
    d = np.load(fixtures / "data" / "mnist_5k.npz")
    x, y = d["x"], d["y"].astype(np.int64)
    order = np.random.default_rng(1).permutation(len(x))
    x, y = x[order], y[order]
    train_x, train_y, test_x, test_y = x[:4000], y[:4000], x[4000:], y[4000:]
    model = keras.Sequential([
        keras.Input(shape=(28, 28, 1)),
        keras.layers.Conv2D(16, 3, activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(32, 3, activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Flatten(),
        keras.layers.Dense(64, activation="relu"),
        keras.layers.Dense(10, activation="softmax"),
    ])
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(train_x[..., None] / 255.0, train_y, epochs=8, batch_size=64, verbose=0)
    out = tmp_path_factory.mktemp("mnist")
    model.save(out / "mnist_cnn.keras")
    np.savez(out / "train.npz", x=train_x, y=train_y)
    np.savez(out / "test.npz", x=test_x, y=test_y)
    return {"model": out / "mnist_cnn.keras", "train": out / "train.npz", "test": out / "test.npz"}
