"""Values in data sets (issue 14, item 6): labels must be class indices of the model's first
output, NaN/inf are errors naming the samples, and samples far beyond the others are a data
warning naming them. No TensorFlow."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgeq.data import checks as data_check
from edgeq.data import InputSpec, Preprocess, check_input_spec, load_dataset, output_classes
from edgeq.errors import DataError, TensorSizeError
from edgeq.status import ExitStatus
from tests.conftest import FIXTURES

SPEC = InputSpec((4, 4, 1))


def _npz(tmp_path: Path, y, x=None, name: str = "d.npz") -> Path:
    x = np.random.default_rng(0).uniform(0, 1, (len(y), 4, 4, 1)).astype(np.float32) \
        if x is None else x
    np.savez(tmp_path / name, x=x, y=np.asarray(y))
    return tmp_path / name


def _labels_500(bad: dict[int, int]) -> np.ndarray:
    y = np.arange(500, dtype=np.int64) % 10
    for i, v in bad.items():
        y[i] = v
    return y


# --- labels ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("y, values, count", [
    (_labels_500({i: (50, 99, 2**62)[i % 3] for i in range(312)}),
     "50, 99 or 4611686018427387904", "312 of 500 labels"),
    (np.full(500, 99), "99", "500 of 500 labels"),
    (_labels_500({7: 2**62}), "4611686018427387904", "1 of 500 labels"),
    (_labels_500({3: 10}), "10", "1 of 500 labels"),  # the first index past the classes
])
def test_labels_outside_the_model_classes_are_refused(tmp_path, y, values, count):
    path = _npz(tmp_path, y)
    with pytest.raises(DataError) as caught:
        load_dataset(path, SPEC, role="evaluation", classes=10)
    text = str(caught.value)
    assert caught.value.exit_status == ExitStatus.BAD_INPUT and "\n" not in text
    assert text.startswith(f"data '{path}': (evaluation) y holds labels outside the model's 10 "
                           f"classes (0..9): {count} are {values}. Fix: ")
    assert "check that the file belongs to this model" in text


def test_labels_in_range_pass_and_are_int64(tmp_path):
    ds = load_dataset(_npz(tmp_path, np.arange(20, dtype=np.uint8) % 10), SPEC, classes=10)
    assert ds.y.dtype == np.int64 and ds.y.max() == 9


def test_many_distinct_bad_values_show_the_smallest_and_largest(tmp_path):
    y = _labels_500({i: 10 + i for i in range(57)})
    y[100] = 2**62
    with pytest.raises(DataError, match=r"58 of 500 labels are 10, 11, 12, 13, \.\.\. or "
                       r"4611686018427387904 \(58 distinct values\)"):
        load_dataset(_npz(tmp_path, y), SPEC, classes=10)


def test_float_labels_that_are_whole_numbers(tmp_path):
    ds = load_dataset(_npz(tmp_path, np.array([0.0, 3.0, 9.0])), SPEC, classes=10)
    assert ds.y.tolist() == [0, 3, 9] and ds.y.dtype == np.int64
    # 2^62 and 1e30 are whole numbers as floats too: named exactly, not cast (1e30 has no int64)
    y = np.array([1.0, float(2**62), 1e30, 2.0])
    with pytest.raises(DataError, match=r"2 of 4 labels are 4611686018427387904 or "
                       r"1000000000000000019884624838656"):
        load_dataset(_npz(tmp_path, y), SPEC, classes=10)


def test_huge_uint64_labels_do_not_wrap(tmp_path):
    """uint64 2^64 - 1 cast to int64 is -1: it must be named as it is, with or without the
    model's classes (an int64 label array cannot hold it at all)."""
    y = np.array([1, 2**64 - 1, 2], dtype=np.uint64)
    with pytest.raises(DataError, match=r"1 of 3 labels are 18446744073709551615"):
        load_dataset(_npz(tmp_path, y), SPEC, classes=10)
    with pytest.raises(DataError, match=r"labels too large to be class indices: 1 of 3 labels "
                       r"are 18446744073709551615"):
        load_dataset(_npz(tmp_path, y), SPEC)


def test_bool_labels_are_refused_by_dtype(tmp_path):
    with pytest.raises(DataError, match=r"y has dtype bool \(boolean\).*np.int64"):
        load_dataset(_npz(tmp_path, np.array([True, False, True])), SPEC, classes=2)


