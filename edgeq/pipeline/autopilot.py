"""`--method auto`: the staged workflow of BACKGROUND.md against an accuracy budget.

    1. PTQ with every calibrator (and cross-layer equalization on per-tensor targets);
    1b. model rewrites (edgeq.pipeline.auto_rewrites): SmoothQuant with alpha searched, then
       activation clipping with searched bounds;
    2. sensitivity: the accuracy each op gains when it alone stays float; on targets with a
       float fallback keep the most sensitive ops float, adding one at a time, until the
       budget is met; on integer-only targets report them and what would help instead;
    3. QAT, when training data is given.

Stops at the first stage that meets the budget; otherwise keeps the most accurate result and
the caller's accuracy gate exits 4. Every attempt is measured on the target's runtime and
listed with accuracy, size and host latency, so the report shows what each stage bought.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable

import numpy as np

from edgeq.data import Dataset
from edgeq.errors import EdgeqError
from edgeq.pipeline import calibrate, verify
from edgeq.pipeline.ptq import PTQOutcome
from edgeq.pipeline.quantize import QuantizeResult
from edgeq.targets import Target
from edgeq.formats.tflite import ModelInfo, read_model

SENSITIVITY_SAMPLES = 300  # evaluation samples per leave-one-float check
MAX_CANDIDATES = 16  # ops measured one by one (the worst by per-tensor SQNR first)
_NOT_LAYERS = ("QUANTIZE", "DEQUANTIZE", "RESHAPE", "SQUEEZE", "EXPAND_DIMS")
# Ops that pass values through (no arithmetic that would shrink a range): a float op's output
# stays float through them up to the next op that computes, or it would be quantized anyway.
_PASS_THROUGH = ("MAX_POOL_2D", "RESHAPE", "SQUEEZE", "EXPAND_DIMS", "CONCATENATION", "PAD",
                 "PADV2", "SLICE", "STRIDED_SLICE", "TRANSPOSE", "SPLIT", "SPLIT_V", "PACK",
                 "UNPACK", "GATHER", "RELU", "RELU6")


@dataclass
class Attempt:
    """One model tried, measured on the target's runtime."""

    stage: str  # ptq | partial-float | qat
    name: str
    result: QuantizeResult
    check: verify.VerifyResult
    details: dict[str, Any] = field(default_factory=dict)

    def row(self, budget: float) -> dict[str, Any]:
        acc = self.check.accuracy
        return {
            "stage": self.stage, "name": self.name, "accuracy": acc.quantized,
            "drop_pp": acc.drop_pp, "agreement": acc.agreement,
            "sqnr_db": self.check.fidelity.sqnr_db, "bytes": len(self.result.model),
            "latency_ms": self.check.latency.median if self.check.latency else None,
            "met_budget": meets(self.check, budget), "chosen": False, **self.details,
        }


@dataclass
class AutopilotOutcome:
    result: QuantizeResult
    section: dict[str, Any]  # report["autopilot"]
    notes: list[str]


def meets(check: verify.VerifyResult, budget: float) -> bool:
    return check.accuracy.drop_pp is not None and check.accuracy.drop_pp <= budget + 1e-9


