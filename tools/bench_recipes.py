"""Every precision recipe the arm-cpu target accepts, side by side, on an MNIST CNN trained
here and on the MLPerf Tiny reference networks.

    python tools/bench_recipes.py [--fixtures ../shared/fixtures] [--models mnist,ic_resnet8,...]
                                  [--json PATH]

For each model and recipe, `edgeq convert` builds and verifies the model on LiteRT (1 thread,
XNNPACK) and the table shows: top-1 (MNIST, 1,000 held-out digits) or, for the MLPerf models
without labelled data here, argmax agreement with float and output SQNR on 200 inputs; model
bytes, weight bytes and host latency. All figures come from the reports of this one run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RECIPES = ("int8", "a16w8", "dynamic_wi8_afp32", "float16", "wi4_afp32", "wi4_block32_afp32")
MLPERF = {  # name -> (file, input shape, value range of the random calibration/eval inputs)
    "ic_resnet8": ("ic_resnet8.h5", (32, 32, 3), (0.0, 255.0)),
    "kws_dscnn": ("kws_dscnn_savedmodel", (49, 10, 1), (-123.4, 25.7)),
    "vww_mobilenet_96": ("vww_mobilenet_96.h5", (96, 96, 3), (0.0, 1.0)),
}


def mnist_model(fixtures: Path, work: Path) -> tuple[Path, Path, Path]:
    """A small Keras 3 CNN on 4,000 shuffled MNIST digits; 1,000 others are held out."""
    import keras

    keras.utils.set_random_seed(0)
    d = np.load(fixtures / "data" / "mnist_5k.npz")
    order = np.random.default_rng(0).permutation(len(d["x"]))  # the file is sorted by label
    x, y = d["x"][order], d["y"][order].astype(np.int64)
    model = keras.Sequential([
        keras.Input((28, 28, 1)),
        keras.layers.Conv2D(16, 3, activation="relu"), keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(32, 3, activation="relu"), keras.layers.MaxPooling2D(),
        keras.layers.Flatten(), keras.layers.Dense(64, activation="relu"),
        keras.layers.Dense(10, activation="softmax"),
    ])
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x[:4000, ..., None] / 255.0, y[:4000], epochs=6, batch_size=64, verbose=0)
    model.save(work / "mnist_cnn.keras")
    np.savez(work / "mnist_train.npz", x=x[:4000], y=y[:4000])
    np.savez(work / "mnist_test.npz", x=x[4000:], y=y[4000:])
    return work / "mnist_cnn.keras", work / "mnist_train.npz", work / "mnist_test.npz"


def random_data(shape: tuple[int, ...], lo: float, hi: float, work: Path, name: str) -> Path:
    x = np.random.default_rng(0).uniform(lo, hi, size=(200, *shape)).astype(np.float32)
    path = work / f"{name}.npz"
    np.savez(path, x=x)
    return path


def run(model: Path, data: Path, eval_data: Path | None, recipe: str, work: Path,
        scale: float) -> dict:
    from edgeq.api import ConvertOptions, convert
    from edgeq.data import Preprocess
    from edgeq.errors import EdgeqError

    opts = ConvertOptions(model=str(model), target="arm-cpu", data=str(data),
                          eval_data=str(eval_data) if eval_data else None,
                          out=str(work / f"{model.stem}-{recipe}"), overwrite=True,
                          recipe=recipe, calibration_samples=200,
                          preprocess=Preprocess(scale=scale))
    t0 = time.perf_counter()
    try:
        report = convert(opts).report
    except EdgeqError as exc:  # a recipe that fails on a model is a result too
        return {"recipe": recipe, "error": str(exc)}
    return {"recipe": recipe, "seconds": round(time.perf_counter() - t0, 2),
            "accuracy": report.accuracy, "fidelity": report.fidelity,
            "bytes": report.output["bytes"], "weight_bytes": report.output["weight_bytes"],
            "latency_ms": report.latency_ms["median"]}


def row(model: str, r: dict, base: dict | None) -> str:
    if "error" in r:
        return f"| {model} | {r['recipe']} | failed: {r['error'][:90]} | | | | |"
    acc, fid = r["accuracy"], r["fidelity"]
    quality = (f"{100 * acc['quantized']:.2f} % (float {100 * acc['float']:.2f})"
               if acc["quantized"] is not None else f"agree {100 * acc['agreement']:.1f} %")
    sqnr = "identical" if fid["sqnr_db"] is None else f"{fid['sqnr_db']:.1f}"
    ratio = "" if base is None else f" ({r['weight_bytes'] / base['weight_bytes']:.2f}x)"
    return (f"| {model} | {r['recipe']} | {quality} | {sqnr} | {r['bytes']:,} | "
            f"{r['weight_bytes']:,}{ratio} | {r['latency_ms']:.4f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fixtures", default=str(ROOT.parent / "shared" / "fixtures"))
    ap.add_argument("--models", default="mnist," + ",".join(MLPERF))
    ap.add_argument("--json", help="save the raw figures here")
    args = ap.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    fixtures = Path(args.fixtures)
    work = Path(tempfile.mkdtemp(prefix="edgeq-bench-recipes-"))
    results: dict[str, list[dict]] = {}
    for name in args.models.split(","):
        if name == "mnist":
            model, data, eval_data = mnist_model(fixtures, work)
            scale = 1 / 255
        else:
            file, shape, (lo, hi) = MLPERF[name]
            model = fixtures / "models" / "mlperf_tiny" / file
            data, eval_data, scale = random_data(shape, lo, hi, work, name), None, 1.0
        results[name] = [run(model, data, eval_data, r, work, scale) for r in RECIPES]
        print(f"[{name}] done", file=sys.stderr)

    import tensorflow as tf
    from edgeq.outputs.report import tool_versions

    v = tool_versions()
    print(f"edgeq recipes on arm-cpu; TensorFlow {tf.__version__}, LiteRT {v['ai_edge_litert']}, "
          f"ai-edge-quantizer {_aeq_version()}; {os.cpu_count()} CPUs; latency: LiteRT + "
          "XNNPACK, 1 thread, median; MLPerf models: 200 random inputs in the input range, "
          "agreement and SQNR against float\n")
    print("| model | recipe | top-1 / agreement | SQNR dB | bytes | weight bytes (vs int8) | "
          "latency ms |")
    print("|---|---|---|---|---|---|---|")
    for name, rows in results.items():
        base = next((r for r in rows if r["recipe"] == "int8" and "error" not in r), None)
        for r in rows:
            print(row(name, r, base))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


def _aeq_version() -> str:
    from edgeq.adapters import aeq

    return aeq.version()


if __name__ == "__main__":
    main()
