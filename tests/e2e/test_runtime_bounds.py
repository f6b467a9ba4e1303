"""Issue 22, item 4: every interpreter run on a user's model happens in a bounded child. `emulate`
computed its TFLite Micro reference in its own process: a model whose WHILE loop never ends ran
13 minutes and ignored SIGTERM. Now it runs in edgeq.process.isolation's child, as verify's
evaluation does, with a time limit that follows the model's work (MACs, ops, samples) instead of a
flat 120 s, and SIGTERM/Ctrl-C end it at once.

The endless model is built here with the flatbuffer schema's object API: a WHILE whose condition
is EQUAL(x, x) (always true) and whose body adds zero."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import FIXTURES
from tests.measure import child_env, measured, one_line

TREE = FIXTURES.parent / "third_party" / "tflm_tree_cmsis_nn.tar.gz"
MLPERF = FIXTURES / "models" / "mlperf_tiny"


def endless_model(width: int = 4) -> bytes:
    import flatbuffers
    from ai_edge_litert import schema_py_generated as s

    def tensor(name, ttype=s.TensorType.INT8, buffer=0):
        t = s.TensorT()
        t.name, t.shape, t.type, t.buffer = name, [1, width], ttype, buffer
        if ttype == s.TensorType.INT8:
            q = s.QuantizationParametersT()
            q.scale, q.zeroPoint = [0.05], [0]
            t.quantization = q
        return t

    def code(op):
        c = s.OperatorCodeT()
        c.builtinCode = c.deprecatedBuiltinCode = op
        c.version = 1
        return c

    def op(index, inputs, outputs, kind, options):
        o = s.OperatorT()
        o.opcodeIndex, o.inputs, o.outputs = index, inputs, outputs
        o.builtinOptionsType, o.builtinOptions = kind, options
        return o

    m = s.ModelT()
    m.version = 3
    zeros = s.BufferT()
    zeros.data = [0] * width
    m.buffers = [s.BufferT(), zeros]
    m.operatorCodes = [code(s.BuiltinOperator.WHILE), code(s.BuiltinOperator.EQUAL),
                       code(s.BuiltinOperator.ADD)]
    loop = s.WhileOptionsT()
    loop.condSubgraphIndex, loop.bodySubgraphIndex = 1, 2
    main, cond, body = s.SubGraphT(), s.SubGraphT(), s.SubGraphT()
    main.name, main.tensors, main.inputs, main.outputs = "main", [tensor("x"), tensor("y")], [0], [1]
    main.operators = [op(0, [0], [1], s.BuiltinOptions.WhileOptions, loop)]
    cond.name, cond.inputs, cond.outputs = "cond", [0], [1]
    cond.tensors = [tensor("a"), tensor("again", s.TensorType.BOOL)]
    cond.operators = [op(1, [0, 0], [1], s.BuiltinOptions.EqualOptions, s.EqualOptionsT())]
    body.name, body.inputs, body.outputs = "body", [0], [2]
    body.tensors = [tensor("b"), tensor("zero", buffer=1), tensor("b2")]
    body.operators = [op(2, [0, 1], [2], s.BuiltinOptions.AddOptions, s.AddOptionsT())]
    m.subgraphs = [main, cond, body]
    builder = flatbuffers.Builder(1024)
    builder.Finish(m.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


@pytest.fixture(scope="module")
def endless(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("endless") / "endless_while.tflite"
    path.write_bytes(endless_model())
    return path


def _env(**extra: str) -> dict[str, str]:
    return child_env(EDGEQ_TFLM_TREE=str(TREE), **extra)


def _measured(*argv: str, **env: str) -> dict:
    """`edgeq ARGV` measured in its own child (tests/measure.py), given 300 s."""
    return measured(*argv, env=_env(**env), limit=300)


def test_emulate_of_an_endless_model_stops_at_the_limit_with_exit_2(endless):
    """EDGEQ_CHILD_TIMEOUT shortens the model's own limit (30 s and more) for the test."""
    got = _measured("emulate", str(endless), "--target", "cortex-m4", "--eval-samples", "2",
                    EDGEQ_CHILD_TIMEOUT="3")
    assert got["code"] == 2, got["err"]
    one_line(got["err"], "endless_while.tflite", "TFLite Micro (reference outputs)",
              "did not finish within 3 s", "loop forever")
    assert got["seconds"] < 120 and got["peak_kib"] < 1024 * 1024, got
    print(f"emulate endless: exit 2 after {got['seconds']:.1f} s, peak "
          f"{got['peak_kib'] / 1024:.0f} MiB")