def run(target: Target, budget: float, ptq: PTQOutcome, loaded, settings, evaluation: Dataset,
        float_outputs: list[np.ndarray], *, calib: Dataset, qat: Callable[[QuantizeResult], tuple] | None,
        measure_latency: bool, timed: Callable, task: Callable) -> AutopilotOutcome:
    """Run the stages after PTQ's search (``ptq``) until one meets ``budget`` points."""

    def measure(result: QuantizeResult, label: str) -> verify.VerifyResult:
        return verify.verify(result.model, target, evaluation.x, evaluation.y, float_outputs,
                             progress=task(f"checking {label}", evaluation.n),
                             measure_latency=measure_latency)

    attempts = [Attempt("ptq", f"PTQ ({ptq.result.calibration})", ptq.result,
                        timed("check PTQ", measure, ptq.result, "PTQ"))]
    notes: list[str] = []
    section: dict[str, Any] = {"budget_pp": budget, "stages": [], "winner": None}
    if not meets(attempts[0].check, budget):
        from edgeq.pipeline import auto_rewrites

        found, rewrite_notes = timed("smooth and clip", auto_rewrites.stages, loaded, target,
                                     settings, calib, budget, measure, meets, Attempt)
        attempts += found
        notes += rewrite_notes
    if not any(meets(a.check, budget) for a in attempts):
        sens = timed("sensitivity", _sensitivity, target, ptq, loaded, settings, evaluation,
                     task)
        section["sensitivity"] = sens["rows"]
        if sens["rows"] and target.quantization.float_fallback != "none":
            found = timed("partial float", _partial_float, target, ptq, settings, sens, budget,
                          measure)
            attempts += found["attempts"]
            section["float_layers"] = found["chosen"]
            section["float_ops"] = found["float_ops"]
            section["naive"] = found["naive"]
        elif sens["rows"]:
            int16 = None
            if target.quantization.int16_activations:
                from edgeq.pipeline.auto_rewrites import int16_route

                int16 = timed("check int16 route", int16_route, loaded, target, calib)
            section["options"] = _integer_only_options(target, sens, qat is not None, int16)
            notes.append("auto: this target runs integer ops only, so no layer can stay float; "
                         "the sensitive layers and what would help are in the report")
    if not any(meets(a.check, budget) for a in attempts):
        if qat is None:
            notes.append("auto: QAT not tried (pass --train-data with labels to let auto "
                         "fine-tune with fake quantization)")
        else:
            try:
                result, qat_section, qat_notes = qat(_best(attempts).result)
            except EdgeqError as exc:  # QAT's own refusals (layers, data): keep what we have
                notes.append(f"auto: QAT not possible for this model ({exc})")
            else:
                attempts.append(Attempt("qat", "QAT", result, timed("check QAT", measure,
                                                                    result, "QAT")))
                section["qat"] = qat_section
                notes += qat_notes
    winner = next((a for a in attempts if meets(a.check, budget)), None) or _best(attempts)
    rows = [a.row(budget) for a in attempts]
    rows[attempts.index(winner)]["chosen"] = True
    section["stages"] = rows
    section["winner"] = {"stage": winner.stage, "name": winner.name,
                         "met_budget": meets(winner.check, budget)}
    verdict = "meets" if meets(winner.check, budget) else "misses"
    notes.append(f"auto: {winner.name} {verdict} the {budget:g}-point budget "
                 f"(drop {winner.check.accuracy.drop_pp:+.2f} pp) after {len(attempts)} "
                 f"attempt(s)")
    return AutopilotOutcome(winner.result, section, notes)


def _best(attempts: list[Attempt]) -> Attempt:
    # Highest top-1; among equals the earliest (simplest) stage.
    return max(attempts, key=lambda a: (a.check.accuracy.quantized or 0.0,
                                        -attempts.index(a)))


def _candidates(ptq: PTQOutcome, calibrated: ModelInfo) -> list[tuple[int, str]]:
    """(op index, output tensor name) of the float model's compute ops, at most MAX_CANDIDATES:
    the worst tensors by per-tensor SQNR and the tensors whose int8 step swallows the most
    values, interleaved (rank by whichever puts a tensor first).

    SQNR alone misses outlier-carrying tensors: a few huge channels dominate both the signal
    and the error, so the tensor's SQNR looks fine while every ordinary channel rounds to a
    level or two. Their mark is the share of values that the min/max int8 step maps to zero
    (|x| < step / 2), read from the calibration histograms."""
    ops = [(op.index, calibrated.tensors[op.outputs[0]].name) for op in calibrated.ops
           if op.op not in _NOT_LAYERS and op.outputs and
           calibrated.tensors[op.outputs[0]].dtype == "float32"]
    worst = {row["tensor"]: k for k, row in enumerate(ptq.diagnostics)}
    sqnr_rank = {name: worst.get(name, len(worst)) for _, name in ops}
    histograms = ptq.stats.histograms if ptq.stats is not None else {}
    collapse = {name: collapsed_share(histograms[name]) for _, name in ops if name in histograms}
    by_collapse = sorted(collapse, key=lambda n: -collapse[n])
    collapse_rank = {name: k for k, name in enumerate(by_collapse)}
    ops.sort(key=lambda item: (min(sqnr_rank[item[1]],
                                   collapse_rank.get(item[1], len(ops))), sqnr_rank[item[1]]))
    return ops[:MAX_CANDIDATES]


