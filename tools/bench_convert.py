"""Benchmarks edgeq against a plain TFLiteConverter script on the same models and samples.

    python tools/bench_convert.py [--models digits,ic_resnet8,kws_dscnn,vww_mobilenet_96]
                                  [--samples 100] [--repeats 2] [--fixtures DIR] [--json PATH]
                                  [--workdir DIR]

Three variants per model, each conversion in a fresh subprocess (so the TensorFlow import and
warm-up cost the same for every variant), timed inside the subprocess from before the model is
loaded to the .tflite bytes being produced:
  plain-keras   what a user writes by hand: TFLiteConverter.from_keras_model / from_saved_model
  plain-batch1  the same, but converting a batch-1 concrete function (the graph edgeq converts)
  edgeq         edgeq.api.convert(); "convert" = stages load + check data + quantize, "total" =
                the whole call (adds float reference, verification and writing the outputs)
The outputs are then compared for size, op list, dynamic shapes and host latency (LiteRT,
XNNPACK, 1 thread), all latencies measured in this one process so they share conditions.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import importlib.metadata
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = ("plain-keras", "plain-batch1", "edgeq")
# name -> (path relative to the fixtures dir, or "repo:" for a repo path; input shape; data)
MODELS = {
    "digits": ("repo:representative_data/digits_cnn.keras", (8, 8, 1), "digits"),
    "ic_resnet8": ("models/mlperf_tiny/ic_resnet8.h5", (32, 32, 3), (0.0, 255.0)),
    # MFCC range: what the int8 reference model's input (scale 0.5847, zero-point 83) covers
    "kws_dscnn": ("models/mlperf_tiny/kws_dscnn_savedmodel", (49, 10, 1), (-123.4, 25.7)),
    "vww_mobilenet_96": ("models/mlperf_tiny/vww_mobilenet_96.h5", (96, 96, 3), (0.0, 1.0)),
}
CONVERT_STAGES = ("load", "check data", "quantize")


# --- worker: runs in a fresh interpreter, one conversion, writes a JSON result -------------------


def worker(job: dict) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # Imports every variant needs are done before the clock: they cost the same for all sides.
    import keras  # noqa: F401
    import tensorflow as tf

    if job["variant"] == "edgeq":
        import edgeq.api  # the library import is the edgeq analogue of "import tensorflow"

    t0 = time.perf_counter()
    if job["variant"] == "edgeq":
        result = _edgeq_convert(job)
    else:
        result = _plain_convert(tf, job, t0)
    result["seconds"] = time.perf_counter() - t0
    Path(job["out"]).write_bytes(result.pop("tflite"))
    Path(job["result"]).write_text(json.dumps(result))


def _plain_convert(tf, job: dict, t0: float) -> dict:
    x = np.load(job["npz"])["x"]
    path = job["model"]
    if os.path.isdir(path):
        if job["variant"] == "plain-keras":
            converter = tf.lite.TFLiteConverter.from_saved_model(path)
        else:
            # `loaded` must stay referenced: the signature does not own the variables
            loaded = tf.saved_model.load(path)
            fn = loaded.signatures["serving_default"]
            key = next(iter(fn.structured_input_signature[1]))
            f = tf.function(lambda t: fn(**{key: t}))
            spec = tf.TensorSpec((1, *x.shape[1:]), tf.float32)
            concrete = f.get_concrete_function(spec)
            converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete])
    else:
        import keras

        try:  # compile=False as edgeq does: the optimizer state is not needed to convert
            model = keras.models.load_model(path, compile=False)
        except Exception:  # legacy tf.keras 2.x .h5 (e.g. DepthwiseConv2D 'groups')
            import tf_keras

            model = tf_keras.models.load_model(path, compile=False)
        if job["variant"] == "plain-keras":
            converter = tf.lite.TFLiteConverter.from_keras_model(model)
        else:
            f = tf.function(lambda t: model(t, training=False))
            spec = tf.TensorSpec((1, *x.shape[1:]), tf.float32)
            concrete = f.get_concrete_function(spec)
            converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete])
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([x[i : i + 1]] for i in range(len(x)))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    # Split at convert() to set against edgeq's stages: load + check data vs quantize.
    before = time.perf_counter() - t0
    return {"tflite": bytes(converter.convert()), "before_convert_seconds": before}


def _edgeq_convert(job: dict) -> dict:
    from edgeq.api import ConvertOptions, convert

    out_dir = Path(job["out"]).with_suffix(".edgeq")
    opts = ConvertOptions(model=job["model"], target="arm-cpu", data=job["npz"], out=str(out_dir),
                          overwrite=True, measure_latency=False, calibration_samples=job["n"])
    res = convert(opts)
    tflite = next(p for name, p in res.files.items() if name.endswith(".tflite"))
    stages = {s["name"]: s["seconds"] for s in res.report.stages}
    return {"tflite": Path(tflite).read_bytes(), "stages": stages,
            "convert_seconds": sum(stages.get(s, 0.0) for s in CONVERT_STAGES),
            "ok": res.ok}


# --- driver -----------------------------------------------------------------------------------


def make_samples(name: str, fixtures: Path, n: int, path: Path) -> None:
    _, shape, kind = MODELS[name]
    rng = np.random.default_rng(0)
    if kind == "digits":  # the bundled calibration file: raw 0..16 pixels, model wants /16
        raw = np.load(ROOT / "representative_data" / "digits_calibration.npz")["x"][:n]
        x = raw.astype(np.float32)[..., None] / 16.0
    else:
        x = rng.uniform(kind[0], kind[1], size=(n, *shape))
    np.savez(path, x=np.ascontiguousarray(x, dtype=np.float32))


def model_path(name: str, fixtures: Path) -> str:
    rel = MODELS[name][0]
    return str(ROOT / rel[5:]) if rel.startswith("repo:") else str(fixtures / rel)


def run_worker(job: dict) -> dict:
    spec = Path(job["result"]).with_suffix(".job.json")
    spec.write_text(json.dumps(job))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable, __file__, "--worker", str(spec)], env=env,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
        raise RuntimeError(f"{job['variant']} on {job['model']} failed:\n{tail}")
    return json.loads(Path(job["result"]).read_text())


def latency(models: dict[str, bytes], sample: np.ndarray, runs: int = 200,
            budget_s: float = 3.0, chunk: int = 20) -> dict[str, dict]:
    """Median invoke time per model; the models take turns in chunks so drift hits them alike."""
    from ai_edge_litert.interpreter import Interpreter

    interps, times, spent = {}, {}, {}
    for key, data in models.items():
        it = Interpreter(model_content=data, num_threads=1)  # default resolver = XNNPACK
        it.allocate_tensors()
        d = it.get_input_details()[0]
        scale, zp = d["quantization"]
        q = np.round(sample / scale + zp) if scale else sample
        info = np.iinfo(d["dtype"]) if np.issubdtype(d["dtype"], np.integer) else None
        q = np.clip(q, info.min, info.max) if info else q
        it.set_tensor(d["index"], np.ascontiguousarray(q[None], dtype=d["dtype"]))
        for _ in range(5):
            it.invoke()
        interps[key], times[key], spent[key] = it, [], 0.0
    active = list(models)
    while active:
        for key in list(active):
            for _ in range(min(chunk, runs - len(times[key]))):
                t0 = time.perf_counter()
                interps[key].invoke()
                times[key].append(time.perf_counter() - t0)
            spent[key] += sum(times[key][-chunk:])
            if len(times[key]) >= runs or spent[key] >= budget_s:
                active.remove(key)
    return {k: {"median_ms": statistics.median(t) * 1e3, "runs": len(t)} for k, t in times.items()}


def machine() -> str:
    cpu = "unknown CPU"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{len(os.sched_getaffinity(0))} CPUs ({cpu})"


def _fingerprint(data: bytes) -> str:
    """Hash of the model without tensor names: ops, tensors' shapes/types/quantization, weights."""
    from dataclasses import replace

    from edgeq.formats.tflite import read_model
    from edgeq.formats.tflite_schema import schema as _schema

    info = read_model(data)
    h = hashlib.sha256(repr((info.ops, [replace(t, name="") for t in info.tensors])).encode())
    for buf in _schema().ModelT.InitFromPackedBuf(data, 0).buffers or []:
        h.update(b"" if buf.data is None else np.asarray(buf.data, dtype=np.uint8).tobytes())
    return h.hexdigest()


