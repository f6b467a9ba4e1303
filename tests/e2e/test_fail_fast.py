"""Issue 15: bad output paths fail before any work, data sanity warnings (and --strict-data),
the recipe's weight granularity as the profile builds it, and tables that are not cut when
written to a pipe."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from edgeq.cli import main
from tests.conftest import EXAMPLE, ROOT


def _convert(tmp_path, *extra: str, target: str = "cortex-m4") -> list[str]:
    return ["convert", str(EXAMPLE / "digits_cnn.keras"), "--target", target, "--data",
            str(EXAMPLE / "digits_calibration.npz"), *extra]


@pytest.fixture
def no_loading(monkeypatch):
    """Any attempt to load the model fails the test: the error must come first."""
    from edgeq.pipeline import load

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the output path was checked")

    monkeypatch.setattr(load, "load_model", refuse)


@pytest.mark.parametrize("inside", [False, True])
def test_out_naming_a_file_exits_2_before_loading_anything(tmp_path, capsys, no_loading,
                                                           inside):
    existing = tmp_path / "report.txt"
    existing.write_text("the user's file")
    out = existing / "sub" if inside else existing
    code = main(_convert(tmp_path, "--out", str(out)))
    err = capsys.readouterr().err
    assert code == 2, err
    assert len(err.splitlines()) == 1 and str(out) in err and "--out" in err, err
    assert existing.read_text() == "the user's file"


def test_embed_and_verify_output_paths_fail_fast(tmp_path, capsys):
    model = tmp_path / "m.tflite"
    model.write_bytes(b"not read")
    (tmp_path / "afile").write_text("x")
    assert main(["embed", str(model), "--out", str(tmp_path / "afile")]) == 2
    assert "--out" in capsys.readouterr().err
    assert main(["verify", str(model), "--target", "cortex-m4", "--eval-data",
                 str(EXAMPLE / "digits_eval.npz"), "--report", str(tmp_path)]) == 2
    assert "--report" in capsys.readouterr().err


@pytest.fixture(scope="module")
def mismatched(tmp_path_factory):
    """Calibration data as 0..255 floats, evaluation data as 0..1: the issue's silent 10 %."""
    d = tmp_path_factory.mktemp("mismatch")
    calib = np.load(EXAMPLE / "digits_calibration.npz")["x"].astype(np.float32)
    ev = np.load(EXAMPLE / "digits_eval.npz")
    np.savez(d / "calib255.npz", x=np.round(calib * 255 / 16))
    np.savez(d / "eval01.npz", x=ev["x"].astype(np.float32) / 16, y=ev["y"])
    return d


def test_mismatched_data_warns_naming_both_files_and_ranges(mismatched, tmp_path, capsys):
    d = mismatched
    code = main(["convert", str(EXAMPLE / "digits_cnn.keras"), "--target", "cortex-m4",
                 "--data", str(d / "calib255.npz"), "--eval-data", str(d / "eval01.npz"),
                 "--out", str(tmp_path / "o"), "--no-latency", "--json"])
    out = capsys.readouterr().out
    assert code == 0
    warnings = json.loads(out)["data"]["warnings"]
    both = [w for w in warnings if "calib255.npz" in w and "eval01.npz" in w]
    assert both and "0..255" in both[0] and "0..1" in both[0], warnings
    assert "Data warnings" in (tmp_path / "o" / "report.md").read_text()


def test_strict_data_exits_2_and_writes_nothing(mismatched, tmp_path, capsys):
    d = mismatched
    code = main(["convert", str(EXAMPLE / "digits_cnn.keras"), "--target", "cortex-m4",
                 "--data", str(d / "calib255.npz"), "--eval-data", str(d / "eval01.npz"),
                 "--out", str(tmp_path / "o"), "--strict-data"])
    err = capsys.readouterr().err
    assert code == 2 and "--strict-data" in err and "eval01.npz" in err, err
    assert not (tmp_path / "o").exists()
    # verify checks its evaluation data against the integer model's input range
    model = tmp_path / "good"
    assert main(_convert(tmp_path, "--input-scale", "1/16", "--out", str(model),
                         "--no-latency")) == 0
    capsys.readouterr()
    code = main(["verify", str(model / "digits_cnn_int8.tflite"), "--target", "cortex-m4",
                 "--eval-data", str(d / "eval01.npz"), "--input-scale", "255",
                 "--no-latency", "--strict-data"])
    err = capsys.readouterr().err
    assert code == 2 and "input quantization" in err, err


@pytest.mark.parametrize("target,text", [("imx8mp-npu", "int8 weights (per-tensor)"),
                                         ("arm-cpu", "int8 weights (per-channel)")])
def test_recipe_granularity_comes_from_the_profile(tmp_path, target, text):
    assert main(_convert(tmp_path, "--input-scale", "1/16", "--out", str(tmp_path / "o"),
                         "--no-latency", target=target)) == 0
    assert text in (tmp_path / "o" / "report.md").read_text()


def test_recipe_granularity_text_for_mixed_profiles():
    from edgeq.recipes import decode

    int8 = decode("int8")
    assert int8.on_target("per-channel", "per-tensor").granularity == \
        "per-channel conv, per-tensor dense"
    assert decode("wi4_block32_afp32").on_target("per-tensor", "per-tensor").granularity == \
        "blockwise"


def test_tables_keep_their_width_in_a_pipe():
    import os

    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    out = subprocess.run([sys.executable, "-m", "edgeq", "targets"], capture_output=True,
                         text=True, env=env, check=True).stdout
    assert "…" not in out, out  # rich's ellipsis: a cut cell
    assert "per-channel" in out and "litert" in out
