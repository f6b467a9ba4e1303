"""The Report of one `convert` run, assembled from the values its stages returned.

The driver (edgeq.commands.convert) only sequences the stages; what goes into report.json, and
under which keys, is decided here beside the Report itself."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from edgeq.data import Dataset
from edgeq.outputs.report import Report

if TYPE_CHECKING:
    from edgeq.commands.convert_options import ConvertOptions
    from edgeq.formats.tflite import ModelInfo
    from edgeq.pipeline.compile import CompileResult
    from edgeq.pipeline.gate import Memory
    from edgeq.pipeline.load import LoadedModel
    from edgeq.pipeline.place import OpPlacement
    from edgeq.pipeline.ptq import PTQOutcome
    from edgeq.pipeline.verify import VerifyResult
    from edgeq.recipes import Recipe
    from edgeq.targets import Target

HISTOGRAM_TENSORS = 6  # the worst tensors whose activation histograms the report keeps


@dataclass(frozen=True)
class RunValues:
    """What the stages of one convert run returned, as the report needs it."""

    opts: ConvertOptions
    target: Target
    recipe: Recipe
    loaded: LoadedModel  # after smoothing/equalization
    model: bytes  # the quantized flatbuffer
    method: str
    calibration: str
    info: ModelInfo  # of `model`
    outcome: PTQOutcome
    placements: list[OpPlacement]
    compiled: CompileResult | None
    verified: VerifyResult
    memory: Memory
    calib: Dataset
    evaluation: Dataset
    train: Dataset | None
    data_warnings: list[str]
    stages: list[dict]
    qat: dict
    autopilot: dict | None
    rewrites: list[dict]  # edgeq.transforms.stage: --substitute, --clip, int16 LayerNorm
    notes: list[str]  # the stages' own notes (autopilot, QAT, equalization search)
    model_path: str  # where the model is written
    arena_plan: Any = None  # ArenaPlanResult (TFLM targets), edgeq.pipeline.arena_stage


def convert_report(run: RunValues) -> Report:
    """The Report of a convert run (its gates are filled in by the gate step)."""
    opts, target, compiled, result = run.opts, run.target, run.compiled, run.verified
    from edgeq.pipeline.gate import ARENA_MARGIN_NOTE

    report = Report(
        target=target.name,
        method=run.method,
        calibration=run.calibration,
        calibration_requested=opts.calibration,
        recipe=run.recipe.on_target(target.quantization.weight_granularity,
                                    target.quantization.dense_granularity).to_dict(),
        model=_model_section(run),
        output={"path": run.model_path, "bytes": len(run.model),
                "weight_bytes": run.info.weight_bytes,
                "sha256": hashlib.sha256(run.model).hexdigest(),
                "input_dtype": run.info.input_tensors[0].dtype,
                "output_dtype": run.info.output_tensors[0].dtype},
        ops=[p.to_dict() for p in run.placements],
        accuracy=asdict(result.accuracy),
        fidelity=asdict(result.fidelity),
        latency_ms=asdict(result.latency) if result.latency else None,
        memory={k: v for k, v in asdict(run.memory).items() if k != "overruns"}
        | ({"arena_plan": run.arena_plan.to_dict()} if run.arena_plan is not None else {}),
        runtimes={"tflm_vs_litert": [asdict(d) for d in result.tflm_vs_litert]}
        if result.tflm_vs_litert else {},
        calibration_candidates=run.outcome.candidates,
        layers=_with_layers(_with_histograms(run.outcome.diagnostics, run.outcome.stats),
                            run.loaded.layer_scope(), run.info),
        statistics=_statistics_summary(run.outcome.stats),
        data={"calibration": _data_summary(run.calib),
              "evaluation": _data_summary(run.evaluation),
              **({"training": _data_summary(run.train)} if run.train is not None else {}),
              "evaluated_on_calibration_data": opts.eval_data is None,
              "warnings": run.data_warnings},
        stages=run.stages,
        vela=compiled.summary if compiled is not None and compiled.compiler == "vela" else None,
        edgetpu=compiled.summary
        if compiled is not None and compiled.compiler == "edgetpu_compiler" else None,
        compiler={"name": compiled.compiler, "version": compiled.version,
                  "notes": list(compiled.notes)} if compiled is not None else {},
        target_profile=target.to_dict(),
        qat=run.qat,
        autopilot=run.autopilot,
        rewrites=run.rewrites,
        notes=_notes(run.loaded.notes, run.calib, run.evaluation, opts.eval_data is None)
        + run.notes,
    )
    if opts.eval_data is None:
        report.notes.append("evaluated on the calibration data; pass --eval-data for held-out "
                            "figures")
    if run.memory.recommended_arena_bytes is not None:
        report.notes.append(f"{ARENA_MARGIN_NOTE}: {run.memory.recommended_arena_bytes} B")
    if compiled is not None:
        report.notes.extend(compiled.notes)
    return report


def _model_section(run: RunValues) -> dict[str, Any]:
    spec = run.loaded.input_spec
    return {"path": str(run.opts.model), "format": run.loaded.format,
            "loader": run.loaded.loader,
            "input": {"name": spec.name, "shape": list(spec.shape), "dtype": spec.dtype},
            "outputs": [list(s) for s in run.loaded.output_shapes]}


def _with_layers(rows: list[dict], scope, info) -> list[dict]:
    """Each diagnostics row names the Keras layer its tensor belongs to, where one does."""
    from edgeq.edgetpu.placement import strip_suffixes, tensor_layer

    strip = bool(scope[0]) or strip_suffixes(t.name for t in info.tensors)
    named = []
    for row in rows:
        layer = tensor_layer(row["tensor"], *scope, strip=strip)
        named.append({**row, "layer": layer} if layer else row)
    return named


def _with_histograms(rows: list[dict], stats, worst: int = HISTOGRAM_TENSORS) -> list[dict]:
    """The diagnostics rows, the worst few carrying a compact histogram of their calibration
    activations (for the HTML report's range plots)."""
    if stats is None:
        return rows
    from edgeq.pipeline.calibrate import compact_histogram

    out = []
    for i, row in enumerate(rows):
        h = stats.histograms.get(row["tensor"]) if i < worst else None
        summary = compact_histogram(h) if h is not None else None
        out.append({**row, "histogram": summary} if summary is not None else row)
    return out


def _statistics_summary(stats) -> dict:
    if stats is None:
        return {}
    return {"tensors": len(stats.histograms), "seconds": round(stats.stats_seconds, 3),
            "converter_calibrate_only_seconds": round(stats.converter_seconds, 3),
            "ratio": round(stats.overhead_ratio, 3)}


def _notes(model_notes: list[str], calib: Dataset, evaluation: Dataset, same: bool) -> list[str]:
    notes = list(model_notes) + [f"calibration data: {n}" for n in calib.notes]
    if not same:
        notes += [f"evaluation data: {n}" for n in evaluation.notes]
    return notes


def _data_summary(ds: Dataset) -> dict:
    return {"path": ds.source, "n": ds.n, "labels": ds.y is not None,
            "stats": {k: (round(v, 6) if isinstance(v, float) else v) for k, v in ds.stats.items()}}
