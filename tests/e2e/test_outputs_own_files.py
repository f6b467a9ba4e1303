"""Issue 22, item 6: outputs touch only edgeq's own files. The output directory is never swapped
or deleted (its inode, owner and the files others put there stay), a directory named like an
output is refused even with --overwrite, concurrent runs on one --out detect each other (one
writes, the other exits 2), TensorFlow's autograph files do not stay in $TMPDIR, and a few
inputs that raised (exit 1) are bad inputs (exit 2). Each case runs the `edgeq` program."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import FIXTURES, ROOT
from tests.measure import child_env, one_line

HELLO = FIXTURES / "models" / "tflm" / "hello_world_int8.tflite"
EXAMPLE = ROOT / "representative_data"


def _edgeq(*argv: str, **env: str) -> tuple[int, str, str]:
    proc = subprocess.run([sys.executable, "-m", "edgeq", *argv], capture_output=True,
                          text=True, timeout=600, env=child_env(**env))
    return proc.returncode, proc.stdout, proc.stderr


def _embed(out: Path, *extra: str) -> tuple[int, str, str]:
    return _edgeq("embed", str(HELLO), "--out", str(out), "--name", "g_hello", *extra)


def test_the_output_directory_and_its_other_files_stay(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("the user's own file")
    (out / "sub").mkdir()
    (out / "sub" / "keep.bin").write_bytes(b"x")
    before = os.stat(out)
    code, _, err = _embed(out)
    assert code == 0, err
    code, _, err = _embed(out, "--overwrite")
    assert code == 0, err
    after = os.stat(out)
    assert (after.st_ino, after.st_uid, after.st_mode) == (before.st_ino, before.st_uid,
                                                           before.st_mode)
    assert sorted(p.name for p in out.iterdir()) == [
        "g_hello.cc", "g_hello.h", "g_hello_ops.h", "notes.txt", "sub"]
    assert (out / "sub" / "keep.bin").read_bytes() == b"x"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to hand the directory to another user")
def test_a_directory_owned_by_another_user_keeps_its_owner_and_inode(tmp_path):
    out = tmp_path / "theirs"
    out.mkdir(mode=0o775)
    os.chown(out, 65534, 65534)
    before = os.stat(out)
    code, _, err = _embed(out)
    assert code == 0, err
    after = os.stat(out)
    assert (after.st_ino, after.st_uid, after.st_gid) == (before.st_ino, 65534, 65534)


def test_overwrite_never_deletes_a_directory_named_like_an_output(tmp_path):
    out = tmp_path / "out"
    (out / "g_hello.h").mkdir(parents=True)
    (out / "g_hello.h" / "precious.txt").write_text("mine")
    code, _, err = _embed(out, "--overwrite")
    assert code == 2
    one_line(err, "g_hello.h", "is a directory")
    assert (out / "g_hello.h" / "precious.txt").read_text() == "mine"
    assert sorted(p.name for p in out.iterdir()) == ["g_hello.h"]


def test_a_file_in_the_way_of_out_is_refused(tmp_path):
    out = tmp_path / "out"
    out.write_text("not a directory")
    code, _, err = _embed(out)
    assert code == 2
    one_line(err, "--out", "not a directory")
    assert out.read_text() == "not a directory"


def test_a_run_on_an_out_another_run_holds_exits_2(tmp_path):
    """Held by another run (here: the lock a run takes, held by this test): exit 2 at once."""
    out = tmp_path / "out"
    out.mkdir()
    fd = os.open(out, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        code, _, err = _embed(out)
    finally:
        os.close(fd)
    assert code == 2
    one_line(err, "another edgeq run is writing to --out")
    assert list(out.iterdir()) == []
    code, _, err = _embed(out)  # released: the next run writes
    assert code == 0, err
    fd = os.open(out, os.O_RDONLY)
    try:  # convert claims an existing --out before it loads anything
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        code, _, err = _edgeq("convert", str(EXAMPLE / "digits_cnn.keras"), "--target",
                              "cortex-m4", "--data", str(EXAMPLE / "digits_calibration.npz"),
                              "--out", str(out), "--overwrite")
    finally:
        os.close(fd)
    assert code == 2
    one_line(err, "another edgeq run is writing to --out")


def test_two_concurrent_embeds_without_overwrite_one_wins(tmp_path):
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "edgeq", "embed", str(HELLO), "--out", str(out),
            "--name", "g_hello"]
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=child_env()) for _ in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    for p in procs:
        p.stdout.close()
        p.stderr.close()
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    err = next(err for code, err in results if code == 2)
    line = one_line(err)
    assert "already exists" in line or "another edgeq run" in line
    assert sorted(p.name for p in out.iterdir()) == ["g_hello.cc", "g_hello.h", "g_hello_ops.h"]


def test_an_embed_name_too_long_for_a_file_is_exit_2(tmp_path):
    out = tmp_path / "out"
    code, _, err = _edgeq("embed", str(HELLO), "--out", str(out), "--name", "g" * 300)
    assert code == 2
    one_line(err, "302 bytes", "255")
    assert not out.exists()


@pytest.mark.parametrize("report,needle", [
    ({"accuracy": {"quantized": "0.9"}, "output": {"bytes": 1}}, "accuracy.quantized"),
    ({"accuracy": {"quantized": 0.9}, "output": {"bytes": [1]}}, "output.bytes"),
    ({"accuracy": {}, "output": {}, "memory": ["arena_bytes"]}, "'memory' is a list"),
    ({"accuracy": {"quantized": 0.9}, "output": {"bytes": 1}, "model": "m.tflite"},
     "another type than edgeq writes"),
    (None, "not a JSON report"),
], ids=["string-accuracy", "list-bytes", "list-memory", "string-model", "deep-nesting"])
def test_a_baseline_with_wrong_types_or_deep_nesting_is_exit_2(tmp_path, report, needle):
    base = tmp_path / "base.json"
    base.write_text(json.dumps(report) if report is not None else "[" * 100_000 + "]" * 100_000)
    code, _, err = _edgeq("verify", str(HELLO), "--target", "cortex-m4", "--eval-data",
                          str(tmp_path / "unused.npz"), "--baseline", str(base))
    assert code == 2, err
    one_line(err, "base.json", needle)


@pytest.mark.parametrize("section,needle", [
    ({"top1": {"device": "high"}}, "top1.device"),
    ({"estimated_cycles": {"n": 1}}, "emulator.estimated_cycles"),
    (None, "cannot read it as JSON"),
], ids=["string-top1", "object-cycles", "deep-nesting"])
def test_an_emulate_baseline_with_wrong_types_or_deep_nesting_is_exit_2(tmp_path, section,
                                                                        needle):
    base = tmp_path / "base.json"
    base.write_text(json.dumps({"emulator": section}) if section is not None
                    else '{"emulator": ' + "[" * 100_000 + "]" * 100_000 + "}")
    code, _, err = _edgeq("emulate", str(HELLO), "--target", "cortex-m4", "--baseline",
                          str(base), "--max-drop", "1")
    assert code == 2, err
    one_line(err, "base.json", needle)


def test_convert_leaves_no_autograph_files_in_tmpdir(tmp_path):
    """TensorFlow's autograph compiled every traced function to
    $TMPDIR/__pycache__/__autograph_generated_file*.pyc and left it there."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    out = tmp_path / "out"
    code, _, err = _edgeq("convert", str(EXAMPLE / "digits_cnn.keras"), "--target", "cortex-m4",
                          "--data", str(EXAMPLE / "digits_calibration.npz"), "--out", str(out),
                          "--no-latency", TMPDIR=str(tmp))
    assert code == 0, err
    assert list(tmp.rglob("*")) == [], sorted(str(p) for p in tmp.rglob("*"))
    assert sorted(p.name for p in out.iterdir()) == [
        "digits_cnn_int8.tflite", "report.json", "report.md"]


