"""How long a data mistake takes to reach the user: `edgeq convert` with wrong data (a wrong
npz key, a wrong sample shape, a label past the classes, raw pixels for a 0..1 model under
--strict-data), timed as a user runs it (the installed `edgeq` script, a fresh process,
supervisor included), on the bundled example (.keras), the MLPerf Tiny VWW model (.h5) and the
MLPerf Tiny KWS SavedModel.

    python tools/bench_data_mistakes.py [--runs 3] [--fixtures ../shared/fixtures]

Each mistake must exit 2 with one line; the figure is the median wall time of --runs runs. The
goal (issue 23) is under 5 s: the data is checked against the model file's config before
TensorFlow is imported. `--edgeq PATH` times another installation's script (e.g. a checkout of
an older edgeq) on the same cases, for a before/after comparison on the same machine.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def _cases(tmp: Path, fixtures: Path) -> list[tuple[str, list[str]]]:
    example = ROOT / "representative_data"
    cal = np.load(example / "digits_calibration.npz")
    np.savez(tmp / "images_key.npz", images=cal["x"], y=cal["y"])
    np.savez(tmp / "shape28.npz", x=np.zeros((10, 28, 28, 1), np.float32))
    np.savez(tmp / "labels50.npz", x=cal["x"], y=np.full(len(cal["y"]), 50))
    np.savez(tmp / "pixels255.npz", x=(cal["x"] / 16 * 254.9).astype(np.float32), y=cal["y"])
    np.savez(tmp / "vww_shape.npz", x=np.zeros((4, 28, 28, 1), np.float32))
    np.savez(tmp / "vww_labels.npz", x=np.zeros((4, 96, 96, 3), np.float32), y=[0, 1, 7, 1])
    np.savez(tmp / "kws_shape.npz", x=np.zeros((4, 28, 28, 1), np.float32))
    digits = str(example / "digits_cnn.keras")
    vww = str(fixtures / "models" / "mlperf_tiny" / "vww_mobilenet_96.h5")
    return [
        ("digits: npz key 'images'", [digits, "--data", str(tmp / "images_key.npz")]),
        ("digits: 28x28 samples", [digits, "--data", str(tmp / "shape28.npz")]),
        ("digits: label 50 of 10 classes", [digits, "--data", str(tmp / "labels50.npz")]),
        ("digits: 0..255 floats, --input-range 0,1 --strict-data",
         [digits, "--data", str(tmp / "pixels255.npz"), "--input-range", "0,1",
          "--strict-data"]),
        ("vww .h5: 28x28x1 samples", [vww, "--data", str(tmp / "vww_shape.npz")]),
        ("vww .h5: label 7 of 2 classes", [vww, "--data", str(tmp / "vww_labels.npz")]),
        ("kws SavedModel: 28x28x1 samples",
         [str(fixtures / "models" / "mlperf_tiny" / "kws_dscnn_savedmodel"), "--data",
          str(tmp / "kws_shape.npz")]),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--fixtures", default=str(ROOT.parent / "shared" / "fixtures"))
    ap.add_argument("--edgeq", default=shutil.which("edgeq", path=str(Path(sys.executable).parent))
                    or "edgeq", help="the edgeq script to time [this Python's]")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="edgeq-bench-data-") as tmp:
        tmp_path = Path(tmp)
        env = {**os.environ, "COLUMNS": "200"}
        print(f"| mistake | exit | median s ({args.runs} runs) | message |")
        print("|---|---|---|---|")
        for name, argv in _cases(tmp_path, Path(args.fixtures)):
            times, code, line = [], None, ""
            for i in range(args.runs):
                cmd = [args.edgeq, "convert", argv[0], "--target", "cortex-m4", *argv[1:],
                       "--out", str(tmp_path / f"out{i}")]
                t0 = time.perf_counter()
                run = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp)
                times.append(time.perf_counter() - t0)
                code = run.returncode
                errors = [x for x in run.stderr.splitlines() if x.startswith("edgeq: error")]
                line = errors[0][:110] if errors else run.stderr.strip()[-110:]
            print(f"| {name} | {code} | {statistics.median(times):.2f} | {line} |")


if __name__ == "__main__":
    main()
