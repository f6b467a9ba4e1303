"""Issue 22, item 2: every file option of every command is checked like `inspect` checks its
model. A FIFO, or a symbolic link to /dev/zero, given as the model, --data/--eval-data/
--train-data, --baseline, --labels, --target, --source, --tflm-tree or --report is refused with
exit 2 and one line naming the option (or the model) and the path, within seconds and little
memory (before: /dev/zero grew memory without bound, a FIFO blocked forever). Files too large
for what an option holds are refused from their size, before a byte is read. Each case runs
`python -m edgeq` in a fresh child measured with RUSAGE_CHILDREN (tests/measure.py)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.conftest import EXAMPLE, FIXTURES
from tests.measure import GiB, MiB, assert_refused, measured

MODEL = EXAMPLE / "digits_cnn.keras"
DATA = EXAMPLE / "digits_calibration.npz"
TFLITE = FIXTURES / "models" / "tflm" / "hello_world_int8.tflite"
PERSON = FIXTURES / "models" / "tflm" / "person_detect.tflite"  # 96x96x1: images fit it


@pytest.fixture(scope="module")
def place(tmp_path_factory) -> Path:
    """f.SUFFIX: FIFOs; z.SUFFIX: symbolic links to /dev/zero; pics/: an image folder holding
    a FIFO named like an image; sparse files of 1.5 GiB (labels.txt), 5 GiB (big.tflite) and
    100 MiB (big.json), which take no disk."""
    d = tmp_path_factory.mktemp("special")
    for suffix in ("tflite", "keras", "npz", "json", "txt", "toml", "tar.gz"):
        os.mkfifo(d / f"f.{suffix}")
        (d / f"z.{suffix}").symlink_to("/dev/zero")
    (d / "pics" / "c0").mkdir(parents=True)
    (d / "pics" / "c1").mkdir()
    (d / "pics" / "c0" / "a.txt").write_text("not an image")
    os.mkfifo(d / "pics" / "c1" / "x.png")
    for name, size in (("labels.txt", 3 * GiB // 2), ("big.tflite", 5 * GiB),
                       ("big.json", 100 * MiB)):
        with open(d / name, "wb") as fh:
            fh.truncate(size)
    return d


def _cases(d: Path) -> dict[str, tuple[list[str], list[str]]]:
    """name: (argv, texts the one error line must hold)."""
    out = str(d / "out")
    convert = ["convert", str(MODEL), "-t", "cortex-m4", "--out", out]
    return {
        "analyze: model -> /dev/zero": (
            ["analyze", f"{d}/z.tflite", "-t", "cortex-m4"],
            ["model '", "z.tflite'", "character device (through a symbolic link)"]),
        "analyze: model is a FIFO": (
            ["analyze", f"{d}/f.tflite", "-t", "cortex-m4"], ["f.tflite'", "FIFO"]),
        "analyze: --data is a FIFO": (
            ["analyze", str(MODEL), "-t", "cortex-m4", "--data", f"{d}/f.npz"],
            ["f.npz'", "FIFO", "--data"]),
        "analyze: --target -> /dev/zero": (
            ["analyze", str(TFLITE), "-t", f"{d}/z.toml"], ["target profile", "character device"]),
        "convert: model -> /dev/zero": (
            ["convert", f"{d}/z.keras", "-t", "cortex-m4", "-d", str(DATA), "--out", out],
            ["model '", "z.keras'", "character device"]),
        "convert: model is a FIFO": (
            ["convert", f"{d}/f.keras", "-t", "cortex-m4", "-d", str(DATA), "--out", out],
            ["f.keras'", "FIFO"]),
        "convert --method qat: model is a FIFO": (
            ["convert", f"{d}/f.keras", "-t", "cortex-m4", "-d", str(DATA), "--out", out,
             "--method", "qat", "--train-data", str(DATA)], ["f.keras'", "FIFO"]),
        "convert: --data is a FIFO": (
            [*convert, "-d", f"{d}/f.npz"], ["f.npz'", "FIFO", "--data"]),
        "convert: --eval-data -> /dev/zero": (
            [*convert, "-d", str(DATA), "--eval-data", f"{d}/z.npz"],
            ["z.npz'", "character device", "--eval-data"]),
        "convert: --train-data is a FIFO": (
            [*convert, "-d", str(DATA), "--method", "qat", "--train-data", f"{d}/f.npz"],
            ["f.npz'", "FIFO", "--train-data"]),
        "convert: --labels is a FIFO": (
            [*convert[:3], "android-arm64", *convert[4:], "-d", str(DATA),
             "--labels", f"{d}/f.txt"], ["--labels '", "f.txt'", "FIFO"]),
        "convert: --labels of 1.5 GiB (sparse)": (
            [*convert[:3], "android-arm64", *convert[4:], "-d", str(DATA),
             "--labels", f"{d}/labels.txt"], ["--labels '", "1.5 GiB, over the 16.0 MiB"]),
        "verify: a FIFO named like an image in --eval-data's folder": (
            ["verify", str(PERSON), "-t", "cortex-m4", "--eval-data", f"{d}/pics"],
            ["x.png'", "FIFO", "--eval-data"]),
        "inspect: --source is a FIFO": (
            ["inspect", str(TFLITE), "--source", f"{d}/f.tflite"], ["--source '", "FIFO"]),
        "embed: model -> /dev/zero": (
            ["embed", f"{d}/z.tflite", "--out", out], ["z.tflite'", "character device"]),
        "verify: model is a FIFO": (
            ["verify", f"{d}/f.tflite", "-t", "cortex-m4", "--eval-data", str(DATA)],
            ["f.tflite'", "FIFO"]),
        "verify: --baseline is a FIFO": (
            ["verify", str(TFLITE), "-t", "cortex-m4", "--eval-data", str(DATA),
             "--baseline", f"{d}/f.json"], ["--baseline '", "f.json'", "FIFO"]),
        "verify: --report is a FIFO": (
            ["verify", str(TFLITE), "-t", "cortex-m4", "--eval-data", str(DATA),
             "--report", f"{d}/f.json"], ["--report '", "f.json'", "FIFO"]),
        "emulate: --baseline -> /dev/zero": (
            ["emulate", str(TFLITE), "-t", "cortex-m4", "--baseline", f"{d}/z.json"],
            ["--baseline '", "z.json'", "character device"]),
        "emulate: --baseline is a FIFO": (
            ["emulate", str(TFLITE), "-t", "cortex-m4", "--baseline", f"{d}/f.json"],
            ["--baseline '", "FIFO"]),
        "emulate: --baseline of 100 MiB (sparse)": (
            ["emulate", str(TFLITE), "-t", "cortex-m4", "--baseline", f"{d}/big.json"],
            ["--baseline '", "100.0 MiB, over the 64.0 MiB"]),
        "emulate: --report -> /dev/zero": (
            ["emulate", str(TFLITE), "-t", "cortex-m4", "--report", f"{d}/z.json"],
            ["--report '", "character device"]),
        "analyze: a 5 GiB .tflite (sparse)": (
            ["analyze", f"{d}/big.tflite", "-t", "cortex-m4"],
            ["big.tflite'", "5.0 GiB, over the 4.0 GiB"]),
    }


CASES = list(_cases(Path("/")).keys())


@pytest.mark.parametrize("name", CASES)
def test_special_or_oversized_file_is_refused_with_one_line(place, name):
    argv, texts = _cases(place)[name]
    assert_refused(measured(*argv), 2, *texts, what=name)


@pytest.mark.skipif(shutil.which("arm-none-eabi-gcc") is None
                    or shutil.which("qemu-system-arm") is None,
                    reason="emulate looks for its toolchain before the tree")
@pytest.mark.parametrize("tree", ["f.tar.gz", "z.tar.gz"])
def test_tflm_tree_that_is_a_special_file_is_refused(place, tree):
    result = measured("emulate", str(TFLITE), "-t", "cortex-m4", "--tflm-tree", f"{place}/{tree}")
    assert_refused(result, 2, "--tflm-tree '", tree, what=f"--tflm-tree {tree}")


def test_regular_files_through_links_still_work(place, tmp_path):
    """A symbolic link to a regular file is judged by that file: it is read as before."""
    link = tmp_path / "model.tflite"
    link.symlink_to(TFLITE)
    result = measured("inspect", str(link), "--json")
    assert result["code"] == 0, result["err"][-2000:]