def test_files_another_process_creates_meanwhile_all_stay(tmp_path):
    """The old commit swapped a staged copy of the directory in: files created in --out while
    it ran were lost (2,574 of 90,526 in the issue's test). Now nothing but the outputs moves."""
    import threading

    from edgeq.outputs.atomic import write_outputs

    out = tmp_path / "out"
    out.mkdir()
    made: list[str] = []
    stop = threading.Event()

    def writer() -> None:
        k = 0
        while not stop.is_set():
            name = f"other_{k}.txt"
            (out / name).write_text(str(k))
            made.append(name)
            k += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        for k in range(30):
            write_outputs(out, {"model.tflite": b"m" * (k + 1), "report.json": b"{}"},
                          overwrite=True)
    finally:
        stop.set()
        thread.join()
    names = {p.name for p in out.iterdir()}
    assert len(made) > 30 and set(made) <= names, sorted(set(made) - names)[:5]
    assert names - set(made) == {"model.tflite", "report.json"}
    assert (out / "model.tflite").read_bytes() == b"m" * 30


def test_a_failed_run_removes_the_directory_it_created_only_when_empty(tmp_path):
    from edgeq.outputs.atomic import claim

    fresh = tmp_path / "a" / "b"
    with pytest.raises(RuntimeError):
        with claim(fresh):
            with claim(fresh):  # re-entrant in one process
                raise RuntimeError("the run failed")
    assert not (tmp_path / "a").exists()
    kept = tmp_path / "kept"
    with pytest.raises(RuntimeError):
        with claim(kept):
            (kept / "user.txt").write_text("written meanwhile")
            raise RuntimeError("the run failed")
    assert (kept / "user.txt").read_text() == "written meanwhile"


def test_tensorflows_temporary_files_are_removed_on_error_too(tmp_path, monkeypatch):
    import tempfile

    from edgeq.adapters.tf_tempdir import private_tempdir

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with pytest.raises(RuntimeError):
        with private_tempdir() as private:
            with tempfile.NamedTemporaryFile(suffix=".py", delete=False) as fh:
                fh.write(b"x = 1")  # as autograph writes its generated modules
            (Path(tempfile.gettempdir()) / "__pycache__").mkdir()
            raise RuntimeError("the conversion failed")
    assert not private.exists() and Path(fh.name).parent == private
    assert tempfile.gettempdir() == str(tmp_path) and list(tmp_path.iterdir()) == []


def test_analyze_of_a_keras_model_leaves_no_autograph_files(tmp_path):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    code, _, err = _edgeq("analyze", str(EXAMPLE / "digits_cnn.keras"), "--target", "cortex-m4",
                          TMPDIR=str(tmp))
    assert code == 0, err
    assert list(tmp.rglob("*")) == [], sorted(str(p) for p in tmp.rglob("*"))
