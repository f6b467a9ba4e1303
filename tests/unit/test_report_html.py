"""report.html from hand-built reports: which accuracy chart is drawn, escaping, the same bytes
for the same report, and the compact histograms the report carries. No TensorFlow."""

from __future__ import annotations

import re
import sys

import numpy as np
import pytest

from edgeq.pipeline.calibrate import compact_histogram
from edgeq.pipeline.ranges import StreamingHistogram
from edgeq.outputs.report import Report
from edgeq.outputs.report_html import render

pytest.importorskip("matplotlib")

EVIL = "<script>alert('x')</script>"


def _report(**changes) -> Report:
    h = StreamingHistogram()
    h.update(np.random.default_rng(0).normal(size=5000))
    fields = dict(
        target="cortex-m4", method="ptq", calibration="percentile",
        model={"path": f"models/{EVIL}.keras"},
        output={"path": "out/m_int8.tflite", "bytes": 1234, "weight_bytes": 1000,
                "sha256": "ab" * 32},
        ops=[{"index": 0, "op": "CONV_2D", "placement": "npu", "reason": "ok", "layer": "conv"},
             {"index": 1, "op": "CUSTOM:Foo", "placement": "cpu", "reason": EVIL,
              "fix": "replace & retry"}],
        accuracy={"float": 0.9, "quantized": 0.88, "drop_pp": 2.0, "agreement": 0.95, "n": 100,
                  "runtime": "litert"},
        fidelity={"sqnr_db": 30.0, "cosine": 0.999}, latency_ms=None,
        memory={"flash_bytes": 1234, "budget_flash_bytes": None}, data={},
        stages=[{"name": "load", "seconds": 1.5}],
        versions={"tensorflow": "2.21.0"},
        layers=[{"tensor": f"a/{EVIL};fused", "lo": -2.0, "hi": 2.0, "method": "percentile",
                 "clipped_fraction": 0.05, "sqnr_db": 20.0, "histogram": compact_histogram(h)},
                {"tensor": "b", "lo": 0.0, "hi": 1.0, "method": "percentile",
                 "clipped_fraction": 0.0, "sqnr_db": None}],
        notes=[f"note with {EVIL}"],
    )
    fields.update(changes)
    return Report(**fields)


def _figures(page: str) -> int:
    return len(re.findall(r'<img class="figure" src="data:image/png;base64,', page))


def test_text_is_escaped_and_nothing_external():
    page = render(_report())
    assert EVIL not in page and "&lt;script&gt;" in page
    assert "<script" not in page.lower() and "<link" not in page.lower()
    assert not re.search(r"https?://", page)
    assert "replace &amp; retry" in page
    assert 'class="place-npu"' in page and 'class="place-cpu"' in page
    assert _figures(page) == 3  # accuracy, per-tensor SQNR, histograms


def test_same_report_same_bytes():
    assert render(_report()) == render(_report())


def test_accuracy_chart_prefers_autopilot_then_candidates():
    stages = [{"name": "ptq minmax", "accuracy": 0.80, "drop_pp": 10.0, "bytes": 5000,
               "latency_ms": None, "met_budget": False, "chosen": False},
              {"name": "qat", "accuracy": None, "drop_pp": None, "bytes": 5000,
               "latency_ms": 1.5, "met_budget": None, "chosen": False},
              {"name": "fallback", "accuracy": 0.89, "drop_pp": 1.0, "bytes": 6000,
               "latency_ms": 2.0, "met_budget": True, "chosen": True}]
    cands = [{"calibration": m, "equalized": False, "chosen": m == "mse",
              "accuracy": {"quantized": 0.8 + i / 100, "agreement": 0.9},
              "fidelity": {"sqnr_db": 20.0 + i}} for i, m in enumerate(["minmax", "mse"])]
    auto = render(_report(autopilot={"stages": stages}, calibration_candidates=cands))
    accuracy = auto.split('<section id="accuracy">')[1].split("</section>")[0]
    assert "autopilot stage" in accuracy and "fallback" in accuracy and "n/a" in accuracy
    assert '<tr class="chosen"><td>fallback</td>' in accuracy
    cand = render(_report(calibration_candidates=cands))
    assert "calibration method" in cand.split('<section id="accuracy">')[1].split("</section>")[0]
    plain = render(_report()).split('<section id="accuracy">')[1].split("</section>")[0]
    assert "float and the quantized model" in plain


def test_weights_only_report_has_no_activation_charts():
    page = render(_report(layers=[], accuracy={"float": None, "quantized": None, "drop_pp": None,
                                        "agreement": 0.97, "n": 10, "runtime": "litert"}))
    assert _figures(page) == 1 and "No per-tensor diagnostics" in page


def test_compact_histogram_keeps_every_count():
    h = StreamingHistogram(bins=2048)
    x = np.concatenate([np.random.default_rng(1).exponential(size=10_000), [40.0]])
    h.update(x)
    c = compact_histogram(h, bins=64)
    assert len(c["counts"]) <= 64 and len(c["edges"]) == len(c["counts"]) + 1
    assert sum(c["counts"]) == c["count"] == x.size
    assert np.histogram(x, c["edges"])[0].tolist() == c["counts"]
    assert c["edges"][0] <= x.min() and c["edges"][-1] > x.max()
    assert compact_histogram(StreamingHistogram()) is None


def test_html_writer_does_not_load_matplotlib_until_asked():
    import subprocess

    code = ("import sys; import edgeq.outputs.report, edgeq.api, edgeq.cli; "
            "print('matplotlib' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_dollar_signs_in_names_are_drawn_as_text():
    """Tensor and layer names reach the figures' labels; matplotlib would parse `$...` as
    mathtext and an unbalanced one would fail the page."""
    odd = "conv$\\frac{$1"
    rows = [{"tensor": f"{odd}/Relu", "lo": -1.0, "hi": 1.0, "method": "minmax",
             "clipped_fraction": 0.0, "sqnr_db": 25.0}]
    page = render(_report(layers=rows))
    assert _figures(page) >= 2 and "conv$\\frac{$1" in page
