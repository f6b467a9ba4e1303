"""QAT under tf.distribute on CPU, in subprocesses (device setup must precede TF's start):
MirroredStrategy over two logical CPU devices, and MultiWorkerMirroredStrategy with two worker
processes on localhost (on CPU each worker holds one replica)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow

_RUN = """
import json, sys
{setup}
from edgeq.api import ConvertOptions, convert
r = convert(ConvertOptions(model=sys.argv[1], target="arm-cpu", data=sys.argv[2], out=sys.argv[3],
            method="qat", train_data=sys.argv[2], epochs=1, batch_size=16, strategy=sys.argv[4],
            measure_latency=False))
t = r.report.qat["training"]
print("RESULT " + json.dumps({{"replicas": t["replicas"], "history": t["history"], "ok": r.ok}}))
"""

_TWO_CPUS = """
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
"""


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    import keras

    keras.utils.set_random_seed(0)
    d = tmp_path_factory.mktemp("dist")
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3, activation="relu"),
                              keras.layers.Flatten(), keras.layers.Dense(10)])
    model.save(d / "small.keras")
    rng = np.random.default_rng(0)
    np.savez(d / "data.npz", x=rng.uniform(0, 1, (64, 8, 8)).astype(np.float32),
             y=rng.integers(0, 10, 64))
    return d


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="2", **extra)
    env.pop("TF_CONFIG", None)
    env.update(extra)
    return env


def _result(stdout: str) -> dict:
    line = next(line for line in stdout.splitlines() if line.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def test_mirrored_strategy_trains_on_two_logical_cpus(small):
    code = _RUN.format(setup=_TWO_CPUS)
    run = subprocess.run([sys.executable, "-c", code, str(small / "small.keras"),
                          str(small / "data.npz"), str(small / "out_mirrored"), "mirrored"],
                         capture_output=True, text=True, env=_env(), timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    result = _result(run.stdout)
    assert result["ok"] and result["replicas"] == 2
    assert (small / "out_mirrored" / "report.json").is_file()


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def test_multiworker_strategy_with_two_worker_processes(small):
    ports = _free_ports(2)
    cluster = {"worker": [f"localhost:{p}" for p in ports]}
    code = _RUN.format(setup="")
    procs = []
    for i in range(2):
        config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})
        procs.append(subprocess.Popen(
            [sys.executable, "-c", code, str(small / "small.keras"), str(small / "data.npz"),
             str(small / f"out_worker{i}"), "multiworker"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=_env(TF_CONFIG=config)))
    outs = []
    for p in procs:
        try:
            out, err = p.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
        assert p.returncode == 0, err[-3000:]
        outs.append(_result(out))
    assert [o["replicas"] for o in outs] == [2, 2]
    # The workers train one model together: the same losses, epoch by epoch.
    assert outs[0]["history"] == outs[1]["history"]
