"""Benchmarks `--method auto` (the accuracy-budget autopilot) on the calibration stress models.

    python tools/bench_autopilot.py [--data PATH] [--workdir DIR] [--json PATH]
                                    [--budget 1.0] [--factor 200] [--epochs 3]

Trains the stress models of tools/bench_calibration.py (same seeds, same 4,000 train / 1,000
held-out split, same function-preserving rescaling) and converts each with
`edgeq convert --method auto --max-drop BUDGET` for its target, with --train-data so that the
QAT stage is available. Next to it, the plain TFLiteConverter script of bench_calibration
(min/max, what people get without edgeq). Prints, per model: float and plain top-1, every stage
auto tried (top-1, size, whether it met the budget), the winner, the ops it kept in float
against the naive choice (every op of the most sensitive op's type), and wall times.

  transformer   MultiHeadAttention + LayerNorm + GELU                         -> arm-cpu
  outlier_cnn   conv2 output channels x`--factor` (inverse on conv3)           -> arm-cpu
  outlier_cnn   the same model on an integer-only microcontroller              -> cortex-m4
  depthwise_pt  depthwise channels x10..x50, PER-TENSOR weights                -> imx8mp-npu
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

import bench_calibration as stress  # noqa: E402  the stress models and their data split

# (model, target, budget override): the transformer also at a zero budget, where only keeping
# some ops float can match float, to compare auto's choice with "all attention layers".
CASES = (("transformer", "arm-cpu", None), ("transformer", "arm-cpu", 0.0),
         ("outlier_cnn", "arm-cpu", None), ("outlier_cnn", "cortex-m4", None),
         ("depthwise_pt", "imx8mp-npu", None))


def run_auto(path: Path, target: str, data: dict, out: Path, args, budget: float) -> dict:
    from edgeq.api import ConvertOptions, convert
    from edgeq.data import Preprocess

    t0 = time.perf_counter()
    res = convert(ConvertOptions(
        model=str(path), target=target, data=str(data["calib_npz"]),
        eval_data=str(data["test_npz"]), out=str(out), overwrite=True, method="auto",
        max_drop=budget, train_data=str(data["train_npz"]), epochs=args.epochs,
        allow_unsafe=True,  # the transformer's PositionEmbedding is a class of this script
        measure_latency=False, calibration_samples=args.samples,
        preprocess=Preprocess(scale=stress.SCALE)))
    return {"report": res.report, "ok": res.ok, "seconds": time.perf_counter() - t0}


def bench(name: str, target: str, budget: float | None, models: dict, data: dict,
          workdir: Path, args) -> dict:
    budget = args.budget if budget is None else budget
    if name not in models:
        model, _ = stress.train(name, data)
        if name == "outlier_cnn":
            stress.inject_outliers(model, data, args.factor)
        elif name == "depthwise_pt":
            stress.uneven_depthwise(model, data)
        models[name] = workdir / f"{name}.keras"
        model.save(models[name])
    path = models[name]
    t0 = time.perf_counter()
    plain = stress.run_plain(path, name, target, data)
    plain_s = time.perf_counter() - t0
    auto = run_auto(path, target, data, workdir / f"{name}-{target}-{budget:g}", args, budget)
    a = auto["report"].autopilot
    rec = {"model": name, "target": target, "budget": budget, "float": auto["report"].accuracy["float"],
           "plain": plain.get("accuracy"), "plain_seconds": plain_s,
           "auto_seconds": auto["seconds"], "exit_ok": auto["ok"],
           "stages": a["stages"], "winner": a["winner"],
           "float_ops": a.get("float_ops"), "naive": a.get("naive"),
           "float_layers": [r["layer"] or r["tensor"] for r in a.get("float_layers", [])],
           "options": a.get("options", [])}
    print(f"[{name} on {target}] winner {a['winner']['name']} "
          f"({'meets' if a['winner']['met_budget'] else 'misses'} {budget:g} pp) "
          f"in {auto['seconds']:.1f} s", flush=True)
    return rec


def table(records: list[dict]) -> list[str]:
    lines = ["| model | target | budget pp | float | plain converter | auto stages tried "
             "(top-1) | winner | float ops (naive) | auto wall s (plain s) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        stages = "; ".join(f"{s['name']} {stress._pct(s['accuracy'])}"
                           + ("" if s["met_budget"] else " ✗") for s in r["stages"])
        naive = r["naive"]
        floats = "—" if r["float_ops"] is None else (
            f"{r['float_ops']} ({naive['float_ops']})" if naive else str(r["float_ops"]))
        lines.append(f"| {r['model']} | {r['target']} | {r['budget']:g} | {stress._pct(r['float'])} | "
                     f"{stress._pct(r['plain'])} | {stages} | {r['winner']['stage']}"
                     f"{'' if r['winner']['met_budget'] else ' (misses)'} | {floats} | "
                     f"{r['auto_seconds']:.1f} ({r['plain_seconds']:.1f}) |")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=stress.DEFAULT_DATA)
    ap.add_argument("--workdir", type=Path)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--budget", type=float, default=1.0, help="--max-drop, top-1 points")
    ap.add_argument("--factor", type=float, default=200.0, help="outlier_cnn channel scale")
    ap.add_argument("--epochs", type=int, default=3, help="QAT epochs when auto gets there")
    ap.add_argument("--samples", type=int, default=500, help="calibration samples")
    args = ap.parse_args(argv)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="edgeq-bench-auto-"))
    workdir.mkdir(parents=True, exist_ok=True)
    data = stress.split_data(args.data, workdir, args.samples)
    data["train_npz"] = workdir / "train.npz"
    np.savez(data["train_npz"], x=data["xtr"], y=data["ytr"])
    t0 = time.perf_counter()
    models: dict = {}
    records = [bench(name, target, budget, models, data, workdir, args)
               for name, target, budget in CASES]
    print()
    print(f"Held-out top-1 (%) on {stress.N_TEST} images, default budget {args.budget:g} pp, "
          f"outlier factor {args.factor:g}; total {time.perf_counter() - t0:.0f} s")
    print("\n".join(table(records)))
    for r in records:
        if r["float_layers"]:
            print(f"- {r['model']} on {r['target']}: kept float {', '.join(r['float_layers'])} "
                  f"({r['float_ops']} ops); naive: {r['naive']['rule']} = "
                  f"{r['naive']['float_ops']} ops, top-1 {stress._pct(r['naive']['accuracy'])}")
    met = [r for r in records if r["winner"]["met_budget"]]
    print(f"budget met for {len(met)} of {len(records)} cases")
    if args.json:
        args.json.write_text(json.dumps(records, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
