"""Pure parts of the emulator: the instruction-count record parser and the cost model."""

from __future__ import annotations

import pytest

from edgeq.emulator.costmodel import MODELS, cost_model
from edgeq.emulator.qemu import _parse_counts
from edgeq.errors import ConversionError


def test_counts_per_invoke_and_per_op():
    text = "\n".join(["0 100", "2 110", "3 150", "4 151", "5 171", "1 180",
                      "0 1000", "2 1010", "3 1040", "4 1041", "5 1071", "1 1080", "total 2000"])
    invoke, ops, total = _parse_counts(text, 2)
    assert invoke.tolist() == [80, 80]
    assert ops.tolist() == [[40, 20], [30, 30]]
    assert total == 2000


def test_counts_must_cover_every_sample():
    with pytest.raises(ConversionError, match="1 Invoke"):
        _parse_counts("0 1\n1 5\ntotal 9\n", 2)


def test_cost_model_is_linear_and_documented():
    for name, model in MODELS.items():
        assert model.cpi > 0 and model.basis
        assert model.cycles(2_000_000) == round(2_000_000 * model.cpi)
        assert model.ms(1_000_000, 100_000_000) == pytest.approx(10 * model.cpi)
    assert cost_model("cortex-m4").calibrated


def test_tflm_tree_archive_is_unpacked_bounded(tmp_path, monkeypatch):
    """A .tar.gz given as --tflm-tree that unpacks past the limit is refused as it streams,
    and nothing of it is left in the cache."""
    import io
    import tarfile

    from edgeq.emulator import toolchain
    from edgeq.errors import InputError

    archive = tmp_path / "tree.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for i in range(3):
            info = tarfile.TarInfo(f"tflm_tree/big{i}.h")
            info.size = 4096
            tar.addfile(info, io.BytesIO(bytes(4096)))
    monkeypatch.setenv("EDGEQ_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(toolchain, "TREE_MAX_BYTES", 10_000)
    with pytest.raises(InputError, match="cannot unpack: it unpacks to more than"):
        toolchain.resolve_tree(str(archive))
    trees = tmp_path / "cache" / "emulator" / "trees"
    assert not trees.exists() or not any(trees.iterdir())