def collapsed_share(h) -> float:
    """The share of a tensor's calibration values that its min/max int8 step rounds to zero."""
    if h.count == 0:
        return 0.0
    step = (max(h.max, 0.0) - min(h.min, 0.0)) / 255.0
    if step <= 0:
        return 0.0
    return 1.0 - h.fraction_outside(-step / 2, step / 2)


def island(info: ModelInfo, index: int) -> tuple[int, ...]:
    """The ops that must be float for op ``index``'s output to stay float: the op, the
    pass-through ops after it, and the ops that finally consume its values. Keeping only the op
    float would still quantize its output for the next op (with the same range)."""
    consumers: dict[int, list[int]] = {}
    for op in info.ops:
        for t in op.inputs:
            consumers.setdefault(t, []).append(op.index)
    seen, frontier = {index}, [index]
    while frontier:
        k = frontier.pop()
        if k != index and info.ops[k].op not in _PASS_THROUGH:
            continue  # a computing consumer: float, but its own output may be quantized
        for t in info.ops[k].outputs:
            for c in consumers.get(t, []):
                if c not in seen:
                    seen.add(c)
                    frontier.append(c)
    return tuple(sorted(seen))


def _names(info: ModelInfo, ops: tuple[int, ...]) -> tuple[str, ...]:
    return tuple(info.tensors[info.ops[k].outputs[0]].name for k in ops if info.ops[k].outputs)


def _sensitivity(target: Target, ptq: PTQOutcome, loaded, settings, evaluation: Dataset,
                 task: Callable) -> dict[str, Any]:
    """Leave-one-float: for each candidate op, the model with only that op in float, measured
    on a spread subset of the evaluation data against the fully quantized model."""
    stats = ptq.stats
    if stats is None:
        return {"rows": [], "float": None}
    calibrated = read_model(stats.calibrated)
    subset = evaluation.spread(SENSITIVITY_SAMPLES)
    ref = loaded.predict(subset.x)
    runner = verify.runner_for(ptq.result.model, target)
    base = verify.compare_accuracy(ref[0], verify.run_batched(runner, subset.x, None)[0],
                                   subset.y, runner.runtime)
    layer_scope = loaded.layer_scope()
    from edgeq.edgetpu.placement import keras_layer

    rows = []
    candidates = _candidates(ptq, calibrated)
    step = task("sensitivity (one op in float at a time)", len(candidates))
    for k, (index, name) in enumerate(candidates):
        ops = island(calibrated, index)
        model = calibrate.quantize_with(stats, ptq.result.ranges, settings, target.name,
                                        denylist=_names(calibrated, ops))
        out = verify.run_batched(verify.runner_for(model, target), subset.x, None)
        acc = verify.compare_accuracy(ref[0], out[0], subset.y, "")
        fid = verify.compare_fidelity(ref, out)
        rows.append({
            "op_index": index, "op": calibrated.ops[index].op, "tensor": name,
            "layer": keras_layer(calibrated.ops[index], calibrated, *layer_scope),
            "island": list(ops),
            "gain_pp": round(100.0 * ((acc.quantized or 0.0) - (base.quantized or 0.0)), 4),
            "sqnr_db": fid.sqnr_db,
        })
        step(k + 1, len(candidates))
    rows.sort(key=lambda r: (-r["gain_pp"], -(r["sqnr_db"] if r["sqnr_db"] is not None
                                               else float("inf"))))
    return {"rows": rows, "subset": subset.n, "base_top1": base.quantized,
            "ops_total": len(calibrated.ops), "calibrated": calibrated}


