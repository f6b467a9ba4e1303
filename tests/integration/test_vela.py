"""The Vela adapter: its stdout parser and per-op placement on recorded Vela 5.2.0 output
(tests/data/vela/README.md says how it was made), and real Vela runs on the MLPerf Tiny
reference models for the Ethos-U profiles (U55, U65, U85), checked against what the same vela command prints
itself and writes to its summary CSV."""

from __future__ import annotations

import configparser
import csv
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

from edgeq.adapters import vela
from edgeq.adapters.vela import (
    NPU_REASON, VelaResult, cpu_reasons, parse_summary, run_vela, vela_placements,
)
from edgeq.errors import ConversionError, MissingDependencyError
from edgeq.targets import load_target
from edgeq.formats.tflite import read_model_file

DATA = Path(__file__).resolve().parents[1] / "data" / "vela"
PROFILES = ("ethos-u55-128", "ethos-u65-256", "ethos-u85-256", "ethos-u85-1024")
# All five take about 0.4 s per Vela run; streaming_wakeword included.
MLPERF = ("ad_autoencoder", "ic_resnet8", "kws_dscnn", "streaming_wakeword", "vww_mobilenet_96")

needs_vela = pytest.mark.skipif(vela.vela_version() == "not installed",
                                reason="ethos-u-vela is not installed")


def recorded(name: str) -> str:
    return (DATA / name).read_text()


def kib(text: str) -> int:
    return round(float(text) * 1024)


# --- the parser, on recorded stdout ------------------------------------------------------------


def test_parse_summary_u55_shared_sram() -> None:
    s = parse_summary(recorded("ic_resnet8_int8_reference.ethos-u55-128.txt"))
    assert s.network == "ic_resnet8_int8_reference"
    assert (s.accelerator, s.system_config, s.memory_mode, s.clock_mhz) == (
        "Ethos_U55_128", "Ethos_U55_High_End_Embedded", "Shared_Sram", 500)
    assert s.sram_bytes == kib("50.62") == 51835
    assert s.offchip_flash_bytes == kib("77.39") and s.dram_bytes == s.onchip_flash_bytes == 0
    assert (s.cpu_ops, s.npu_ops, s.macs) == (0, 42, 12505748)
    assert (s.npu_cycles, s.cycles, s.inference_ms) == (185542, 201747, 0.40)


def test_parse_summary_u65_dedicated_sram() -> None:
    s = parse_summary(recorded("vww_mobilenet_96_int8_reference.ethos-u65-256.txt"))
    assert (s.accelerator, s.system_config, s.memory_mode, s.clock_mhz) == (
        "Ethos_U65_256", "Ethos_U65_High_End", "Dedicated_Sram", 1000)
    # Dedicated_Sram: weights and arena in DRAM, the SRAM is the NPU's cache.
    assert (s.sram_bytes, s.dram_bytes) == (kib("72.73"), kib("101.09"))
    assert s.offchip_flash_bytes == 0
    assert (s.cpu_ops, s.npu_ops, s.macs, s.cycles, s.inference_ms) == (
        0, 57, 7491972, 246086, 0.25)


def test_parse_summary_without_cycle_estimate() -> None:
    text = recorded("ic_resnet8_int8_reference.ethos-u55-128.txt")
    plain = text[: text.index("Info: The numbers below")]  # what vela prints without the flag
    s = parse_summary(plain)
    assert (s.npu_cycles, s.cycles, s.inference_ms) == (None, None, None)
    assert s.macs == 12505748


def test_parse_summary_rejects_text_without_summary() -> None:
    with pytest.raises(ConversionError, match="no network summary"):
        parse_summary("Warning: something\n")
    text = recorded("ic_resnet8_int8_reference.ethos-u55-128.txt").replace("Memory mode", "Mem")
    with pytest.raises(ConversionError, match="'Memory mode'"):
        parse_summary(text)


# --- placement, on recorded models and stdout ---------------------------------------------------


def placements(stem: str, run: str):
    source = read_model_file(DATA / f"{stem}.tflite")
    compiled = read_model_file(DATA / f"{stem}.{run}_vela.tflite")
    stdout = recorded(f"{stem}.{run}.txt")
    records, notes = vela_placements(source, compiled, stdout)
    return source, records, notes, parse_summary(stdout)


