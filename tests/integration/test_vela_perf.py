"""Vela's per-layer estimate in edgeq: the per-op figures equal what the vela command itself
writes (its per-layer CSV, tied to the input ops by its debug database, both read here by code
of their own), on the MLPerf Tiny reference models for every Ethos-U profile; the advice on
models whose figures call for it; the configuration a Vela-compiled model names."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from edgeq.adapters import vela
from edgeq.adapters.vela import run_vela
from edgeq.commands.analyze import analyze
from edgeq.errors import UnsupportedOpsError
from edgeq.formats.tflite import read_model_file
from edgeq.pipeline.place import check_placeable
from edgeq.targets import load_target

PROFILES = ("ethos-u55-128", "ethos-u65-256", "ethos-u85-256", "ethos-u85-1024")
MLPERF = ("ad_autoencoder", "ic_resnet8", "kws_dscnn", "streaming_wakeword", "vww_mobilenet_96")
EXAMPLE = Path(__file__).resolve().parents[2] / "representative_data"

pytestmark = pytest.mark.skipif(vela.vela_version() == "not installed",
                                reason="ethos-u-vela is not installed")


def mlperf(fixtures: Path, network: str) -> Path:
    return fixtures / "models" / "mlperf_tiny" / f"{network}_int8_reference.tflite"


def vela_itself(model: Path, profile: str, out: Path, *extra: str) -> tuple[str, Path]:
    """The vela command of this environment with the profile's flags written out here."""
    c = load_target(profile).compiler
    assert c is not None
    proc = subprocess.run(
        [sys.executable, "-m", "ethosu.vela", str(model), "--output-dir", str(out),
         "--accelerator-config", str(c.accelerator_config), "--config", str(c.config_file),
         "--system-config", str(c.system_config), "--memory-mode", str(c.memory_mode),
         "--verbose-cycle-estimate", "--verbose-performance", "--enable-debug-db", *extra],
        capture_output=True, text=True, check=True, cwd=out.parent)
    return proc.stdout, out


