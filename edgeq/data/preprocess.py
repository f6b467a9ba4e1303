"""Input preprocessing given on the command line: ``x = (x * scale - mean) / std``."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from edgeq.data.context import InputSpec
from edgeq.errors import UsageError

@dataclass(frozen=True)
class Preprocess:
    """Applied to every sample, in float32: ``x = (x * scale - mean) / std``.

    ``mean`` and ``std`` hold one value, or one per channel (the last axis).
    """

    scale: float = 1.0
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)

    @classmethod
    def parse(
        cls, scale: str | float | None, mean: str | float | None, std: str | float | None
    ) -> Preprocess:
        """Build from the CLI strings: ``--input-scale 1/255 --mean 127.5 --std 0.5,0.5,0.5``.

        Raises:
            UsageError: a value is not a number or fraction, or a scale/std is not positive.
        """
        value = 1.0 if scale is None else _parse_number(str(scale), "--input-scale")
        if value <= 0:
            raise UsageError(f"--input-scale must be greater than 0, got '{scale}'")
        means = (0.0,) if mean is None else _parse_list(str(mean), "--mean")
        stds = (1.0,) if std is None else _parse_list(str(std), "--std")
        if any(s <= 0 for s in stds):
            raise UsageError(f"--std values must be greater than 0, got '{std}'")
        return cls(scale=value, mean=means, std=stds)

    def is_identity(self) -> bool:
        return self.scale == 1 and all(m == 0 for m in self.mean) and all(s == 1 for s in self.std)

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Preprocess a float32 array in place (channels on the last axis) and return it."""
        if self.scale != 1.0:
            x *= np.float32(self.scale)
        if any(m != 0 for m in self.mean):
            x -= np.asarray(self.mean, dtype=np.float32)
        if any(s != 1 for s in self.std):
            x /= np.asarray(self.std, dtype=np.float32)
        return x

    def describe(self) -> str:
        mean = ",".join(f"{m:g}" for m in self.mean)
        std = ",".join(f"{s:g}" for s in self.std)
        return f"x = (x * {self.scale:g} - {mean}) / {std}"



def check_preprocess(prep: Preprocess, spec: InputSpec) -> None:
    channels = spec.shape[-1] if spec.shape else 1
    for option, values in (("--mean", prep.mean), ("--std", prep.std)):
        if len(values) not in (1, channels):
            raise UsageError(
                f"{option} has {len(values)} values but the model input '{spec.name}' has "
                f"{channels} channel(s) on its last axis {spec.shape}",
                hint="give one value for all channels, or one per channel",
            )



def _parse_number(text: str, option: str) -> float:
    try:
        numbers = [float(part) for part in text.split("/")]
    except ValueError:
        numbers = []
    if len(numbers) == 1:
        value = numbers[0]
    elif len(numbers) == 2 and numbers[1] != 0:
        value = numbers[0] / numbers[1]
    else:
        value = math.nan
    if not math.isfinite(value):
        raise UsageError(
            f"{option} '{text}' is not a number", hint="use a number or fraction: 0.5, 127.5, 1/255"
        )
    return value



def _parse_list(text: str, option: str) -> tuple[float, ...]:
    return tuple(_parse_number(part, option) for part in text.split(","))
