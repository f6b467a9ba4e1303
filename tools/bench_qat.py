"""Benchmarks edgeq's quantization-aware training against PTQ min/max on stress models.

    python tools/bench_qat.py [--data PATH] [--workdir DIR] [--json PATH] [--epochs 3]
                              [--lr X] [--models outlier_cnn,depthwise_pt] [--factor 200]

Trains the calibration stress models of tools/bench_calibration.py on the MNIST fixture (same
seeds, same 4,000 train / 1,000 held-out split, same function-preserving rescaling that makes
min/max calibration lose accuracy) and converts each with edgeq twice for its target:
`--method ptq` (min/max) and `--method qat` (which also reports its own PTQ baseline). QAT
fine-tunes on the 4,000 training images (10 % of them held out for choosing the epoch); the
held-out 1,000 are only evaluated. Prints float / PTQ / QAT top-1 on the target's runtime and
the wall time of each conversion, and how much of the PTQ gap QAT recovers.

  outlier_cnn   conv2 output channels x`--factor` (inverse on conv3)            -> arm-cpu
  depthwise_pt  depthwise channels x10..x50, PER-TENSOR weights                 -> imx8mp-npu
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

TARGETS = {"outlier_cnn": "arm-cpu", "depthwise_pt": "imx8mp-npu"}


def convert(path: Path, target: str, data: dict, out: Path, method: str, args) -> dict:
    from edgeq.api import ConvertOptions, convert as run
    from edgeq.data import Preprocess

    t0 = time.perf_counter()
    res = run(ConvertOptions(
        model=str(path), target=target, data=str(data["calib_npz"]),
        eval_data=str(data["test_npz"]), out=str(out), overwrite=True, method=method,
        train_data=str(data["train_npz"]) if method == "qat" else None, epochs=args.epochs,
        lr=args.lr, measure_latency=False, calibration_samples=args.samples,
        preprocess=Preprocess(scale=stress.SCALE)))
    return {"report": res.report, "seconds": time.perf_counter() - t0}


def bench(name: str, data: dict, workdir: Path, args) -> dict:
    model, train_s = stress.train(name, data)
    if name == "outlier_cnn":
        stress.inject_outliers(model, data, args.factor)
    else:
        stress.uneven_depthwise(model, data)
    path = workdir / f"{name}.keras"
    model.save(path)
    target = TARGETS[name]
    ptq = convert(path, target, data, workdir / f"{name}-ptq", "ptq", args)
    qat = convert(path, target, data, workdir / f"{name}-qat", "qat", args)
    acc_p, acc_q = ptq["report"].accuracy, qat["report"].accuracy
    t = qat["report"].qat["training"]
    rec = {"model": name, "target": target, "runtime": acc_q["runtime"],
           "float": acc_q["float"], "ptq": acc_p["quantized"], "qat": acc_q["quantized"],
           "ptq_seconds": ptq["seconds"], "qat_seconds": qat["seconds"],
           "qat_training_seconds": t["seconds"], "epochs": t["epochs"],
           "best_epoch": t["best_epoch"], "lr": t["learning_rate"],
           "float_train_seconds": train_s,
           "baseline_in_qat_run": qat["report"].qat["ptq_baseline"]["accuracy"]["quantized"]}
    gap = rec["float"] - rec["ptq"]
    rec["recovered"] = (rec["qat"] - rec["ptq"]) / gap if gap > 0 else None
    print(f"[{name}] float {_pct(rec['float'])}, ptq {_pct(rec['ptq'])} "
          f"[{rec['ptq_seconds']:.1f} s], qat {_pct(rec['qat'])} [{rec['qat_seconds']:.1f} s]",
          flush=True)
    return rec


def table(records: list[dict]) -> list[str]:
    lines = ["| model | target (runtime) | float | PTQ min/max | QAT | gap recovered | "
             "PTQ wall s | QAT wall s (training) |", "|---|---|---|---|---|---|---|---|"]
    for r in records:
        rec = "—" if r["recovered"] is None else f"{100 * r['recovered']:.0f} %"
        lines.append(f"| {r['model']} | {r['target']} ({r['runtime']}) | {_pct(r['float'])} | "
                     f"{_pct(r['ptq'])} | {_pct(r['qat'])} | {rec} | {r['ptq_seconds']:.1f} | "
                     f"{r['qat_seconds']:.1f} ({r['qat_training_seconds']:.1f}) |")
    return lines


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.2f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=stress.DEFAULT_DATA)
    ap.add_argument("--workdir", type=Path)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--models", default="outlier_cnn,depthwise_pt")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--lr", type=float, help="QAT learning rate [1 %% of the base rate]")
    ap.add_argument("--factor", type=float, default=200.0, help="outlier_cnn channel scale")
    ap.add_argument("--samples", type=int, default=500, help="calibration samples")
    args = ap.parse_args(argv)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="edgeq-bench-qat-"))
    workdir.mkdir(parents=True, exist_ok=True)
    data = stress.split_data(args.data, workdir, args.samples)
    data["train_npz"] = workdir / "train.npz"
    np.savez(data["train_npz"], x=data["xtr"], y=data["ytr"])
    t0 = time.perf_counter()
    records = [bench(name, data, workdir, args) for name in args.models.split(",")]
    print()
    print(f"Held-out top-1 (%) on {stress.N_TEST} images, QAT {args.epochs} epoch(s); "
          f"total {time.perf_counter() - t0:.0f} s")
    print("\n".join(table(records)))
    ok = all(r["recovered"] is not None and r["recovered"] >= 0.5 for r in records)
    print(f"\nQAT recovers at least half of the PTQ min/max gap on every model: {ok}")
    if args.json:
        args.json.write_text(json.dumps(records, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
