"""Honest arithmetic through the real command line (issue 14, item 4): .tflite files whose
tensors are past 32-bit sizes end in one `edgeq: error:` line naming the tensor and its op,
exit 3 when the model is too large for the runtimes and exit 2 when the file is damaged, before
any interpreter reads them. Before, a tensor of exactly 4 GiB measured a 1.5 KiB arena (exit 0)
and one of 3.9 GiB crashed TFLite Micro."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import ROOT
from tests.unit.test_tensor_limits import FLOAT32, INPUT, hostile

CASES = {  # name: (shape, dtype, exit status, words the message must hold)
    "exactly 4 GiB": ([1, 65536, 65536], None, 3, ["tensor 0", "4294967296 elements"]),
    "4 GiB - 1": ([3, 5, 17, 257, 65537], None, 3, ["tensor 0", "4294967295 bytes"]),
    "2^31 int8 elements": ([2, 2**30], None, 3, ["tensor 0", "2147483648 elements"]),
    "4 GiB of float32": ([1, 2**30], FLOAT32, 3, ["tensor 0", "4 GiB or more"]),
    "past int64": ([65536] * 4, None, 2, ["tensor 0", "more than any TensorFlow shape"]),
    "negative dim": ([1, -65536], None, 2, ["tensor 0", "negative dimension"]),
}


def _edgeq(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return subprocess.run([sys.executable, "-m", "edgeq", *args], capture_output=True,
                          text=True, timeout=120, env=env)


def _assert_one_line(proc: subprocess.CompletedProcess, status: int, path, *words: str) -> str:
    assert proc.returncode == status, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("edgeq: error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    for word in (str(path), *words):
        assert word in lines[0], f"{word!r} not in {lines[0]!r}"
    return lines[0]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("limits")
    made = {}
    for name, (shape, dtype, _, _) in CASES.items():
        made[name] = root / (name.replace(" ", "_").replace("^", "") + ".tflite")
        made[name].write_bytes(hostile(shape, dtype=dtype))
    eval_data = root / "eval.npz"  # never read: the model is refused first
    np.savez(eval_data, x=np.zeros((2, 1), np.float32), y=np.zeros(2, np.int64))
    made["eval"] = eval_data
    return made


@pytest.mark.parametrize("case", sorted(CASES))
def test_analyze_for_cortex_m7(files, case):
    _, _, status, words = CASES[case]
    line = _assert_one_line(_edgeq("analyze", str(files[case]), "--target", "cortex-m7"),
                            status, files[case], *words)
    if status == 3:
        assert f"'{INPUT}' (input of op 0 FULLY_CONNECTED)" in line


@pytest.mark.parametrize("command", ["inspect", "verify"])
def test_inspect_and_verify_refuse_the_4_gib_tensor(files, command):
    path = files["exactly 4 GiB"]
    args = [command, str(path)]
    if command == "verify":
        args += ["--target", "coral", "--eval-data", str(files["eval"]), "--no-latency"]
    _assert_one_line(_edgeq(*args), 3, path, f"tensor 0 '{INPUT}'", "FULLY_CONNECTED")


def test_past_the_tflm_planner_is_refused_on_tflm_targets_only(tmp_path):
    """2^31 - 1 int8 elements: a tensor every runtime counts, but an arena TFLite Micro's int
    planner cannot place (exit 3); a LiteRT target takes it."""
    path = tmp_path / "two_gib.tflite"
    path.write_bytes(hostile([1, 2**31 - 1]))
    _assert_one_line(_edgeq("analyze", str(path), "--target", "cortex-m7"), 3, path,
                     "activation tensors add up to", f"tensor 0 '{INPUT}'", "32-bit int")
    proc = _edgeq("analyze", str(path), "--target", "arm-cpu", "--json")
    assert proc.returncode == 0, proc.stderr


def test_a_1_gib_activation_is_measured_not_crashed(tmp_path):
    """The arena handed to TFLite Micro stays under 2^31 (its host build crashes between 2^31
    and 2^32): a 1 GiB activation gets its real figure and a budget verdict, not SIGSEGV."""
    import json

    path = tmp_path / "one_gib.tflite"
    path.write_bytes(hostile([1, 2**30]))
    proc = _edgeq("analyze", str(path), "--target", "cortex-m7", "--json")
    assert proc.returncode == 3, proc.stderr
    assert "crashed" not in proc.stderr and "does not fit target 'cortex-m7'" in proc.stderr
    memory = json.loads(proc.stdout)["memory"]
    assert 2**30 < memory["arena_bytes"] < 2**30 + 2**20