@pytest.mark.parametrize("run", ["ethos-u55-128", "ethos-u55-128-legacy"])
def test_placement_of_mixed_model(run: str) -> None:
    source, records, notes, summary = placements("mixed_int8", run)
    assert len(records) == len(source.ops) and notes == ()
    assert [r.index for r in records] == list(range(len(source.ops)))
    cpu = {r.index: r.op for r in records if r.placement == "cpu"}
    assert cpu == {1: "CONV_2D", 2: "L2_NORMALIZATION", 4: "GATHER"}
    assert len(cpu) == summary.cpu_ops == 3
    assert all(r.reason == NPU_REASON for r in records if r.placement == "npu")
    # The per-channel FULLY_CONNECTED goes to the NPU with Vela 5.2.0.
    assert records[5].op == "FULLY_CONNECTED" and records[5].placement == "npu"
    reasons = {r.index: r.reason for r in records}
    if run == "ethos-u55-128":  # Regor's words
        assert reasons[1] == ("not mapped to the NPU: Unsupported kernel stride: 4, 4; "
                              "Stride>3 is only supported IF (dilation = 1 AND padding = VALID)")
        assert reasons[4] == "not mapped to the NPU: Unsupported opType"
    else:  # the legacy core's, wrapped lines joined back
        assert "Strides must fulfil the following criteria: Stride h must be" in reasons[1]
        assert "or stride w must be divisible by 2 or 3" in reasons[1]
        assert reasons[4] == "not mapped to the NPU: Vela has no NPU implementation of GATHER"


def test_placement_of_float_model_names_the_fused_activation() -> None:
    source, records, notes, summary = placements("float32", "ethos-u55-128")
    assert [r.placement for r in records] == ["cpu"] * len(source.ops) and notes == ()
    assert summary.cpu_ops == len(source.ops) and summary.npu_ops == 0
    # Regor warns about the CONV_2D's fused RELU under the CONV_2D's output name.
    assert "reported as RELU: Operation has tensor with unsupported DataType Float32" in (
        records[0].reason)
    assert "unsupported DataType Float32" in records[3].reason


def test_placement_notes_what_does_not_match() -> None:
    source = read_model_file(DATA / "mixed_int8.tflite")
    compiled = read_model_file(DATA / "mixed_int8.ethos-u55-128_vela.tflite")
    records, notes = vela_placements(source, compiled, "")  # no warnings printed
    assert records[2].reason == "not mapped to the NPU (Vela printed no reason)"
    # Warnings about ops the compiled model does not keep, and kept ops the input lacks.
    other = read_model_file(DATA / "float32.tflite")
    _, notes = vela_placements(other, compiled, recorded("float32.ethos-u55-128.txt"))
    assert any("the compiled model has GATHER" in n for n in notes)
    assert any(n.startswith("Vela reported SOFTMAX") for n in notes)


def test_cpu_reasons_keys_by_output_name() -> None:
    reasons = cpu_reasons(recorded("mixed_int8.ethos-u55-128.txt"))
    assert reasons["functional_1/conv2d_1_2/convolution1"][0][0] == "CONV_2D"
    assert sorted(op for said in reasons.values() for op, _ in said) == [
        "CONV_2D", "GATHER", "L2_NORMALIZATION"]


def recorded_rows(stem: str, tmp_path: Path):
    """The per-layer CSV and debug database recorded for stem (tests/data/vela/README.md)."""
    from edgeq.adapters.vela_perf import read_per_layer

    for kind, ext in (("per-layer", "csv"), ("debug", "xml")):
        (tmp_path / f"{stem}_{kind}.{ext}").write_bytes(
            (DATA / f"{stem}.ethos-u55-128_{kind}.{ext}").read_bytes())
    return read_per_layer(tmp_path, stem)


def test_per_layer_rows_sum_per_op_to_vela_totals(tmp_path: Path) -> None:
    from edgeq.adapters.vela_perf import per_op, unattributed

    rows = recorded_rows("ic_resnet8_int8_reference", tmp_path)
    with (DATA / "ic_resnet8_int8_reference.ethos-u55-128_per-layer.csv").open() as f:
        table = list(csv.DictReader(f))
    assert rows is not None and len(rows) == len(table) == 50
    layers = per_op(rows, [f"t{i}" for i in range(16)], 128)
    s = parse_summary(recorded("ic_resnet8_int8_reference.ethos-u55-128.txt"))
    assert sum(p.cycles for p in layers.values()) == s.cycles == 201747
    assert sum(p.npu_cycles for p in layers.values()) == s.npu_cycles
    assert sum(p.macs for p in layers.values()) == s.macs
    assert unattributed(rows, 16)["rows"] == 0
    # CONV_2D + its fused RELU; RESHAPE folded away; SOFTMAX lowered to 29 NPU operations.
    assert (layers[0].rows, layers[13].rows, layers[15].rows) == (2, 0, 29)
    assert layers[15].cycles == sum(int(r["Op Cycles"]) for r in table if r["Original Operator"]
                                    == "Softmax") == 985
    assert (layers[0].cycles, layers[0].npu_cycles, layers[0].bound) == (14752, 14752, "compute")
    assert round(100 * layers[0].mac_utilisation, 2) == 23.43  # Vela's "Util% (MAC)"
    assert layers[9].bound == "memory:offchip_flash" and layers[13].bound == "none"
    assert layers[9].access_cycles["offchip_flash"] == layers[9].cycles == 34896
    assert layers[9].traffic["offchip_flash"]["weights_read"] > 0


