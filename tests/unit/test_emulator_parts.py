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


# --- the toolchain set, named the same everywhere ------------------------------------------------

def test_readme_ci_and_the_check_name_the_same_apt_packages():
    """The complete Debian set edgeq's check names is what README.md tells users to install and
    what .ci/run installs (the README's old line lacked libstdc++-arm-none-eabi-newlib)."""
    import re

    from edgeq.emulator.toolchain import APT_PACKAGES
    from tests.conftest import ROOT

    readme = (ROOT / "README.md").read_text()
    lines = re.findall(r"apt-get install -y ([a-z0-9+.\- ]*libnewlib-arm-none-eabi[a-z0-9+.\- ]*)",
                       readme)
    assert lines, "README.md has no apt-get line for the emulator"
    for line in lines:
        assert set(line.split()) == set(APT_PACKAGES), line
    ci = (ROOT / ".ci" / "run").read_text()
    listed = re.search(r"emulator_pkgs=\(([^)]*)\)", ci).group(1).split()
    assert set(listed) == set(APT_PACKAGES)
    assert "EDGEQ_REQUIRE_EMULATOR=1" in ci


# --- the prepared library ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tree_root(tmp_path_factory):
    import tarfile

    from edgeq.emulator.toolchain import bundled_tree

    dest = tmp_path_factory.mktemp("tree")
    with tarfile.open(bundled_tree()) as tar:
        tar.extractall(dest, filter="data")
    return dest / "tflm_tree"


def test_library_has_every_kernel_once(tree_root):
    """Every kernel source is in the library, CMSIS-NN's in place of the reference kernel of the
    same name (both define the same Register_X), and no two objects share an archive member."""
    from edgeq.emulator.library import library_sources, member_name, source_of_member

    rels = library_sources(tree_root)
    kernels = tree_root / "tensorflow/lite/micro/kernels"
    optimized = sorted(p.name for p in (kernels / "cmsis_nn").glob("*.cc"))
    assert "conv.cc" in optimized and "fully_connected.cc" in optimized
    for name in optimized:
        assert f"tensorflow/lite/micro/kernels/cmsis_nn/{name}" in rels
        assert f"tensorflow/lite/micro/kernels/{name}" not in rels
    reference_only = [p.name for p in kernels.glob("*.cc")
                      if p.name not in optimized and not p.name.endswith("_test.cc")
                      and p.name != "kernel_runner.cc"]
    assert len(reference_only) > 50
    for name in reference_only:
        assert f"tensorflow/lite/micro/kernels/{name}" in rels
    assert sum(r.startswith("third_party/cmsis_nn/Source/") for r in rels) > 100
    assert not any(r.endswith("_test.cc") for r in rels)
    members = [member_name(r) for r in rels]
    assert len(set(members)) == len(rels)
    assert [source_of_member(m) for m in members] == rels


# --- the arena CMSIS-NN's kernels add -------------------------------------------------------------

MLPERF = ("kws_dscnn_int8_reference.tflite", "vww_mobilenet_96_int8_reference.tflite",
          "ic_resnet8_int8_reference.tflite", "ad_autoencoder_int8_reference.tflite")


@pytest.mark.parametrize("file", MLPERF)
def test_kernel_buffers_follow_the_cmsis_nn_formulas(file):
    """Scratch: the largest op's requests as the arena planner models them, within the
    documented upper bound (im2col / depthwise buffers recomputed from the shapes); persistent:
    Helium's kernel sums, 4 B per output channel of every FC layer (CMSIS-NN @ 4ab83cc3)."""
    from edgeq.formats.cmsis_nn_buffers import kernel_buffers
    from edgeq.formats.tflite import read_model
    from edgeq.pipeline.arena_scratch import CMSIS_DSP, CMSIS_MVE, scratch_requests
    from tests.conftest import FIXTURES

    info = read_model((FIXTURES / "models" / "mlperf_tiny" / file).read_bytes())
    dsp, mve = kernel_buffers(info, "dsp"), kernel_buffers(info, "mve")
    assert kernel_buffers(info, None).total == max(dsp.total, mve.total)
    up = lambda n: -(-n // 16) * 16  # noqa: E731
    bound_dsp = bound_mve = fc_out = 0
    for op in info.ops:
        shapes = [info.tensors[i].shape for i in op.inputs if i >= 0]
        if op.op == "CONV_2D":
            cols = shapes[1][1] * shapes[1][2] * shapes[1][3]
            bound_dsp = max(bound_dsp, 4 * -(-cols // 4) * 4)
            bound_mve = max(bound_mve, 4 * -(-cols // 16) * 16)
        elif op.op == "DEPTHWISE_CONV_2D" and shapes[0][3] == shapes[1][3]:
            bound_dsp = max(bound_dsp, 2 * shapes[0][3] * shapes[1][1] * shapes[1][2])
            bound_mve = max(bound_mve, 496 * shapes[1][1] * shapes[1][2])
        elif op.op == "AVERAGE_POOL_2D":
            bound_dsp = max(bound_dsp, 4 * shapes[0][3])
        elif op.op == "FULLY_CONNECTED":
            fc_out += up(4 * shapes[1][0])  # Helium kernel sums, one per FC op
    for got, kernels, bound in ((dsp, CMSIS_DSP, bound_dsp), (mve, CMSIS_MVE, bound_mve)):
        exact = max(sum(up(r) for r in scratch_requests(info, op, kernels)) for op in info.ops)
        assert got.scratch == exact <= up(bound)
    assert dsp.persistent == 0 and mve.persistent == fc_out


def test_every_core_has_a_cost_model_and_a_cmsis_nn_path():
    from edgeq.emulator.cores import CORES

    assert set(CORES) == set(MODELS)
    assert {c.cmsis_nn for c in CORES.values()} == {"dsp", "mve"}
    assert CORES["cortex-m85"].flags == CORES["cortex-m55"].flags  # one Helium build
    for name in ("cortex-m4", "cortex-m33", "cortex-m85"):
        assert cost_model(name).calibrated
    for name in ("cortex-m7", "cortex-m55"):
        assert not cost_model(name).calibrated and "uncalibrated" in cost_model(name).basis
