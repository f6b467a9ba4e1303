"""`edgeq verify`: measure an integer model on its target's runtime and compare it with a
baseline report, so that a CI job fails when a model gets worse.

The baseline is a report.json from `edgeq convert` or from an earlier `edgeq verify --report`:
both carry accuracy.quantized, latency_ms.median, memory.arena_bytes and output.bytes.

What gates: a gate that fails on an unchanged model gets switched off, so by default only the
deterministic figures do. Top-1 on the same data and runtime, the model's size and the TFLite
Micro arena repeat exactly; with a baseline they are compared by default (no drop, no growth
allowed unless --max-drop / --max-growth say otherwise). Host latency (LiteRT + XNNPACK, in
microseconds for small models) moves with the machine's load, so it gates only when asked
(--max-latency-growth). It is measured with a warm-up and five rounds, the quietest counting
(edgeq.adapters.litert), yet a model of a few microseconds still measures some 20 % apart from
one process to the next on the same machine: the limit has to allow for that.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeq.data import InputSpec, Preprocess, load_dataset, output_classes
from edgeq.errors import DataError, EdgeqError, InputError, UsageError
from edgeq.status import ExitStatus
from edgeq.targets import load_target

SCHEMA = "edgeq-verify/1"


class RegressionError(EdgeqError):
    """The model is worse than its baseline by more than the allowed margin."""

    exit_status = ExitStatus.ACCURACY_GATE

    def __init__(self, failures: list[str], baseline: str) -> None:
        self.failures = failures
        super().__init__(f"regression against {baseline}: " + "; ".join(failures),
                         hint="fix the model or conversion, or accept the new figures by "
                              "making this run's report the baseline")


@dataclass(frozen=True)
class Check:
    metric: str  # accuracy | latency_ms | arena_bytes | model_bytes
    baseline: float | None
    current: float | None
    limit: str  # "drop <= 0.50 pp" / "growth <= 10%"
    ok: bool
    detail: str


@dataclass(frozen=True)
class VerifyOutcome:
    model: str
    target: str
    runtime: str
    n: int
    accuracy: float | None  # top-1 on the target's runtime, None without labels
    latency_ms: float | None
    arena_bytes: int | None
    model_bytes: int
    data: dict[str, Any]
    baseline: str | None = None
    checks: tuple[Check, ...] = field(default=())
    sha256: str = ""  # of the model file verified
    io: dict | None = None  # inputs and outputs per sample (what a new build keeps)
    skipped: tuple[str, ...] = ()  # every check not made, and why
    notes: tuple[str, ...] = ()

    @property
    def failures(self) -> list[str]:
        return [c.detail for c in self.checks if not c.ok]

    @property
    def ok(self) -> bool:
        return not self.failures

    def error(self) -> RegressionError | None:
        return RegressionError(self.failures, self.baseline or "baseline") if self.failures \
            else None

    def to_dict(self) -> dict[str, Any]:
        """A report that can serve as the next run's baseline (same keys as report.json)."""
        from edgeq.outputs.report import tool_versions

        return {
            "schema": SCHEMA,
            "target": self.target,
            "model": {"path": self.model, "sha256": self.sha256, "io": self.io},
            "accuracy": {"quantized": self.accuracy, "n": self.n, "runtime": self.runtime},
            "latency_ms": None if self.latency_ms is None else {
                "median": self.latency_ms, "runtime": "litert", "host": True},
            "memory": {"arena_bytes": self.arena_bytes, "flash_bytes": self.model_bytes},
            "output": {"path": self.model, "bytes": self.model_bytes, "sha256": self.sha256},
            "data": {"evaluation": self.data},
            "baseline": self.baseline,
            "checks": [asdict(c) for c in self.checks],
            "skipped": list(self.skipped),
            "notes": list(self.notes),
            "ok": self.ok,
            "versions": tool_versions(),
        }


