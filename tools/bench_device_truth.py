"""How often edgeq's device claims equal what the real tools did, on models edgeq did not make.

    python tools/bench_device_truth.py [--fixtures DIR] [--json PATH] [--mismatches N]

Corpora (../shared/fixtures, see device_truth/README.md for their origin):
  edgetpu pairs        device_truth/edgetpu: X.tflite + the X_edgetpu.tflite the compiler wrote.
                       Exact = the same ops on the Edge TPU and the same multiset of CPU ops
                       (a float model: nothing mapped and the whole-model verdict).
  coral pairs          models/coral: the same check on the original four compiled pairs.
  edgetpu logs         device_truth/edgetpu_logs: 198 compiler logs whose models are not
                       published; edgeq cannot predict their placement, so this row checks the
                       log reader only (TPU/CPU counts and CPU ops equal the manifest's).
  tflm arena           device_truth/tflm: `edgeq analyze --target cortex-m7` arena total, head
                       and tail against TFLite Micro's recording allocator in the manifest
                       (and the same for models/tflm against its arena_reference.json).
Each mismatch is printed with the op index and the rule that placed it.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def edgetpu_pair(plain: Path, compiled: Path) -> dict[str, Any]:
    """Predict one pair and compare it op by op with the compiled file."""
    from edgeq.edgetpu import placement
    from edgeq.edgetpu.compiler import compiled_placement
    from edgeq.errors import TargetConstraintError
    from edgeq.targets import load_target
    from edgeq.formats.tflite import read_model_file

    target = load_target("coral")
    info, out = read_model_file(plain), read_model_file(compiled)
    plan = placement.plan(info, target.ops.allowed, dict(target.ops.max_versions))
    try:
        placement.check_mappable(plan, info, str(plain))
        verdict = None
    except TargetConstraintError as exc:
        verdict = str(exc).split(": ", 1)[-1][:120]
    truth = {i: where for i, where, _ in compiled_placement(info, out)}
    wrong = [{"index": r.index, "op": r.op, "predicted": r.placement, "compiler": truth[r.index],
              "rule": r.rule or "mapped"} for r in plan.ops if truth[r.index] != r.placement]
    cpu_pred = Counter(r.op for r in plan.ops if r.placement != "tpu")
    cpu_true = Counter(info.ops[i].op for i, where in truth.items() if where != "tpu")
    on_tpu = sum(r.placement == "tpu" for r in plan.ops)
    return {"model": plain.name, "ops": len(plan.ops), "tpu": on_tpu,
            "tpu_compiler": sum(w == "tpu" for w in truth.values()),
            "exact": cpu_pred == cpu_true and not wrong and (on_tpu > 0 or verdict is not None),
            "whole_model_verdict": verdict, "mismatches": wrong}


def edgetpu_corpus(fixtures: Path) -> list[dict[str, Any]]:
    root = fixtures / "device_truth" / "edgetpu"
    pairs = json.loads((root / "manifest.json").read_text())["pairs"]
    return [edgetpu_pair(root / p["stored_plain"], root / p["stored_compiled"]) for p in pairs]


def coral_corpus(fixtures: Path) -> list[dict[str, Any]]:
    pairs = json.loads((fixtures / "models" / "coral" / "edgetpu_ground_truth.json").read_text())
    return [edgetpu_pair(fixtures / p["model"], fixtures / p["compiled"])
            for p in pairs["pairs"]]


def log_corpus(fixtures: Path) -> list[dict[str, Any]]:
    from edgeq.edgetpu.compiler import parse_log

    root = fixtures / "device_truth" / "edgetpu_logs"
    rows = []
    for entry in json.loads((root / "manifest.json").read_text())["logs"]:
        log = parse_log((root / entry["stored"]).read_text(errors="replace"))
        cpu = Counter()
        for op, n, status in log.rows:
            if status != "Mapped to Edge TPU":
                cpu[op] += n
        tpu = sum(n for _, n, s in log.rows if s == "Mapped to Edge TPU")
        exact = (tpu == entry["log_ops_tpu"] and sum(cpu.values()) == entry["log_ops_cpu"]
                 and dict(cpu) == entry["log_cpu_op_counts"])
        rows.append({"model": entry["stored"], "exact": exact, "tpu": tpu,
                     "tpu_compiler": entry["log_ops_tpu"],
                     "mismatches": [] if exact else [{"parsed_cpu": dict(cpu),
                                                      "manifest_cpu": entry["log_cpu_op_counts"]}]})
    return rows


def tflm_corpus(fixtures: Path, target: str = "cortex-m7") -> list[dict[str, Any]]:
    root = fixtures / "device_truth" / "tflm"
    return [arena_row(root / m["stored"], {k: m[k] for k in ("total", "head", "tail")}, target)
            for m in json.loads((root / "manifest.json").read_text())["models"]]


def tflm_reference_corpus(fixtures: Path, target: str = "cortex-m7") -> list[dict[str, Any]]:
    ref = json.loads((fixtures / "models" / "tflm" / "arena_reference.json").read_text())
    return [arena_row(fixtures / m["model"], {"total": m["arena_total_bytes"],
                                               "head": m["arena_head_bytes"],
                                               "tail": m["arena_tail_bytes"]}, target)
            for m in ref["models"]]


def arena_row(path: Path, want: dict[str, int], target: str) -> dict[str, Any]:
    """edgeq analyze's arena for one model against TFLite Micro's recorded figures."""
    from edgeq.commands.analyze import analyze
    from edgeq.errors import EdgeqError

    got: dict[str, int] | None = None
    error = None
    try:
        a = analyze(path, target)
        if a.arena is not None:
            got = {"total": a.arena.total, "head": a.arena.head, "tail": a.arena.tail}
    except EdgeqError as exc:
        error = str(exc)[:160]
    return {"model": str(path.name), "exact": got == want, "arena": got, "truth": want,
            "mismatches": [] if got == want else [{"edgeq": got or error, "tflm": want}]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--fixtures", type=Path, default=ROOT.parent / "shared" / "fixtures")
    ap.add_argument("--json", type=Path, help="write every row here")
    ap.add_argument("--mismatches", type=int, default=5, help="op mismatches shown per model")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    corpora = {
        "edgetpu pairs (device_truth/edgetpu)": edgetpu_corpus(args.fixtures),
        "coral pairs (models/coral)": coral_corpus(args.fixtures),
        "edgetpu logs, reader only (device_truth/edgetpu_logs)": log_corpus(args.fixtures),
        "tflm arena, cortex-m7 (device_truth/tflm)": tflm_corpus(args.fixtures),
        "tflm arena, cortex-m7 (models/tflm reference)": tflm_reference_corpus(args.fixtures),
    }
    print(f"{'corpus':<56} {'exact':>8}")
    for name, rows in corpora.items():
        print(f"{name:<56} {sum(r['exact'] for r in rows):>4}/{len(rows):<3}")
    for name, rows in corpora.items():
        for r in rows:
            if r["exact"]:
                continue
            print(f"\nMISMATCH {name}: {r['model']}")
            for m in r["mismatches"][:args.mismatches]:
                print("   ", json.dumps(m))
    if args.json:
        args.json.write_text(json.dumps(corpora, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
