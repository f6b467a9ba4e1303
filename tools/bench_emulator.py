"""Benchmarks `edgeq emulate` on the MLPerf Tiny reference int8 models: emulated-device
instruction counts, the estimated latency against published Cortex-M4F measurements, byte
identity with the TFLM interpreter, and what the build costs.

    python tools/bench_emulator.py [--core cortex-m4] [--samples 8] [--warm-cache]
                                   [--models kws,vww,ic,ad,sww] [--fixtures DIR]
                                   [--tflm-tree PATH] [--json PATH]

Per model: a first `emulate` with an EMPTY build cache (a fresh EDGEQ_CACHE: the framework,
the model's kernels and CMSIS-NN functions are all compiled; --warm-cache uses yours instead),
then a second run of the same model as a user runs it (`python -P -m edgeq emulate`, a new
process, cache warm), both timed wall-clock. Inputs are seeded random int8 tensors (the MLPerf
data sets are not bundled): instruction counts vary by well under 1% with the data.

Latency: the estimate is instructions x CPI / 120 MHz, with the CPI fitted here on ONE model
(KWS) to the published NUCLEO-L4R5ZI (Cortex-M4F, 120 MHz) microTVM + CMSIS-NN figures of MLPerf
Tiny v1.0 (OctoML; ../shared/design/DEVICE_LATENCY.md section 2.2) and the error reported on
the others. The CPI edgeq ships (edgeq/emulator/costmodel.py) is printed next to it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODELS = {  # name -> (file in models/mlperf_tiny, published ms on NUCLEO-L4R5ZI or None)
    "kws": ("kws_dscnn_int8_reference.tflite", 99.81),
    "vww": ("vww_mobilenet_96_int8_reference.tflite", 301.2),
    "ic": ("ic_resnet8_int8_reference.tflite", 389.6),
    "ad": ("ad_autoencoder_int8_reference.tflite", 8.605),
    "sww": ("streaming_wakeword_int8_reference.tflite", None),  # no published M4 figure
}
SOURCE = ("MLPerf Tiny v1.0 closed, OctoML microtvm_cmsis_nn/NUCLEO_L4R5ZI (Cortex-M4F 120 MHz, "
          "microTVM + CMSIS-NN), performance/results.txt; DEVICE_LATENCY.md section 2.2")
CALIBRATE_ON = "kws"
CLOCK_HZ = 120_000_000


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--core", default="cortex-m4", choices=["cortex-m4", "cortex-m7",
                                                              "cortex-m55"])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--warm-cache", action="store_true",
                    help="build into your cache instead of an empty one per model")
    ap.add_argument("--fixtures", default=str(ROOT.parent / "shared" / "fixtures"))
    ap.add_argument("--tflm-tree", default=os.environ.get("EDGEQ_TFLM_TREE") or str(
        ROOT.parent / "shared" / "third_party" / "tflm_tree_cmsis_nn.tar.gz"))
    ap.add_argument("--json", help="also write the rows as JSON here")
    args = ap.parse_args()
    target = {"cortex-m4": "cortex-m4", "cortex-m7": "cortex-m7",
              "cortex-m55": "cortex-m55"}[args.core]
    rows = []
    for name in args.models.split(","):
        file, published = MODELS[name]
        model = Path(args.fixtures) / "models" / "mlperf_tiny" / file
        with tempfile.TemporaryDirectory(prefix="edgeq-bench-cache-") as cache:
            env = dict(os.environ)
            if not args.warm_cache:
                env["EDGEQ_CACHE"] = cache
            cmd = [sys.executable, "-P", "-m", "edgeq", "emulate", str(model), "-t", target,
                   "--tflm-tree", args.tflm_tree, "--eval-samples", str(args.samples), "--json"]
            first, first_s = _run(cmd, env)
            second, second_s = _run(cmd, env)
        emu = first["emulator"]
        assert second["emulator"]["instructions_per_inference"] == emu[
            "instructions_per_inference"], "instruction counts differ between runs"
        rows.append({
            "model": name, "instructions": emu["instructions_per_inference"],
            "outputs_identical": emu["outputs_identical"], "samples": emu["samples"],
            "arena_device": emu["arena_bytes"], "arena_host": emu["arena_host"],
            "published_ms": published if args.core == "cortex-m4" else None,
            "profile_ms": emu["estimated_ms"], "profile_mhz": emu["clock_hz"] / 1e6,
            "first_build_s": emu["build_seconds"],
            "first_wall_s": first_s, "objects_compiled": emu["objects_compiled"],
            "second_wall_s": second_s, "second_cached": second["emulator"]["build_cached"],
            "shipped_cpi": emu["estimate"]["cycles_per_instruction"],
            "top_op": (emu["top_ops"] or [{}])[0].get("op"),
        })
        print(f"{name}: {emu['instructions_per_inference']:,} instructions, identical="
              f"{emu['outputs_identical']}, first {first_s:.1f} s, second {second_s:.1f} s",
              file=sys.stderr)
    cal = next((r for r in rows if r["model"] == CALIBRATE_ON and r["published_ms"]), None)
    cpi = (cal["published_ms"] / 1000 * CLOCK_HZ / cal["instructions"]) if cal else None
    if args.core != "cortex-m4":  # no published TFLM/CMSIS-NN figure on these cores to fit
        cpi = None
    for r in rows:
        use = cpi or r["shipped_cpi"]
        r["estimated_ms_120mhz"] = r["instructions"] * use / CLOCK_HZ * 1000
        r["error_pct"] = (100 * (r["estimated_ms_120mhz"] - r["published_ms"]) / r["published_ms"]
                          if r["published_ms"] else None)
        r["calibration"] = r["model"] == CALIBRATE_ON
    print(_table(rows, cpi, args.core))
    if args.json:
        Path(args.json).write_text(json.dumps({"core": args.core, "cpi_fitted": cpi,
                                               "source": SOURCE, "rows": rows}, indent=2))
    return 0


def _run(cmd: list[str], env: dict[str, str]) -> tuple[dict, float]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return json.loads(proc.stdout), seconds


def _table(rows: list[dict], cpi: float | None, core: str) -> str:
    if cpi is None:
        head = (f"\n{core}: no published figure to fit or compare; estimates use the CPI edgeq "
                f"ships ({rows[0]['shipped_cpi']}, uncalibrated on this core) at 120 MHz and "
                f"at the profile's {rows[0]['profile_mhz']:g} MHz\n\n")
        lines = ["| model | instructions / inference | est. ms @120 MHz | est. ms @profile clock "
                 "| outputs identical | device arena B (host) | first emulate s (objects "
                 "compiled) | second run s |", "|---|---:|---:|---:|---|---:|---:|---:|"]
        for r in rows:
            lines.append(
                f"| {r['model'].upper()} | {r['instructions']:,} | "
                f"{r['estimated_ms_120mhz']:.1f} | {r['profile_ms']:.2f} | "
                f"{'yes' if r['outputs_identical'] else 'NO'} ({r['samples']}) | "
                f"{r['arena_device']:,} ({r['arena_host']:,}) | {r['first_wall_s']:.0f} "
                f"({r['objects_compiled']}) | {r['second_wall_s']:.1f} |")
        return head + "\n".join(lines)
    head = (f"\n{core}: CPI fitted on {CALIBRATE_ON.upper()} = {cpi:.3f} (edgeq ships "
            f"{rows[0]['shipped_cpi']}); published: {SOURCE}\n\n")
    lines = ["| model | instructions / inference | est. ms @120 MHz | published ms | error | "
             "outputs identical | device arena B (host) | first emulate s (objects compiled) "
             "| second run s |",
             "|---|---:|---:|---:|---:|---|---:|---:|---:|"]
    for r in rows:
        err = ("calibration" if r["calibration"] else
               f"{r['error_pct']:+.1f}%" if r["error_pct"] is not None else "–")
        pub = f"{r['published_ms']:g}" if r["published_ms"] else "–"
        lines.append(
            f"| {r['model'].upper()} | {r['instructions']:,} | {r['estimated_ms_120mhz']:.1f} | "
            f"{pub} | {err} | {'yes' if r['outputs_identical'] else 'NO'} ({r['samples']}) | "
            f"{r['arena_device']:,} ({r['arena_host']:,}) | {r['first_wall_s']:.0f} "
            f"({r['objects_compiled']}) | {r['second_wall_s']:.1f} |")
    return head + "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
