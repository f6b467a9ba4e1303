"""Budgets: a model over the target's RAM budget fails with exit 3 and names the figures; the
report is still written so the user can see what does not fit. Also covers a user's own
profile file that extends a bundled one."""

from __future__ import annotations

import json

from edgeq.cli import main
from tests.conftest import EXAMPLE


def test_over_ram_budget_exits_3_and_keeps_report(tmp_path, capsys):
    profile = tmp_path / "tiny-mcu.toml"
    profile.write_text(
        'schema_version = 1\nname = "tiny-mcu"\nextends = "cortex-m4"\n'
        'description = "an MCU with 2 KiB of RAM"\n'
        "[memory]\nflash_bytes = 1048576\nram_bytes = 2048\n"
    )
    out = tmp_path / "out"
    code = main(["convert", str(EXAMPLE / "digits_cnn.keras"), "--target", str(profile),
                 "--data", str(EXAMPLE / "digits_calibration.npz"), "--input-scale", "1/16",
                 "--out", str(out), "--no-latency"])
    err = capsys.readouterr().err
    assert code == 3, err
    assert "tiny-mcu" in err and "tensor arena" in err and "RAM budget 2.0 KiB" in err
    report = json.loads((out / "report.json").read_text())
    assert report["target"] == "tiny-mcu"
    assert report["gates"]["memory"]["ok"] is False
    assert report["memory"]["arena_bytes"] > report["memory"]["budget_ram_bytes"] == 2048
    assert (out / "digits_cnn_int8.tflite").is_file()


def test_report_json_carries_the_contract_keys(tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["convert", str(EXAMPLE / "digits_cnn.keras"), "--target", "cortex-m7",
                 "--data", str(EXAMPLE / "digits_calibration.npz"),
                 "--eval-data", str(EXAMPLE / "digits_eval.npz"), "--input-scale", "1/16",
                 "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    report = json.loads((out / "report.json").read_text())
    for key in ("schema_version", "edgeq_version", "versions", "target", "method",
                "calibration", "output", "ops", "accuracy", "fidelity", "latency_ms", "memory",
                "stages"):
        assert key in report, key
    assert set(report["versions"]) >= {"tensorflow", "tf_keras", "tfmot", "ai_edge_litert",
                                       "tflite_micro", "vela", "edgetpu_compiler"}
    assert set(report["accuracy"]) >= {"float", "quantized", "drop_pp", "agreement", "n",
                                       "runtime"}
    assert set(report["memory"]) >= {"flash_bytes", "arena_bytes", "arena_head_bytes",
                                     "arena_tail_bytes", "budget_flash_bytes", "budget_ram_bytes"}
    assert set(report["latency_ms"]) >= {"median", "runtime", "threads", "host"}
    assert {"index", "op", "placement", "reason"} <= set(report["ops"][0])
    assert report["accuracy"]["n"] == 500 and report["accuracy"]["runtime"] == "tflm"
    assert "# edgeq report" in (out / "report.md").read_text()
