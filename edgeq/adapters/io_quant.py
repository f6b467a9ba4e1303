"""Float <-> integer conversion at a model's inputs and outputs, from its quantization params.

Both interpreters (LiteRT, TFLite Micro) describe a tensor as a dict with `dtype` and
`quantization_parameters` {scales, zero_points}; one implementation serves both.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def _params(detail: dict[str, Any]) -> tuple[float, int] | None:
    qp = detail.get("quantization_parameters") or {}
    scales = np.asarray(qp.get("scales", ()), dtype=np.float64)
    zps = np.asarray(qp.get("zero_points", ()), dtype=np.int64)
    if scales.size == 0 or float(scales.ravel()[0]) == 0.0:
        return None
    return float(scales.ravel()[0]), int(zps.ravel()[0]) if zps.size else 0


def quantize(x: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    """Float samples to the tensor's dtype: q = clip(round(x / scale) + zero_point)."""
    dtype = np.dtype(detail["dtype"])
    params = _params(detail)
    if not np.issubdtype(dtype, np.integer) or params is None:
        return np.ascontiguousarray(x, dtype=dtype)
    scale, zp = params
    info = np.iinfo(dtype)
    q = np.round(np.asarray(x, dtype=np.float64) / scale) + zp
    return np.ascontiguousarray(np.clip(q, info.min, info.max).astype(dtype))


def dequantize(q: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    """The tensor's values as float32: (q - zero_point) * scale."""
    if not np.issubdtype(q.dtype, np.integer):
        return np.asarray(q, dtype=np.float32)
    params = _params(detail)
    if params is None:
        return np.asarray(q, dtype=np.float32)
    scale, zp = params
    return ((q.astype(np.float64) - zp) * scale).astype(np.float32)
