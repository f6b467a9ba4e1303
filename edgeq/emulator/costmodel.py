"""The cycle estimate: executed instructions (counted exactly on QEMU) times a per-core average
cycles-per-instruction (CPI) fitted to published measurements. An ESTIMATE: QEMU models no
pipeline, caches, flash wait states or bus contention, so one CPI per core stands for all of
them, and it fits the published boards' memory systems, not yours.

Calibration (tools/bench_emulator.py reproduces it and reports the error on the other models):

* Cortex-M4: fitted on ONE model, MLPerf Tiny KWS (DS-CNN, kws_ref_model.tflite). Published:
  99.81 ms per inference on a NUCLEO-L4R5ZI (Cortex-M4F @ 120 MHz) with microTVM + CMSIS-NN,
  MLPerf Tiny v1.0 closed division, mlcommons/tiny_results_v1.0
  closed/OctoML/results/microtvm_cmsis_nn/NUCLEO_L4R5ZI/kws/performance/results.txt
  (design/DEVICE_LATENCY.md section 2.2): 99.81 ms x 120 MHz = 11.977 M cycles. This build
  (TFLM @ 90b983c2 + CMSIS-NN @ 4ab83cc3, arm-none-eabi-gcc 12.2, -O2 kernels) executes
  7.698 M instructions per KWS inference: CPI = 11.977 / 7.698 = 1.556. It is the closest
  published CMSIS-NN run on that board (the same CMSIS-NN kernels do the convolutions and
  fully connected layers; TFLM's v0.5 reference submission at 181.9 ms used TFLM 2.3.1 with
  kernels from 2020).
* Cortex-M7: no MLPerf Tiny TFLM/CMSIS-NN run on a Cortex-M7 is published. MIT's TinyEngine
  README measures CMSIS-NN on an STM32H743 at 3.8-4.8 cycles per MAC (mean 4.24 over eight
  MCUNet models, assuming 480 MHz; DEVICE_LATENCY.md section 4.1), the same as CMSIS-NN on the
  Cortex-M4F above (3.7-4.8, mean 4.25; section 3). So the M7 uses the M4's CPI times 4.24/4.25:
  uncalibrated against any model, expect a larger error than on the M4.
* Cortex-M55: no CPU-only published figure (DEVICE_LATENCY.md section 7): the M4's CPI, stated
  as uncalibrated.
* Cortex-M33: fitted on KWS only. Published: 76.09 ms per inference on an nRF5340 DK
  (application core, Cortex-M33 @ 128 MHz) with microTVM + CMSIS-NN, MLPerf Tiny v1.0 closed,
  mlcommons/tiny_results_v1.0 closed/OctoML/results/microtvm_cmsis_nn/NRF5340-DK/ (KWS 76.09,
  VWW 232.02, IC 316.16, AD 6.266 ms): 76.09 ms x 128 MHz = 9.740 M cycles over the KWS
  instructions this build executes on the M33 (mps2-an505). The other three are out of sample
  (tools/bench_emulator.py --core cortex-m33).
* Cortex-M85: fitted on KWS only. Published: 3.465 ms per inference on a Renesas EK-RA8D1
  (Cortex-M85 @ 480 MHz, Helium) with TFLM + CMSIS-NN, MLPerf Tiny v1.2 closed,
  mlcommons/tiny_results_v1.2 closed/Renesas/results/EK-RA8D1/ (KWS 3.465, VWW 13.39,
  IC 8.478, AD 0.531 ms): 3.465 ms x 480 MHz = 1.663 M cycles over the KWS instructions of the
  Helium build (the M55's instructions: QEMU has no M85; mps3-an547). A CPI below 1 is the
  M85's dual issue and Helium beats overlapping; it also folds in that board's memory system:
  32 KiB I- and D-caches and TCM, with the model in 2 MiB on-chip flash behind the flash cache.
  On a board whose model or arena sits in slower external memory, or with caches off, expect
  a longer time than estimated.

One CPI per core, never a per-model factor: the same CPI applies to every model (and will be
checked against other boards with these cores).
"""

from __future__ import annotations

from dataclasses import dataclass

