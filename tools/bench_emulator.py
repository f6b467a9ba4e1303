"""Benchmarks `edgeq emulate` per core on the MLPerf Tiny reference int8 models: what the
one-time preparation costs, how long a model never seen before and a repeat take, executed
instructions, and the estimated latency against the published figure of a board with that core.

    python tools/bench_emulator.py [--cores cortex-m4,cortex-m33,...] [--models kws,vww,ic,ad,sww]
                                   [--samples 8] [--reuse-library] [--fixtures DIR]
                                   [--tflm-tree PATH] [--json PATH]

Per core, in a fresh, empty EDGEQ_CACHE: `edgeq emulate --prepare -t CORE` (the framework and
every kernel compiled once; wall-clock), then per model a first `edgeq emulate` (a new process:
the model was never seen, so its three files are compiled and linked) and a repeat (the same
command again: the linked firmware comes from the cache). --reuse-library copies the library
already in your cache instead of preparing it (its preparation time is then not measured).
Inputs are seeded random int8 tensors (the MLPerf data sets are not bundled): instruction
counts vary by well under 1% with the data.

Latency: the estimate is instructions x CPI / clock, with the CPI fitted here on ONE model (KWS)
to the published figure of the board named below, and the error reported on the others (out of
sample). The CPI edgeq ships (edgeq/emulator/costmodel.py) is printed next to it. Cores with no
published CPU-only TFLM/CMSIS-NN figure (Cortex-M7, Cortex-M55) are uncalibrated.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODELS = {  # name -> file in models/mlperf_tiny
    "kws": "kws_dscnn_int8_reference.tflite",
    "vww": "vww_mobilenet_96_int8_reference.tflite",
    "ic": "ic_resnet8_int8_reference.tflite",
    "ad": "ad_autoencoder_int8_reference.tflite",
    "sww": "streaming_wakeword_int8_reference.tflite",
}
# core -> (board, clock Hz, {model: published ms}, source)
PUBLISHED = {
    "cortex-m4": ("NUCLEO-L4R5ZI", 120_000_000,
                  {"kws": 99.81, "vww": 301.2, "ic": 389.6, "ad": 8.605},
                  "MLPerf Tiny v1.0 closed, OctoML microtvm_cmsis_nn/NUCLEO_L4R5ZI (Cortex-M4F "
                  "120 MHz, microTVM + CMSIS-NN)"),
    "cortex-m33": ("nRF5340 DK", 128_000_000,
                   {"kws": 76.09, "vww": 232.02, "ic": 316.16, "ad": 6.266},
                   "MLPerf Tiny v1.0 closed, OctoML microtvm_cmsis_nn/NRF5340-DK (Cortex-M33 "
                   "128 MHz, microTVM + CMSIS-NN)"),
    "cortex-m85": ("EK-RA8D1", 480_000_000,
                   {"kws": 3.465, "vww": 13.39, "ic": 8.478, "ad": 0.531},
                   "MLPerf Tiny v1.2 closed, Renesas EK-RA8D1 (Cortex-M85 480 MHz, TFLM + "
                   "CMSIS-NN with Helium)"),
}
CORES = ("cortex-m4", "cortex-m7", "cortex-m33", "cortex-m55", "cortex-m85")
CALIBRATE_ON = "kws"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cores", default=",".join(CORES))
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--reuse-library", action="store_true",
                    help="copy the prepared library from your cache instead of preparing it")
    ap.add_argument("--cache", help="use this EDGEQ_CACHE (empty: the preparation is measured) "
                    "and keep it, instead of a temporary one")
    ap.add_argument("--fixtures", default=str(ROOT.parent / "shared" / "fixtures"))
    ap.add_argument("--tflm-tree", help="another tree [the one edgeq ships]")
    ap.add_argument("--json", help="also write the results as JSON here")
    args = ap.parse_args()
    results = []
    for core in args.cores.split(","):
        results.append(_bench_core(core, args))
        print(_table(results[-1]), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


def _edgeq(*extra: str) -> list[str]:
    return [sys.executable, "-P", "-m", "edgeq", *extra]


def _bench_core(core: str, args) -> dict:
    tree = ["--tflm-tree", args.tflm_tree] if args.tflm_tree else []
    with tempfile.TemporaryDirectory(prefix="edgeq-bench-cache-") as cache:
        env = {k: v for k, v in os.environ.items() if k != "EDGEQ_TFLM_TREE"}
        env["EDGEQ_CACHE"] = cache
        prep_s = prep_cpu = None
        if args.cache:
            cache = args.cache
            env["EDGEQ_CACHE"] = cache
        if args.reuse_library:
            _copy_library(Path(cache))
            _run(_edgeq("emulate", "--prepare", "-t", core, *tree), env)  # must find it ready
        else:
            _, prep_s = _run(_edgeq("emulate", "--prepare", "-t", core, *tree), env)
            prep_cpu = CPU_SECONDS["last"]
        print(f"{core}: prepared in {prep_s if prep_s is None else round(prep_s)} s "
              f"(CPU {prep_cpu if prep_cpu is None else round(prep_cpu)} s)",
              file=sys.stderr, flush=True)
        rows = []
        for name in args.models.split(","):
            model = Path(args.fixtures) / "models" / "mlperf_tiny" / MODELS[name]
            cmd = _edgeq("emulate", str(model), "-t", core, *tree, "--eval-samples",
                         str(args.samples), "--json")
            first, first_s = _run(cmd, env)
            first_cpu = CPU_SECONDS["last"]
            again, again_s = _run(cmd, env)
            again_cpu = CPU_SECONDS["last"]
            emu = first["emulator"]
            assert again["emulator"]["instructions_per_inference"] == emu[
                "instructions_per_inference"], "instruction counts differ between runs"
            assert again["emulator"]["toolchain"]["firmware"] == emu["toolchain"]["firmware"]
            rows.append({
                "model": name, "instructions": emu["instructions_per_inference"],
                "outputs_identical": emu["outputs_identical"], "samples": emu["samples"],
                "arena_device": emu["arena_bytes"], "arena_declared": emu["arena_declared"],
                "arena_fits": emu["arena_fits_declared"], "arena_margin": emu["arena_margin"],
                "arena_host": emu["arena_host"], "files_compiled": emu["objects_compiled"],
                "first_s": first_s, "repeat_s": again_s, "first_cpu_s": first_cpu,
                "repeat_cpu_s": again_cpu,
                "repeat_cached": again["emulator"]["build_cached"],
                "shipped_cpi": emu["estimate"]["cycles_per_instruction"],
                "shipped_ms": emu["estimated_ms"], "profile_mhz": emu["clock_hz"] / 1e6,
                "calibrated": emu["estimate"]["calibrated"],
            })
            print(f"  {core} {name}: {emu['instructions_per_inference']:,} instructions, "
                  f"identical={emu['outputs_identical']}, first {first_s:.1f} s, repeat "
                  f"{again_s:.1f} s", file=sys.stderr, flush=True)
    board, hz, published, source = PUBLISHED.get(core, (None, None, {}, None))
    cal = next((r for r in rows if r["model"] == CALIBRATE_ON), None)
    cpi = (published[CALIBRATE_ON] / 1000 * hz / cal["instructions"]) \
        if cal and CALIBRATE_ON in published else None
    for r in rows:
        pub = published.get(r["model"])
        r["published_ms"] = pub
        r["estimated_ms"] = r["instructions"] * cpi / hz * 1000 if cpi else None
        r["error_pct"] = 100 * (r["estimated_ms"] - pub) / pub if cpi and pub else None
    return {"core": core, "board": board, "clock_hz": hz, "source": source, "cpi_fitted": cpi,
            "prepare_s": prep_s, "prepare_cpu_s": prep_cpu, "rows": rows}


def _copy_library(cache: Path) -> None:
    """The user's prepared libraries, tree and plugin (hard links), but no linked firmware:
    every model is new to this cache."""
    from edgeq.emulator.toolchain import cache_dir

    src = cache_dir() / "emulator"
    for part in ("obj", "trees", "plugin"):
        if (src / part).is_dir():
            shutil.copytree(src / part, cache / "emulator" / part, copy_function=os.link)


CPU_SECONDS: dict[str, float] = {}  # the last run's CPU time (user + sys, every child process)


def _run(cmd: list[str], env: dict[str, str]) -> tuple[dict, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    CPU_SECONDS["last"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()}")
    try:
        return json.loads(proc.stdout), seconds
    except json.JSONDecodeError:
        return {}, seconds


def _table(res: dict) -> str:
    core, cpi = res["core"], res["cpi_fitted"]
    prep = "not measured (--reuse-library)" if res["prepare_s"] is None \
        else f"{res['prepare_s']:.0f} s wall, {res['prepare_cpu_s']:.0f} s CPU"
    if cpi:
        head = (f"\n{core}: preparation {prep}; CPI fitted on {CALIBRATE_ON.upper()} = {cpi:.3f} "
                f"(edgeq ships {res['rows'][0]['shipped_cpi']}) at {res['clock_hz'] / 1e6:g} MHz;"
                f" published: {res['source']}\n\n")
    else:
        head = (f"\n{core}: preparation {prep}; no published CPU-only figure to fit: estimates "
                f"use the uncalibrated CPI edgeq ships ({res['rows'][0]['shipped_cpi']}) at the "
                f"profile's {res['rows'][0]['profile_mhz']:g} MHz\n\n")
    lines = ["| model | instructions / inference | est. ms | published ms | error | outputs "
             "identical | arena device / declared B (margin) | first emulate s wall / CPU "
             "(files compiled) | repeat s wall / CPU |", "|---|---:|---:|---:|---:|---|---:|---:|---:|"]
    for r in res["rows"]:
        est = r["estimated_ms"] if cpi else r["shipped_ms"]
        err = ("calibration" if r["model"] == CALIBRATE_ON and cpi else
               f"{r['error_pct']:+.1f} %" if r["error_pct"] is not None else "–")
        pub = f"{r['published_ms']:g}" if r["published_ms"] else "–"
        lines.append(
            f"| {r['model'].upper()} | {r['instructions']:,} | {est:.3g} | {pub} | {err} | "
            f"{'yes' if r['outputs_identical'] else 'NO'} ({r['samples']}) | "
            f"{r['arena_device'] + 16:,} / {r['arena_declared']:,} ({r['arena_margin']:+,}) | "
            f"{r['first_s']:.1f} / {r['first_cpu_s']:.1f} ({r['files_compiled']}) | "
            f"{r['repeat_s']:.1f} / {r['repeat_cpu_s']:.1f} |")
    return head + "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
