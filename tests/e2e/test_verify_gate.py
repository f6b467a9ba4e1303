"""The regression gate's policy (issue 15): what repeats exactly gates by default, host latency
only when asked, and an unchanged model passes against its own baseline every time.

Uses the bundled digits example on cortex-m4 (TFLite Micro, so the arena is compared too): a
verify run takes about a second."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgeq.cli import main
from tests.conftest import EXAMPLE

SELF_VERIFICATIONS = 20


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("gate") / "digits"
    assert main(["convert", str(EXAMPLE / "digits_cnn.keras"), "--target", "cortex-m4",
                 "--data", str(EXAMPLE / "digits_calibration.npz"), "--eval-data",
                 str(EXAMPLE / "digits_eval.npz"), "--input-scale", "1/16",
                 "--out", str(out)]) == 0
    return out


def _verify(capsys, out: Path, baseline: Path, *extra: str) -> tuple[int, dict, str]:
    code = main(["verify", str(out / "digits_cnn_int8.tflite"), "--target", "cortex-m4",
                 "--eval-data", str(EXAMPLE / "digits_eval.npz"), "--input-scale", "1/16",
                 "--baseline", str(baseline), "--json", *extra])
    captured = capsys.readouterr()
    return code, json.loads(captured.out) if captured.out else {}, captured.err


def test_an_unchanged_model_passes_against_its_own_baseline_every_time(converted, capsys):
    # The README's CI example, latency measured (as by default) but not gating.
    codes, failures = [], []
    for _ in range(SELF_VERIFICATIONS):
        code, result, err = _verify(capsys, converted, converted / "report.json",
                                    "--max-drop", "0.5", "--max-growth", "10")
        codes.append(code)
        failures += [c["detail"] for c in result["checks"] if not c["ok"]]
    assert codes == [0] * SELF_VERIFICATIONS, failures
    metrics = {c["metric"] for c in result["checks"]}
    assert metrics == {"accuracy", "model_bytes", "arena_bytes"}, metrics
    assert result["latency_ms"] is not None  # measured and reported, just not a gate


def _doctored(converted: Path, tmp_path: Path, edit) -> Path:
    base = json.loads((converted / "report.json").read_text())
    edit(base)
    path = tmp_path / "baseline.json"
    path.write_text(json.dumps(base))
    return path


@pytest.mark.parametrize("metric,edit", [
    ("accuracy", lambda b: b["accuracy"].update(quantized=b["accuracy"]["quantized"] + 0.01)),
    ("model_bytes", lambda b: b["output"].update(bytes=b["output"]["bytes"] - 1)),
    ("arena_bytes", lambda b: b["memory"].update(arena_bytes=b["memory"]["arena_bytes"] - 16)),
])
def test_deterministic_figures_gate_by_default(converted, capsys, tmp_path, metric, edit):
    """No --max-drop / --max-growth: any drop or growth against the baseline fails."""
    code, result, err = _verify(capsys, converted, _doctored(converted, tmp_path, edit),
                                "--no-latency")
    assert code == 4, err
    assert [c["metric"] for c in result["checks"] if not c["ok"]] == [metric]
    assert ("top-1" if metric == "accuracy" else metric) in err, err


def test_host_latency_gates_only_when_asked(converted, capsys, tmp_path):
    # A baseline latency no real run can come near: growth is certain, so only the option
    # decides whether it fails.
    baseline = _doctored(converted, tmp_path,
                         lambda b: b["latency_ms"].update(median=b["latency_ms"]["median"] / 1e6))
    code, result, err = _verify(capsys, converted, baseline)
    assert code == 0, err
    assert "latency_ms" not in {c["metric"] for c in result["checks"]}
    code, result, err = _verify(capsys, converted, baseline, "--max-latency-growth", "50")
    assert code == 4 and "latency_ms" in err, err
    code, _, err = _verify(capsys, converted, baseline, "--max-latency-growth", "50",
                           "--no-latency")
    assert code == 2 and "--no-latency" in err, err


def test_pytest_helper_follows_the_same_policy(converted, tmp_path):
    from edgeq.data import Preprocess
    from edgeq.testing import assert_no_regression

    model = converted / "digits_cnn_int8.tflite"
    kwargs = {"target": "cortex-m4", "eval_data": EXAMPLE / "digits_eval.npz",
              "preprocess": Preprocess.parse("1/16", None, None)}
    outcome = assert_no_regression(model, baseline=converted / "report.json", **kwargs)
    assert outcome.latency_ms is None  # not measured unless it gates
    grown = _doctored(converted, tmp_path,
                      lambda b: b["output"].update(bytes=b["output"]["bytes"] - 1))
    with pytest.raises(AssertionError, match="model_bytes"):
        assert_no_regression(model, baseline=grown, **kwargs)
    slow = _doctored(converted, tmp_path,
                     lambda b: b["latency_ms"].update(median=b["latency_ms"]["median"] / 1e6))
    assert_no_regression(model, baseline=slow, **kwargs)  # latency is not a gate by default
    with pytest.raises(AssertionError, match="latency_ms"):
        assert_no_regression(model, baseline=slow, max_latency_growth=50, **kwargs)