def test_unnamed_tensors_are_placed_by_op_index(tmp_path: Path) -> None:
    """keyword_scrambled has no tensor names: Vela leaves SVDF ops and the last QUANTIZE on the
    CPU, which its debug database says by op index."""
    from edgeq.adapters.vela_perf import placement_by_index

    rows = recorded_rows("keyword_scrambled", tmp_path)
    assert rows is not None
    where = placement_by_index(rows, 15)
    assert [i for i, w in enumerate(where or []) if w == "cpu"] == [1, 3, 5, 7, 9, 10, 11, 14]


# --- real vela ----------------------------------------------------------------------------------


def vela_flags(profile: str) -> list[str]:
    """The flags for a profile, written out here rather than taken from the adapter."""
    c = load_target(profile).compiler
    assert c is not None and c.name == "vela"
    return ["--accelerator-config", str(c.accelerator_config), "--config", str(c.config_file),
            "--system-config", str(c.system_config), "--memory-mode", str(c.memory_mode),
            "--verbose-cycle-estimate", *c.args]


def vela_itself(model: Path, profile: str, tmp_path: Path) -> tuple[str, dict[str, str], bytes]:
    """Runs the vela command of this environment; returns stdout, the summary CSV, the model."""
    out = tmp_path / "vela-itself"
    script = Path(sys.executable).parent / "vela"
    proc = subprocess.run([str(script), str(model), "--output-dir", str(out), *vela_flags(profile)],
                          capture_output=True, text=True, check=True, cwd=tmp_path)
    (csv_path,) = out.glob("*_summary_*.csv")
    with csv_path.open() as f:
        header, row = list(csv.reader(f))
    return proc.stdout, dict(zip(header, row)), (out / f"{model.stem}_vela.tflite").read_bytes()


def printed(stdout: str, label: str, rest: str = r"\s+([\d.]+)") -> str | None:
    match = re.search(rf"^{re.escape(label)}{rest}", stdout, re.MULTILINE)
    return match.group(1) if match else None


@needs_vela
@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("network", MLPERF)
def test_mlperf_reference_matches_vela_itself(network, profile, fixtures, tmp_path) -> None:
    path = fixtures / "models" / "mlperf_tiny" / f"{network}_int8_reference.tflite"
    c = load_target(profile).compiler
    assert c is not None
    result = run_vela(path.read_bytes(), accelerator=str(c.accelerator_config),
                      system_config=c.system_config, memory_mode=c.memory_mode,
                      config_file=c.config_file, extra_args=tuple(c.args), name=path.stem)
    assert isinstance(result, VelaResult) and result.version == vela.vela_version()
    stdout, table, model = vela_itself(path, profile, tmp_path)
    s = result.summary

    # The figures equal vela's own printed lines ...
    assert s.accelerator == printed(stdout, "Accelerator configuration", r"\s+(\S+)")
    assert s.accelerator.lower().replace("_", "-") == c.accelerator_config
    assert (s.system_config, s.memory_mode) == (c.system_config, c.memory_mode)
    for area, value in [("SRAM", s.sram_bytes), ("DRAM", s.dram_bytes),
                        ("Off-chip Flash", s.offchip_flash_bytes)]:
        text = printed(stdout, f"Total {area} used")
        assert value == (kib(text) if text else 0), area
    assert s.cpu_ops == int(printed(stdout, "CPU operators", r" = (\d+)"))
    assert s.npu_ops == int(printed(stdout, "NPU operators", r" = (\d+)"))
    assert s.macs == int(printed(stdout, "Neural network macs"))
    assert s.cycles == int(printed(stdout, "Total cycles"))
    assert s.npu_cycles == int(printed(stdout, "NPU cycles"))
    assert s.inference_ms == float(printed(stdout, "Batch Inference time"))
    # ... and its CSV, which has the unrounded figures.
    assert s.macs == int(table["nn_macs"]) and s.cycles == int(float(table["cycles_total"]))
    for key, value in [("sram", s.sram_bytes), ("dram", s.dram_bytes),
                       ("off_chip_flash", s.offchip_flash_bytes)]:
        assert abs(value - float(table[f"{key}_memory_used"]) * 1024) <= 5.12, key
    assert abs(s.inference_ms - float(table["inference_time"]) * 1000) <= 0.005
    assert s.inference_ms == round(s.cycles / (s.clock_mhz * 1000), 2)
    # Same arguments, same compiled model (Vela is deterministic).
    assert result.model == model

    # One record per input op; every MLPerf Tiny reference op maps to the NPU.
    source = read_model_file(path)
    assert [(p.index, p.op) for p in result.placements] == [(o.index, o.op) for o in source.ops]
    assert sum(p.placement == "cpu" for p in result.placements) == s.cpu_ops == 0
    assert all(p.placement == "npu" for p in result.placements) and result.notes == ()