def test_negative_labels_keep_their_message(tmp_path):
    with pytest.raises(DataError, match=r"negative label -3 \(sample 1\)"):
        load_dataset(_npz(tmp_path, np.array([0, -3, 1])), SPEC, classes=10)


def test_a_single_value_output_has_no_classes(tmp_path):
    with pytest.raises(DataError, match=r"first output has 1 value per sample, so its top-1 "
                       r"\(argmax\) is always class 0, and 2 of 4 labels are 1") as caught:
        load_dataset(_npz(tmp_path, np.array([0, 1, 0, 1])), SPEC, classes=1)
    assert "sigmoid, regression" in str(caught.value)


def test_labels_beyond_the_kept_samples_are_checked_too(tmp_path):
    y = _labels_500({499: 77})
    with pytest.raises(DataError, match="1 of 500 labels are 77"):
        load_dataset(_npz(tmp_path, y), SPEC, classes=10, max_samples=10)


def test_without_classes_only_sign_and_int64_are_checked(tmp_path):
    ds = load_dataset(_npz(tmp_path, np.array([0, 2**62])), SPEC)
    assert ds.y.tolist() == [0, 2**62]


@pytest.mark.parametrize("shape, classes", [((10,), 10), ((1, 10), 10), ((5, 4), 20),
                                            ((), 1), ((None, 10), None)])
def test_output_classes(shape, classes):
    assert output_classes(shape) == classes


def _class_folders(root: Path, names: list[str], per: int = 2) -> None:
    from PIL import Image

    for name in names:
        (root / name).mkdir(parents=True)
        for i in range(per):
            Image.new("L", (4, 4), 40 * i).save(root / name / f"{i}.png")


def test_more_class_folders_than_model_classes(tmp_path):
    _class_folders(tmp_path, [f"c{i:02d}" for i in range(12)])
    with pytest.raises(DataError, match=r"holds 12 class folders but the model's first output "
                       r"has 10 classes: folder\(s\) 'c10', 'c11' \(labels 10\.\.11\) hold 4 of "
                       r"24 images"):
        load_dataset(tmp_path, SPEC, role="evaluation", classes=10)
    assert load_dataset(tmp_path, SPEC, classes=12).y.max() == 11


def test_extra_empty_class_folders_carry_no_labels(tmp_path):
    _class_folders(tmp_path, ["a", "b"])
    (tmp_path / "zz_empty").mkdir()
    assert load_dataset(tmp_path, SPEC, classes=2).y.tolist() == [0, 1, 0, 1]


# --- non-finite values ----------------------------------------------------------------------------


def test_non_finite_values_name_the_samples(tmp_path):
    x = np.zeros((10, 4, 4, 1), np.float32)
    x[1, 0, 0, 0], x[4, 1, 1, 0], x[7, 2, 2, 0] = np.nan, np.inf, -np.inf
    np.savez(tmp_path / "x.npz", x=x)
    with pytest.raises(DataError, match=r"\(calibration\) x holds 1 NaN and 2 infinite "
                       r"value\(s\) in samples 1, 4 and 7 \(3 of 10\)\. Fix: remove or repair"):
        load_dataset(tmp_path / "x.npz", SPEC)


def test_many_non_finite_samples_are_listed_briefly(tmp_path):
    x = np.zeros((600, 4, 4, 1), np.float32)
    x[::2, 0, 0, 0] = np.nan  # crosses the 256-sample chunks
    np.savez(tmp_path / "x.npz", x=x)
    with pytest.raises(DataError, match=r"in samples 0, 2, 4, 6, 8, \.\.\. \(300 of 600\)"):
        load_dataset(tmp_path / "x.npz", SPEC)


def test_preprocessing_that_overflows_float32_is_refused(tmp_path):
    x = np.ones((3, 4, 4, 1), np.float32)
    x[2, 0, 0, 0] = 3e38
    np.savez(tmp_path / "x.npz", x=x)
    with pytest.raises(DataError, match=r"0 NaN and 1 infinite value\(s\) after x = \(x \* 10"
                       r".* in sample 2"):
        load_dataset(tmp_path / "x.npz", SPEC, Preprocess(scale=10.0))


# --- outliers -------------------------------------------------------------------------------------


def test_one_extreme_value_names_its_sample():
    x = np.random.default_rng(0).uniform(0, 1, (200, 8, 8, 1)).astype(np.float32)
    x[7, 3, 3, 0] = 3e38
    flagged, worst = data_check.outlier_samples(x)
    assert flagged.tolist() == [7]
    assert worst.startswith("sample 7 reaches 3e+38")


