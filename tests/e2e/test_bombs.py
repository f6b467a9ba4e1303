"""Issue 14, item 3: decompression and allocation bombs in .keras archives, HDF5 weights and .npz
data are refused by `edgeq convert` with exit 2 and one line naming the file, the member and
the limit, within 30 s and 1 GiB of peak memory (measured with `resource` around a fresh
process per case), before TensorFlow is imported."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import FIXTURES, ROOT
from tests.keras_hostile import (
    GiB,
    MiB,
    deflated,
    deflated_zeros,
    keras_members,
    replace_member,
    write_zip,
)

EXAMPLE = ROOT / "representative_data"
MODEL = EXAMPLE / "digits_cnn.keras"
DATA = EXAMPLE / "digits_calibration.npz"
PEAK_LIMIT = GiB
TIME_LIMIT = 30.0

# Runs the CLI as its own child and reports that child's peak RSS: RUSAGE_CHILDREN of this
# fresh wrapper covers the case's processes only, not anything the test process ran before.
_MEASURE = """
import json, resource, subprocess, sys, time
t0 = time.monotonic()
proc = subprocess.run(sys.argv[1:], capture_output=True, text=True, timeout=120)
print(json.dumps({"code": proc.returncode, "err": proc.stderr, "seconds": time.monotonic() - t0,
                  "peak_kib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))
"""


def _measured(*argv: str) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    out = subprocess.run([sys.executable, "-c", _MEASURE, sys.executable, "-m", "edgeq", *argv],
                         capture_output=True, text=True, timeout=180, env=env, check=True)
    return json.loads(out.stdout)


def _convert(tmp_path: Path, model: Path = MODEL, data: Path = DATA) -> dict:
    return _measured("convert", str(model), "--target", "cortex-m4", "--data", str(data),
                     "--out", str(tmp_path / "out"))


def _keras_with(path: Path, name: str, raw: bytes, fields: dict) -> Path:
    """The bundled example with member `name` replaced by `raw` under a header of `fields`."""
    return write_zip(path, replace_member(keras_members(MODEL), name, raw, fields))


def _h5_bytes(declared: int) -> bytes:
    """An HDF5 file of a few kilobytes with one float32 dataset declaring `declared` bytes:
    chunked and gzip-compressed, never written (a fill value is all it stores)."""
    import h5py

    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        f.create_dataset("layers/dense/vars/0", shape=(declared // 4,), dtype="f4",
                         chunks=(MiB // 4,), compression="gzip")
    return buf.getvalue()


def _npz_with(path: Path, raw: bytes, fields: dict) -> Path:
    return write_zip(path, [("x.npy", raw, fields)])


def _npy_header(shape: tuple[int, ...]) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f4", "fortran_order": False,
                                               "shape": shape})
    return buf.getvalue()


def _npy_bomb(n: int) -> tuple[bytes, int]:
    """A deflated .npy of n zero bytes of float32 samples shaped like the digits (8, 8, 1)."""
    header = _npy_header((n // 256, 8, 8, 1))
    stream = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = stream.compress(header) + stream.flush(zlib.Z_FULL_FLUSH)
    return head + deflated_zeros(n), len(header) + n


def _cases(out: Path) -> dict[str, tuple[Path, Path, str]]:
    """name: (model, data, what the error line must say); each file is built in milliseconds."""
    zeros = deflated_zeros(3 * GiB)  # 3 MiB of deflate stream
    h5_3g, h5_1g = _h5_bytes(3 * GiB), _h5_bytes(GiB)
    stored = zipfile.ZIP_STORED
    keras = {
        "config.json inflating to 3 GiB": (
            "config.json", zeros, {"size": 3 * GiB},
            "member 'config.json' inflates to 3.0 GiB, over the 16 MiB limit"),
        "config.json whose header declares 1 KiB": (
            "config.json", zeros, {"size": 1024},
            "more than deflate ever produces: the header is false"),
        "config.json whose header declares 8 MiB of 3 GiB": (
            "config.json", zeros, {"size": 8 * MiB},
            "member 'config.json' inflates past the 8 MiB its header declares"),
        "weights member inflating to 3 GiB": (
            "model.weights.h5", zeros, {"size": 3 * GiB},
            "member 'model.weights.h5' inflates to 3.0 GiB, over the 2.0 GiB limit"),
        "weights member whose header declares 200 MiB of 3 GiB": (
            "model.weights.h5", zeros, {"size": 200 * MiB},
            "member 'model.weights.h5' inflates past the 200 MiB its header declares"),
        "weights member at 1000:1": (
            "model.weights.h5", deflated_zeros(GiB), {"size": GiB},
            "over 100:1): a decompression bomb"),
        "HDF5 weights declaring 3 GiB in a few KiB": (
            "model.weights.h5", h5_3g, {"data": h5_3g, "method": stored},
            "the datasets in model.weights.h5 declare 3.0 GiB of weights, over the 2.0 GiB "
            "limit"),
        "HDF5 weights declaring 1 GiB in a few KiB": (
            "model.weights.h5", h5_1g, {"data": h5_1g, "method": stored},
            "a compressed or sparse dataset bomb"),
    }
    cases = {}
    for i, (name, (member, raw, fields, expected)) in enumerate(keras.items()):
        cases[name] = (_keras_with(out / f"bomb{i}.keras", member, raw, fields), DATA, expected)
    raw, size = _npy_bomb(3 * GiB)
    cases["npz member whose header declares 1 KiB"] = (
        MODEL, _npz_with(out / "lying.npz", raw, {"size": 1024}),
        "more than deflate ever produces: the header is false")
    cases["npz member honestly inflating to 3 GiB"] = (
        MODEL, _npz_with(out / "honest.npz", raw, {"size": size}),
        "over 1000:1): a decompression bomb")
    return cases


def _legacy_h5_bomb(tmp_path: Path) -> Path:
    import h5py

    path = tmp_path / "bomb.h5"
    shutil.copyfile(FIXTURES / "models" / "mlperf_tiny" / "ic_resnet8.h5", path)
    with h5py.File(path, "a") as f:
        f.create_dataset("model_weights/dense/dense/kernel_extra:0", shape=(3 * GiB // 4,),
                         dtype="f4", chunks=(MiB // 4,), compression="gzip")
    return path


CASE_NAMES = ["config.json inflating to 3 GiB", "config.json whose header declares 1 KiB",
              "config.json whose header declares 8 MiB of 3 GiB",
              "weights member inflating to 3 GiB",
              "weights member whose header declares 200 MiB of 3 GiB",
              "weights member at 1000:1", "HDF5 weights declaring 3 GiB in a few KiB",
              "HDF5 weights declaring 1 GiB in a few KiB",
              "npz member whose header declares 1 KiB", "npz member honestly inflating to 3 GiB"]


@pytest.fixture(scope="module")
def bombs(tmp_path_factory) -> dict[str, tuple[Path, Path, str]]:
    return _cases(tmp_path_factory.mktemp("bombs"))


def _assert_refused(result: dict, path: Path, expected: str, what: str) -> None:
    lines = [ln for ln in result["err"].splitlines() if ln.startswith("edgeq: error:")]
    assert result["code"] == 2, f"{what}: exit {result['code']}\n{result['err'][-3000:]}"
    assert len(lines) == 1 and "Traceback" not in result["err"], result["err"][-3000:]
    assert str(path) in lines[0] and expected in lines[0], lines[0]
    peak = result["peak_kib"] * 1024
    print(f"\n{what}: {result['seconds']:.1f} s, peak {peak / MiB:.0f} MiB")
    assert result["seconds"] < TIME_LIMIT, f"{what} took {result['seconds']:.1f} s"
    assert peak < PEAK_LIMIT, f"{what} peaked at {peak / MiB:.0f} MiB"


@pytest.mark.parametrize("name", CASE_NAMES)
def test_bomb_is_refused_quickly_in_little_memory(bombs, tmp_path, name):
    model, data, expected = bombs[name]
    result = _convert(tmp_path, model, data)
    _assert_refused(result, data if model == MODEL else model, expected, name)


def test_legacy_h5_with_a_sparse_dataset_bomb(tmp_path):
    model = _legacy_h5_bomb(tmp_path)
    assert model.stat().st_size < 2 * MiB
    result = _convert(tmp_path, model)
    _assert_refused(result, model, "the datasets in the file declare 3.0 GiB of weights, over "
                    "the 2.0 GiB limit", "legacy .h5 with a 3 GiB sparse dataset")


@pytest.mark.parametrize("how", ["external link", "external dataset"])
def test_weights_stored_outside_the_file_are_refused(tmp_path, how):
    """HDF5 can keep a dataset's bytes in another file; Keras would read whatever it names."""
    import h5py

    from edgeq.errors import ModelFileError
    from edgeq.pipeline.load import check_keras_file

    path = tmp_path / "outside.h5"
    shutil.copyfile(FIXTURES / "models" / "mlperf_tiny" / "ic_resnet8.h5", path)
    with h5py.File(path, "a") as f:
        if how == "external link":
            f["model_weights/dense/extra"] = h5py.ExternalLink("/etc/passwd", "/")
        else:
            f.create_dataset("model_weights/dense/extra", shape=(64,), dtype="u1",
                             external=[("/dev/zero", 0, 64)])
    with pytest.raises(ModelFileError, match="edgeq reads weights stored in the file itself"):
        check_keras_file(path)


def test_the_bombs_are_real():
    """What the archive headers say is what the streams hold (the 3 GiB is really there)."""
    stream = zlib.decompressobj(-15)
    data, total = deflated_zeros(3 * GiB), 0
    while data:
        total += len(stream.decompress(data, 64 * MiB))
        data = stream.unconsumed_tail
        if total >= 256 * MiB:
            break
    assert total >= 256 * MiB and len(deflated_zeros(3 * GiB)) < 4 * MiB


def test_sparse_data_that_compresses_700_to_1_is_not_a_bomb(tmp_path):
    """Binary masks as float32 (np.savez_compressed) compress about 700:1; data is not refused
    for compressing well, only past what zeros reach."""
    from edgeq.data import InputSpec, load_dataset

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:256, :256]
    x = np.zeros((300, 256, 256, 1), np.float32)
    for i in range(len(x)):
        cy, cx = rng.integers(40, 216, 2)
        x[i, ..., 0] = (yy - cy) ** 2 + (xx - cx) ** 2 < int(rng.integers(5, 30)) ** 2
    path = tmp_path / "masks.npz"
    np.savez_compressed(path, x=x)
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("x.npy")
    assert info.file_size > 64 * MiB and info.file_size > 500 * info.compress_size
    ds = load_dataset(path, InputSpec((256, 256, 1)), max_samples=50)
    assert ds.x.shape == (50, 256, 256, 1) and float(ds.x.max()) == 1.0


def test_an_honest_model_archive_still_converts_its_checks(tmp_path):
    """The bundled example rewritten deflated (as `zip -9` would) passes every check."""
    from edgeq.pipeline.load import check_keras_file

    path = write_zip(tmp_path / "rezipped.keras", keras_members(MODEL))
    check_keras_file(path)
    with zipfile.ZipFile(path) as zf:
        assert zf.testzip() is None


def test_a_huge_npy_header_length_is_refused_before_it_is_read():
    from edgeq.data import arrays

    class Stream(io.BytesIO):
        def read(self, n=-1):
            assert n is None or n < 1 << 20, f"asked for {n} bytes"
            return super().read(n)

    head = b"\x93NUMPY\x02\x00" + (3 * GiB).to_bytes(4, "little")
    with pytest.raises(ValueError, match="npy header of 3221225472 bytes"):
        arrays.read_header(Stream(head + b" " * 100))


def test_deflated_npz_data_within_the_ratio_still_loads(tmp_path):
    from edgeq.data import InputSpec, load_dataset

    x = np.random.default_rng(0).integers(0, 16, (50, 8, 8, 1)).astype(np.uint8)
    np.savez_compressed(tmp_path / "d.npz", x=x)
    ds = load_dataset(tmp_path / "d.npz", InputSpec(shape=(8, 8, 1)))
    assert ds.n == 50 and float(ds.x.max()) == float(x.max())


def test_member_sizes_are_counted_not_trusted(tmp_path):
    """archive.inflate stops at the declared size when a forged header passes the header
    checks (2 MiB declared, 64 MiB in the stream)."""
    from edgeq.formats.archive import ArchiveError, check_header, inflate

    path = write_zip(tmp_path / "m.zip", [("m", deflated_zeros(64 * MiB), {"size": 2 * MiB})])
    with zipfile.ZipFile(path) as zf, path.open("rb") as fh:
        info = zf.getinfo("m")
        check_header(info)
        with pytest.raises(ArchiveError, match="inflates past the 2 MiB its header declares"):
            inflate(fh, info)


def test_a_deflated_member_is_inflated_in_bounded_steps(tmp_path):
    from edgeq.formats import archive

    seen: list[int] = []
    path = write_zip(tmp_path / "m.zip", [("m", deflated(b"\0" * (5 * MiB)),
                                           {"data": b"\0" * (5 * MiB)})])
    with zipfile.ZipFile(path) as zf, path.open("rb") as fh:
        assert archive.inflate(fh, zf.getinfo("m"), lambda d: seen.append(len(d))) == 5 * MiB
    assert max(seen) <= MiB