@needs_vela
def test_run_vela_places_cpu_ops_like_the_recording() -> None:
    result = run_vela((DATA / "mixed_int8.tflite").read_bytes(), accelerator="ethos-u55-128",
                      system_config="Ethos_U55_High_End_Embedded", memory_mode="Shared_Sram",
                      name="mixed_int8")
    records, _ = vela_placements(read_model_file(DATA / "mixed_int8.tflite"),
                                 read_model_file(DATA / "mixed_int8.ethos-u55-128_vela.tflite"),
                                 recorded("mixed_int8.ethos-u55-128.txt"))
    assert result.placements == records and result.notes == ()
    assert result.summary.cpu_ops == 3


@needs_vela
def test_vela_failure_is_a_conversion_error() -> None:
    with pytest.raises(ConversionError, match="No_Such_System") as info:
        run_vela((DATA / "mixed_int8.tflite").read_bytes(), accelerator="ethos-u55-128",
                 system_config="No_Such_System", memory_mode="Shared_Sram")
    assert info.value.stage == "compile (vela)" and "--system-config No_Such_System" in str(
        info.value)


def test_missing_vela_executable(tmp_path: Path) -> None:
    model = (DATA / "mixed_int8.tflite").read_bytes()
    with pytest.raises(MissingDependencyError, match="ethos-u-vela"):
        run_vela(model, accelerator="ethos-u55-128", system_config=None, memory_mode=None,
                 executable=str(tmp_path / "no-such-vela"))


@pytest.mark.parametrize("number,error", [(9, "KilledError"), (2, "KeyboardInterrupt"),
                                          (11, "ConversionError")])
def test_vela_killed_from_outside_is_named(monkeypatch: pytest.MonkeyPatch, number: int,
                                           error: str) -> None:
    """SIGKILL (the OOM killer) is not Vela's failure; SIGINT is the terminal's Ctrl-C; a
    SIGSEGV stays Vela's failure (exit 1)."""
    import subprocess

    from edgeq.adapters import vela

    monkeypatch.setattr(vela, "_run", lambda argv, **kw: subprocess.CompletedProcess(
        argv, -number, "", ""))
    with pytest.raises(BaseException) as info:
        run_vela((DATA / "mixed_int8.tflite").read_bytes(), accelerator="ethos-u55-128",
                 system_config=None, memory_mode=None, executable="vela")
    assert type(info.value).__name__ == error
    if number == 9:
        assert info.value.exit_status == 137 and "compile (vela) was killed" in str(info.value)


def test_missing_vela_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # No ethosu package for this interpreter to run.
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(MissingDependencyError) as info:
        run_vela((DATA / "mixed_int8.tflite").read_bytes(), accelerator="ethos-u55-128",
                 system_config=None, memory_mode=None)
    assert "pip install ethos-u-vela" in str(info.value)


@needs_vela
@pytest.mark.parametrize("profile", PROFILES)
def test_profile_sections_exist_in_installed_vela(profile: str) -> None:
    c = load_target(profile).compiler
    assert c is not None and c.config_file == "Arm/vela.ini"
    spec = importlib.util.find_spec("ethosu")
    assert spec is not None and spec.submodule_search_locations
    ini = Path(list(spec.submodule_search_locations)[0]) / "config_files" / "Arm" / "vela.ini"
    sections = configparser.ConfigParser()
    sections.read(ini)
    assert f"System_Config.{c.system_config}" in sections
    assert f"Memory_Mode.{c.memory_mode}" in sections
