"""Process lifetime (issue 14, item 5): killing edgeq stops all of its work, with no output
afterwards; a child killed from outside edgeq reads as killed (exit 128 + N), not as bad input
or a bug; a killed run's staging directory is cleaned up by the next run.

No timing guesses: each test waits for a fact it can see (a process in /proc, a file a child
wrote) and the waits' limits only turn a hang into a failure."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from edgeq.process import supervise
from tests.conftest import ROOT

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="reads /proc; the parent-death signal is Linux's")

EXAMPLE_DIR = ROOT / "representative_data"
GUARD_S = 180.0  # only for a process that never comes or never goes: a failure, not a timing


def _env(*extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), *extra, env.get("PYTHONPATH"))
                                        if p)
    return env


# --- /proc -----------------------------------------------------------------------------------


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, parent pid, start time) of a process, None when there is none."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()
    return fields[0], int(fields[1]), int(fields[19])


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(
            errors="replace")
    except OSError:
        return ""


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = _stat(int(entry))
            if st is not None and st[1] == pid and st[0] not in "ZX":
                found.append(int(entry))
    return found


def _alive(pid: int, start: int) -> bool:
    """A dead process may linger as a zombie until its (new) parent reaps it."""
    st = _stat(pid)
    return st is not None and st[0] not in "ZX" and st[2] == start


def _wait_for(what: str, check, proc: subprocess.Popen | None = None):
    deadline = time.monotonic() + GUARD_S
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"the process ended (exit {proc.returncode}) before {what}: "
                        f"{proc.stderr.read() if proc.stderr else ''}")
        time.sleep(0.02)
    pytest.fail(f"no {what} within {GUARD_S:g} s")


def _end(tree: dict[int, int]) -> None:
    """After a failed test: end what it left running (the processes it recorded)."""
    for pid, start in tree.items():
        if _alive(pid, start):
            os.kill(pid, signal.SIGKILL)


def _python_child(parent: int, module: str) -> int | None:
    """A child of `parent` started by edgeq.process.spawn to run `module`."""
    return next((pid for pid in _children(parent)
                 if f"run_child({parent}, '{module}')" in _cmdline(pid)), None)


def _maps_tensorflow(pid: int) -> bool:
    try:
        return "tensorflow" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


def _convert(out: Path) -> list[str]:
    return [sys.executable, "-m", "edgeq", "convert", str(EXAMPLE_DIR / "digits_cnn.keras"),
            "--target", "cortex-m4", "--data", str(EXAMPLE_DIR / "digits_calibration.npz"),
            "--input-scale", "1/16", "--calibration-samples", "50", "--eval-samples", "50",
            "--out", str(out), "--no-latency"]


def _convert_in_tensorflow(out: Path) -> tuple[subprocess.Popen, int]:
    """`edgeq convert` started and its supervised child at work: TensorFlow loaded."""
    edgeq = subprocess.Popen(_convert(out), env=_env(), stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    try:
        child = _wait_for("supervised child", lambda: _python_child(edgeq.pid, "edgeq"), edgeq)
        _wait_for("TensorFlow in the child", lambda: _maps_tensorflow(child), edgeq)
    except BaseException:
        edgeq.kill()  # its child goes with it
        raise
    return edgeq, child


# --- kill -9 of edgeq --------------------------------------------------------------------------


def test_kill_9_of_edgeq_stops_the_conversion_and_no_output_appears(tmp_path):
    out = tmp_path / "out"
    edgeq, child = _convert_in_tensorflow(out)
    tree = {pid: _stat(pid)[2] for pid in (child, *_children(child)) if _stat(pid)}
    edgeq.kill()
    edgeq.wait()
    edgeq.stderr.close()
    try:
        _wait_for("end of the supervised child and its children",
                  lambda: not any(_alive(pid, start) for pid, start in tree.items()))
    finally:
        _end(tree)
    # Nothing of the run is left that could write: any later Python child of it would name
    # the child as its parent in its command line.
    assert not [pid for pid in map(int, filter(str.isdigit, os.listdir("/proc")))
                if f"run_child({child}," in _cmdline(pid) and _stat(pid)
                and _stat(pid)[0] not in "ZX"]
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == []


_HANG_IN_WORKER = """\
from edgeq.process.isolation import run_in_child