def verify_model(model: str | Path, target: str, eval_data: str | Path, *,
                 baseline: str | Path | None = None, max_drop: float | None = None,
                 max_growth: float | None = None, max_latency_growth: float | None = None,
                 preprocess: Preprocess | None = None, eval_samples: int | None = None,
                 measure_latency: bool = True, strict_data: bool = False,
                 input_range: tuple[float, float] | None = None,
                 allow_different_model: bool = False,
                 allow_different_target: bool = False) -> VerifyOutcome:
    """Measure ``model`` (.tflite) on ``target``'s runtime over ``eval_data`` and, with a
    baseline, check it: top-1 may drop ``max_drop`` points (default 0), size and arena may
    grow ``max_growth`` percent (default 0), host latency ``max_latency_growth`` percent (only
    checked when given). The baseline must be of the same model (the same file, or a new build
    with the same inputs and outputs) and target unless ``allow_different_model`` /
    ``allow_different_target``; checks that cannot be made
    are named in ``skipped``.

    Raises:
        InputError: a bad model, target, data or baseline file, or a baseline of another
            model or target (exit 2).
        TargetConstraintError: an op the target cannot run (exit 3).
    """
    from edgeq.pipeline.place import io_notes, read_placeable

    for option, value in (("--max-drop", max_drop), ("--max-growth", max_growth),
                          ("--max-latency-growth", max_latency_growth)):
        if value is not None and not value >= 0:
            raise UsageError(f"{option} must be a number >= 0")
    if baseline is None and any(v is not None for v in (max_drop, max_growth,
                                                         max_latency_growth)):
        raise UsageError("--max-drop, --max-growth and --max-latency-growth compare with a "
                         "baseline", hint="pass --baseline old_report.json")
    if baseline is None and (allow_different_model or allow_different_target):
        raise UsageError("--allow-different-model and --allow-different-target qualify a "
                         "baseline", hint="pass --baseline old_report.json, or drop them")
    if max_latency_growth is not None and not measure_latency:
        raise UsageError("--max-latency-growth needs the latency measurement",
                         hint="drop --no-latency")
    prof = load_target(target)
    p, data, info = read_placeable(model, prof, "verify")
    base = _read_baseline(Path(baseline)) if baseline is not None else None
    sha = hashlib.sha256(data).hexdigest()
    skipped: list[str] = []
    notes = io_notes(info, prof)  # a model made for another kind of target
    if base is not None:
        try:
            found_skipped, found_notes = _check_same(
                base, Path(baseline), p, sha, info, prof.name, allow_different_model,
                allow_different_target)
        except _WRONG_TYPES as exc:  # a hand-edited report: a field of another type
            raise _wrong_types(baseline, exc) from exc
        skipped += found_skipped
        notes += found_notes
    inp = info.input_tensors[0]
    spec = InputSpec(shape=tuple(inp.shape[1:]), dtype="float32", name=inp.name)
    ds = load_dataset(eval_data, spec, preprocess or Preprocess(), role="evaluation",
                      classes=output_classes(info.output_tensors[0].shape[1:]))
    if eval_samples is not None:
        ds = ds.spread(eval_samples)
    if ds.y is None:
        raise DataError(eval_data, "has no labels (y)", hint="verify measures top-1 accuracy: "
                        "pass an .npz with x and y, or a folder with one sub-folder per class")
    warnings = _data_warnings(ds, inp, preprocess or Preprocess(), input_range)
    if warnings and strict_data:
        raise InputError("data sanity (--strict-data): " + " | ".join(warnings),
                         hint="fix the data, or drop --strict-data to go on with warnings")
    first, got = _evaluate_in_child(data, p, prof, ds.x, measure_latency, info)
    top1 = float(np.mean(first.reshape(ds.n, -1).argmax(axis=1) == ds.y))
    latency = got["latency_ms"]
    arena = got["arena"]["total"] if got["arena"] else None
    runtime = got["runtime"]
    digest = hashlib.sha256(np.ascontiguousarray(ds.x).tobytes()).hexdigest()
    summary = {"path": str(eval_data), "n": ds.n, "x_sha256": digest, "warnings": warnings}
    outcome = VerifyOutcome(str(p), prof.name, runtime, ds.n, top1, latency, arena,
                            len(data), summary, str(baseline) if baseline else None,
                            sha256=sha, io=_io_signature(info), notes=tuple(notes))
    if base is None:
        return outcome
    try:
        checks, more = _compare(outcome, base, 0.0 if max_drop is None else max_drop,
                                0.0 if max_growth is None else max_growth, max_latency_growth)
    except _WRONG_TYPES as exc:
        raise _wrong_types(baseline, exc) from exc
    return VerifyOutcome(**{**outcome.__dict__, "checks": tuple(checks),
                            "skipped": tuple(skipped + more)})


