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
"""

from __future__ import annotations

from dataclasses import dataclass

KWS_PUBLISHED_MS = 99.81
KWS_PUBLISHED_HZ = 120_000_000
KWS_INSTRUCTIONS = 7_698_000  # per inference, this build, cortex-m4 (tools/bench_emulator.py)
_CPI_M4 = round(KWS_PUBLISHED_MS / 1000 * KWS_PUBLISHED_HZ / KWS_INSTRUCTIONS, 3)


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
}


def cost_model(core: str) -> CostModel:
    return MODELS[core]
