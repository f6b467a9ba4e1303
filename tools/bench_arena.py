"""TFLite Micro's arena plan against edgeq's offline plan and the lower bound, per model.

    python tools/bench_arena.py [--fixtures DIR] [--check] [--json PATH]

For every TFLite Micro model in the fixtures (models/tflm, models/mlperf_tiny/*.tflite,
device_truth/tflm), the non-persistent head in bytes:
  TFLM       what TFLM's own GreedyMemoryPlanner gives the file as published (edgeq's exact
             model of it; --check also measures it with the tflite-micro interpreter's
             recording allocator),
  edgeq      the head with edgeq's offline plan (OfflineMemoryAllocation metadata, and a new
             operator order where the graph branches),
  bound      the most bytes live at any one operator: no plan can do better,
for the host's reference kernels and for the CMSIS-NN builds of a Cortex-M4/M7 (DSP) and a
Cortex-M55 (MVE), whose kernels ask for different scratch buffers. A plan is written only when
it is smaller; "=" means TFLM's plan stays. --check runs every written plan on the host's TFLM
interpreter: the measured head must equal the prediction and the outputs must be
byte-identical to the model as published (seeded random inputs).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def models(fixtures: Path) -> list[Path]:
    return sorted([*(fixtures / "models" / "tflm").glob("*.tflite"),
                   *(fixtures / "models" / "mlperf_tiny").glob("*.tflite"),
                   *(fixtures / "device_truth" / "tflm").rglob("*.tflite")])


def bench(path: Path, check: bool) -> dict:
    from edgeq.formats.tflite import read_model
    from edgeq.pipeline.arena_scratch import CMSIS_DSP, CMSIS_MVE
    from edgeq.pipeline.arena_stage import checked, plan_model

    data = path.read_bytes()
    info = read_model(data, path)
    row: dict = {"model": path.name, "ops": len(info.ops)}
    t0 = time.perf_counter()
    for kernels in (CMSIS_DSP, CMSIS_MVE):
        r = plan_model(data, kernels, source=str(path), info=info)
        if check:
            r = checked(r, data)
        if r.host:
            row["reference"] = {"tflm": r.host["tflm"], "edgeq": r.host["planned"],
                                "bound": r.host["lower_bound"]}
            row[kernels.name] = {"tflm": r.device["tflm_head_bytes"],
                                 "edgeq": r.device["planned_head_bytes"],
                                 "bound": r.device["lower_bound_head_bytes"]}
        row.setdefault("written", {})[kernels.name] = r.applied
        row["reordered"] = row.get("reordered", False) or r.reordered
        row["reason"] = r.reason if not r.host else row.get("reason", "")
        if r.check:
            row.setdefault("check", {})[kernels.name] = r.check
    row["seconds"] = round(time.perf_counter() - t0, 3)
    if check:
        from edgeq.adapters.tflm import TFLMRunner

        row["tflm_measured"] = TFLMRunner(data).arena.head
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fixtures", type=Path, default=ROOT.parent / "shared" / "fixtures")
    ap.add_argument("--check", action="store_true",
                    help="run every written plan on the TFLM interpreter")
    ap.add_argument("--json", type=Path, help="also write the rows as JSON")
    args = ap.parse_args()
    rows = [bench(p, args.check) for p in models(args.fixtures)]
    cols = ("reference", "cmsis-nn-dsp", "cmsis-nn-mve")
    print(f"{'model':44s} " + " ".join(f"{c + ' TFLM / edgeq / bound':>34s}" for c in cols)
          + "  reordered")
    bad = 0
    for r in rows:
        cells = []
        for c in cols:
            f = r.get(c)
            if f is None:
                cells.append(f"{'not planned':>34s}")
                continue
            mark = "=" if f["edgeq"] == f["tflm"] else "-"
            cells.append(f"{f['tflm']:>10,} {mark} {f['edgeq']:>9,} / {f['bound']:>9,}")
            bad += f["edgeq"] > f["tflm"]
        print(f"{r['model'][:44]:44s} " + " ".join(f"{x:>34s}" for x in cells)
              + f"  {'yes' if r['reordered'] else ''}")
        if r.get("reason") and r.get("reference") is None:
            print(f"    {r['reason']}")
        for k, chk in (r.get("check") or {}).items():
            ok = chk["outputs_identical"] and chk["head_bytes"] == chk["predicted_head_bytes"]
            bad += not ok
            print(f"    host check ({k} plan): head {chk['head_bytes']:,} B measured, "
                  f"{chk['predicted_head_bytes']:,} B predicted; outputs "
                  f"{'byte-identical' if chk['outputs_identical'] else 'DIFFER'}")
        if "tflm_measured" in r and r.get("reference"):
            same = r["tflm_measured"] == r["reference"]["tflm"]
            bad += not same
            if not same:
                print(f"    TFLM measured {r['tflm_measured']:,} B, modelled "
                      f"{r['reference']['tflm']:,} B")
    planned = sum(1 for r in rows if any(r["written"].values()))
    print(f"\n{len(rows)} models; a plan is written for {planned}; edgeq larger than TFLM: "
          f"{bad} (must be 0)")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