def _ops_diff(a: list[str], b: list[str]) -> str:
    ca, cb = collections.Counter(a), collections.Counter(b)

    def fmt(c: collections.Counter) -> str:
        return ", ".join(f"{op}x{k}" if k > 1 else op for op, k in sorted(c.items()))

    parts = [f"+{fmt(ca - cb)}"] if ca - cb else []
    parts += [f"edgeq-only: {fmt(cb - ca)}"] if cb - ca else []
    return "; ".join(parts) or "none"


def bench_model(name: str, fixtures: Path, args, tmp: Path) -> tuple[dict, np.ndarray]:
    from edgeq.formats.tflite import read_model

    npz = tmp / f"{name}_calib.npz"
    make_samples(name, fixtures, args.samples, npz)
    runs: dict[str, list] = {v: [] for v in VARIANTS}
    # Repeats outermost, variants inner: slow drift of the machine hits every variant alike.
    for rep in range(args.repeats):
        for v in VARIANTS:
            job = {"variant": v, "model": model_path(name, fixtures), "npz": str(npz),
                   "n": args.samples, "out": f"{tmp}/{name}_{v}_{rep}.tflite",
                   "result": f"{tmp}/{name}_{v}_{rep}.json"}
            print(f"  {name} {v} run {rep + 1}/{args.repeats}", file=sys.stderr, flush=True)
            runs[v].append(run_worker(job) | {"file": job["out"]})
    entry: dict = {"runs": runs, "variants": {}}
    for v in VARIANTS:
        blob = Path(runs[v][0]["file"]).read_bytes()
        info = read_model(blob)
        entry["variants"][v] = {
            "seconds_min": min(r["seconds"] for r in runs[v]), "bytes": len(blob),
            "sha256": hashlib.sha256(blob).hexdigest(), "sha256_without_names": _fingerprint(blob),
            "ops": list(info.op_names), "dynamic_shape": bool(info.dynamic_tensors)}
    best = min(runs["edgeq"], key=lambda r: r["convert_seconds"])
    entry["variants"]["edgeq"] |= {"convert_seconds_min": best["convert_seconds"],
                                   "stages_of_best": best["stages"]}
    return entry, np.load(npz)["x"][0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--samples", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--fixtures", default=str(ROOT.parent / "shared" / "fixtures"))
    ap.add_argument("--json", help="write the raw figures here")
    ap.add_argument("--workdir", help="keep the samples and outputs here (default: a temp dir)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(json.loads(Path(args.worker).read_text()))

    names = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in names if m not in MODELS]
    if unknown:
        ap.error(f"unknown model(s) {unknown}; choose from {list(MODELS)}")
    fixtures = Path(args.fixtures)
    raw: dict = {"machine": machine(), "tensorflow": importlib.metadata.version("tensorflow"),
                 "litert": importlib.metadata.version("ai-edge-litert"),
                 "samples": args.samples, "repeats": args.repeats, "models": {}}
    with tempfile.TemporaryDirectory(prefix="edgeq-bench-") as tmp:
        if args.workdir:  # keep the samples and .tflite files for inspection
            Path(args.workdir).mkdir(parents=True, exist_ok=True)
            tmp = args.workdir
        samples = {}
        for name in names:
            raw["models"][name], samples[name] = bench_model(name, fixtures, args, Path(tmp))
        # All latencies in this one process, after every conversion, so conditions are shared.
        for name in names:
            entry = raw["models"][name]
            blobs = {v: Path(entry["runs"][v][0]["file"]).read_bytes() for v in VARIANTS}
            for v, lat in latency(blobs, samples[name]).items():
                entry["variants"][v]["latency"] = lat
    print_table(raw)
    if args.json:
        Path(args.json).write_text(json.dumps(raw, indent=2))


