"""Microcontroller and Ethos-U flows through the command line: convert for an Ethos-U target
(vela runs, its figures land in the report, the compiled model is an output), and `edgeq
embed` writes the firmware sources and checks them against a target's budget."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from edgeq.cli import main
from tests.conftest import EXAMPLE

pytestmark = pytest.mark.slow


def test_convert_for_ethos_u_runs_vela(tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["convert", str(EXAMPLE / "digits_cnn.keras"), "--target", "ethos-u55-128",
                 "--data", str(EXAMPLE / "digits_calibration.npz"),
                 "--eval-data", str(EXAMPLE / "digits_eval.npz"), "--input-scale", "1/16",
                 "--out", str(out), "--no-latency", "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    report = json.loads(captured.out)
    vela = report["vela"]
    assert set(vela) >= {"sram_bytes", "offchip_flash_bytes", "npu_ops", "cpu_ops", "macs",
                         "cycles", "inference_ms"}
    assert vela["model_ops_on_npu"] + vela["model_ops_on_cpu"] == len(report["ops"])
    assert {op["placement"] for op in report["ops"]} <= {"npu", "cpu"}
    assert report["accuracy"]["runtime"] == "tflm"
    assert report["runtimes"]["tflm_vs_litert"][0]["argmax_agreement"] > 0.98
    compiled = (out / "digits_cnn_int8_vela.tflite").read_bytes()
    assert compiled[4:8] == b"TFL3" and len(compiled) == vela["compiled_bytes"]

    # vela's own summary for the same int8 model and settings gives the same figures
    model = out / "digits_cnn_int8.tflite"
    run = subprocess.run([sys.executable, "-m", "ethosu.vela", str(model), "--output-dir",
                          str(tmp_path / "v"), "--accelerator-config", "ethos-u55-128",
                          "--config", "Arm/vela.ini", "--system-config",
                          "Ethos_U55_High_End_Embedded", "--memory-mode", "Shared_Sram",
                          "--verbose-cycle-estimate"], capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    macs = int(re.search(r"Neural network macs\s+(\d+)", run.stdout).group(1))
    cycles = int(re.search(r"Total cycles\s+(\d+)", run.stdout).group(1))
    assert (vela["macs"], vela["cycles"]) == (macs, cycles)


def test_embed_writes_sources_and_checks_budget(fixtures, tmp_path, capsys):
    model = fixtures / "models" / "mlperf_tiny" / "vww_mobilenet_96_int8_reference.tflite"
    out = tmp_path / "src"
    assert main(["embed", str(model), "--out", str(out), "--name", "g_vww",
                 "--target", "cortex-m4"]) == 0
    header = (out / "g_vww.h").read_text()
    assert "g_vww_arena_size" in header
    arena = int(re.search(r"g_vww_arena_size = (\d+)", header).group(1))
    measured = int(re.search(r"on the host measured (\d+) bytes", header).group(1))
    # edgeq's offline arena plan is written (issue 25): the arena is the planned model's,
    # less than TFLM's own plan measured for the published file
    assert arena >= measured and measured < 103680
    assert main(["embed", str(model), "--out", str(tmp_path / "plain"), "--name", "g_vww",
                 "--target", "cortex-m4", "--no-arena-plan"]) == 0
    plain = (tmp_path / "plain" / "g_vww.h").read_text()
    assert int(re.search(r"g_vww_arena_size = (\d+)", plain).group(1)) >= 103680
    assert "alignas(16) const unsigned char g_vww[]" in (out / "g_vww.cc").read_text()
    assert "AddDepthwiseConv2D" in (out / "g_vww_ops.h").read_text()

    small = tmp_path / "m4-64k.toml"
    small.write_text('schema_version = 1\nname = "m4-64k"\nextends = "cortex-m4"\n'
                     "[memory]\nflash_bytes = 1048576\nram_bytes = 65536\n")
    capsys.readouterr()
    code = main(["embed", str(model), "--out", str(tmp_path / "src2"), "--target", str(small)])
    assert code == 3
    assert "RAM budget" in capsys.readouterr().err
    assert not (tmp_path / "src2").exists()
