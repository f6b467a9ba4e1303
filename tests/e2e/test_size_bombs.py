"""Issue 22, item 3: bounded before building. Small files that declare huge allocations are
refused through the CLI before the allocation, with one line naming the layer, op or image,
in seconds and little memory (each case in a fresh child measured by tests/measure.py):
- .keras / .h5 configs declaring huge layers (Conv2D with 10^7 filters, Dense(1.2 million),
  Embedding 10^6 x 1000, Dense(300,000) where the file stores 115 K weights): Keras would
  build them first (23 GB, 2.4 GB, ... uncapped before);
- a SavedModel whose graph calls tf.fill([30000, 30000]) (3.4 GiB);
- image folders: an image of 13,000 x 13,000 pixels, 2,000 hard links to one tiny PNG, and
  images holding more pixels together than edgeq decodes for one data set.
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import pytest

from tests.conftest import EXAMPLE, FIXTURES
from tests.keras_hostile import edited
from tests.measure import assert_refused, measured

MODEL = EXAMPLE / "digits_cnn.keras"
DATA = EXAMPLE / "digits_calibration.npz"
PERSON = FIXTURES / "models" / "tflm" / "person_detect.tflite"  # 96x96x1 input
MOBILENET = FIXTURES / "models" / "coral" / "mobilenet_v1_0.25_128_quant.tflite"  # 128x128x3


def _convert(model: Path, out: Path) -> dict:
    return measured("convert", str(model), "-t", "cortex-m4", "-d", str(DATA),
                    "--out", str(out / "out"))


def _layer(config: dict, cls: str) -> dict:
    return next(la for la in config["config"]["layers"] if la["class_name"] == cls)


def _conv_filters(c):
    _layer(c, "Conv2D")["config"]["filters"] = 10**7


def _dense_units(c):
    _layer(c, "Dense")["config"]["units"] = 300_000


def _dense_unbuilt(c):
    for layer in c["config"]["layers"]:
        layer.pop("build_config", None)  # no declared shapes: the walk computes them
    _layer(c, "Dense")["config"]["units"] = 1_200_000


def _embedding(c):
    c["config"]["layers"].insert(1, {"module": "keras.layers", "class_name": "Embedding",
                                     "config": {"name": "huge_table", "input_dim": 10**6,
                                                "output_dim": 1000}})


KERAS_CASES = {
    # name: (edit, exit code, texts of the error line)
    "Conv2D with 10^7 filters": (_conv_filters, 3, ["layer 'conv2d' (Conv2D)",
                                                    "(8, 8, 10000000) per sample"]),
    "Dense(1,200,000) without build configs": (_dense_unbuilt, 2, [
        "layer 'dense' (Dense)", "615,600,000 weights", "edgeq builds"]),
    "Embedding 10^6 x 1000": (_embedding, 2, ["layer 'huge_table' (Embedding)",
                                              "1,000,000,000 weights"]),
    "Dense(300,000) on 512 inputs": (_dense_units, 2, [
        "declares at least", "layer 'dense' (Dense) 153,900,000", "the file stores"]),
}


@pytest.mark.parametrize("name", list(KERAS_CASES))
def test_keras_config_declaring_huge_layers_is_refused_before_building(tmp_path, name):
    edit, code, texts = KERAS_CASES[name]
    model = edited(MODEL, tmp_path / "huge.keras", edit)
    assert model.stat().st_size < 600_000
    assert_refused(_convert(model, tmp_path), code, str(model), *texts, what=name)


def test_legacy_h5_config_declaring_a_huge_layer_is_refused(tmp_path):
    def wide(c):
        _layer(c, "Dense")["config"]["units"] = 2_000_000  # after a 64-wide pooling: 128 M

    model = edited(FIXTURES / "models" / "mlperf_tiny" / "ic_resnet8.h5", tmp_path / "w.h5",
                   wide)
    assert_refused(_convert(model, tmp_path), 2, "layer 'dense' (Dense)", "the file stores",
                   what="ic_resnet8.h5 with Dense(2,000,000)")


def _fill_model(path: Path) -> None:
    """A SavedModel of a few KB whose serving function fills a 30000 x 30000 float32 tensor
    (built here: the rest of the suite imports TensorFlow in this process anyway)."""
    import tensorflow as tf

    class M(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 8, 8, 1], tf.float32)])
        def serve(self, x):
            big = tf.fill([30000, 30000], 1.0)
            return {"y": tf.reshape(x, [-1, 64])[:, :10] + tf.reduce_sum(big[:1, :10])}

    m = M()
    tf.saved_model.save(m, str(path), signatures={"serving_default": m.serve})


def test_savedmodel_filling_a_constant_huge_shape_is_refused_before_loading(tmp_path):
    model = tmp_path / "fill_model"
    _fill_model(model)
    size = sum(f.stat().st_size for f in model.rglob("*") if f.is_file())
    assert size < 100_000
    # TensorFlow is imported to parse the graph (as loading would): allow for its start-up.
    assert_refused(_convert(model, tmp_path), 3, "runs Fill", "(30000, 30000)",
                   "3.4 GiB", seconds=90, what="SavedModel with tf.fill([30000, 30000])")


def _png_header(width: int, height: int) -> bytes:
    """A PNG's signature and IHDR (8-bit RGB) with no pixel data: what Pillow reads to learn
    the size. Decoding it would fail, so a refusal naming the size shows it came first."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + \
            struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def _verify(model: Path, data: Path, target: str = "cortex-m4") -> dict:
    return measured("verify", str(model), "-t", target, "--eval-data", str(data),
                    "--no-latency")


