"""Every emulated core (Cortex-M4, M7, M33, M55, M85) on every MLPerf Tiny reference model in
../shared/fixtures: the firmware's outputs are byte-identical to the TFLM Python interpreter's,
and the device build's arena fits in what `edgeq embed` (and analyze's report) recommends for
that core, whose CMSIS-NN kernels (DSP or Helium) ask for their own scratch and persistent
buffers. Real parts only: arm-none-eabi-gcc, the TFLM tree edgeq ships, QEMU.

The first run on a machine prepares each core's TFLM library (minutes per core; `edgeq emulate
--prepare --target all` does it ahead of time, as .ci/run does); then each model builds in
seconds. Skips only where the toolchain is absent, never in CI (EDGEQ_REQUIRE_EMULATOR=1)."""

from __future__ import annotations

import pytest

from tests.conftest import FIXTURES, emulator_toolchain

pytestmark = pytest.mark.slow

CORES = ("cortex-m4", "cortex-m7", "cortex-m33", "cortex-m55", "cortex-m85")
MODELS = sorted((FIXTURES / "models" / "mlperf_tiny").glob("*_int8_reference.tflite"))


@pytest.fixture(scope="module", autouse=True)
def toolchain(monkeypatch_module):
    monkeypatch_module.delenv("EDGEQ_TFLM_TREE", raising=False)  # the tree edgeq ships
    return emulator_toolchain()


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


@pytest.fixture(scope="module")
def results():
    return {}


def test_the_fixtures_hold_the_mlperf_tiny_models():
    assert {m.name.split("_")[0] for m in MODELS} >= {"kws", "vww", "ic", "ad", "streaming"}


@pytest.mark.parametrize("core", CORES)
def test_mlperf_tiny_on_every_core_matches_and_fits_the_recommended_arena(core, results):
    from edgeq.commands.analyze import analyze
    from edgeq.emulator.cores import CORES as CORE_TABLE
    from edgeq.emulator.emulate import emulate
    from edgeq.outputs.embed import embed_model

    for model in MODELS:
        r = emulate(model, core, eval_samples=2)
        results[(core, model.name)] = r
        assert r.outputs_identical, (core, model.name, r.mismatch_ops)
        # the device's own need (TFLM's arena_used_bytes + 16 alignment) fits what edgeq says
        assert r.arena_fits, (core, model.name, r.arena_bytes + 16, r.arena_declared)
        assert r.arena_bytes > 0 and r.to_dict()["arena_margin"] >= 0
        declared = embed_model(model.read_bytes(), "g_model",
                               cmsis_nn=CORE_TABLE[core].cmsis_nn).arena_size
        assert declared == r.arena_declared
        assert analyze(model, core).memory.recommended_arena_bytes == declared


def test_cortex_m85_runs_the_helium_build_and_m33_its_own_board(results):
    """The M85 has no QEMU model: its firmware is the M55's (same flags, same library, same
    instructions), on mps3-an547; only the CPI and clock differ. The M33 runs on mps2-an505."""
    for model in MODELS:
        m55, m85 = results.get(("cortex-m55", model.name)), results.get(("cortex-m85", model.name))
        m33, m4 = results.get(("cortex-m33", model.name)), results.get(("cortex-m4", model.name))
        if None in (m55, m85, m33, m4):
            pytest.skip("needs the per-core test above to have run in this session")
        assert (m85.machine, m85.cpu) == ("mps3-an547", "cortex-m55")
        assert m85.instructions_per_inference == m55.instructions_per_inference
        assert m85.toolchain["firmware"] == m55.toolchain["firmware"]
        assert m85.cpi != m55.cpi and m85.cost_model_calibrated
        assert (m33.machine, m33.cpu) == ("mps2-an505", "cortex-m33")
        assert m33.toolchain["library"] != m4.toolchain["library"]  # Armv8-M build
        assert m33.cost_model_calibrated
