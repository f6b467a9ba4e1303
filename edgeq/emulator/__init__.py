"""The device emulator: edgeq's TFLite Micro firmware (CMSIS-NN kernels) for a Cortex-M,
cross-compiled with arm-none-eabi-gcc and run on QEMU, checked byte for byte against the TFLM
Python interpreter, with executed-instruction counts and a cycle estimate.

Modules: cores (the emulated cores and their flags), toolchain (tools, TFLM tree, cache),
build (firmware build + object cache), plugin (QEMU instruction-count plugin), qemu (the run and
its semihosting I/O protocol), costmodel (instructions -> cycles), emulate (the whole stage).
Heavy modules load on use: `from edgeq.emulator.emulate import emulate`.
"""
