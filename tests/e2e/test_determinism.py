"""The same inputs give byte-identical outputs on two separate runs of the CLI: the .tflite,
the C sources of `edgeq embed`, and the report apart from its wall-clock figures
(edgeq.outputs.report.VOLATILE)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys

import pytest

from edgeq.outputs.report import VOLATILE, stable_view
from tests.conftest import EXAMPLE, ROOT

pytestmark = pytest.mark.slow


def _run(args: list[str], cwd) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    proc = subprocess.run([sys.executable, "-m", "edgeq", *args], capture_output=True,
                          text=True, timeout=600, cwd=cwd, env=env)
    assert proc.returncode == 0, proc.stderr
    return proc


def _markdown_without_timings(text: str) -> str:
    text = re.sub(r"\n## Stages\n.*?(?=\n## |\Z)", "\n", text, flags=re.S)
    return "\n".join(ln for ln in text.splitlines() if not ln.startswith("| latency"))


@pytest.mark.parametrize("target", ["cortex-m4", "coral"])
def test_two_runs_give_identical_bytes(tmp_path, target):
    runs = []
    for name in ("a", "b"):
        cwd = tmp_path / name  # same relative --out in two folders: same paths in the report
        cwd.mkdir()
        proc = _run(["convert", str(EXAMPLE / "digits_cnn.keras"), "--target", target,
                     "--data", str(EXAMPLE / "digits_calibration.npz"),
                     "--eval-data", str(EXAMPLE / "digits_eval.npz"), "--input-scale", "1/16",
                     "--out", "out", "--no-latency", "--json"], cwd)
        model = (cwd / "out" / "digits_cnn_int8.tflite").read_bytes()
        report = json.loads(proc.stdout)
        assert report["output"]["sha256"] == hashlib.sha256(model).hexdigest()
        _run(["embed", "out/digits_cnn_int8.tflite", "--out", "src", "--name", "g_digits"], cwd)
        runs.append({
            "tflite": model,
            "sources": {p.name: p.read_bytes() for p in sorted((cwd / "src").iterdir())},
            "report.json": stable_view(json.loads((cwd / "out" / "report.json").read_text())),
            "report.md": _markdown_without_timings((cwd / "out" / "report.md").read_text()),
        })
    a, b = runs
    assert a["tflite"] == b["tflite"]
    assert set(a["sources"]) == {"g_digits.h", "g_digits.cc", "g_digits_ops.h"}
    assert a["sources"] == b["sources"]
    assert a["report.json"] == b["report.json"], f"differs outside {sorted(VOLATILE)}"
    assert a["report.md"] == b["report.md"]