def vela_per_op(out: Path, stem: str) -> dict[int, dict[str, float]]:
    """Vela's per-layer CSV rows summed per input op, the op found through the debug
    database's perf (source_id, same row order as the CSV) and source (ext_key) tables."""
    with (out / f"{stem}_per-layer.csv").open() as f:
        rows = list(csv.DictReader(f))
    xml = (out / f"{stem}_debug.xml").read_text()

    def table(name: str) -> list[dict[str, str]]:
        body = re.search(rf'<table name="{name}">\s*<!\[CDATA\[\n(.*?)\]\]>', xml, re.DOTALL)
        assert body is not None, name
        return list(csv.DictReader(body.group(1).strip().splitlines()))

    ext = {s["id"]: int(s["ext_key"]) for s in table("source")}
    perf = table("perf")
    assert len(perf) == len(rows)
    sums: dict[int, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for row, p in zip(rows, perf):
        assert int(p["op_cycles"]) == int(row["Op Cycles"])
        if row["Target"] != "NPU":
            continue
        s = sums[ext[p["source_id"]]]
        for key in ("Op Cycles", "NPU", "MAC Count", "SRAM AC", "DRAM AC", "OnFlash AC",
                    "OffFlash AC"):
            s[key] += int(row[key])
        s["rows"] += 1
        s["util"] = float(row["Util% (MAC)"])  # Vela's own, meaningful for one-row ops
    return sums


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("network", MLPERF)
def test_per_op_cycles_equal_vela_itself(network, profile, fixtures, tmp_path) -> None:
    path = mlperf(fixtures, network)
    c = load_target(profile).compiler
    assert c is not None
    result = run_vela(path.read_bytes(), accelerator=str(c.accelerator_config),
                      system_config=c.system_config, memory_mode=c.memory_mode,
                      config_file=c.config_file, name=path.stem)
    stdout, out = vela_itself(path, profile, tmp_path / "vela")
    theirs = vela_per_op(out, path.stem)
    source = read_model_file(path)
    assert set(result.layers) == set(range(len(source.ops)))
    assert result.notes == ()
    macs_per_cycle = int(str(c.accelerator_config).rsplit("-", 1)[1])
    for index, mine in result.layers.items():
        v = theirs.get(index)
        if v is None:  # no NPU row: an op Vela folded away (RESHAPE)
            assert (mine.cycles, mine.npu_cycles, mine.macs, mine.rows) == (0, 0, 0, 0)
            continue
        assert mine.cycles == v["Op Cycles"] and mine.npu_cycles == v["NPU"], index
        assert mine.macs == v["MAC Count"] and mine.rows == v["rows"], index
        assert mine.access_cycles == {"sram": v["SRAM AC"], "dram": v["DRAM AC"],
                                      "onchip_flash": v["OnFlash AC"],
                                      "offchip_flash": v["OffFlash AC"]}, index
        if mine.cycles:
            assert mine.mac_utilisation == pytest.approx(
                v["MAC Count"] / (v["Op Cycles"] * macs_per_cycle), rel=1e-12)
            if v["rows"] == 1:  # Vela's own Util% (MAC)
                assert 100 * mine.mac_utilisation == pytest.approx(v["util"], rel=1e-9)
        worst = max(v["SRAM AC"], v["DRAM AC"], v["OnFlash AC"], v["OffFlash AC"])
        assert mine.bound == ("none" if not mine.cycles else
                              "compute" if worst <= v["NPU"] else mine.bound)
        assert mine.bound.startswith("memory:") == (worst > v["NPU"] and mine.cycles > 0)
    # The per-op figures add up to Vela's own totals.
    s = result.summary
    assert sum(p.cycles for p in result.layers.values()) == s.cycles
    assert sum(p.npu_cycles for p in result.layers.values()) == s.npu_cycles
    assert sum(p.macs for p in result.layers.values()) == s.macs
    printed = re.search(r"^Total cycles\s+(\d+)", stdout, re.MULTILINE)
    assert printed is not None and int(printed.group(1)) == s.cycles


@pytest.mark.parametrize("profile", ["ethos-u55-128", "ethos-u85-256"])
def test_analyze_json_has_vela_figures_for_every_npu_op(profile, fixtures, tmp_path) -> None:
    path = mlperf(fixtures, "kws_dscnn")
    d = json.loads(json.dumps(analyze(path, profile).to_dict()))
    _, out = vela_itself(path, profile, tmp_path / "vela")
    theirs = vela_per_op(out, path.stem)
    npu = [o for o in d["ops"] if o["placement"] == "npu"]
    assert len(npu) == len(d["ops"]) == 13
    for o in npu:
        assert {"npu_cycles", "macs", "mac_utilisation", "bound"} <= set(o)
        v = theirs.get(o["index"], {"NPU": 0, "MAC Count": 0, "Op Cycles": 0})
        assert (o["npu_cycles"], o["macs"], o["cycles"]) == (
            v["NPU"], v["MAC Count"], v["Op Cycles"])
    assert d["vela"]["per_layer"]["cycles"] == d["vela"]["cycles"]
    assert d["vela"]["command_streams"] == 1


def test_resnet8_advice_names_the_layers_mlia_names(fixtures) -> None:
    """MLIA 0.12 on this model (ethos-u55-128) flags op 0 (23.43 % MAC utilisation) and
    op 9 (memory-bound on off-chip flash); edgeq's advice says why for each."""
    path = mlperf(fixtures, "ic_resnet8")
    result = run_vela(path.read_bytes(), accelerator="ethos-u55-128",
                      system_config="Ethos_U55_High_End_Embedded", memory_mode="Shared_Sram",
                      config_file="Arm/vela.ini", name=path.stem)
    assert result.layers[0].bound == "compute"
    assert round(100 * result.layers[0].mac_utilisation, 2) == 23.43
    assert result.layers[9].bound == "memory:offchip_flash"
    channels = [a for a in result.advice if a.startswith("op 0 CONV_2D")]
    assert len(channels) == 1 and "3 input channels" in channels[0]
    weights = [a for a in result.advice if "wait on weights read from off-chip flash" in a]
    assert len(weights) == 1 and "op 9 CONV_2D" in weights[0]
    assert not any("splits the NPU work" in a for a in result.advice)  # all on the NPU


def test_cpu_op_between_npu_ops_is_named(fixtures) -> None:
    """TFLite Micro's keyword_scrambled example: Vela leaves its SVDF ops on the CPU, between
    FULLY_CONNECTED ops it maps, and the compiled model has one command stream per run."""
    path = fixtures / "models" / "tflm" / "keyword_scrambled.tflite"
    result = run_vela(path.read_bytes(), accelerator="ethos-u55-128",
                      system_config="Ethos_U55_High_End_Embedded", memory_mode="Shared_Sram",
                      name=path.stem)
    runs = []
    where = [p.placement for p in result.placements]
    for i, here in enumerate(where):
        if here == "cpu" and (i == 0 or where[i - 1] != "cpu") and "npu" in where[:i] \
                and "npu" in where[i:]:
            runs.append(i)
    splits = [a for a in result.advice if "splits the NPU work" in a]
    assert result.summary.cpu_ops == sum(p.placement == "cpu" for p in result.placements) == 8
    assert runs == [1, 3, 5, 7, 9] and len(splits) == 1
    assert result.command_streams == read_model_file_bytes(result.model).count("CUSTOM:ethos-u")
    assert result.command_streams == len(runs) + 1
    assert f"({result.command_streams} ethos-u ops" in splits[0]
    assert "op 1 SVDF; op 3 SVDF" in splits[0] and "op 9 SVDF, op 10 SVDF, op 11 SVDF" in splits[0]
    assert all(p.perf is None for p in result.placements)  # perf is attached by compile


def read_model_file_bytes(model: bytes) -> list[str]:
    from edgeq.formats.tflite import read_model

    return list(read_model(model).op_names)


@pytest.fixture(scope="module")
def compiled_for_u65(fixtures, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("u65")
    path = mlperf(fixtures, "kws_dscnn")
    vela_itself(path, "ethos-u65-256", out / "vela")
    return out / "vela" / f"{path.stem}_vela.tflite"


def test_compiled_model_names_its_configuration(compiled_for_u65) -> None:
    assert read_model_file(compiled_for_u65).npu_configs == ("ethos-u65-256",)
    same = analyze(compiled_for_u65, "ethos-u65-256")
    assert [o.placement for o in same.ops] == ["npu"]
    assert "ethos-u65-256" in same.ops[0].reason
    assert any("compiled by Vela for ethos-u65-256" in n for n in same.notes)
    for other in ("ethos-u55-128", "ethos-u85-256"):
        a = analyze(compiled_for_u65, other)
        with pytest.raises(UnsupportedOpsError) as info:
            check_placeable(a.ops, a.target)
        assert int(info.value.exit_status) == 3
        assert "compiled by Vela for ethos-u65-256" in str(info.value)
        assert "--target ethos-u65-256" in str(info.value)
    mcu = analyze(compiled_for_u65, "cortex-m4")
    with pytest.raises(UnsupportedOpsError, match="--target ethos-u65-256"):
        check_placeable(mcu.ops, mcu.target)


@pytest.mark.slow
def test_convert_bundled_example_for_ethos_u85(tmp_path) -> None:
    from edgeq.cli import main

    out = tmp_path / "u85"
    code = main(["convert", str(EXAMPLE / "digits_cnn.keras"), "--target", "ethos-u85-256",
                 "--data", str(EXAMPLE / "digits_calibration.npz"),
                 "--eval-data", str(EXAMPLE / "digits_eval.npz"), "--input-scale", "1/16",
                 "--out", str(out), "--html", "--no-latency"])
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    assert report["vela"]["accelerator"] == "Ethos_U85_256"
    assert report["vela"]["system_config"] == "Ethos_U85_SYS_DRAM_Mid"
    npu = [o for o in report["ops"] if o["placement"] == "npu"]
    assert npu and all({"npu_cycles", "macs", "mac_utilisation", "bound"} <= set(o) for o in npu)
    assert sum(o["cycles"] for o in npu) == report["vela"]["cycles"]
    assert read_model_file(out / "digits_cnn_int8_vela.tflite").npu_configs == (
        "ethos-u85-256",)
    md = (out / "report.md").read_text()
    assert "## Ethos-U per layer" in md
    top = max(npu, key=lambda o: o["cycles"])
    assert f"| {top['index']} | {top['op']} |" in md
    page = (out / "report.html").read_text()
    section = page[page.index('<section id="ethos-u">'):]
    assert '<img class="figure"' in section[:section.index("</section>")]