def _io_signature(info) -> dict[str, list]:
    """A model's inputs and outputs per sample (shape without the batch axis, dtype): what a
    new build of the same model keeps and another model does not."""
    return {"inputs": [[list(t.shape[1:]), t.dtype] for t in info.input_tensors],
            "outputs": [[list(t.shape[1:]), t.dtype] for t in info.output_tensors]}


def _baseline_io(base: dict[str, Any]) -> dict[str, list] | None:
    """The baseline model's I/O signature: recorded by verify (model.io), or rebuilt from a
    convert report (model.input.shape, model.outputs, output.input_dtype/output_dtype)."""
    io = (base.get("model") or {}).get("io")
    if isinstance(io, dict):
        return io
    model, out = base.get("model") or {}, base.get("output") or {}
    shape, outputs = (model.get("input") or {}).get("shape"), model.get("outputs")
    if not (isinstance(shape, list) and isinstance(outputs, list) and len(outputs) == 1
            and out.get("input_dtype") and out.get("output_dtype")):
        return None
    return {"inputs": [[shape, out["input_dtype"]]], "outputs": [[outputs[0], out["output_dtype"]]]}


def _check_same(base: dict[str, Any], path: Path, model: Path, sha: str, info, target: str,
                allow_model: bool, allow_target: bool) -> tuple[list[str], list[str]]:
    """A baseline compares like with like: the same model on the same target. The same model
    is the same file (report.json's output.sha256) or a new build of it, which keeps its
    inputs and outputs (a retrained or re-converted model is what a regression gate is for);
    a model with other inputs or outputs, or another target, is a mistake unless the user says
    it is meant. Returns (skipped checks, notes), each named."""
    skipped, notes = [], []
    b_target = base.get("target")
    if not isinstance(b_target, str):
        skipped.append("target not compared: the baseline records none")
    elif b_target != target and not allow_target:
        raise InputError(f"baseline '{path}' was measured for target '{b_target}', but this "
                         f"run verifies '{model}' for target '{target}'",
                         hint=f"verify with --target {b_target}, pass the baseline made for "
                              f"{target}, or --allow-different-target to compare anyway")
    b_sha = (base.get("output") or {}).get("sha256") or (base.get("model") or {}).get("sha256")
    if isinstance(b_sha, str) and b_sha == sha:
        return skipped, notes  # the very file the baseline measured
    b_io, io = _baseline_io(base), _io_signature(info)
    b_path = (base.get("output") or {}).get("path") or "another model"
    if b_io is None:
        skipped.append("model identity not compared: the baseline records neither this "
                       "model's sha256 nor its inputs and outputs")
    elif b_io != io and not allow_model:
        raise InputError(f"baseline '{path}' was made for another model ('{b_path}': inputs "
                         f"{_io_text(b_io['inputs'])}, outputs {_io_text(b_io['outputs'])}), "
                         f"not '{model}' (inputs {_io_text(io['inputs'])}, outputs "
                         f"{_io_text(io['outputs'])})",
                         hint="pass this model's report.json, or --allow-different-model to "
                              "compare them anyway")
    if isinstance(b_sha, str) and b_sha:
        notes.append(f"the model's bytes differ from the baseline's ('{b_path}'): compared as a "
                     "new build of the same model" + (" (same inputs and outputs)"
                                                       if b_io == io else ""))
    return skipped, notes