def print_table(raw: dict) -> None:
    print(f"\nmachine: {raw['machine']}; TensorFlow {raw['tensorflow']}; LiteRT {raw['litert']}; "
          f"{raw['samples']} calibration samples; min of {raw['repeats']} fresh-process runs\n")
    print("| model | plain-keras s | plain-batch1 s | edgeq convert s | edgeq total s "
          "| time ratio edgeq/plain-keras | time ratio edgeq/plain-batch1 "
          "| size bytes (plain-keras / batch1 / edgeq) | size ratio edgeq/plain-batch1 "
          "| latency ms (plain-keras / batch1 / edgeq) | latency ratio edgeq/plain-batch1 "
          "| extra ops in plain-keras vs edgeq |")
    print("|" + "---|" * 12)
    notes, verdict = [], []
    for name, entry in raw["models"].items():
        pk, pb, eq = (entry["variants"][v] for v in VARIANTS)
        conv = eq["convert_seconds_min"]
        lat = [f"{x['latency']['median_ms']:.4g}" for x in (pk, pb, eq)]
        print(f"| {name} | {pk['seconds_min']:.2f} | {pb['seconds_min']:.2f} | {conv:.2f} "
              f"| {eq['seconds_min']:.2f} | {conv / pk['seconds_min']:.2f} "
              f"| {conv / pb['seconds_min']:.2f} | {pk['bytes']} / {pb['bytes']} / {eq['bytes']} "
              f"| {eq['bytes'] / pb['bytes']:.4f} | {' / '.join(lat)} "
              f"| {eq['latency']['median_ms'] / pb['latency']['median_ms']:.3f} "
              f"| {_ops_diff(pk['ops'], eq['ops'])} |")
        verdict.append(f"{name} {'met' if conv / pb['seconds_min'] <= 1.3 else 'MISSED'}")
        stages = ", ".join(f"{k} {s:.2f}" for k, s in eq["stages_of_best"].items())
        dyn = ", ".join(f"{v} {'yes' if entry['variants'][v]['dynamic_shape'] else 'no'}"
                        for v in VARIANTS)
        split = min(entry["runs"]["plain-batch1"], key=lambda r: r["seconds"])
        pb_split = (f"before convert() {split['before_convert_seconds']:.2f}, "
                    f"convert() {split['seconds'] - split['before_convert_seconds']:.2f}")
        same = ("yes" if eq["sha256"] == pb["sha256"] else "only tensor names differ"
                if eq["sha256_without_names"] == pb["sha256_without_names"] else "NO")
        notes.append(f"- {name}: edgeq stages (s) {stages}; plain-batch1 (s) {pb_split}; "
                     f"-1 in a shape signature: {dyn}; "
                     f"edgeq output byte-identical to plain-batch1: {same}")
    print("\nedgeq convert = load + check data + quantize; total = the whole convert() call.")
    print("\n".join(notes))
    print(f"\ntarget edgeq convert <= 1.3x plain-batch1: {', '.join(verdict)}")


if __name__ == "__main__":
    main()