def test_verify_of_an_endless_model_stops_at_the_limit_with_exit_2(endless, tmp_path):
    data = tmp_path / "eval.npz"
    np.savez(data, x=np.zeros((4, 4), np.float32), y=np.arange(4))
    got = _measured("verify", str(endless), "--target", "cortex-m4", "--eval-data", str(data),
                    "--no-latency", EDGEQ_CHILD_TIMEOUT="3")
    assert got["code"] == 2, got["err"]
    one_line(got["err"], "endless_while.tflite", "did not finish within 3 s")
    assert got["seconds"] < 120 and got["peak_kib"] < 1024 * 1024, got


def _workers_under(pid: int) -> list[int]:
    """The interpreter workers (edgeq.process.worker) among `pid`'s descendants."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            todo.append(child)
            try:
                if b"edgeq.process.worker" in (Path("/proc") / str(child) / "cmdline").read_bytes():
                    found.append(child)
            except OSError:
                pass
    return found


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="walks /proc for the worker")
def test_sigterm_ends_emulate_while_the_reference_loops(endless):
    proc = subprocess.Popen([sys.executable, "-m", "edgeq", "emulate", str(endless), "--target",
                             "cortex-m4", "--eval-samples", "1"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env=_env())
    deadline = time.monotonic() + 120
    workers: list[int] = []
    while not workers:
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
        time.sleep(0.2)
        workers = _workers_under(proc.pid)
    time.sleep(1.0)  # the worker is inside TFLite Micro's endless invoke by now (no Python runs)
    start = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    took = time.monotonic() - start
    assert proc.returncode in (130, 143), err
    one_line(err, "interrupted")
    assert took < 30, f"SIGTERM took {took:.1f} s"
    for _ in range(50):  # the worker is gone with it, not left looping
        if not any(Path(f"/proc/{w}").exists() for w in workers):
            break
        time.sleep(0.1)
    assert not any(Path(f"/proc/{w}").exists() for w in workers)


def test_the_child_time_limit_follows_the_models_work(monkeypatch):
    from edgeq.formats.tflite import read_model
    from edgeq.process.isolation import model_work, time_limit

    monkeypatch.delenv("EDGEQ_CHILD_TIMEOUT", raising=False)
    small = read_model((MLPERF / "ad_autoencoder_int8_reference.tflite").read_bytes())
    big = read_model((MLPERF / "ic_resnet8_int8_reference.tflite").read_bytes())
    macs_small, _ = model_work(small)
    macs_big, _ = model_work(big)
    # the MLPerf Tiny figures: ResNet-8 12.5 M MACs, the autoencoder 0.26 M
    assert 12e6 < macs_big < 13e6 and 0.2e6 < macs_small < 0.3e6, (macs_big, macs_small)
    assert time_limit(big, 100) > time_limit(small, 100) > time_limit(small, 1)
    assert time_limit(big, 10_000) > 10 * time_limit(big, 10) > 120  # not a flat 120 s
    assert time_limit(read_model(endless_model()), 8) < 60  # an endless small model ends soon
    monkeypatch.setenv("EDGEQ_CHILD_TIMEOUT", "7")
    assert time_limit(big, 10_000) == 7.0