run_in_child("hang", b"", stage="s", source="m.tflite", user_file=False, timeout_s=3600)
"""
_SUPERVISE = ("import sys\n"
              "from edgeq.process import spawn, supervise\n"
              "sys.exit(supervise.run(['convert'], command=spawn.python_command('hang_here')))\n")


def test_kill_9_of_edgeq_takes_the_grandchildren_down_too(tmp_path):
    """edgeq → supervised child → interpreter worker: a kill of the first ends all three."""
    (tmp_path / "hang_here.py").write_text(_HANG_IN_WORKER)
    edgeq = subprocess.Popen([sys.executable, "-c", _SUPERVISE], env=_env(str(tmp_path)),
                             stderr=subprocess.PIPE, text=True)
    try:
        child = _wait_for("supervised child", lambda: _python_child(edgeq.pid, "hang_here"),
                          edgeq)
        worker = _wait_for("worker", lambda: _python_child(child, "edgeq.process.worker"),
                           edgeq)
    except BaseException:
        edgeq.kill()
        raise
    tree = {pid: _stat(pid)[2] for pid in (child, worker)}
    edgeq.kill()
    edgeq.wait()
    edgeq.stderr.close()
    try:
        _wait_for("end of the child and the worker",
                  lambda: not any(_alive(pid, start) for pid, start in tree.items()))
    finally:
        _end(tree)


def test_a_child_whose_parent_is_gone_before_it_starts_ends_at_once(tmp_path, monkeypatch):
    """The race the parent-death signal leaves: the parent ended before the child asked for
    it. The child checks its parent is still the one that started it; here it is not."""
    from edgeq.process.spawn import python_command

    marker = tmp_path / "ran"
    (tmp_path / "late_child.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    command = python_command("late_child")
    assert subprocess.run(command, timeout=120).returncode == 0 and marker.exists()
    marker.unlink()
    code = command.index("-c") + 1
    command[code] = command[code].replace(f"run_child({os.getpid()},", "run_child(1,")
    run = subprocess.run(command, timeout=120, capture_output=True)
    assert run.returncode == -signal.SIGKILL and not marker.exists(), run.stderr


_TIED_SLEEP = """\
import subprocess, sys
from edgeq.process.spawn import tied_command
subprocess.run(tied_command(["/bin/sleep", "600"]))
"""


def test_a_native_tool_dies_with_edgeq_too(tmp_path):
    """QEMU and the Edge TPU compiler start through spawn.tied_command: after a kill -9 of the
    process that started them, they do not run on (here /bin/sleep stands for the tool)."""
    parent = subprocess.Popen([sys.executable, "-c", _TIED_SLEEP], env=_env(), cwd=tmp_path,
                              stderr=subprocess.PIPE, text=True)
    tree = {}
    try:
        tool = _wait_for("the tool under its parent", lambda: next(
            (pid for pid in _children(parent.pid) if _cmdline(pid).startswith("/bin/sleep")),
            None), parent)
        tree = {tool: _stat(tool)[2]}
        parent.kill()
        parent.wait()
        _wait_for("the tool's end", lambda: not _alive(tool, tree[tool]))
    finally:
        _end(tree)


def test_sigterm_to_edgeq_stops_the_child_as_ctrl_c_does(tmp_path, capsys):
    """Forwarded as the SIGINT the child stops on cleanly (its outputs old or new)."""
    pid_file, got = tmp_path / "pid", tmp_path / "got"
    body = ("import os, sys, time\n"
            "fd = int(os.environ['EDGEQ_STAGE_FD'])\n"
            "os.write(fd, b'\\x00ready\\nquantize\\t600\\n')\n"
            "try:\n"
            f"    open({str(pid_file)!r} + '.tmp', 'w').write(str(os.getpid()))\n"
            f"    os.replace({str(pid_file)!r} + '.tmp', {str(pid_file)!r})\n"
            "    time.sleep(3600)\n"
            f"except KeyboardInterrupt:\n    open({str(got)!r}, 'w').close()\n"
            "    sys.exit(130)\n")

    def terminate_edgeq() -> None:  # this process is edgeq's supervisor here
        deadline = time.monotonic() + GUARD_S
        while not pid_file.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        if pid_file.exists():  # the supervisor's handler is in place while its child runs
            os.kill(os.getpid(), signal.SIGTERM)

    thread = threading.Thread(target=terminate_edgeq, daemon=True)
    thread.start()
    assert supervise.run(["convert"], command=[sys.executable, "-c", body]) == 130
    thread.join()
    assert got.exists()


# --- a child killed from outside edgeq ---------------------------------------------------------


def _kill_when_written(pid_file: Path, number: int) -> threading.Thread:
    def kill() -> None:
        deadline = time.monotonic() + GUARD_S
        while not pid_file.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        if pid_file.exists():
            os.kill(int(pid_file.read_text()), number)

    thread = threading.Thread(target=kill, daemon=True)
    thread.start()
    return thread


KILLS = [(signal.SIGKILL, "out of memory? a job limit?"),
         (signal.SIGTERM, "a job limit? a shutdown?"), (signal.SIGHUP, "the terminal closed?")]


@pytest.mark.parametrize("number,guess", KILLS, ids=[n.name for n, _ in KILLS])
def test_supervised_child_killed_from_outside_is_named_not_blamed(tmp_path, capsys, number,
                                                                  guess):
    """Killed in "load", where a crash would read as corrupt input (exit 2)."""
    pid_file = tmp_path / "pid"
    body = ("import os, time\n"
            "os.write(int(os.environ['EDGEQ_STAGE_FD']), b'load\\t600\\n')\n"
            f"open({str(pid_file)!r} + '.tmp', 'w').write(str(os.getpid()))\n"
            f"os.replace({str(pid_file)!r} + '.tmp', {str(pid_file)!r})\n"
            "time.sleep(3600)\n")
    thread = _kill_when_written(pid_file, number)
    code = supervise.run(["convert"], command=[sys.executable, "-c", body])
    thread.join()
    err = capsys.readouterr().err
    assert code == 128 + number, err
    assert err == (f"edgeq: error: load was killed (signal {int(number)}, {number.name}) from "
                   f"outside edgeq ({guess}); outputs are untouched\n")


def test_real_supervised_child_killed_by_the_oom_killer_exits_137(tmp_path):
    out = tmp_path / "out"
    edgeq, child = _convert_in_tensorflow(out)
    os.kill(child, signal.SIGKILL)  # what the kernel's OOM killer sends
    _, err = edgeq.communicate(timeout=GUARD_S)
    lines = [ln for ln in err.splitlines() if ln.startswith("edgeq: error:")]
    assert edgeq.returncode == 137, err
    assert len(lines) == 1 and "was killed (signal 9, SIGKILL) from outside edgeq" in lines[0]
    assert "Traceback" not in err
    assert "corrupt" not in err and "bug" not in err and not out.exists()


def _hang_and_kill(tmp_path: Path, number: int, stage: str = "s") -> None:
    """Run the worker's `hang` task here; another thread sends it signal `number` once it
    hangs (Python's own start-up turns a SIGINT into a traceback and exit 1, not a signal)."""
    from edgeq.process.isolation import run_in_child

    ready = tmp_path / "hanging"

    def kill() -> None:
        deadline = time.monotonic() + GUARD_S
        while not ready.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        worker = _python_child(os.getpid(), "edgeq.process.worker")
        if worker is not None:
            os.kill(worker, number)

    thread = threading.Thread(target=kill, daemon=True)
    thread.start()
    try:
        run_in_child("hang", b"", stage=stage, source="m.tflite", timeout_s=GUARD_S,
                     args={"ready": str(ready)})
    finally:
        thread.join()


@pytest.mark.parametrize("number,guess", KILLS, ids=[n.name for n, _ in KILLS])
def test_worker_killed_from_outside_is_named_not_blamed(tmp_path, number, guess):
    from edgeq.errors import KilledError

    with pytest.raises(KilledError) as info:
        _hang_and_kill(tmp_path, number, stage="TFLite Micro (arena measurement)")
    assert info.value.exit_status == 128 + number
    assert str(info.value) == (f"TFLite Micro (arena measurement) was killed (signal "
                               f"{int(number)}, {number.name}) from outside edgeq ({guess}); "
                               "outputs are untouched")


def test_worker_interrupted_by_ctrl_c_stops_as_ctrl_c(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        _hang_and_kill(tmp_path, signal.SIGINT)


def test_worker_crash_signal_from_outside_still_reads_as_a_crash(tmp_path):
    """The signal says what happened, not who sent it: SIGABRT is a crash (bad input here)."""
    from edgeq.errors import ModelFileError

    with pytest.raises(ModelFileError, match=r"crashed \(SIGABRT\)"):
        _hang_and_kill(tmp_path, signal.SIGABRT)


# --- what a killed run leaves ------------------------------------------------------------------


def test_a_killed_runs_staging_directory_is_removed_by_the_next_run(tmp_path):
    """Staging directories live inside the output directory; the next run removes those of
    runs on this host that are gone, and leaves a live run's and another host's."""
    from edgeq.outputs import atomic as outputs

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    host = os.uname().nodename
    mark = outputs.STAGING_MARK
    out = tmp_path / "out"
    out.mkdir()
    stale = out / f"{mark}{gone.pid}@{host}-abc123_x"
    live = out / f"{mark}{os.getpid()}@{host}-def456_y"
    elsewhere = out / f"{mark}{gone.pid}@another-host-ghi789_z"
    for folder in (stale, live, elsewhere):
        folder.mkdir()
        (folder / "model.tflite").write_bytes(b"half")
    outputs.write_outputs(out, {"a": b"new"}, overwrite=False)
    assert sorted(p.name for p in out.iterdir()) == sorted(["a", live.name, elsewhere.name])
    assert (out / "a").read_bytes() == b"new"