def test_the_threshold_is_the_factor_times_the_typical_peak():
    x = np.ones((50, 6), np.float32)  # every sample peaks at 1
    x[3, 2] = data_check.OUTLIER_FACTOR
    x[9, 4] = data_check.OUTLIER_FACTOR * 0.99
    assert data_check.outlier_samples(x)[0].tolist() == [3]


def test_a_sample_that_is_all_outlier_is_found():
    """A whole sample at 1e30 moves percentiles over all values; the median sample stays."""
    x = np.random.default_rng(1).normal(0, 1, (10, 16, 3)).astype(np.float32)
    x[4] = 1e30
    assert data_check.outlier_samples(x)[0].tolist() == [4]


def test_a_pixel_is_compared_with_the_whole_tensor():
    """MNIST's corner pixels are zero in almost every sample; the input has one int8 scale,
    so a corner pixel counts against the typical sample's peak (no division by zero, no flood
    of warnings)."""
    d = np.load(FIXTURES / "data" / "mnist_5k.npz")
    x = (d["x"][:500, ..., None] / 255.0).astype(np.float32)
    assert data_check.outlier_samples(x)[0].tolist() == []
    x[123, 0, 0, 0] = 5e3  # a corner pixel
    assert data_check.outlier_samples(x)[0].tolist() == [123]


def test_a_quiet_channel_beside_a_busy_one_is_not_an_outlier():
    """One int8 scale covers the whole input: a value ordinary for the tensor costs nothing,
    however rare it is in its own channel."""
    x = np.random.default_rng(2).uniform(0, 1, (100, 2)).astype(np.float32)
    x[:, 0] *= 1e-5  # a feature that is almost always near zero
    x[17, 0] = 1.0   # ... and once as large as the other feature
    assert data_check.outlier_samples(x)[0].tolist() == []
    x[17, 0] = 2e3   # beyond the tensor's typical peak: it takes the range from the rest
    assert data_check.outlier_samples(x)[0].tolist() == [17]


def test_zero_spread_sets_flag_nothing():
    x = np.zeros((10, 4), np.float32)
    x[3] = 3e38  # one non-zero sample among zeros: no typical magnitude to compare with
    assert data_check.outlier_samples(x)[0].tolist() == []
    assert data_check.outlier_samples(np.ones((1, 4), np.float32))[0].tolist() == []


@pytest.mark.parametrize("name", ["mnist_5k.npz", "digits.npz",
                                  "streaming_wakeword_calibration.npz"])
def test_real_data_sets_have_no_outliers(name):
    with np.load(FIXTURES / "data" / name) as d:
        x = d[[k for k in d.files if k != "y"][0]].astype(np.float32)
    assert data_check.outlier_samples(x)[0].tolist() == []


def test_outlier_warning_through_check(tmp_path):
    x = np.random.default_rng(0).uniform(0, 1, (300, 4, 4, 1)).astype(np.float32)
    for i in (5, 17, 42, 99, 150, 260):
        x[i, 1, 1, 0] = 1e9
    ds = load_dataset(_npz(tmp_path, np.zeros(300, np.int64), x), SPEC)
    warnings = data_check.check([("calibration", ds)])
    (warning,) = [w for w in warnings if "typical sample's magnitude" in w]
    assert warning.startswith(f"calibration data '{tmp_path / 'd.npz'}': samples 5, 17, 42, 99, "
                              "150, ... (6 of 300) are 1000x or more the typical sample's "
                              "magnitude (sample ")
    assert "remove those samples" in warning
    ev = data_check.check([("evaluation", ds)])
    assert any("check how those samples were written" in w for w in ev)


# --- the model's input ----------------------------------------------------------------------------


@pytest.mark.parametrize("shape, dtype, words", [
    ((65536, 65536, 3), "float32", "12884901888 elements per sample"),
    ((1024, 1024, 1024), "float32", "4 GiB or more"),  # 2^30 elements, 2^32 bytes
])
def test_an_absurd_model_input_is_refused_before_any_sample(shape, dtype, words):
    with pytest.raises(TensorSizeError, match=words) as caught:
        check_input_spec(InputSpec(shape, dtype, "img"), "m.keras")
    assert caught.value.exit_status == ExitStatus.TARGET_CONSTRAINT
    assert str(caught.value).startswith(f"model 'm.keras': input 'img' of shape {shape}")
    check_input_spec(InputSpec((224, 224, 3)), "m.keras")  # an ordinary input passes
