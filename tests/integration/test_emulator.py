"""The device emulator on real parts: TFLite Micro + CMSIS-NN firmware built with
arm-none-eabi-gcc from edgeq's embed output and the TFLM tree edgeq ships, run on
qemu-system-arm (mps2-an386, Cortex-M4). Outputs are checked against the TFLM Python
interpreter, never against figures written here. Skips (with the install line) only where the
toolchain is absent, and never in CI (EDGEQ_REQUIRE_EMULATOR=1, set by .ci/run). The build
cache is the user's (EDGEQ_CACHE or ~/.cache/edgeq): the first run on a machine prepares the
core's TFLM library (`edgeq emulate --prepare -t cortex-m4`), later runs reuse it."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgeq.cli import main
from tests.conftest import EXAMPLE, FIXTURES, emulator_toolchain

pytestmark = pytest.mark.slow

TREE = FIXTURES.parent / "third_party" / "tflm_tree_cmsis_nn.tar.gz"
HELLO = FIXTURES / "models" / "tflm" / "hello_world_int8.tflite"


@pytest.fixture(scope="module")
def toolchain():
    return emulator_toolchain()


@pytest.fixture(scope="module")
def tree(toolchain, monkeypatch_module):
    """No --tflm-tree: the tree edgeq ships (EDGEQ_TFLM_TREE unset)."""
    monkeypatch_module.delenv("EDGEQ_TFLM_TREE", raising=False)
    return None


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def _tree_args(tree):
    return [] if tree is None else ["--tflm-tree", tree]


@pytest.fixture(scope="module")
def digits(tmp_path_factory, tree):
    """The bundled digits CNN converted for cortex-m4 with --emulate (convert's stage)."""
    out = tmp_path_factory.mktemp("digits") / "out"
    code = main(["convert", str(EXAMPLE / "digits_cnn.keras"), "--target", "cortex-m4",
                 "--data", str(EXAMPLE / "digits_calibration.npz"),
                 "--eval-data", str(EXAMPLE / "digits_eval.npz"), "--input-scale", "1/16",
                 "--out", str(out), "--no-latency", "--emulate", *_tree_args(tree),
                 "--html"])
    assert code == 0
    return out


def _interpreter_top1(model_path, eval_npz, scale):
    """Top-1 of the TFLM Python interpreter on the same int8 inputs the emulator got."""
    from edgeq.adapters.tflm import TFLMRunner

    d = np.load(eval_npz)
    x = d["x"].astype(np.float32) * np.float32(scale)
    x = x.reshape(len(x), *np.load(eval_npz)["x"].shape[1:])
    runner = TFLMRunner(model_path.read_bytes())
    from edgeq.formats.tflite import read_model

    shape = read_model(model_path.read_bytes()).input_tensors[0].shape[1:]
    out = runner.run(x.reshape(len(x), *shape))[0]
    return float(np.mean(out.reshape(len(x), -1).argmax(axis=1) == d["y"])), len(x)


def test_convert_emulate_digits_matches_the_interpreter(digits):
    report = json.loads((digits / "report.json").read_text())
    emu = report["emulator"]
    assert {"machine", "cpu", "clock_hz", "samples", "instructions_per_inference",
            "estimated_cycles", "estimated_ms", "outputs_identical", "mismatched_samples",
            "top1", "arena_bytes", "build_seconds", "run_seconds"} <= set(emu)
    assert emu["machine"] == "mps2-an386" and emu["cpu"] == "cortex-m4"
    assert emu["outputs_identical"] is True and emu["mismatched_samples"] == 0
    top1, n = _interpreter_top1(digits / "digits_cnn_int8.tflite",
                                EXAMPLE / "digits_eval.npz", 1 / 16)
    assert emu["samples"] == n == emu["top1"]["labels"]
    assert emu["top1"]["device"] == pytest.approx(top1)
    assert emu["top1"]["interpreter"] == pytest.approx(top1)
    assert emu["agreement"] == 1.0
    # the estimate is the counted instructions times the documented CPI
    cpi = emu["estimate"]["cycles_per_instruction"]
    assert emu["estimated_cycles"] == round(emu["instructions_per_inference"] * cpi)
    assert emu["estimated_ms"] == pytest.approx(
        emu["estimated_cycles"] / emu["clock_hz"] * 1000, rel=1e-3)
    # per op: one entry per op of the model, summing to (a little less than) the Invoke total
    assert [o["op"] for o in emu["per_op"]] == [op["op"] for op in report["ops"]]
    total = sum(o["instructions"] for o in emu["per_op"])
    assert 0.9 * emu["instructions_per_inference"] < total <= emu["instructions_per_inference"]
    assert emu["instructions_min"] <= emu["instructions_per_inference"] <= emu["instructions_max"]
    # the device arena (32-bit) fits in what embed declared
    assert 0 < emu["arena_bytes"] <= emu["arena_declared"] - 16
    assert emu["arena_fits_declared"] is True


def test_emulate_is_cached_and_deterministic(tree, tmp_path, capsys):
    args = ["emulate", str(HELLO), "--target", "cortex-m4", *_tree_args(tree),
            "--eval-samples", "5", "--json"]
    assert main(args) == 0
    first = json.loads(capsys.readouterr().out)["emulator"]
    assert main(args) == 0
    second = json.loads(capsys.readouterr().out)["emulator"]
    assert second["build_cached"] is True and second["objects_compiled"] == 0
    timing = {"build_seconds", "run_seconds", "build_cached", "objects_compiled"}
    assert {k: v for k, v in first.items() if k not in timing} == \
        {k: v for k, v in second.items() if k not in timing}
    assert first["outputs_identical"] is True and first["samples"] == 5
    assert first["top1"] is None  # synthetic inputs have no labels
    assert first["inputs"].startswith("synthetic")


def test_emulate_gate_on_cycles(tree, tmp_path, capsys):
    report = tmp_path / "base.json"
    args = ["emulate", str(HELLO), "-t", "cortex-m4", *_tree_args(tree)]
    assert main([*args, "--report", str(report)]) == 0
    capsys.readouterr()
    assert main([*args, "--baseline", str(report), "--max-growth", "0"]) == 0
    capsys.readouterr()
    base = json.loads(report.read_text())
    base["emulator"]["estimated_cycles"] = base["emulator"]["estimated_cycles"] // 2
    report.write_text(json.dumps(base))
    assert main([*args, "--baseline", str(report), "--max-growth", "10"]) == 4
    assert "estimated cycles" in capsys.readouterr().err


def test_missing_tools_name_every_debian_package(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))  # no compiler, no QEMU, no host cc
    assert main(["emulate", str(HELLO), "-t", "cortex-m4"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    # every missing one, in one line, and the command that installs them (newlib and the C++
    # headers are found by their Debian paths without a compiler to ask: installed here or not)
    fix = err.split("Fix: ")[1]
    for pkg in ("gcc-arm-none-eabi", "qemu-system-arm", "gcc "):
        assert pkg in err.split("Fix: ")[0] and pkg in fix
    assert fix.startswith("sudo apt-get install -y ")


def test_missing_cxx_headers_are_found_before_any_compile(toolchain, tmp_path, monkeypatch,
                                                          capsys):
    """The Debian 12 case the README's old apt line missed: the cross compiler without
    libstdc++-arm-none-eabi-newlib. Simulated with the real compiler told to ignore its C++
    headers (-nostdinc++); the check names that one package, exit 2, before any build."""
    import shutil

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("arm-none-eabi-gcc", "arm-none-eabi-ar", "arm-none-eabi-nm",
                 "arm-none-eabi-size", "qemu-system-arm", "cc"):
        (bin_dir / tool).symlink_to(shutil.which(tool))
    gxx = bin_dir / "arm-none-eabi-g++"
    gxx.write_text(f'#!/bin/sh\nexec "{shutil.which("arm-none-eabi-g++")}" -nostdinc++ "$@"\n')
    gxx.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.setenv("EDGEQ_CACHE", str(tmp_path / "cache"))  # nothing may be built in it
    assert main(["emulate", str(HELLO), "-t", "cortex-m33"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "libstdc++-arm-none-eabi-newlib" in err and "cstddef" in err
    assert "gcc-arm-none-eabi " not in err and "qemu-system-arm" not in err
    assert not (tmp_path / "cache" / "emulator").exists()


def test_a_bad_tree_override_says_how_to_fix(toolchain, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("EDGEQ_TFLM_TREE", str(tmp_path / "nowhere"))
    assert main(["emulate", str(HELLO), "-t", "cortex-m4"]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "--tflm-tree" in err and "the tree edgeq ships" in err


def test_tree_override_and_the_bundled_tree_are_named_in_the_report(tree, capsys):
    """--tflm-tree (here the same pinned tree as an archive elsewhere) still overrides; the
    report names the tree used: the bundled one by its pinned commits, any by its hash."""
    if not TREE.is_file():
        pytest.skip(f"no TFLM tree archive at {TREE} to override with")
    assert main(["emulate", str(HELLO), "-t", "cortex-m4", "--eval-samples", "2", "--json"]) == 0
    bundled = json.loads(capsys.readouterr().out)["emulator"]["toolchain"]
    assert bundled["tflm_tree"] == "bundled"
    assert bundled["tflm_tree_sources"]["tflite-micro"].startswith("tensorflow/tflite-micro@")
    assert bundled["tflm_tree_sources"]["CMSIS-NN"].startswith("ARM-software/CMSIS-NN@")
    assert main(["emulate", str(HELLO), "-t", "cortex-m4", "--tflm-tree", str(TREE),
                 "--eval-samples", "2", "--json"]) == 0
    given = json.loads(capsys.readouterr().out)["emulator"]["toolchain"]
    assert given["tflm_tree"] == str(TREE) and "tflm_tree_sources" not in given
    # the same sources: the same tree hash, the same library and firmware
    assert given["tflm_tree_sha256"] == bundled["tflm_tree_sha256"]
    assert given["firmware"] == bundled["firmware"]


def test_target_without_emulator_exits_3(capsys):
    assert main(["emulate", str(HELLO), "-t", "coral"]) == 3
    assert "no emulator" in capsys.readouterr().err


def test_verify_emulate_gates_on_the_emulated_device(digits, tree, tmp_path, capsys):
    model = digits / "digits_cnn_int8.tflite"
    args = ["verify", str(model), "--target", "cortex-m4",
            "--eval-data", str(EXAMPLE / "digits_eval.npz"), "--input-scale", "1/16",
            "--baseline", str(digits / "report.json"), "--max-drop", "0", "--max-growth", "0",
            "--no-latency", "--emulate", *_tree_args(tree), "--json"]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    checks = {c["metric"]: c for c in out["checks"]}
    assert checks["emulator.top1"]["ok"] and checks["emulator.estimated_cycles"]["ok"]
    base = json.loads((digits / "report.json").read_text())["emulator"]
    assert out["emulator"]["estimated_cycles"] == base["estimated_cycles"]

    from edgeq.testing import assert_no_regression

    worse = json.loads((digits / "report.json").read_text())
    worse["emulator"]["top1"]["device"] = 1.0 + 0.01  # a baseline the model cannot reach
    (tmp_path / "worse.json").write_text(json.dumps(worse))
    with pytest.raises(AssertionError, match="emulated-device top-1"):
        assert_no_regression(model, target="cortex-m4", eval_data=EXAMPLE / "digits_eval.npz",
                             baseline=tmp_path / "worse.json", max_drop=0.5,
                             preprocess=_scale(1 / 16), emulate=True, tflm_tree=tree)


def _scale(s):
    from edgeq.data import Preprocess

    return Preprocess(scale=s)


def test_firmware_links_only_what_the_model_needs(tree, toolchain):
    """hello_world has only FULLY_CONNECTED: its firmware's library holds that kernel and the
    framework, not the convolution or pooling kernels."""
    from edgeq.outputs.embed import embed_model
    from edgeq.emulator.build import build_firmware
    from edgeq.emulator.cores import CORES
    from edgeq.emulator.toolchain import resolve_tree

    embedded = embed_model(HELLO.read_bytes(), "g_model")
    fw = build_firmware(embedded.files, "g_model", embedded.arena_size, 1, CORES["cortex-m4"],
                        toolchain, resolve_tree(tree))
    library = json.loads((fw.elf.parent / "firmware.json").read_text())["library"]
    prepared = json.loads((fw.elf.parent.parent.parent / "obj" / fw.config_key
                           / "library.json").read_text())["sources"]
    assert any(p.endswith("kernels/cmsis_nn/conv.cc") for p in prepared)  # built, not linked
    assert set(library) < set(prepared)
    assert any(p.endswith("kernels/cmsis_nn/fully_connected.cc") for p in library)
    assert not any(p.endswith(("/conv.cc", "/pooling.cc", "/depthwise_conv.cc"))
                   for p in library)
    assert fw.elf.is_file() and fw.marks_addr > 0 and fw.mark_fn[1] > fw.mark_fn[0]


def test_convert_emulate_summarises_in_report_md(digits):
    md = (digits / "report.md").read_text()
    emu = json.loads((digits / "report.json").read_text())["emulator"]
    assert "## Emulated device (cortex-m4, QEMU mps2-an386)" in md
    assert f"{emu['instructions_per_inference']:,} instructions per inference" in md
    # every op's estimated cycles and share, by layer, in report.md and report.html (issue 25)
    assert len(emu["per_op"]) == len(json.loads((digits / "report.json").read_text())["ops"])
    for op in emu["per_op"]:
        assert op["layer"] and f"| {op['estimated_cycles']:,} | {100 * op['share']:.1f}% |" in md
    page = (digits / "report.html").read_text()
    section = page[page.index('id="cycles"'):]
    assert "Estimated cycles per layer" in section and '<img class="figure"' in section
    assert all(f"{op['estimated_cycles']:,}" in section for op in emu["per_op"])


def test_every_op_output_matches_on_the_device(digits, tree):
    """The per-op comparison that localises a mismatch: TFLM keeps every tensor on the device
    and in the interpreter; each op's output bytes are compared (here all equal)."""
    from edgeq.emulator.emulate import emulate
    from edgeq.formats.tflite import read_model

    model = digits / "digits_cnn_int8.tflite"  # its kernels are built already: no extra cost
    result = emulate(model, "cortex-m4", tflm_tree=tree, eval_samples=2, locate_ops=True)
    info = read_model(model.read_bytes())
    assert result.op_outputs_compared == sum(len(op.outputs) for op in info.ops)
    assert result.mismatch_ops == () and result.locate_note == ""
    assert result.outputs_identical
