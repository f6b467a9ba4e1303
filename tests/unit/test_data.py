"""Unit tests for edgeq.data: loading, validating and preprocessing data sets (no TensorFlow)."""

from __future__ import annotations

import io
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgeq.data import MAX_BYTES, Dataset, InputSpec, Preprocess, load_dataset
from edgeq.errors import DataError, UsageError

FIXTURES = Path("/work/shared/fixtures/data")
MNIST = InputSpec(shape=(28, 28, 1), name="image")


def _mnist_like(n: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    return x, rng.integers(0, 10, n).astype(np.uint8)


def _png(path: Path, color: tuple[int, int, int], size: tuple[int, int] = (10, 6)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)


# --- arrays -----------------------------------------------------------------------------------


def test_npz_with_x_and_y(tmp_path: Path) -> None:
    x = np.random.default_rng(0).random((6, 28, 28, 1), dtype=np.float32)
    y = np.arange(6, dtype=np.uint8)
    np.savez(tmp_path / "d.npz", x=x, y=y)

    ds = load_dataset(tmp_path / "d.npz", MNIST)

    assert ds.n == 6 and ds.x.dtype == np.float32 and ds.x.flags.c_contiguous
    np.testing.assert_array_equal(ds.x, x)
    assert ds.y is not None and ds.y.dtype == np.int64
    np.testing.assert_array_equal(ds.y, np.arange(6))
    assert ds.source == str(tmp_path / "d.npz") and ds.classes is None
    assert ds.stats["n"] == 6
    assert ds.stats["min"] == pytest.approx(float(x.min()))
    assert ds.stats["max"] == pytest.approx(float(x.max()))
    assert ds.stats["mean"] == pytest.approx(float(x.mean()), rel=1e-5)
    assert ds.stats["std"] == pytest.approx(float(x.std()), rel=1e-5)


def test_compressed_and_fortran_order_npz(tmp_path: Path) -> None:
    x = np.asfortranarray(np.random.default_rng(1).random((5, 28, 28, 1), dtype=np.float32))
    np.savez_compressed(tmp_path / "d.npz", x=x)
    ds = load_dataset(tmp_path / "d.npz", MNIST, max_samples=3)
    np.testing.assert_array_equal(ds.x, x[:3])
    assert ds.x.flags.c_contiguous


def test_npz_without_x_names_the_array(tmp_path: Path) -> None:
    np.savez(tmp_path / "one.npz", images=np.zeros((2, 28, 28), np.float32))
    with pytest.raises(DataError, match=r"one array named 'images'.*Fix: name the array x"):
        load_dataset(tmp_path / "one.npz", MNIST)
    with pytest.raises(DataError, match=r"'labels', 'specs' but no 'x'"):
        load_dataset(FIXTURES / "streaming_wakeword_calibration.npz", MNIST)


def test_npz_with_no_arrays(tmp_path: Path) -> None:
    np.savez(tmp_path / "empty.npz")
    with pytest.raises(DataError, match="holds no arrays"):
        load_dataset(tmp_path / "empty.npz", MNIST)


def test_npy_inputs_only(tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", np.ones((3, 28, 28, 1), np.float64))
    ds = load_dataset(tmp_path / "x.npy", MNIST)
    assert ds.n == 3 and ds.y is None and ds.x.dtype == np.float32


def test_trailing_channel_axis_added_for_mnist_fixture() -> None:
    ds = load_dataset(FIXTURES / "mnist_5k.npz", MNIST, role="evaluation")
    assert ds.x.shape == (5000, 28, 28, 1)
    assert "added a trailing channel axis: (5000, 28, 28) -> (5000, 28, 28, 1)" in ds.notes
    assert any("uint8 data used as 0..255 values" in note for note in ds.notes)
    assert ds.stats["max"] == 255.0
    assert ds.y is not None and ds.y.shape == (5000,)


def test_digits_fixture_with_8x8_input() -> None:
    ds = load_dataset(FIXTURES / "digits.npz", InputSpec((8, 8, 1)), Preprocess(scale=1 / 16))
    assert ds.x.shape == (1797, 8, 8, 1) and ds.stats["max"] == pytest.approx(1.0)
    assert not any("0..255" in note for note in ds.notes)


def test_single_sample_without_batch_axis(tmp_path: Path) -> None:
    np.save(tmp_path / "one.npy", np.zeros((28, 28, 1), np.float32))
    ds = load_dataset(tmp_path / "one.npy", MNIST)
    assert ds.x.shape == (1, 28, 28, 1)
    assert any("single sample" in note for note in ds.notes)


def test_shape_mismatch_names_both_shapes(tmp_path: Path) -> None:
    np.savez(tmp_path / "x.npz", x=np.zeros((4, 32, 32, 3), np.float32))
    with pytest.raises(DataError) as err:
        load_dataset(tmp_path / "x.npz", MNIST)
    text = str(err.value)
    assert "(32, 32, 3)" in text and "(28, 28, 1)" in text and "'image'" in text
    assert text.startswith(f"data '{tmp_path / 'x.npz'}': (calibration) ")
    assert err.value.hint


def test_shape_mismatch_hints_channels_first(tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", np.zeros((2, 3, 32, 32), np.float32))
    with pytest.raises(DataError, match=r"channels-first.*transpose\(0, 2, 3, 1\)"):
        load_dataset(tmp_path / "x.npy", InputSpec((32, 32, 3)))


@pytest.mark.parametrize(
    ("bad", "expected"), [(np.nan, "1 NaN and 0 infinite"), (np.inf, "0 NaN and 1 infinite")]
)
def test_nan_and_inf_are_refused(tmp_path: Path, bad: float, expected: str) -> None:
    x = np.zeros((5, 28, 28, 1), np.float32)
    x[3, 1, 2, 0] = bad
    np.savez(tmp_path / "x.npz", x=x)
    with pytest.raises(DataError, match=rf"{expected} value\(s\) in sample 3\. Fix"):
        load_dataset(tmp_path / "x.npz", MNIST)


def test_zero_samples(tmp_path: Path) -> None:
    np.savez(tmp_path / "x.npz", x=np.zeros((0, 28, 28), np.uint8))
    with pytest.raises(DataError, match="zero samples"):
        load_dataset(tmp_path / "x.npz", MNIST)


def test_object_array_refused(tmp_path: Path) -> None:
    x = np.empty(2, dtype=object)
    x[0], x[1] = [1, 2], "a"
    np.save(tmp_path / "x.npy", x, allow_pickle=True)
    with pytest.raises(DataError, match="pickled/object arrays are refused for safety"):
        load_dataset(tmp_path / "x.npy", InputSpec(()))


@pytest.mark.parametrize(("dtype", "word"), [(np.bool_, "boolean"), (np.complex64, "complex")])
def test_non_numeric_dtypes_refused(tmp_path: Path, dtype: type, word: str) -> None:
    np.save(tmp_path / "x.npy", np.zeros((2, 28, 28, 1), dtype))
    with pytest.raises(DataError, match=word):
        load_dataset(tmp_path / "x.npy", MNIST)


@pytest.mark.parametrize("suffix", [".npz", ".npy"])
def test_corrupt_file(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"bad{suffix}"
    path.write_bytes(np.random.default_rng(0).bytes(300))
    with pytest.raises(DataError, match=rf"not a valid \{suffix} file"):
        load_dataset(path, MNIST)


def test_truncated_npy(tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", np.zeros((4, 28, 28, 1), np.float32))
    data = (tmp_path / "x.npy").read_bytes()
    (tmp_path / "x.npy").write_bytes(data[:-100])
    with pytest.raises(DataError, match=r"not a valid \.npy file \(truncated"):
        load_dataset(tmp_path / "x.npy", MNIST)


def test_missing_path_and_unsupported_extension(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"no such file.*Fix: check the path given to --eval-data"):
        load_dataset(tmp_path / "nope.npz", MNIST, role="evaluation")
    (tmp_path / "d.csv").write_text("1,2,3\n")
    with pytest.raises(DataError, match=r"unsupported data format '\.csv'"):
        load_dataset(tmp_path / "d.csv", MNIST)


def test_huge_header_refused_without_reading(tmp_path: Path) -> None:
    path = tmp_path / "huge.npy"
    with open(path, "wb") as fp:
        np.lib.format.write_array_header_1_0(
            fp, {"descr": "<f4", "fortran_order": False, "shape": (10**9, 28, 28, 1)}
        )
    with pytest.raises(DataError, match=r"GiB in memory, over the 4\.0 GiB limit"):
        load_dataset(path, MNIST)
    assert MAX_BYTES == 4 * 1024**3


def test_huge_header_inside_npz_refused(tmp_path: Path) -> None:
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "|u1", "fortran_order": False, "shape": (10**8, 28, 28)}
    )
    with zipfile.ZipFile(tmp_path / "huge.npz", "w") as zf:
        zf.writestr("x.npy", header.getvalue())
    with pytest.raises(DataError, match=r"x of shape \(100000000, 28, 28\) and dtype uint8 needs"):
        load_dataset(tmp_path / "huge.npz", MNIST)


def test_max_bytes_override_and_max_samples_read_only_those_rows(tmp_path: Path) -> None:
    x, y = _mnist_like(100)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    with pytest.raises(DataError, match="over the"):
        load_dataset(tmp_path / "d.npz", MNIST, max_bytes=1000)
    ds = load_dataset(tmp_path / "d.npz", MNIST, max_samples=10, max_bytes=10 * 28 * 28 * 4)
    assert ds.n == 10
    np.testing.assert_array_equal(ds.x[..., 0], x[:10])
    np.testing.assert_array_equal(ds.y, y[:10])
    assert "kept the first 10 of 100 samples" in ds.notes


def test_max_samples_warns_when_the_prefix_misses_classes() -> None:
    # The mnist fixture is sorted by label: its first 100 rows are all zeros.
    ds = load_dataset(FIXTURES / "mnist_5k.npz", MNIST, max_samples=100)
    assert any("only 1 of the 10 classes" in note for note in ds.notes)


def test_max_samples_must_be_positive(tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", np.zeros((2, 28, 28, 1), np.float32))
    with pytest.raises(UsageError):
        load_dataset(tmp_path / "x.npy", MNIST, max_samples=0)


# --- labels -------------------------------------------------------------------------------------


def test_label_length_mismatch(tmp_path: Path) -> None:
    x, y = _mnist_like(8)
    np.savez(tmp_path / "d.npz", x=x, y=y[:5])
    with pytest.raises(DataError, match=r"y has shape \(5,\) but x has 8 sample\(s\)"):
        load_dataset(tmp_path / "d.npz", MNIST)


def test_one_hot_labels_get_a_hint(tmp_path: Path) -> None:
    x, _ = _mnist_like(4)
    np.savez(tmp_path / "d.npz", x=x, y=np.eye(4, 10, dtype=np.float32))
    with pytest.raises(DataError, match=r"one-hot.*argmax"):
        load_dataset(tmp_path / "d.npz", MNIST)


def test_float_labels_must_be_integral(tmp_path: Path) -> None:
    x, _ = _mnist_like(3)
    np.savez(tmp_path / "ok.npz", x=x, y=np.array([0.0, 2.0, 1.0]))
    assert load_dataset(tmp_path / "ok.npz", MNIST).y.tolist() == [0, 2, 1]
    np.savez(tmp_path / "bad.npz", x=x, y=np.array([0.0, 2.5, 1.0]))
    with pytest.raises(DataError, match="sample 1 has label 2.5"):
        load_dataset(tmp_path / "bad.npz", MNIST)
    np.savez(tmp_path / "neg.npz", x=x, y=np.array([0, -1, 1]))
    with pytest.raises(DataError, match="negative label"):
        load_dataset(tmp_path / "neg.npz", MNIST)


def test_require_labels(tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", np.zeros((2, 28, 28, 1), np.float32))
    with pytest.raises(DataError, match=r"\(evaluation\) evaluation data needs labels `y`"):
        load_dataset(tmp_path / "x.npy", MNIST, role="evaluation", require_labels=True)


# --- preprocessing ------------------------------------------------------------------------------


def test_preprocess_parse() -> None:
    prep = Preprocess.parse("1/255", "127.5", "0.5,0.5,0.5")
    assert prep.scale == pytest.approx(1 / 255)
    assert prep.mean == (127.5,) and prep.std == (0.5, 0.5, 0.5)
    assert not prep.is_identity()
    assert Preprocess.parse(None, None, None) == Preprocess()
    assert Preprocess().is_identity()
    assert Preprocess.parse(0.5, " 0.485, 0.456,0.406 ", None).mean == (0.485, 0.456, 0.406)


@pytest.mark.parametrize(
    ("scale", "mean", "std", "option"),
    [
        ("abc", None, None, "--input-scale"),
        ("1/0", None, None, "--input-scale"),
        ("1/2/3", None, None, "--input-scale"),
        ("0", None, None, "--input-scale"),
        (None, "1,,2", None, "--mean"),
        (None, "nan", None, "--mean"),
        (None, None, "0", "--std"),
        (None, None, "x", "--std"),
    ],
)
def test_preprocess_parse_rejects_bad_strings(
    scale: str | None, mean: str | None, std: str | None, option: str
) -> None:
    with pytest.raises(UsageError, match=option):
        Preprocess.parse(scale, mean, std)


def test_preprocess_applied_per_channel(tmp_path: Path) -> None:
    x = np.full((2, 4, 4, 3), 255, np.uint8)
    x[..., 1] = 0
    np.savez(tmp_path / "d.npz", x=x)
    prep = Preprocess.parse("1/255", "0.5,0.5,0", "0.5,0.5,2")
    ds = load_dataset(tmp_path / "d.npz", InputSpec((4, 4, 3)), prep)
    np.testing.assert_allclose(ds.x[0, 0, 0], [1.0, -1.0, 0.5], rtol=1e-6)
    assert ds.stats["max"] == pytest.approx(1.0)
    assert not any("0..255" in note for note in ds.notes)
    assert any(note.startswith("preprocessed x = ") for note in ds.notes)


def test_mean_with_wrong_channel_count_is_a_usage_error(tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", np.zeros((2, 28, 28, 1), np.float32))
    with pytest.raises(UsageError, match=r"--mean has 3 values.*1 channel"):
        load_dataset(tmp_path / "x.npy", MNIST, Preprocess.parse(None, "1,2,3", None))


def test_take_is_a_deterministic_prefix(tmp_path: Path) -> None:
    x, y = _mnist_like(10)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    ds = load_dataset(tmp_path / "d.npz", MNIST)
    part = ds.take(4)
    assert isinstance(part, Dataset) and part.n == 4 and part.stats["n"] == 4
    np.testing.assert_array_equal(part.x, ds.x[:4])
    np.testing.assert_array_equal(part.y, ds.y[:4])
    assert ds.take(50) is ds


# --- image folders ------------------------------------------------------------------------------


def test_flat_image_folder(tmp_path: Path) -> None:
    _png(tmp_path / "b.png", (0, 255, 0))
    _png(tmp_path / "a.PNG", (255, 0, 0))
    (tmp_path / "README.txt").write_text("not an image")
    (tmp_path / ".DS_Store").write_bytes(b"\0")
    ds = load_dataset(tmp_path, InputSpec((4, 5, 3)))
    assert ds.x.shape == (2, 4, 5, 3) and ds.y is None and ds.classes is None
    np.testing.assert_allclose(ds.x[0, 0, 0], [255, 0, 0])  # sorted by name: a.PNG first
    np.testing.assert_allclose(ds.x[1, 0, 0], [0, 255, 0])
    assert any("ignored 1 file(s)" in note for note in ds.notes)
    assert any("image pixels used as 0..255" in note for note in ds.notes)


def test_class_folders_give_labels_in_round_robin_order(tmp_path: Path) -> None:
    for i in range(3):
        _png(tmp_path / "cat" / f"{i}.png", (10, 10, 10))
    _png(tmp_path / "bird" / "0.jpg", (200, 200, 200))
    (tmp_path / "dog").mkdir()
    ds = load_dataset(tmp_path, InputSpec((8, 8, 1)), require_labels=True)
    assert ds.classes == ("bird", "cat", "dog")
    assert ds.y is not None and ds.y.tolist() == [0, 1, 1, 1]
    assert ds.x.shape == (4, 8, 8, 1)
    assert ds.x[0].mean() == pytest.approx(200, abs=1)
    assert ds.x[1].mean() == pytest.approx(10, abs=1)
    assert any("no images: dog" in note for note in ds.notes)
    assert load_dataset(tmp_path, InputSpec((8, 8, 1)), max_samples=2).y.tolist() == [0, 1]


def test_fixture_bmps_resized() -> None:
    prep = Preprocess.parse("1/255", None, None)
    ds = load_dataset(FIXTURES / "images", InputSpec((32, 32, 3)), prep)
    assert ds.x.shape == (3, 32, 32, 3) and ds.x.dtype == np.float32
    assert 0.0 <= ds.stats["min"] and ds.stats["max"] <= 1.0


def test_grayscale_image_input(tmp_path: Path) -> None:
    _png(tmp_path / "a.png", (255, 255, 255), size=(20, 20))
    ds = load_dataset(tmp_path, InputSpec((28, 28)))
    assert ds.x.shape == (1, 28, 28) and ds.x.max() == pytest.approx(255)


def test_undecodable_image_is_named(tmp_path: Path) -> None:
    _png(tmp_path / "good.png", (1, 2, 3))
    (tmp_path / "broken.jpg").write_bytes(b"this is not a jpeg")
    with pytest.raises(DataError, match=r"image 'broken.jpg' could not be decoded"):
        load_dataset(tmp_path, InputSpec((4, 4, 3)))


def test_empty_image_folder(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DataError, match="holds no images"):
        load_dataset(tmp_path, InputSpec((4, 4, 3)))


def test_image_folder_mixing_files_and_classes(tmp_path: Path) -> None:
    _png(tmp_path / "a.png", (1, 2, 3))
    _png(tmp_path / "cls" / "b.png", (1, 2, 3))
    with pytest.raises(DataError, match="both directly and in sub-folders"):
        load_dataset(tmp_path, InputSpec((4, 4, 3)))


def test_flat_image_folder_has_no_labels(tmp_path: Path) -> None:
    _png(tmp_path / "a.png", (1, 2, 3))
    with pytest.raises(DataError, match=r"needs labels.*Fix: put the images in one sub-folder"):
        load_dataset(tmp_path, InputSpec((4, 4, 3)), role="evaluation", require_labels=True)


def test_images_need_a_channels_last_image_input(tmp_path: Path) -> None:
    _png(tmp_path / "a.png", (1, 2, 3))
    with pytest.raises(DataError, match=r"expects \(3, 32, 32\), which is not an image"):
        load_dataset(tmp_path, InputSpec((3, 32, 32)))


# --- imports ------------------------------------------------------------------------------------


def test_import_does_not_load_tensorflow_or_pillow() -> None:
    code = (
        "import sys, edgeq.data; "
        "bad = [m for m in ('tensorflow', 'keras', 'PIL') if m in sys.modules]; "
        "print(','.join(bad))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", f"imported at module load: {result.stdout}"