def _io_text(tensors: list) -> str:
    return ", ".join(f"{shape} {dtype}" for shape, dtype in tensors)


def _data_warnings(ds, inp, preprocess: Preprocess,
                   input_range: tuple[float, float] | None = None) -> list[str]:
    """The evaluation data against what the model's integer input can represent
    (edgeq.data.checks): data far outside it saturates, and top-1 then means little. A stated
    --input-range outranks it."""
    from edgeq.data import checks as data_check

    expectation = None
    if input_range is not None:
        expectation = data_check.expect_range(*input_range)
    elif inp.is_quantized and len(inp.scales) == 1:
        expectation = data_check.expect_quantized_input(inp.scales[0], inp.zero_points[0],
                                                        inp.dtype)
    return data_check.check([("evaluation", ds)], expectation,
                            identity_preprocess=preprocess.is_identity())


def _evaluate_in_child(model: bytes, path: Path, target, x: np.ndarray, latency: bool,
                       info: Any = None) -> tuple[np.ndarray, dict[str, Any]]:
    """The user's model runs in a child process (edgeq.process.isolation): a model that crashes or
    hangs the interpreter is a bad input (exit 2), not a dead CI job without a message."""
    import tempfile

    from edgeq.process.isolation import run_in_child

    with tempfile.TemporaryDirectory(prefix="edgeq-verify-") as tmp:
        x_path, out_path = Path(tmp) / "x.npy", Path(tmp) / "out.npz"
        np.save(x_path, np.ascontiguousarray(x, dtype=np.float32))
        got = run_in_child("evaluate", model, stage=f"{target.runtime.name} (evaluation)",
                           source=path, args={
                               "x_path": str(x_path), "out_path": str(out_path),
                               "runtime": target.runtime.name,
                               "threads": target.runtime.threads,
                               "xnnpack": target.runtime.delegate == "xnnpack",
                               "latency": latency},
                           # the limit follows the model's work on the samples (and the
                           # latency measurement's up to 20 + 5 x 50 invokes)
                           samples=len(x) + (270 if latency else 0), info=info)
        with np.load(out_path, allow_pickle=False) as outs:
            first = outs["arr_0"]
    return first, got


def _read_baseline(path: Path) -> dict[str, Any]:
    from edgeq.formats.input_files import REPORT_MAX, read_file

    raw = read_file(path, "--baseline", REPORT_MAX,
                    hint="pass the report.json of the model you compare against")
    try:
        base = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise InputError(f"--baseline '{path}': not a JSON report ({exc})",
                         hint="pass a report.json written by edgeq convert or edgeq verify") \
            from exc
    if not isinstance(base, dict) or not isinstance(base.get("accuracy"), dict) \
            or not isinstance(base.get("output"), dict):
        raise InputError(f"baseline '{path}': not an edgeq report (no accuracy/output "
                         "sections)",
                         hint="pass a report.json written by edgeq convert or edgeq verify")
    for section, key in BASELINE_FIELDS:  # what _compare does arithmetic on
        check_number(path, base, section, key)
    return base


# What reading a report's fields raises when one holds another JSON type than edgeq wrote
# (a string for an object, a list for a number): the baseline is a bad input, not edgeq's bug.
_WRONG_TYPES = (TypeError, AttributeError, KeyError, IndexError, ValueError)


def _wrong_types(path: str | Path, exc: Exception) -> InputError:
    return InputError(f"--baseline '{path}': a field holds another type than edgeq writes "
                      f"({type(exc).__name__}: {str(exc)[:120]})",
                      hint="pass a report.json written by edgeq, unedited")


