"""Python files where edgeq runs never run inside it (issue 14, item 2): a `json.py` or
`random.py` in the working directory or beside the model is not imported by edgeq, by its
supervised child (convert) or by its interpreter worker (analyze, verify), each started in
Python's isolated mode by edgeq.process.spawn."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgeq.process import spawn
from tests.conftest import ROOT

EXAMPLE_DIR = ROOT / "representative_data"
# Modules edgeq, its children or Python's start-up import; each file leaves a marker when run.
HOSTILE = ["json", "random", "numpy", "click", "signal", "subprocess", "select", "ctypes",
           "tensorflow", "sitecustomize", "usercustomize"]
if sys.version_info >= (3, 11):
    # Before 3.11, `python -m` itself imports runpy from the working directory, before any of
    # edgeq's code can take that directory off the path (edgeq/__main__.py); the `edgeq`
    # command is not affected.
    HOSTILE.append("runpy")


def _plant(folder: Path, markers: Path, tag: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in HOSTILE:
        (folder / f"{name}.py").write_text(
            f"open({str(markers / f'{name}-{tag}')!r}, 'w').close()\n")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return env


def _console_script(tmp_path: Path) -> list[str]:
    """The `edgeq` command as pip writes it, running this checkout's edgeq."""
    shim = tmp_path / "bin" / "edgeq"
    shim.parent.mkdir()
    shim.write_text("import sys\nfrom edgeq.entry import main\nsys.exit(main())\n")
    return [sys.executable, str(shim)]


@pytest.fixture()
def hostile(tmp_path):
    """A working directory and a model folder full of hostile modules; the markers folder
    records any that ran."""
    markers = tmp_path / "markers"
    markers.mkdir()
    cwd, models = tmp_path / "cwd", tmp_path / "models"
    _plant(cwd, markers, "cwd")
    _plant(models, markers, "model")
    for name in ("digits_cnn.keras", "digits_calibration.npz", "digits_eval.npz"):
        (models / name).write_bytes((EXAMPLE_DIR / name).read_bytes())
    return cwd, models, markers


def _run(launcher: list[str], args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*launcher, *args], cwd=cwd, env=_env(), capture_output=True,
                          text=True, timeout=600)


@pytest.mark.slow
def test_files_in_the_cwd_and_beside_the_model_never_run(hostile, tmp_path):
    cwd, models, markers = hostile
    module = [sys.executable, "-m", "edgeq"]
    out = models / "out"
    run = _run(module, ["convert", str(models / "digits_cnn.keras"), "--target", "cortex-m4",
                        "--data", str(models / "digits_calibration.npz"), "--input-scale",
                        "1/16", "--calibration-samples", "50", "--eval-samples", "50",
                        "--out", str(out), "--no-latency"], cwd)
    assert run.returncode == 0, run.stderr
    assert not list(markers.iterdir()), sorted(p.name for p in markers.iterdir())
    model = out / "digits_cnn_int8.tflite"
    _plant(out, markers, "tflite")
    for launcher in (module, _console_script(tmp_path)):
        for args in (["analyze", str(model), "--target", "cortex-m4"],
                     ["verify", str(model), "--target", "cortex-m4", "--eval-data",
                      str(models / "digits_eval.npz"), "--input-scale", "1/16",
                      "--no-latency"]):
            run = _run(launcher, args, cwd)
            assert run.returncode == 0, (launcher, args, run.stderr)
            assert not list(markers.iterdir()), (args[0], sorted(p.name for p in markers.iterdir()))


def _probe(tmp_path: Path, cwd: Path, parent_path: list[str]) -> dict:
    """What a child started by edgeq sees, from a parent in `cwd` whose import path starts with
    `parent_path` (as `python -m` or `python -c` would make it) once its own imports are done."""
    import json

    probe = tmp_path / "probe" / "edgeq_probe.py"
    probe.parent.mkdir(exist_ok=True)
    probe.write_text("import json, sys, edgeq\n"
                     "print(json.dumps({'isolated': sys.flags.isolated, 'path': sys.path,"
                     " 'edgeq': edgeq.__file__, 'json': json.__file__, 'argv': sys.argv}))\n")
    code = (f"import sys; sys.path[:0] = {[str(ROOT), str(probe.parent)]!r}\n"
            "import subprocess\n"
            "from edgeq.process.spawn import python_command\n"
            f"sys.path[:0] = {parent_path!r}\n"
            "sys.exit(subprocess.run(python_command('edgeq_probe', 'a b', '-c')).returncode)\n")
    run = subprocess.run([sys.executable, "-I", "-c", code], cwd=cwd, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


def test_a_child_runs_isolated_without_the_working_directory(hostile, tmp_path):
    """Isolated mode, the parent's import path without the working directory (named, or as
    ''), the standard library's json, the arguments as given."""
    cwd, _, markers = hostile
    seen = _probe(tmp_path, cwd, ["", str(cwd)])
    assert seen["isolated"] == 1 and seen["argv"][1:] == ["a b", "-c"]
    assert str(tmp_path / "probe") in seen["path"] and str(ROOT) in seen["path"]
    assert str(cwd) not in seen["path"] and "" not in seen["path"]
    assert Path(seen["json"]).parent.name == "json" and str(cwd) not in seen["json"]
    assert seen["edgeq"] == str(ROOT / "edgeq" / "__init__.py")
    assert not list(markers.iterdir())


def test_a_child_runs_the_parents_edgeq_found_in_the_working_directory(tmp_path):
    """`python -m edgeq` in a source checkout imports edgeq from the working directory; its
    children, without that directory on their path, still run that copy (not an installed
    one)."""
    seen = _probe(tmp_path, ROOT, [""])  # and ROOT itself, the working directory
    assert seen["edgeq"] == str(ROOT / "edgeq" / "__init__.py")
    assert str(ROOT) not in seen["path"] and "" not in seen["path"]


def test_the_import_path_leaves_out_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", ["", ".", str(tmp_path), str(tmp_path) + "/", "/opt/x",
                                      "__editable__.finder.__path_hook__", "/opt/x"])
    assert spawn.import_path() == ["/opt/x", "__editable__.finder.__path_hook__"]
