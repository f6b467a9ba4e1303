"""Benchmarks edgeq's remedies for outlier activations on a small transformer, side by side.

    python tools/bench_transformer.py [--data PATH] [--workdir DIR] [--json PATH]
                                      [--factor 80] [--epochs 15] [--skip-qat]

The model: the 8x8 digits fixture (1,400 train / 397 held out after a fixed shuffle), 64 pixels
-> Dense embedding as 16 tokens of 32 -> one pre-LN block (LayerNorm, 2-head
MultiHeadAttention, LayerNorm, Dense(64, gelu) MLP) -> LayerNorm -> mean over tokens -> 10
classes, trained here (seeded). Then, as SmoothQuant's paper and LLM.int8() describe for real
BERT/LLM LayerNorm outputs, a few channels of every LayerNorm output are made large: gamma and
beta of channels OUTLIER_CHANNELS times --factor, and the input rows of every layer that reads
them divided by --factor. The float function is unchanged (checked), but one per-tensor int8
range now wastes most of its levels on those channels. Not tuned to any result.

Each row is an `edgeq convert` run on arm-cpu measured by LiteRT on the held-out digits:
float, min/max (the default), percentile, `--calibration auto`, `--smooth` (alpha 0.5),
`--clip auto`, `--recipe a16w8`, QAT (1 epoch), and `--method auto --max-drop 1` (the stage it
chose is printed).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = ROOT.parent / "shared" / "fixtures" / "data" / "digits.npz"
OUTLIER_CHANNELS = (3, 11, 20, 27)
LAYERNORMS = ("ln1", "ln2", "ln_f")


def build():
    import keras

    L = keras.layers
    inp = keras.Input((8, 8))
    h = L.Reshape((16, 32))(L.Dense(512, name="embed")(L.Flatten()(inp)))
    n = L.LayerNormalization(name="ln1")(h)
    h = L.Add(name="res1")([h, L.MultiHeadAttention(2, 16, name="mha")(n, n)])
    n = L.LayerNormalization(name="ln2")(h)
    m = L.Dense(32, name="down")(L.Dense(64, activation="gelu", name="up")(n))
    h = L.Add(name="res2")([h, m])
    n = L.LayerNormalization(name="ln_f")(h)
    out = L.Dense(10, activation="softmax", name="head")(L.GlobalAveragePooling1D()(n))
    return keras.Model(inp, out)


def consumers(model, ln: str) -> list:
    if ln == "ln1":
        mha = model.get_layer("mha")
        return [mha.query_dense.kernel, mha.key_dense.kernel, mha.value_dense.kernel]
    return [model.get_layer({"ln2": "up", "ln_f": "head"}[ln]).kernel]


def add_outliers(model, factor: float) -> None:
    """Function-preserving: (factor g) * norm + factor b, read by rows W / factor."""
    idx = list(OUTLIER_CHANNELS)
    for name in LAYERNORMS:
        ln = model.get_layer(name)
        for var in (ln.gamma, ln.beta):
            v = var.numpy()
            v[idx] *= factor
            var.assign(v)
        for kernel in consumers(model, name):
            k = kernel.numpy()
            k[idx] /= factor
            kernel.assign(k)


def make_model(data: Path, workdir: Path, factor: float, epochs: int) -> dict:
    import keras

    d = np.load(data)
    x, y = d["x"].astype(np.float32) / 16.0, d["y"].astype(np.int64)
    order = np.random.default_rng(1).permutation(len(x))
    x, y = x[order], y[order]
    np.savez(workdir / "train.npz", x=x[:1400], y=y[:1400])
    np.savez(workdir / "test.npz", x=x[1400:], y=y[1400:])
    keras.utils.set_random_seed(1)
    model = build()
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x[:1400], y[:1400], epochs=epochs, batch_size=32, verbose=0)
    before = model.predict(x[1400:], verbose=0)
    add_outliers(model, factor)
    after = model.predict(x[1400:], verbose=0)
    model.save(workdir / "outlier_transformer.keras")
    return {"float_top1": float(np.mean(after.argmax(1) == y[1400:])),
            "outlier_change": float(np.abs(after - before).max())}


RUNS = [
    ("min/max", []),
    ("percentile 99.99", ["--calibration", "percentile"]),
    ("calibration auto", ["--calibration", "auto"]),
    ("SmoothQuant 0.5", ["--smooth", "0.5"]),
    ("clip auto", ["--clip", "auto"]),
    ("a16w8 (int16 act.)", ["--recipe", "a16w8"]),
    ("QAT 1 epoch", ["--method", "qat", "--train-data", "{train}", "--epochs", "1"]),
    ("method auto, max-drop 1", ["--method", "auto", "--max-drop", "1"]),
]


def run(workdir: Path, label: str, extra: list[str]) -> dict:
    out = workdir / label.replace(" ", "_").replace("/", "").replace(",", "")
    cmd = [str(Path(sys.executable).parent / "edgeq"), "convert",
           str(workdir / "outlier_transformer.keras"), "--target", "arm-cpu", "--data",
           str(workdir / "train.npz"), "--eval-data", str(workdir / "test.npz"), "--out",
           str(out), "--overwrite", "--no-latency", "--json",
           *[a.format(train=workdir / "train.npz") for a in extra]]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode not in (0, 4):
        return {"label": label, "exit": proc.returncode, "error": proc.stderr.strip()[-300:]}
    rep = json.loads((out / "report.json").read_text())
    row = {"label": label, "exit": proc.returncode, "float": rep["accuracy"]["float"],
           "int": rep["accuracy"]["quantized"], "drop_pp": rep["accuracy"]["drop_pp"]}
    if rep.get("rewrites"):
        r = rep["rewrites"][0]
        row["float_rewritten"] = r.get("float_top1_after")
        row["clipped"] = [c["layer"] for c in r.get("clipped", [])]
    if rep.get("autopilot"):
        w = rep["autopilot"]["winner"]
        row["stage"] = f"{w['stage']}: {w['name']}"
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--workdir", type=Path)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--factor", type=float, default=80.0)
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--only", help="comma-separated labels to run")
    args = ap.parse_args(argv)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="edgeq-bench-tf-"))
    workdir.mkdir(parents=True, exist_ok=True)
    made = make_model(args.data, workdir, args.factor, args.epochs)
    print(f"outlier transformer: float top-1 {100 * made['float_top1']:.2f} %, outputs changed "
          f"by {made['outlier_change']:.2e} by the outlier construction (factor {args.factor:g})")
    rows = [{"label": "float", "int": made["float_top1"], "drop_pp": 0.0}]
    only = set(args.only.split(",")) if args.only else None
    for label, extra in RUNS:
        if only and label not in only:
            continue
        rows.append(run(workdir, label, extra))
        r = rows[-1]
        if "error" in r:
            print(f"{label:26s} exit {r['exit']}: {r['error']}", flush=True)
            continue
        extra_text = ""
        if r.get("float_rewritten") is not None:
            extra_text += f"  float after rewrite {100 * r['float_rewritten']:.2f} %"
        if r.get("clipped"):
            extra_text += f"  clipped: {', '.join(r['clipped'])}"
        if r.get("stage"):
            extra_text += f"  stage: {r['stage']}"
        print(f"{label:26s} top-1 {100 * r['int']:6.2f} %  drop {r['drop_pp']:+6.2f} pp  "
              f"exit {r['exit']}{extra_text}", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"model": made, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
