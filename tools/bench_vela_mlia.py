"""Ethos-U per-layer cycles: edgeq's figures beside Arm MLIA's, per op of each model.

    python tools/bench_vela_mlia.py [--mlia PATH] [--profiles ethos-u55-128,...] [MODEL ...]

Runs `edgeq analyze MODEL --target PROFILE --json` (this checkout's edgeq, in this Python) and,
where MLIA is installed, `mlia check MODEL --target-profile PROFILE --performance` (MLIA 0.12
with the mlia-ethos-u plugin, which runs the same Vela), and prints per op: edgeq's op cycles,
NPU cycles, MAC utilisation and bound next to MLIA's op cycles, NPU cycles and MAC utilisation
(MLIA's per-op breakdowns summed per source operator), plus the seconds each tool took. MLIA's
profiles of these names use the same Vela system config and memory mode as edgeq's (MLIA:
src/mlia/resources/target_profiles/*.toml). Without MLIA only edgeq's column is printed.
Default models: the MLPerf Tiny int8 reference models in ../shared/fixtures (EDGEQ_FIXTURES).

Where they differ (MLIA 0.12.2): MLIA's JSON keeps one copy of rows that repeat another row of
the same op in every figure (an int8 SOFTMAX lowers to repeated Mul/Add/Sub NPU operations),
so its per-op sum for such ops is below the sum of Vela's rows, and its total below Vela's
"Total cycles"; edgeq's per-op cycles add up to Vela's total. The last line of each block
prints both sums beside Vela's total.

MLIA is best installed in a venv of its own (it pins its own numpy and Vela):
    python3 -m venv /tmp/mlia && /tmp/mlia/bin/pip install mlia mlia-ethos-u ethos-u-vela
    python tools/bench_vela_mlia.py --mlia /tmp/mlia/bin/mlia
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(os.environ.get("EDGEQ_FIXTURES", ROOT.parent / "shared" / "fixtures"))
MLPERF = ("ad_autoencoder", "ic_resnet8", "kws_dscnn", "streaming_wakeword", "vww_mobilenet_96")


def edgeq_ops(model: Path, profile: str) -> tuple[list[dict], int, float]:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "edgeq", "analyze", str(model), "--target",
                           profile, "--json"], capture_output=True, text=True, check=False)
    took = time.perf_counter() - start
    if proc.returncode not in (0, 3):  # 3: over a budget, the figures are still there
        raise SystemExit(f"edgeq analyze failed ({proc.returncode}): {proc.stderr.strip()}")
    d = json.loads(proc.stdout)
    return d["ops"], d["vela"]["cycles"], took


def mlia_ops(mlia: str, model: Path, profile: str) -> tuple[dict[int, dict], float] | None:
    with tempfile.TemporaryDirectory(prefix="bench-mlia-") as tmp:
        start = time.perf_counter()
        proc = subprocess.run([mlia, "check", str(model), "--target-profile", profile,
                               "--performance", "--output-dir", tmp],
                              capture_output=True, text=True, check=False, cwd=tmp)
        took = time.perf_counter() - start
        found = list(Path(tmp).rglob("mlia-output.json"))
        if proc.returncode != 0 or not found:
            print(f"  mlia failed ({proc.returncode}): {proc.stdout.strip()[-300:]}")
            return None
        out = json.loads(found[0].read_text())
    per_op: dict[int, dict] = defaultdict(lambda: defaultdict(float))
    for result in out.get("results", []):
        for b in result.get("breakdowns", []):
            kind, _, index = b["entity_id"].rpartition("/")
            if not kind.endswith("operator") or not index.isdigit():
                continue
            m = {x["name"]: x["value"] for x in b["metrics"]}
            s = per_op[int(index)]
            s["op_cycles"] += m.get("op_cycles", 0)
            s["npu_cycles"] += m.get("npu_cycles", 0)
            s["macs"] += m.get("mac_count", 0)
    return per_op, took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="*", type=Path)
    parser.add_argument("--mlia", default=shutil.which("mlia"), help="the mlia command")
    parser.add_argument("--profiles", default="ethos-u55-128,ethos-u65-256,ethos-u85-256")
    args = parser.parse_args()
    models = args.models or [FIXTURES / "models" / "mlperf_tiny" / f"{n}_int8_reference.tflite"
                             for n in MLPERF]
    if not args.mlia:
        print("MLIA not found (pip install mlia mlia-ethos-u, or --mlia PATH): edgeq only")
    for model in models:
        for profile in args.profiles.split(","):
            ops, vela_total, t_edgeq = edgeq_ops(model, profile)
            theirs = mlia_ops(args.mlia, model, profile) if args.mlia else None
            print(f"\n{model.name} on {profile}: edgeq {t_edgeq:.2f} s"
                  + (f", mlia {theirs[1]:.2f} s" if theirs else ""))
            head = f"{'#':>3} {'op':<18} {'cycles':>9} {'NPU':>9} {'util%':>7} {'bound':<22}"
            print(head + (f" | {'mlia cycles':>11} {'mlia NPU':>9} {'util%':>7} same" if theirs
                          else ""))
            same = True
            for o in ops:
                if "cycles" not in o:
                    continue
                util = "" if o["mac_utilisation"] is None else f"{100 * o['mac_utilisation']:.2f}"
                line = (f"{o['index']:>3} {o['op'][:18]:<18} {o['cycles']:>9} "
                        f"{o['npu_cycles']:>9} {util:>7} {o['bound']:<22}")
                if theirs:
                    m = theirs[0].get(o["index"], {"op_cycles": 0, "npu_cycles": 0, "macs": 0})
                    mu = (100 * m["macs"] / (m["op_cycles"] * int(profile.rsplit("-", 1)[1]))
                          if m["op_cycles"] else None)
                    ok = (int(m["op_cycles"]), int(m["npu_cycles"])) == (o["cycles"],
                                                                         o["npu_cycles"])
                    same &= ok
                    line += (f" | {int(m['op_cycles']):>11} {int(m['npu_cycles']):>9} "
                             f"{'' if mu is None else f'{mu:.2f}':>7} {'yes' if ok else 'NO'}")
                print(line)
            mine = sum(o["cycles"] for o in ops if "cycles" in o)
            print(f"  sum of per-op cycles: edgeq {mine}"
                  + (f", mlia {int(sum(m['op_cycles'] for m in theirs[0].values()))}"
                     if theirs else "") + f"; Vela's Total cycles {vela_total}")
            if theirs:
                print(f"  every op's cycles equal MLIA's: {'yes' if same else 'NO'}")


if __name__ == "__main__":
    main()
