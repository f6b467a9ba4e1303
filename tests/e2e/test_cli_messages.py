"""Issue 23: messages and help lines that say what is true, through the CLI (no TensorFlow)."""

from __future__ import annotations

import pytest

from edgeq.cli import cli, main
from tests.conftest import EXAMPLE


def _run(capsys, *args: str) -> tuple[int, list[str]]:
    code = main(list(args))
    err = capsys.readouterr().err
    return code, [line for line in err.splitlines() if line.strip()]


@pytest.mark.parametrize("typed,meant", [("ethos-u55", "ethos-u55-128"),
                                         ("ethos-u65", "ethos-u65-256"),
                                         ("cortex-m5", "cortex-m55"),
                                         ("android", "android-arm64")])
def test_did_you_mean_by_target_family(capsys, typed, meant):
    code, lines = _run(capsys, "targets", typed)
    assert code == 2 and len(lines) == 1, lines
    assert f"did you mean '{meant}'?" in lines[0], lines[0]


@pytest.mark.parametrize("command", ["inspect", "embed"])
def test_a_keras_file_where_a_tflite_is_read_points_to_convert(capsys, tmp_path, command):
    model = str(EXAMPLE / "digits_cnn.keras")
    args = {"inspect": [model], "embed": [model, "--out", str(tmp_path / "fw")]}[command]
    code, lines = _run(capsys, command, *args)
    assert code == 2 and len(lines) == 1, lines
    assert "Keras model" in lines[0] and "edgeq convert" in lines[0], lines[0]
    assert "Traceback" not in lines[0]


def test_the_baseline_file_is_called_a_baseline(capsys, fixtures, tmp_path):
    model = fixtures / "models" / "mlperf_tiny" / "kws_dscnn_int8_reference.tflite"
    code, lines = _run(capsys, "verify", str(model), "--target", "cortex-m4", "--eval-data",
                       str(EXAMPLE / "digits_eval.npz"), "--baseline",
                       str(tmp_path / "nope.json"))
    assert code == 2 and len(lines) == 1, lines
    assert "baseline '" in lines[0] and "nope.json" in lines[0], lines[0]
    assert "data '" not in lines[0], lines[0]


def test_help_lines_match_the_code():
    from click.testing import CliRunner

    from edgeq.targets import list_targets

    runner = CliRunner(env={"COLUMNS": "400"})
    convert = " ".join(runner.invoke(cli, ["convert", "--help"]).output.split())
    # Dataset.spread: samples evenly spaced through the file, not the first N.
    assert "first N" not in convert and "spread evenly" in convert
    emulate = " ".join(runner.invoke(cli, ["emulate", "--help"]).output.split())
    with_emulator = [t.name for t in list_targets() if t.emulator is not None]
    assert with_emulator and all(name in emulate for name in with_emulator), with_emulator
