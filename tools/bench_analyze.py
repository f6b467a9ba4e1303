"""Benchmarks `edgeq analyze` on synthetic .tflite models with many ops and many subgraphs: the
readers and checks must take time linear in the model's size (issue 22: a 2.6 MB model of 20,000
ops took 50-117 s, 2.5-6 ms per op).

    python tools/bench_analyze.py [--ops 1000,5000,20000] [--subgraphs 10000]
                                  [--target cortex-m4] [--keep DIR]

Each model is built with the flatbuffer schema's object API (ai_edge_litert.schema_py_generated):
a chain of N int8 ADD ops (x + c, one shared constant), or N subgraphs of one ADD each (the
first runs, the others are only read). Each `edgeq analyze MODEL --target T` runs as a user
runs it (a new process, `python -m edgeq`), timed wall-clock, and the figure printed is the
seconds per 1,000 ops: flat across sizes when the work is linear.

    python tools/bench_analyze.py --rates [--fixtures DIR]

measures instead the rates behind the time limit of interpreter children
(edgeq.process.isolation.time_limit): TFLite Micro's load time and its time per inference on the
MLPerf Tiny int8 models, against the model's MACs and op count, and prints the limit edgeq sets
for 100 samples next to what 100 samples took.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def chain_model(n_ops: int, n_subgraphs: int = 1, width: int = 4) -> bytes:
    """A valid int8 model: subgraph 0 is a chain of `n_ops` ADD ops on a [1, width] tensor;
    subgraphs 1.. (when asked) hold one ADD each and are never called."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as s

    model = s.ModelT()
    model.version = 3
    model.description = "edgeq bench_analyze synthetic chain"
    empty, const = s.BufferT(), s.BufferT()
    const.data = list(range(1, width + 1))
    model.buffers = [empty, const]  # buffer 0 is the empty sentinel
    code = s.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = s.BuiltinOperator.ADD
    code.version = 1
    model.operatorCodes = [code]

    def tensor(name: str, buffer: int = 0):
        t = s.TensorT()
        t.name, t.shape, t.type, t.buffer = name, [1, width], s.TensorType.INT8, buffer
        q = s.QuantizationParametersT()
        q.scale, q.zeroPoint = [0.05], [0]
        t.quantization = q
        return t

    def subgraph(n: int, name: str):
        g = s.SubGraphT()
        g.name = name
        g.tensors = [tensor("c", 1), tensor("x")]
        g.operators = []
        for k in range(n):
            g.tensors.append(tensor(f"t{k}"))
            op = s.OperatorT()
            op.opcodeIndex = 0
            op.inputs, op.outputs = [k + 1, 0], [k + 2]
            op.builtinOptionsType = s.BuiltinOptions.AddOptions
            op.builtinOptions = s.AddOptionsT()
            g.operators.append(op)
        g.inputs, g.outputs = [1], [n + 1]
        return g

    model.subgraphs = [subgraph(n_ops, "main")] + [
        subgraph(1, f"g{k}") for k in range(1, n_subgraphs)]
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def rates(fixtures: Path) -> None:
    import numpy as np

    from edgeq.adapters.tflm import TFLMRunner
    from edgeq.formats.tflite import read_model
    from edgeq.process.isolation import model_work, time_limit

    print(f"{'model':<42} {'ops':>4} {'MMACs':>7} {'load s':>7} {'ms/inf':>8} "
          f"{'ns/MAC':>7} {'us/op':>7} {'100 inf s':>9} {'limit s':>8}")
    for path in sorted((fixtures / "models" / "mlperf_tiny").glob("*_int8_reference.tflite")):
        data = path.read_bytes()
        info = read_model(data, path)
        macs, _ = model_work(info)
        t0 = time.perf_counter()
        runner = TFLMRunner(data)
        load = time.perf_counter() - t0
        shape = [int(d) for d in runner._in["shape"][1:]]
        x = np.random.default_rng(0).uniform(-1, 1, (5, *shape)).astype(np.float32)
        runner.run(x[:1])
        t0 = time.perf_counter()
        runner.run(x)
        per = (time.perf_counter() - t0) / len(x)
        print(f"{path.name:<42} {len(info.ops):>4} {macs / 1e6:7.2f} {load:7.2f} "
              f"{1000 * per:8.2f} {1e9 * per / max(macs, 1):7.2f} "
              f"{1e6 * per / len(info.ops):7.1f} {load + 100 * per:9.1f} "
              f"{time_limit(info, 100):8.1f}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ops", default="1000,5000,20000")
    ap.add_argument("--subgraphs", default="10000")
    ap.add_argument("--target", default="cortex-m4")
    ap.add_argument("--keep", help="write the models here instead of a temporary folder")
    ap.add_argument("--rates", action="store_true",
                    help="measure the interpreter rates behind the child time limits instead")
    ap.add_argument("--fixtures", default=os.environ.get(
        "EDGEQ_FIXTURES", str(Path(__file__).resolve().parents[2] / "shared" / "fixtures")))
    args = ap.parse_args()
    if args.rates:
        rates(Path(args.fixtures))
        return 0
    cases = [(int(n), 1) for n in args.ops.split(",") if n] + \
        [(1, int(n)) for n in args.subgraphs.split(",") if n]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.keep or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        print(f"{'model':<26} {'MB':>6} {'exit':>4} {'seconds':>8} {'s per 1k ops':>13}")
        for n_ops, n_graphs in cases:
            path = folder / f"chain_{n_ops}ops_{n_graphs}subgraphs.tflite"
            path.write_bytes(chain_model(n_ops, n_graphs))
            start = time.perf_counter()
            proc = subprocess.run([sys.executable, "-P", "-m", "edgeq", "analyze", str(path),
                                   "--target", args.target], capture_output=True, text=True,
                                  env=dict(os.environ))
            took = time.perf_counter() - start
            units = max(n_ops, n_graphs)
            print(f"{path.stem:<26} {path.stat().st_size / 1e6:6.2f} {proc.returncode:>4} "
                  f"{took:8.2f} {1000 * took / units:13.3f}")
            if proc.returncode not in (0, 3):
                print("   " + (proc.stderr.strip().splitlines() or [""])[-1][:300])
    return 0


if __name__ == "__main__":
    sys.exit(main())