KWS_PUBLISHED_MS = 99.81
KWS_PUBLISHED_HZ = 120_000_000
KWS_INSTRUCTIONS = 7_698_000  # per inference, this build, cortex-m4 (tools/bench_emulator.py)
_CPI_M4 = round(KWS_PUBLISHED_MS / 1000 * KWS_PUBLISHED_HZ / KWS_INSTRUCTIONS, 3)
# Cortex-M33, nRF5340 DK (OctoML, MLPerf Tiny v1.0): KWS instructions counted on mps2-an505.
M33_KWS_PUBLISHED_MS, M33_HZ = 76.09, 128_000_000
M33_KWS_INSTRUCTIONS = 7_681_798  # per inference, this build (bench_emulator.py)
# Cortex-M85, EK-RA8D1 (Renesas, MLPerf Tiny v1.2): KWS instructions of the Helium build.
M85_KWS_PUBLISHED_MS, M85_HZ = 3.465, 480_000_000
M85_KWS_INSTRUCTIONS = 1_815_341  # per inference, this build (bench_emulator.py)


def _cpi(ms: float, hz: int, instructions: int) -> float:
    return round(ms / 1000 * hz / instructions, 3) if instructions else _CPI_M4


_CPI_M33 = _cpi(M33_KWS_PUBLISHED_MS, M33_HZ, M33_KWS_INSTRUCTIONS)
_CPI_M85 = _cpi(M85_KWS_PUBLISHED_MS, M85_HZ, M85_KWS_INSTRUCTIONS)


@dataclass(frozen=True)
class CostModel:
    core: str
    cpi: float  # average cycles per executed instruction
    calibrated: bool  # fitted to a published figure for this core
    basis: str  # one line: where the CPI comes from

    def cycles(self, instructions: float) -> int:
        return int(round(instructions * self.cpi))

    def ms(self, instructions: float, clock_hz: int) -> float:
        return instructions * self.cpi / clock_hz * 1000.0


_BASIS_M4 = (f"CPI {_CPI_M4} fitted on MLPerf Tiny KWS: 99.81 ms on NUCLEO-L4R5ZI (Cortex-M4F "
             "120 MHz, microTVM + CMSIS-NN, MLPerf Tiny v1.0 OctoML) / "
             f"{KWS_INSTRUCTIONS / 1e6:.3f} M instructions counted here")
MODELS: dict[str, CostModel] = {
    "cortex-m4": CostModel("cortex-m4", _CPI_M4, True, _BASIS_M4),
    "cortex-m7": CostModel(
        "cortex-m7", round(_CPI_M4 * 4.24 / 4.25, 3), False,
        "uncalibrated: the Cortex-M4 CPI scaled by CMSIS-NN's published cycles/MAC on an "
        "STM32H743 (TinyEngine README, 4.24) over the Cortex-M4F's (MLPerf Tiny, 4.25)"),
    "cortex-m55": CostModel(
        "cortex-m55", _CPI_M4, False,
        "uncalibrated: no published CPU-only Cortex-M55 figure; the Cortex-M4 CPI"),
    "cortex-m33": CostModel(
        "cortex-m33", _CPI_M33, True,
        f"CPI {_CPI_M33} fitted on MLPerf Tiny KWS: 76.09 ms on nRF5340 DK (Cortex-M33 128 MHz, "
        "microTVM + CMSIS-NN, MLPerf Tiny v1.0 OctoML) / "
        f"{M33_KWS_INSTRUCTIONS / 1e6:.3f} M instructions counted here"),
    "cortex-m85": CostModel(
        "cortex-m85", _CPI_M85, True,
        f"CPI {_CPI_M85} fitted on MLPerf Tiny KWS: 3.465 ms on EK-RA8D1 (Cortex-M85 480 MHz, "
        "TFLM + CMSIS-NN with Helium, MLPerf Tiny v1.2 Renesas; includes that board's caches "
        f"and TCM) / {M85_KWS_INSTRUCTIONS / 1e6:.3f} M instructions of the Helium build, "
        "counted on QEMU's Cortex-M55 (QEMU has no M85)"),
}


def cost_model(core: str) -> CostModel:
    return MODELS[core]
