"""`edgeq analyze` on existing .tflite files: TFLite Micro arena figures equal the recorded
reference measurements, and a model over a profile's RAM budget fails with exit 3."""

from __future__ import annotations

import json

import pytest

from edgeq.cli import main


def _arena_reference(fixtures) -> list[dict]:
    return json.loads((fixtures / "models" / "tflm" / "arena_reference.json").read_text())["models"]


def test_arena_matches_reference_for_every_model(fixtures, capsys):
    models = _arena_reference(fixtures)
    assert len(models) >= 7
    for ref in models:
        code = main(["analyze", str(fixtures / ref["model"]), "--target", "cortex-m7", "--json"])
        out = capsys.readouterr().out
        assert code == 0, ref["model"]
        mem = json.loads(out)["memory"]
        assert (mem["arena_bytes"], mem["arena_head_bytes"], mem["arena_tail_bytes"]) == (
            ref["arena_total_bytes"], ref["arena_head_bytes"], ref["arena_tail_bytes"]), ref["model"]
        assert mem["flash_bytes"] == ref["model_bytes"]


def test_vww_over_a_64k_ram_budget_exits_3(fixtures, tmp_path, capsys):
    profile = tmp_path / "m4-64k.toml"
    profile.write_text('schema_version = 1\nname = "m4-64k"\nextends = "cortex-m4"\n'
                       "[memory]\nflash_bytes = 1048576\nram_bytes = 65536\n")
    model = fixtures / "models" / "mlperf_tiny" / "vww_mobilenet_96_int8_reference.tflite"
    code = main(["analyze", str(model), "--target", str(profile), "--json"])
    captured = capsys.readouterr()
    assert code == 3
    report = json.loads(captured.out)
    assert report["summary"]["fits"] is False
    assert report["memory"]["arena_bytes"] == 103680
    line = captured.err.strip()
    assert line.startswith("edgeq: error:") and "\n" not in line
    assert "tensor arena 101.2 KiB" in line and "RAM budget 64.0 KiB" in line
    assert "largest activations" in line


def test_analyze_refuses_non_tflite(tmp_path, capsys):
    bad = tmp_path / "x.tflite"
    bad.write_bytes(b"not a flatbuffer at all")
    assert main(["analyze", str(bad), "--target", "cortex-m4"]) == 2
    assert "TFL3" in capsys.readouterr().err


@pytest.mark.parametrize("target", ["arm-cpu", "coral"])
def test_analyze_without_tflm_has_no_arena(fixtures, target, capsys):
    model = fixtures / "models" / "coral" / "mobilenet_v1_0.25_128_quant.tflite"
    assert main(["analyze", str(model), "--target", target, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["memory"]["arena_bytes"] is None
    assert result["summary"]["ops_total"] == 31
