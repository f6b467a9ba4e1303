"""Precision recipes as data, with one name decoder.

A recipe name says what is quantized and how, in the vocabulary of Google's ai-edge-quantizer:

  - 'static_' / 'dynamic_': activation ranges fixed ahead of time from calibration data
    (static), or computed at run time from each input (dynamic range, float activations).
  - 'wi[N]': integer weights of N bits (wi8, wi4); 'wfp16': float16 weights.
  - '_block[K]': blockwise weights, one scale per K values inside an output channel
    (sub-channel granularity); without it, one scale per output channel.
  - 'ai[N]': integer activations of N bits (ai8, ai16); 'afp32': activations stay float32.

Short names: 'int8' = static_wi8_ai8 (full integer, what MCUs, the Edge TPU and NPUs run),
'a16w8' = static_wi8_ai16 (16x8), 'float16' = wfp16_afp32, and the weight-only recipes
'dynamic_wi8_afp32', 'wi4_afp32', 'wi4_block32_afp32'.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, replace

from edgeq.errors import UsageError

ALIASES = {
    "int8": "static_wi8_ai8",
    "a16w8": "static_wi8_ai16",
    "float16": "wfp16_afp32",
}
# The recipes edgeq can run, in the order reports list them.
KNOWN = ("int8", "a16w8", "dynamic_wi8_afp32", "float16", "wi4_afp32", "wi4_block32_afp32")

_PATTERN = re.compile(
    r"^(?:(?P<mode>static|dynamic)_)?"
    r"w(?:i(?P<wbits>\d+)|(?P<wfp>fp16|fp32))"
    r"(?:_block(?P<block>\d+))?"
    r"_a(?:i(?P<abits>\d+)|(?P<afp>fp32))$"
)


@dataclass(frozen=True)
class Recipe:
    name: str  # as the user wrote it (short or long)
    canonical: str  # the long form
    weights: str  # int8 | int4 | float16
    # per-channel | blockwise | none (float weights); on a target (`on_target`) also
    # per-tensor or "per-channel conv, per-tensor dense"
    granularity: str
    block_size: int | None
    activations: str  # int8 | int16 | float32
    static: bool  # activation ranges from calibration data (needs --data)
    engine: str  # "tflite-converter" | "ai-edge-quantizer"

    @property
    def full_integer(self) -> bool:
        return self.activations in ("int8", "int16")

    def to_dict(self) -> dict:
        return asdict(self)

    def on_target(self, weight_granularity: str, dense_granularity: str) -> Recipe:
        """This recipe as a profile builds it: the name says per-channel, but the converter
        follows the profile's granularity for conv and dense weights (per-tensor on
        imx8mp-npu, per-tensor dense on Ethos-U)."""
        if self.granularity != "per-channel":
            return self  # blockwise or float weights: the recipe decides
        if weight_granularity == dense_granularity:
            granularity = weight_granularity
        else:
            granularity = f"{weight_granularity} conv, {dense_granularity} dense"
        return replace(self, granularity=granularity)


def decode(name: str) -> Recipe:
    """Parse a recipe name.

    Raises:
        UsageError: the name does not follow the vocabulary, or names a combination edgeq
            cannot build (say which ones it can).
    """
    canonical = ALIASES.get(name, name)
    m = _PATTERN.match(canonical)
    if m is None:
        raise UsageError(f"'{name}' is not a recipe name", hint=f"use one of: {', '.join(KNOWN)}")
    wbits, wfp, abits = m["wbits"], m["wfp"], m["abits"]
    weights = f"int{wbits}" if wbits else ("float16" if wfp == "fp16" else "float32")
    activations = f"int{abits}" if abits else "float32"
    block = int(m["block"]) if m["block"] else None
    static = activations != "float32"
    if m["mode"] == "dynamic" and static:
        raise UsageError(f"'{name}': dynamic-range recipes keep float activations (afp32)")
    granularity = "none" if weights.startswith("float") else ("blockwise" if block else "per-channel")
    recipe = Recipe(name, canonical, weights, granularity, block, activations, static,
                    _engine(weights, block))
    _check_buildable(recipe)
    return recipe


def _engine(weights: str, block: int | None) -> str:
    # int4 and blockwise weights have no TFLiteConverter path; Google's ai-edge-quantizer
    # rewrites the float TFLite model for those.
    return "ai-edge-quantizer" if weights == "int4" or block else "tflite-converter"


def _check_buildable(r: Recipe) -> None:
    supported = {
        ("int8", "int8"), ("int8", "int16"),  # full integer, 16x8
        ("int8", "float32"),  # dynamic range
        ("float16", "float32"),
        ("int4", "float32"),  # weight-only int4 (per channel or blockwise)
    }
    if (r.weights, r.activations) not in supported:
        raise UsageError(
            f"recipe '{r.name}' ({r.weights} weights, {r.activations} activations) is not one "
            "edgeq can build",
            hint=f"use one of: {', '.join(KNOWN)}",
        )
    if r.block_size is not None and r.block_size not in (32, 64, 128, 256):
        # The block sizes ai-edge-quantizer builds (its BLOCKWISE_<n> granularities).
        raise UsageError(f"recipe '{r.name}': the block size must be 32, 64, 128 or 256")
    if r.block_size is not None and r.weights != "int4":
        raise UsageError(f"recipe '{r.name}': blockwise weights are built for int4 only")
