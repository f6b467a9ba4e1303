"""Robustness (issue 8): malformed models, crashing or hanging native code, hostile Keras and
data files, interrupted conversions. Every bad input ends in one `edgeq: error:` line and
exit 2; nothing takes the process down."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from edgeq.cli import main
from tests.conftest import FIXTURES, ROOT
from tests.fuzz_tflite import mutate, targets

FUZZ_MODELS = ("tflm/hello_world_int8", "coral/split_concat", "tflm/micro_speech_quantized",
               "coral/keras_lstm_mnist_ptq", "mlperf_tiny/kws_dscnn_int8_reference")
FUZZ_TARGETS = ("cortex-m4", "coral")
FUZZ_SEED = 8
FUZZ_BUDGET_S = 30.0  # in-process part; mutants are drawn until it is spent
FUZZ_MIN_MUTANTS = 60


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return env


def _mutants(seed: int):
    rng = random.Random(seed)
    sources = {name: (FIXTURES / "models" / f"{name}.tflite").read_bytes() for name in FUZZ_MODELS}
    spots = {name: targets(data) for name, data in sources.items()}
    while True:
        name = rng.choice(FUZZ_MODELS)
        kind, data = mutate(sources[name], rng, spots[name])
        yield name, kind, data, rng.choice(FUZZ_TARGETS)


def _check_outcome(code: int, err: str, what: str) -> None:
    assert code in (0, 2, 3), f"{what}: exit {code}\n{err}"
    if code != 0:
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("edgeq: error: "), f"{what}:\n{err}"
        assert "Traceback" not in err


def test_fuzz_analyze_in_process(tmp_path, capsys):
    """Mutated fixtures through `main()`; interpreters run in a child, so a native crash is an
    exit-2 answer here, never a dead pytest."""
    outcomes: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    start = time.monotonic()
    n = 0
    for n, (name, kind, data, target) in enumerate(_mutants(FUZZ_SEED), start=1):
        path = tmp_path / f"m{n % 8}.tflite"
        path.write_bytes(data)
        capsys.readouterr()
        code = main(["analyze", str(path), "--target", target, "--json"])
        err = capsys.readouterr().err
        _check_outcome(code, err, f"mutant {n} ({name}, {kind}, {target})")
        outcomes[{0: "accepted", 3: "accepted (exit 3: does not fit/place)"}.get(
            code, "rejected")] += 1
        if "crashed" in err or "did not finish" in err:
            outcomes["contained native crash/hang"] += 1
        kinds[kind.split(":")[0]] += 1
        if n >= FUZZ_MIN_MUTANTS and time.monotonic() - start > FUZZ_BUDGET_S:
            break
    with capsys.disabled():
        print(f"\nfuzz: {n} mutants in {time.monotonic() - start:.1f} s: {dict(outcomes)}; "
              f"kinds {dict(kinds)}")
    assert outcomes["rejected"] > 0


def test_fuzz_analyze_subprocess(tmp_path):
    """A subset through real processes: a segfault would show as a negative return code."""
    for n, (name, kind, data, target) in enumerate(_mutants(FUZZ_SEED + 1), start=1):
        if n > 12:
            break
        path = tmp_path / f"s{n}.tflite"
        path.write_bytes(data)
        proc = subprocess.run([sys.executable, "-m", "edgeq", "analyze", str(path), "--target",
                               target], capture_output=True, text=True, timeout=120, env=_env())
        _check_outcome(proc.returncode, proc.stderr, f"mutant {n} ({name}, {kind}, {target})")
