"""Fuzzing hostile Keras configs (issue 14): real .keras and .h5 configs mutated (code injected
at random depths, class names swapped, module keys removed, deep nesting, odd values, wrong
types, non-object configs, text that is not JSON). Every mutant ends in an answer, never a
traceback: refused with exit 2 and one line, or accepted only when it carries no code; the
payload's marker file never appears."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from tests.conftest import FIXTURES, ROOT
from tests.fuzz_keras import carries_code, mutate
from tests.keras_hostile import payload_code, read_config, write_config

FUZZ_SEED = 14
FUZZ_BUDGET_S = 25.0  # in-process part; mutants are drawn until it is spent
FUZZ_MIN_MUTANTS = 300
CLI_SAMPLE = 6  # refused mutants run through the real `edgeq` program, plus one accepted
SOURCES = (ROOT / "representative_data" / "digits_cnn.keras",
           FIXTURES / "models" / "mlperf_tiny" / "ic_resnet8.h5",
           FIXTURES / "models" / "mlperf_tiny" / "streaming_wakeword.h5")


def _mutants(seed: int, code: str):
    rng = random.Random(seed)
    configs = {src: read_config(src) for src in SOURCES}
    while True:
        src = rng.choice(SOURCES)
        kind, mutant = mutate(configs[src], rng, code)
        yield src, kind, mutant


def _write(src: Path, folder: Path, n: int, mutant) -> Path:
    dst = folder / f"m{n % 4}{src.suffix}"
    if isinstance(mutant, bytes):
        return write_config(src, dst, text=mutant)
    return write_config(src, dst, mutant)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return env


def test_fuzz_hostile_keras_configs(tmp_path):
    from edgeq.errors import InputError, UnsafeModelError
    from edgeq.pipeline.load import check_keras_file

    marker = tmp_path / "MARKER"
    code = payload_code(marker)
    outcomes: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    sample: list[tuple[Path, str, bool]] = []
    start = time.monotonic()
    n = 0
    for n, (src, kind, mutant) in enumerate(_mutants(FUZZ_SEED, code), start=1):
        path = _write(src, tmp_path, n, mutant)
        hostile = _hostile(mutant, code)
        what = f"mutant {n} ({src.name}, {kind})"
        try:
            check_keras_file(path)
        except InputError as err:  # exit 2 in the CLI
            assert "\n" not in str(err) and str(path) in str(err), f"{what}: {err!r}"
            outcomes["refused as unsafe" if isinstance(err, UnsafeModelError)
                     else "refused as malformed"] += 1
            if len(sample) < CLI_SAMPLE and not any(k == kind for _, k, _ in sample):
                sample.append((_keep(path, tmp_path, n), kind, False))
        else:
            assert not hostile, f"{what} carries code and was accepted"
            outcomes["accepted (no code)"] += 1
            # One benign mutant must still convert: module keys gone from an .h5 (Keras 3
            # cannot find a .keras file's classes without them, an honest exit 2).
            if (not any(accepted for *_, accepted in sample) and src.suffix == ".h5"
                    and kind in ("strip", "strip_some")):
                sample.append((_keep(path, tmp_path, n), kind, True))
        kinds.update(kind.split("+"))
        assert not marker.exists(), f"{what}: the payload ran"
        if n >= FUZZ_MIN_MUTANTS and time.monotonic() - start > FUZZ_BUDGET_S:
            break
    in_process = time.monotonic() - start

    # A sample through the real program: no traceback, an exit code in {0, 2, 3}, one line.
    cli: Counter[str] = Counter()
    for path, kind, accepted in sample:
        proc = subprocess.run([sys.executable, "-m", "edgeq", "analyze", str(path), "--target",
                               "cortex-m4"], capture_output=True, text=True, timeout=300,
                              env=_env(), cwd=tmp_path)
        what = f"{path.name} ({kind}) through the CLI"
        assert proc.returncode in (0, 2, 3), f"{what}: exit {proc.returncode}\n{proc.stderr}"
        assert "Traceback" not in proc.stderr, f"{what}:\n{proc.stderr}"
        if proc.returncode:
            lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("edgeq: error:")]
            assert len(lines) == 1, f"{what}:\n{proc.stderr}"
        assert accepted or proc.returncode == 2, f"{what}: exit {proc.returncode}"
        cli[f"{'accepted' if accepted else 'refused'} mutant: exit {proc.returncode}"] += 1
        assert not marker.exists(), f"{what}: the payload ran"
    print(f"\nkeras config fuzz: {n} mutants in {in_process:.1f} s: {dict(outcomes)}; kinds "
          f"{dict(kinds)}; through the CLI {dict(cli)} in "
          f"{time.monotonic() - start - in_process:.1f} s")
    assert outcomes["refused as unsafe"] > 0 and outcomes["accepted (no code)"] > 0


def _hostile(mutant, code: str) -> bool:
    """Whether the mutant must be refused: it carries code, or is text that is not JSON."""
    if isinstance(mutant, bytes):
        try:
            mutant = json.loads(mutant.rstrip(b"\0"))  # an HDF5 fixed string drops its NULs
        except ValueError:
            return True
    return carries_code(mutant, code)


def _keep(path: Path, folder: Path, n: int) -> Path:
    kept = folder / f"sample{n}{path.suffix}"
    kept.write_bytes(path.read_bytes())
    return kept