def _partial_float(target: Target, ptq: PTQOutcome, settings, sens: dict, budget: float,
                   measure: Callable) -> dict[str, Any]:
    """Keep the most sensitive ops float, one more at a time, until the budget is met; then
    measure the naive alternative (every op of the top op's type) for comparison."""
    rows = [r for r in sens["rows"] if r["gain_pp"] > 0] or sens["rows"][:1]
    attempts: list[Attempt] = []
    chosen: list[dict] = []
    calibrated = sens["calibrated"]
    ops: tuple[int, ...] = ()
    for r in rows:
        chosen.append(r)
        ops = tuple(sorted({k for c in chosen for k in c["island"]}))
        result = _denylisted(ptq, settings, target, _names(calibrated, ops))
        attempt = Attempt("partial-float", f"PTQ + {len(ops)} float op(s)", result,
                          measure(result, f"{len(ops)} float op(s)"),
                          {"float_ops": len(ops),
                           "float_layers": [c["layer"] or c["tensor"] for c in chosen]})
        attempts.append(attempt)
        if meets(attempt.check, budget):
            break
    naive = _naive(target, ptq, settings, sens, measure, budget)
    return {"attempts": attempts, "chosen": [_layer_row(c) for c in chosen],
            "float_ops": len(ops), "naive": naive}


def _naive(target, ptq, settings, sens, measure, budget) -> dict[str, Any]:
    """Every op of the most sensitive op's type in float: what a person picking "all the
    attention / all the dense layers" would do."""
    top = sens["rows"][0]
    calibrated = sens["calibrated"]
    ops = tuple(sorted({k for op in calibrated.ops if op.op == top["op"]
                        for k in island(calibrated, op.index)}))
    result = _denylisted(ptq, settings, target, _names(calibrated, ops))
    check = measure(result, f"every {top['op']} in float")
    return {"rule": f"every {top['op']} op in float (with the ops that keep their outputs "
                    "float)", "float_ops": len(ops),
            "accuracy": check.accuracy.quantized, "drop_pp": check.accuracy.drop_pp,
            "met_budget": meets(check, budget), "bytes": len(result.model)}


def _denylisted(ptq: PTQOutcome, settings, target: Target, names: tuple[str, ...]
                ) -> QuantizeResult:
    model = calibrate.quantize_with(ptq.stats, ptq.result.ranges, settings, target.name,
                                    denylist=names)
    return replace(ptq.result, model=model, method="ptq+float",
                   calibration=f"{ptq.result.calibration}, {len(names)} op(s) float")


def _layer_row(r: dict) -> dict[str, Any]:
    return {k: r[k] for k in ("op_index", "op", "layer", "tensor", "gain_pp", "island")}


def _integer_only_options(target: Target, sens: dict, qat_next: bool,
                          int16: str | None = None) -> list[str]:
    top = [r for r in sens["rows"] if r["gain_pp"] > 0][:5] or sens["rows"][:3]
    names = ", ".join(f"{r['layer'] or r['tensor']} ({r['op']}, +{r['gain_pp']:.2f} pp)"
                      for r in top)
    options = [f"most sensitive ops: {names}"]
    if int16 is not None:  # recommended only once a 16x8 model ran on the target's runtime
        options.append(int16)
    options.append("clip the activations that feed them (e.g. GELU -> ReLU6, or a clipped "
                   "activation before the layer) and retrain briefly")
    options.append("QAT: tried next with --train-data" if qat_next else
                   "QAT: pass --train-data so auto fine-tunes with fake quantization")
    if target.compiler is not None and target.compiler.name == "edgetpu_compiler":
        options.append(_coral_split_cost(sens, top))
    return options


def _coral_split_cost(sens: dict, top: list[dict]) -> str:
    r = top[0]
    after = sens["ops_total"] - r["op_index"]
    return (f"on the Edge TPU a float {r['op']} (op {r['op_index']} of {sens['ops_total']}) "
            f"would run on the CPU and split the graph there: it and the {after - 1} op(s) "
            "after it would leave the TPU (the compiler maps one subgraph), so this float "
            "fallback would cost that part of the model's TPU speed")


def summary_rows(section: dict[str, Any]) -> list[dict[str, Any]]:
    """The stages table without the per-stage details, for text renderings."""
    return [{k: row[k] for k in ("stage", "name", "accuracy", "drop_pp", "bytes", "latency_ms",
                                 "met_budget", "chosen")} for row in section.get("stages", [])]

