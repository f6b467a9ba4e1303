"""Which Ethos-U a Vela-compiled model was compiled for, read from its command stream.

edgeq.formats.tflite reads it for every ``ethos-u`` op (ModelInfo.npu_configs).

Each ``ethos-u`` custom op's first input is the driver payload Vela writes: the fourcc "COP1",
then a CONFIG driver action whose second word is the NPU's CONFIG register as Vela expects it
(ethosu/vela/driver_actions.py, build_config_word; field layout in
ethosu/vela/ethos_u55_regs/ethos_u55_regs.py, config_r): bits 0-3 log2 of the MACs per cycle,
bits 28-31 the product (0 Ethos-U55, 1 Ethos-U65; Regor writes 2 for the Ethos-U85, checked
against the installed Vela 5.2.0 for ethos-u85-256 and -1024). The Ethos-U driver compares
this word with the hardware before it runs the stream and refuses a mismatch ("NPU config
mismatch", ethos-u-core-driver, handle_optimizer_config), which is why Vela's PERFORMANCE.md
says that selecting the wrong accelerator makes "a run-time check in the driver" fail.
No TensorFlow here.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

_PRODUCTS = {0: "ethos-u55", 1: "ethos-u65", 2: "ethos-u85"}
_CONFIG_TAG = 0x01  # DACommands.Config


@dataclass(frozen=True)
class CompiledFor:
    product: str  # "ethos-u55", "ethos-u65", "ethos-u85" or "unknown product N"
    macs_per_cycle: int

    @property
    def accelerator(self) -> str:
        """Vela's --accelerator-config name, e.g. "ethos-u65-256"."""
        return f"{self.product}-{self.macs_per_cycle}"


def compiled_for(payload: bytes) -> CompiledFor | None:
    """The configuration in one ethos-u op's command stream payload, or None when the
    payload is not a COP1 stream with a CONFIG action where Vela puts it."""
    if len(payload) < 12 or payload[:4] != b"COP1":
        return None
    tag, config = struct.unpack_from("<II", payload, 4)
    if tag & 0xFF != _CONFIG_TAG:
        return None
    product = config >> 28
    return CompiledFor(_PRODUCTS.get(product, f"unknown product {product}"),
                       1 << (config & 0xF))