# The baseline's fields that are compared: each an object's number, or absent/null.
BASELINE_FIELDS = (("accuracy", "quantized"), ("output", "bytes"), ("memory", "arena_bytes"),
                   ("latency_ms", "median"))


def check_number(path: str | Path, base: dict[str, Any], section: str, key: str) -> None:
    """`base[section][key]` is a finite number, or missing: a report edited by hand (a string,
    a list) is a bad input naming the field (exit 2), not a TypeError in the comparison."""
    import math

    part = base.get(section)
    if part is None:
        return
    if not isinstance(part, dict):
        raise InputError(f"--baseline '{path}': '{section}' is a {type(part).__name__}, not an "
                         "object", hint="pass a report.json written by edgeq, unedited")
    value = part.get(key)
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                              or not math.isfinite(value)):
        raise InputError(f"--baseline '{path}': '{section}.{key}' is "
                         f"{json.dumps(value)[:40]}, not a number",
                         hint="pass a report.json written by edgeq, unedited")


def _compare(now: VerifyOutcome, base: dict[str, Any], max_drop: float, max_growth: float,
             max_latency_growth: float | None) -> tuple[list[Check], list[str]]:
    """The checks against the baseline, and the checks that could not be made, named."""
    checks, skipped = [], []
    b_runtime = base["accuracy"].get("runtime")
    b_acc = base["accuracy"].get("quantized")
    if b_acc is None or now.accuracy is None:
        checks.append(Check("accuracy", b_acc, now.accuracy, f"drop <= {max_drop:.2f} pp",
                            False, "the baseline has no accuracy to compare with (it was "
                            "measured without labels)"))
    else:
        drop = 100.0 * (b_acc - now.accuracy)
        ok = drop <= max_drop + 1e-9
        checks.append(Check("accuracy", b_acc, now.accuracy, f"drop <= {max_drop:.2f} pp", ok,
                            f"top-1 on {now.runtime} {100 * now.accuracy:.2f}% vs baseline "
                            f"{100 * b_acc:.2f}% (drop {drop:+.2f} pp, allowed "
                            f"{max_drop:.2f})"))
    memory = base.get("memory") or {}
    latency = base.get("latency_ms") or {}
    limits = [("model_bytes", base["output"].get("bytes"), now.model_bytes, max_growth),
              ("arena_bytes", memory.get("arena_bytes"), now.arena_bytes, max_growth)]
    if max_latency_growth is not None:
        limits.append(("latency_ms", latency.get("median"), now.latency_ms, max_latency_growth))
        if latency.get("median") is None:
            checks.append(Check("latency_ms", None, now.latency_ms,
                                f"growth <= {max_latency_growth:g}%", False,
                                "the baseline has no host latency to compare with (it was "
                                "written with --no-latency)"))
    if max_latency_growth is None:
        skipped.append("latency not gated: host timings vary between runs; "
                       "--max-latency-growth PCT gates it")
    for metric, b, c, allowed in limits:
        if b is None or c is None:  # not measured on both sides (no arena off TFLM)
            if metric != "latency_ms":  # a gated latency without figures fails above
                side = ("neither run has one" if b is None and c is None else
                        "the baseline has none" if b is None else "this run has none")
                why = f" ({now.runtime} has no tensor arena)" if c is None else ""
                skipped.append(f"{metric.replace('_bytes', '')} not compared: {side}{why}")
            continue
        if metric in ("arena_bytes", "latency_ms") and b_runtime and b_runtime != now.runtime:
            skipped.append(f"{metric} not compared: the baseline ran on {b_runtime}, this run "
                           f"on {now.runtime}")
            continue
        growth = 100.0 * (c - b) / b if b else 0.0
        ok = growth <= allowed + 1e-9
        checks.append(Check(metric, b, c, f"growth <= {allowed:g}%", ok,
                            f"{metric} {c:g} vs baseline {b:g} ({growth:+.1f}%, allowed "
                            f"{allowed:g}%)"))
    return checks, skipped
