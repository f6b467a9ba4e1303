"""The child side of `edgeq.process.isolation`: runs one interpreter task on a model read from stdin.

Run as `python -m edgeq.process.worker`; imports the interpreters, never TensorFlow. Tasks:

- ``tflm_arena``: load the model in TFLite Micro and return the recording allocator's figures.
- ``arena_plan_check``: run a planned model and the file it came from (``args["original"]``) on
  TFLite Micro; return whether the outputs are byte-identical and the planned model's head.
- ``litert_invoke``: load it in LiteRT, allocate, run one invoke on zeros; return the I/O.
- ``tflm_reference`` / ``tflm_op_outputs``: TFLite Micro's raw outputs for every sample in
  ``x_path`` / every op's outputs for one sample, saved to ``out_path`` (`edgeq emulate`).
- ``evaluate``: run it on the samples in ``x_path`` (.npy) with the target's interpreter, save
  the outputs to ``out_path`` (.npz), and return the arena and host latency (`edgeq verify`).
- ``crash`` / ``hang``: used by the tests to prove a crash or hang is contained; ``hang``
  creates the file ``args["ready"]`` (when given) once it is hanging, for tests that act then.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, Callable


def _tflm_arena(model: bytes, args: dict[str, Any]) -> dict[str, Any]:
    from edgeq.adapters.tflm import TFLMRunner

    arena = TFLMRunner(model, source=args.get("source", "model")).arena
    return {"total": arena.total, "head": arena.head, "tail": arena.tail, "log": arena.log}


def _arena_plan_check(model: bytes, args: dict[str, Any]) -> dict[str, Any]:
    """The planned `model` and the file it was planned from on TFLM (edgeq.pipeline.arena_stage)."""
    from pathlib import Path

    from edgeq.pipeline.arena_stage import compare_on_host

    return compare_on_host(Path(args["original"]).read_bytes(), model, int(args["samples"]))


def _litert_invoke(model: bytes, args: dict[str, Any]) -> dict[str, Any]:
    import numpy as np

    from edgeq.adapters.litert import LiteRTRunner

    runner = LiteRTRunner(model, xnnpack=bool(args.get("xnnpack", False)),
                          source=args.get("source", "model"))
    shape = [int(d) for d in runner._in["shape"][1:]]
    outputs = runner.run(np.zeros((1, *shape), dtype=np.float32))
    return {"outputs": [list(o.shape) for o in outputs]}


def _evaluate(model: bytes, args: dict[str, Any]) -> dict[str, Any]:
    import numpy as np

    from edgeq.adapters.litert import LiteRTRunner
    from edgeq.adapters.tflm import TFLMRunner

    x = np.load(args["x_path"], allow_pickle=False)
    threads, source = int(args.get("threads", 1)), args.get("source", "model")
    if args["runtime"] == "tflm":
        runner: Any = TFLMRunner(model, source=source)
    else:
        runner = LiteRTRunner(model, threads=threads, xnnpack=bool(args.get("xnnpack", True)),
                              source=source)
    outputs = [np.concatenate(parts) for parts in zip(*(
        runner.run(x[i:i + 64]) for i in range(0, len(x), 64)))]
    np.savez(args["out_path"], *outputs)
    latency = None
    if args.get("latency"):
        host = runner if isinstance(runner, LiteRTRunner) else LiteRTRunner(model, threads=threads)
        latency = host.latency_ms(x[0])[0]
    arena = getattr(runner, "arena", None)
    return {"runtime": runner.runtime, "latency_ms": latency,
            "arena": None if arena is None else {"total": arena.total, "head": arena.head,
                                                 "tail": arena.tail}}


def _tflm_reference(model: bytes, args: dict[str, Any]) -> dict[str, Any]:
    import numpy as np

    from edgeq.adapters.tflm import reference_outputs

    x = np.load(args["x_path"], allow_pickle=False)
    ref, arena = reference_outputs(model, x, source=args.get("source", "model"))
    np.save(args["out_path"], ref)
    return {"total": arena.total, "head": arena.head, "tail": arena.tail, "log": arena.log}


def _tflm_op_outputs(model: bytes, args: dict[str, Any]) -> list[list[Any]]:
    import numpy as np

    from edgeq.adapters.tflm import reference_op_outputs

    row = np.load(args["x_path"], allow_pickle=False)
    got = reference_op_outputs(model, row, source=args.get("source", "model"))
    np.savez(args["out_path"], *[np.frombuffer(data, dtype=np.uint8) for _, _, data in got])
    return [[k, name] for k, name, _ in got]


def _crash(model: bytes, args: dict[str, Any]) -> None:
    import ctypes

    ctypes.string_at(0)  # reads address 0: SIGSEGV


def _hang(model: bytes, args: dict[str, Any]) -> None:
    import time

    if args.get("ready"):
        open(args["ready"], "w").close()
    time.sleep(3600)


TASKS: dict[str, Callable[[bytes, dict[str, Any]], Any]] = {
    "tflm_arena": _tflm_arena, "litert_invoke": _litert_invoke, "evaluate": _evaluate,
    "tflm_reference": _tflm_reference, "tflm_op_outputs": _tflm_op_outputs,
    "arena_plan_check": _arena_plan_check,
    "crash": _crash, "hang": _hang,
}


def main() -> int:
    # Native code prints to fd 1; keep the real stdout for the answer and send fd 1 to stderr.
    answer_fd = os.dup(1)
    os.dup2(2, 1)
    header = sys.stdin.buffer.readline()
    model = sys.stdin.buffer.read()
    try:
        request = json.loads(header)
        result = {"result": TASKS[request["task"]](model, request.get("args", {}))}
    except Exception as exc:  # every failure goes back to the parent as data
        result = {"error": {"type": type(exc).__name__, "message": getattr(exc, "message", None)
                            or (str(exc).strip().splitlines() or [""])[0][:500],
                            "hint": getattr(exc, "hint", None),
                            "exit_status": getattr(exc, "exit_status", None)}}
    with os.fdopen(answer_fd, "w") as out:
        out.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
