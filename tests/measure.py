"""Run the CLI in a fresh child and measure it: exit code, stderr, seconds and the peak RSS of
the command's processes (RUSAGE_CHILDREN of a wrapper that runs only that command), for the
hostile-input tests (issue 14's bombs, issue 22's special files and size bombs)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.conftest import ROOT

MiB = 1024**2
GiB = 1024**3

_MEASURE = """
import json, resource, subprocess, sys, time
t0 = time.monotonic()
try:
    proc = subprocess.run(sys.argv[2:], capture_output=True, text=True, timeout=float(sys.argv[1]))
    code, err = proc.returncode, proc.stderr
except subprocess.TimeoutExpired as exc:
    code, err = "timeout", (exc.stderr or b"").decode(errors="replace")
print(json.dumps({"code": code, "err": err, "seconds": time.monotonic() - t0,
                  "peak_kib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))
"""


def child_env(**extra: str) -> dict[str, str]:
    """The test process's environment plus ``extra``, with this checkout first on the path."""
    env = dict(os.environ, **extra)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return env


def measured(*argv: str, cwd: str | None = None, env: dict[str, str] | None = None,
             limit: float = 120) -> dict:
    """`edgeq ARGV` in a fresh child (stdin closed: a command that waited on it would hang),
    given ``limit`` seconds before it counts as a "timeout"."""
    out = subprocess.run([sys.executable, "-c", _MEASURE, str(limit), sys.executable, "-m",
                          "edgeq", *argv], capture_output=True, text=True, timeout=limit + 60,
                         env=env or child_env(), check=True, stdin=subprocess.DEVNULL, cwd=cwd)
    return json.loads(out.stdout)


def one_line(err: str, *needles: str) -> str:
    """stderr is exactly one `edgeq: error:` line, no traceback, holding every needle."""
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("edgeq: error: "), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"
    return lines[0]


def assert_refused(result: dict, code: int, *expected: str, seconds: float = 30.0,
                   peak: int = GiB, what: str = "") -> str:
    """Exit `code`, exactly one error line holding every `expected` text, no traceback, within
    `seconds` and `peak` bytes. Returns the line."""
    err = result["err"]
    lines = [ln for ln in err.splitlines() if ln.startswith("edgeq: error:")]
    assert result["code"] == code, f"{what}: exit {result['code']}\n{err[-3000:]}"
    assert len(lines) == 1 and "Traceback" not in err, err[-3000:]
    for text in expected:
        assert text in lines[0], f"{what}: {text!r} not in {lines[0]!r}"
    used = result["peak_kib"] * 1024
    print(f"\n{what}: {result['seconds']:.1f} s, peak {used / MiB:.0f} MiB")
    assert result["seconds"] < seconds, f"{what} took {result['seconds']:.1f} s"
    assert used < peak, f"{what} peaked at {used / MiB:.0f} MiB"
    return lines[0]
