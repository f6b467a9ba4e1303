"""Issue 22, item 7: reading a .tflite takes time linear in its ops, and other subgraphs are
only counted. A 20,000-op model took 50-117 s to analyze (2.5-6 ms per op: the schema's object
API unpacked every field of every subgraph, in edgeq's reader and again in TFLite Micro's Python
wrapper, and the terminal laid out a 20,000-row table). Speed is measured by
tools/bench_analyze.py; these tests count the work instead of timing it."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

from tests.conftest import ROOT

_spec = importlib.util.spec_from_file_location("bench_analyze", ROOT / "tools" / "bench_analyze.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def _field_reads(monkeypatch, data: bytes) -> int:
    """How many table fields the reader reads for `data` (edgeq.formats.tflite._Flat)."""
    from edgeq.formats import tflite

    calls = [0]
    real = tflite._Flat._field

    def counted(self, table, slot):
        calls[0] += 1
        return real(self, table, slot)

    monkeypatch.setattr(tflite._Flat, "_field", counted)
    try:
        tflite.read_model(data)
    finally:
        monkeypatch.setattr(tflite._Flat, "_field", real)
    return calls[0]


def test_the_reader_reads_each_op_a_fixed_number_of_times(monkeypatch):
    from ai_edge_litert import schema_py_generated as schema

    def refuse(*args, **kwargs):
        raise AssertionError("the object API unpacks every subgraph; the reader must not use it")

    monkeypatch.setattr(schema.ModelT, "InitFromPackedBuf", refuse)
    small, big = (_field_reads(monkeypatch, bench.chain_model(n)) for n in (500, 4000))
    per_op = (big - small) / 3500
    assert small / 500 <= per_op + 1, (small, big)  # no term that grows faster than the ops
    assert per_op < 40, f"{per_op:.1f} field reads per op"


def test_other_subgraphs_are_only_counted(monkeypatch):
    from edgeq.formats.tflite import read_model

    one, many = bench.chain_model(3, 1), bench.chain_model(3, 3000)
    assert read_model(many).subgraphs == 3000
    assert _field_reads(monkeypatch, many) == _field_reads(monkeypatch, one)


def test_tflm_resource_variable_count_does_not_unpack_the_model(monkeypatch):
    """TFLite Micro's wrapper counted resource variables with the object API (6 s of a
    20,000-op model's load); edgeq counts them in linear time and the interpreter still loads."""
    from edgeq.adapters.tflm import TFLMRunner
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as tflm_schema

    def refuse(*args, **kwargs):
        raise AssertionError("TFLite Micro's wrapper unpacked the whole model")

    monkeypatch.setattr(tflm_schema.ModelT, "InitFromObj", refuse)
    runner = TFLMRunner(bench.chain_model(50))
    assert runner.arena.total > 0


_MEASURE = """
import json, resource, subprocess, sys, time
t0 = time.monotonic()
proc = subprocess.run(sys.argv[1:], capture_output=True, text=True, timeout=600)
print(json.dumps({"code": proc.returncode, "out": proc.stdout, "err": proc.stderr,
                  "seconds": time.monotonic() - t0,
                  "cpu_s": resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime,
                  "peak_kib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))
"""


def test_analyze_of_a_model_with_many_ops_lists_a_bounded_table(tmp_path):
    """Through the CLI: exit 0, every op analysed, the terminal table capped with one line
    saying how many ops it left out (--json has them all); time and memory reported."""
    from edgeq.cli.render import MAX_OP_ROWS

    n = MAX_OP_ROWS + 700
    model = tmp_path / "chain.tflite"
    model.write_bytes(bench.chain_model(n))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    out = subprocess.run([sys.executable, "-c", _MEASURE, sys.executable, "-m", "edgeq",
                          "analyze", str(model), "--target", "cortex-m4"],
                         capture_output=True, text=True, timeout=700, env=env, check=True)
    got = json.loads(out.stdout)
    assert got["code"] == 0, got["err"]
    assert "... and 700 more op(s), not shown; --json lists every op" in got["out"]
    assert got["out"].count("│ ADD ") == MAX_OP_ROWS
    print(f"analyze {n} ops: {got['seconds']:.1f} s wall, {got['cpu_s']:.1f} s CPU, "
          f"peak {got['peak_kib'] / 1024:.0f} MiB")
    assert got["peak_kib"] < 1024 * 1024


def _with_resource_variables(names: list[list[str]]) -> bytes:
    """The chain model plus one subgraph per entry of `names`, each with a VAR_HANDLE op per
    shared name (the ops TFLite Micro counts to size its resource variables)."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as s

    model = s.ModelT.InitFromPackedBuf(bench.chain_model(3), 0)
    code = s.OperatorCodeT()
    code.builtinCode, code.deprecatedBuiltinCode, code.version = \
        s.BuiltinOperator.VAR_HANDLE, 127, 1
    model.operatorCodes.append(code)
    for k, shared in enumerate(names):
        g = s.SubGraphT()
        g.name, g.tensors, g.operators, g.inputs, g.outputs = f"vars{k}", [], [], [], []
        for j, name in enumerate(shared):
            t = s.TensorT()
            t.name, t.shape, t.type = f"h{j}", [], s.TensorType.RESOURCE
            g.tensors.append(t)
            op = s.OperatorT()
            op.opcodeIndex, op.inputs, op.outputs = len(model.operatorCodes) - 1, [], [j]
            op.builtinOptionsType = s.BuiltinOptions.VarHandleOptions
            op.builtinOptions = s.VarHandleOptionsT()
            op.builtinOptions.sharedName = name
            g.operators.append(op)
        model.subgraphs.append(g)
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def test_resource_variables_are_counted_as_tflite_micro_counts_them():
    from edgeq.adapters import tflm
    from edgeq.formats.tflite import read_model, resource_variable_names

    tflm._runtime()  # installs edgeq's count; TFLM's own is kept for this comparison
    theirs = tflm._REPLACED[0]
    for names in ([], [["a"]], [["a", "b"], ["a", "c"]], [["x", "x", "x"]]):
        data = _with_resource_variables(names)
        read_model(data)  # checked first, as every model edgeq hands TFLite Micro
        want = len({n for group in names for n in group})
        assert len(resource_variable_names(data)) == theirs(data) == want, names


def test_the_arena_planner_looks_only_at_buffers_live_together(monkeypatch):
    """The offline arena planner (edgeq.pipeline.arena_plan) placed each buffer by scanning
    every buffer placed before it, and summed every buffer at every scope for its lower bound:
    quadratic, minutes for 20,000 ops. It now looks up the buffers live at the same scopes: the
    work per op stays flat as the chain grows, and the plan is the same."""
    from edgeq.pipeline import arena_plan
    from edgeq.pipeline.arena_scratch import CMSIS_DSP
    from edgeq.pipeline.arena_stage import plan_model

    real = arena_plan._Placed.overlapping
    seen = [0]

    def counted(self, b):
        found = real(self, b)
        seen[0] += len(found) + 1
        return found

    monkeypatch.setattr(arena_plan._Placed, "overlapping", counted)
    work = {}
    for n in (300, 2400):
        seen[0] = 0
        result = plan_model(bench.chain_model(n), CMSIS_DSP)
        work[n] = seen[0]
        assert result.host["tflm"] == result.host["planned"] > 0  # a chain: TFLM's plan is best
    assert work[2400] <= 8.5 * work[300], work  # 8x the ops: about 8x the work, not 64x
