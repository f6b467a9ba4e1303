"""The emulated Cortex-M cores: compiler flags, the QEMU machine that runs each, and where the
firmware is linked. No I/O here; `edgeq.emulator.build` and `edgeq.emulator.qemu` use these."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Core:
    name: str  # the value of a profile's [emulator] core
    machine: str  # qemu-system-arm -machine
    cpu: str  # qemu-system-arm -cpu
    flags: tuple[str, ...]  # arm-none-eabi-gcc code-generation flags
    multilib: str  # what CMSIS-NN sees, for the report
    linker_script: str  # in edgeq/emulator/firmware/
    cmsis_nn: str = "dsp"  # CMSIS-NN's code path: "dsp" (ARM_MATH_DSP) or "mve" (Helium)


CORES: dict[str, Core] = {
    # Cortex-M4F: DSP extension (SMLAD dual 16-bit MACs, used by CMSIS-NN) and single-precision
    # FPU. QEMU's MPS2 AN386 FPGA image is a Cortex-M4 board.
    "cortex-m4": Core(
        "cortex-m4", "mps2-an386", "cortex-m4",
        ("-mcpu=cortex-m4", "-mthumb", "-mfpu=fpv4-sp-d16", "-mfloat-abi=hard"),
        "armv7e-m+fp (DSP)", "mps2.ld",
    ),
    # Cortex-M7: same DSP instructions as the M4, dual-issue pipeline, double-precision FPU.
    "cortex-m7": Core(
        "cortex-m7", "mps2-an500", "cortex-m7",
        ("-mcpu=cortex-m7", "-mthumb", "-mfpu=fpv5-d16", "-mfloat-abi=hard"),
        "armv7e-m+fp.dp (DSP)", "mps2.ld",
    ),
    # Cortex-M33 (Armv8-M Mainline, DSP extension and single-precision FPU: nRF5340, STM32U5/L5,
    # RA6M4): CMSIS-NN takes its DSP code paths, as on the M4. QEMU's mps2-an505 is the Arm
    # IoT Kit (SSE-200 class) FPGA image with a Cortex-M33; it boots in the Secure state, so the
    # firmware lives in the Secure aliases of its SRAMs (mps2tz.ld).
    "cortex-m33": Core(
        "cortex-m33", "mps2-an505", "cortex-m33",
        ("-mcpu=cortex-m33", "-mthumb", "-mfpu=fpv5-sp-d16", "-mfloat-abi=hard"),
        "armv8-m.main+dsp+fp (DSP)", "mps2tz.ld",
    ),
    # Cortex-M55 (Corstone-300): Helium/MVE; CMSIS-NN takes its MVE code paths with hard float.
    "cortex-m55": Core(
        "cortex-m55", "mps3-an547", "cortex-m55",
        ("-mcpu=cortex-m55", "-mthumb", "-mfloat-abi=hard"),
        "armv8.1-m.main+mve.fp (Helium)", "mps3.ld", "mve",
    ),
    # Cortex-M85 (Armv8.1-M with Helium, as the M55, plus a wider dual-issue pipeline and
    # PACBTI). QEMU has no Cortex-M85 and arm-none-eabi-gcc 12 no -mcpu=cortex-m85: its
    # instruction set for CMSIS-NN is the M55's (Armv8.1-M Mainline + MVE), so the same Helium
    # build runs on mps3-an547's Cortex-M55; only the cost model (costmodel.py) differs.
    "cortex-m85": Core(
        "cortex-m85", "mps3-an547", "cortex-m55",
        ("-mcpu=cortex-m55", "-mthumb", "-mfloat-abi=hard"),
        "armv8.1-m.main+mve.fp (Helium; built and run as a Cortex-M55)", "mps3.ld", "mve",
    ),
}

# TFLM's own Makefile (tensorflow/lite/micro/tools/make/Makefile): the framework at -Os, kernels
# and third-party kernels (CMSIS-NN) at -O2, and these definitions for a CMSIS-NN build.
DEFINES = (
    "-DTF_LITE_STATIC_MEMORY", "-DTF_LITE_DISABLE_X86_NEON", "-DCMSIS_NN",
    "-DKERNELS_OPTIMIZED_FOR_SPEED",
)
COMMON = ("-ffunction-sections", "-fdata-sections", "-fmessage-length=0", "-fno-unwind-tables",
          "-g0", "-w")
CXX = ("-std=c++17", "-fno-rtti", "-fno-exceptions", "-fno-threadsafe-statics",
       "-fno-use-cxa-atexit")
C = ("-std=c11",)
CORE_OPT = "-Os"
KERNEL_OPT = "-O2"
