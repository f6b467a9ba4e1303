"""The autopilot's outlier mark (edgeq.pipeline.autopilot.collapsed_share): a tensor whose few
huge channels stretch the int8 range has most of its values rounded to zero; an ordinary
tensor of the same size has few. SQNR cannot tell them apart when the outliers dominate."""

from __future__ import annotations

import numpy as np

from edgeq.pipeline.autopilot import collapsed_share
from edgeq.pipeline.ranges import StreamingHistogram


def _hist(values: np.ndarray) -> StreamingHistogram:
    h = StreamingHistogram()
    h.update(values)
    return h


def test_outlier_channels_make_most_values_collapse():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, 32))
    plain = _hist(x.ravel())
    x[:, [3, 11, 20, 27]] *= 80.0  # LayerNorm-output outliers as in tools/bench_transformer.py
    outlier = _hist(x.ravel())
    assert collapsed_share(plain) < 0.05
    assert collapsed_share(outlier) > 0.5


def test_empty_and_constant_tensors_score_zero():
    assert collapsed_share(StreamingHistogram()) == 0.0
    assert collapsed_share(_hist(np.zeros(10))) == 0.0