def test_an_image_of_13000_by_13000_pixels_is_refused_from_its_header(tmp_path):
    folder = tmp_path / "pics"
    (folder / "person").mkdir(parents=True)
    (folder / "person" / "huge.png").write_bytes(_png_header(13_000, 13_000))
    assert_refused(_verify(PERSON, folder), 2, "person/huge.png", "13000 x 13000 pixels",
                   what="13,000 x 13,000 PNG")


def test_hard_links_to_one_tiny_png_are_counted_once(tmp_path):
    from PIL import Image

    folder = tmp_path / "pics"
    (folder / "a").mkdir(parents=True)
    (folder / "b").mkdir()
    one = folder / "a" / "0000.png"
    Image.new("RGB", (128, 128)).save(one, optimize=True)
    assert one.stat().st_size < 200
    for i in range(1, 2000):
        os.link(one, folder / "ab"[i % 2] / f"{i:04d}.png")
    assert_refused(_verify(MOBILENET, folder, "arm-cpu"), 2, "2000 images decode to",
                   "1 distinct file(s)", "links to one file count once",
                   what="2,000 hard links to one PNG")


def test_images_holding_too_many_pixels_together_are_refused(tmp_path):
    from edgeq.data.images import MAX_IMAGE_PIXELS, MAX_TOTAL_PIXELS

    side = int(MAX_IMAGE_PIXELS ** 0.5)  # each image just under the per-image limit
    folder = tmp_path / "pics" / "person"
    folder.mkdir(parents=True)
    header = _png_header(side, side)
    for i in range(MAX_TOTAL_PIXELS // (side * side) + 1):
        (folder / f"{i:04d}.png").write_bytes(header)
    assert_refused(_verify(PERSON, folder.parent), 2, "pixels together",
                   what="images past the total pixel budget")


def test_an_honest_image_folder_still_loads(tmp_path):
    """Distinct small images, upscaled to the model's input, under the ratio floor."""
    import numpy as np
    from PIL import Image

    from edgeq.data import InputSpec, load_dataset

    rng = np.random.default_rng(0)
    for c in ("cat", "dog"):
        (tmp_path / c).mkdir()
        for i in range(20):
            pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / c / f"{i}.png")
    os.link(tmp_path / "cat" / "0.png", tmp_path / "dog" / "link.png")
    ds = load_dataset(tmp_path, InputSpec((224, 224, 3)), role="evaluation")
    assert ds.x.shape == (41, 224, 224, 3) and ds.y is not None
    assert any("1 of the images are further links" in n for n in ds.notes)
