"""Stage 5, compile: run the target's real compiler when it has one (Vela for Ethos-U).

The compiler's word overrides the profile's predicted placement; where the prediction put an
op elsewhere, the difference is reported. The Edge TPU compiler runs when it is on PATH;
without it a coral conversion says so plainly and keeps edgeq's prediction.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from edgeq.pipeline.place import OpPlacement
from edgeq.targets import Target


@dataclass(frozen=True)
class CompileResult:
    compiler: str
    model: bytes | None  # the compiled model, when the compiler ran
    placements: tuple[OpPlacement, ...]  # the compiler's placement (or the prediction)
    summary: dict[str, Any]  # report keys for this compiler (e.g. report["vela"])
    notes: tuple[str, ...]
    version: str


def compile_for_target(model: bytes, target: Target, predicted: tuple[OpPlacement, ...],
                       name: str) -> CompileResult | None:
    """None when the target has no compiler (TFLite Micro on a Cortex-M, LiteRT on a CPU)."""
    compiler = target.compiler
    if compiler is None:
        return None
    if compiler.name == "vela":
        return _vela(model, target, predicted, name)
    return _edgetpu(model, target, predicted, name)


def _edgetpu(model: bytes, target: Target, predicted: tuple[OpPlacement, ...],
             name: str) -> CompileResult:
    from edgeq.edgetpu import compiler as edgetpu
    from edgeq.edgetpu.placement import summarize
    from edgeq.formats.tflite import read_model

    info = read_model(model)
    c = target.compiler
    if edgetpu.installed() is None:
        note = (f"{c.name} is not installed, so the model was not compiled and op placement "
                f"is edgeq's prediction. To compile: {c.install_hint}")
        return CompileResult(c.name, None, predicted, summarize(predicted, info), (note,),
                             "not installed")
    run = edgetpu.compile_model(model, name, c.min_runtime_version, tuple(c.args))
    if run.model is None:
        summary = summarize(predicted, info) | {"compiler": run.log.summary()}
        note = (f"{c.name} {run.version} failed: {run.log.error or 'no compiled model'}; op "
                "placement is edgeq's prediction")
        return CompileResult(c.name, None, predicted, summary, (note,), run.version)
    verdict = edgetpu.compiled_placement(info, read_model(run.model), run.log)
    placements, notes = [], []
    for guess, (index, where, status) in zip(predicted, verdict):
        if guess.placement == where:  # agreed; on the CPU the log's own status wins
            placements.append(replace(guess, status=status) if where == "cpu" else guess)
            continue
        notes.append(f"op {index} {guess.op}: predicted {guess.placement}, the compiler put it "
                     f"on the {where} ({status})")
        placements.append(replace(guess, placement=where, status=status,
                                  reason=f"{c.name}: {status} (edgeq predicted "
                                         f"{guess.placement}: {guess.reason})"))
    summary = summarize(placements, info, source="edgetpu_compiler") | {
        "compiler": run.log.summary(), "disagreements": notes}
    return CompileResult(c.name, run.model, tuple(placements), summary, tuple(notes),
                         run.version)


def _vela(model: bytes, target: Target, predicted: tuple[OpPlacement, ...],
          name: str) -> CompileResult:
    from edgeq.adapters.vela import run_vela

    c = target.compiler
    result = run_vela(model, accelerator=c.accelerator_config or target.name,
                      system_config=c.system_config, memory_mode=c.memory_mode,
                      config_file=c.config_file, extra_args=tuple(c.args), name=name)
    s = result.summary
    summary = {
        "sram_bytes": s.sram_bytes, "offchip_flash_bytes": s.offchip_flash_bytes,
        "dram_bytes": s.dram_bytes, "npu_ops": s.npu_ops, "cpu_ops": s.cpu_ops, "macs": s.macs,
        "cycles": s.cycles, "npu_cycles": s.npu_cycles, "inference_ms": s.inference_ms,
        "accelerator": s.accelerator, "system_config": s.system_config,
        "memory_mode": s.memory_mode, "clock_mhz": s.clock_mhz,
        "model_ops_on_npu": sum(p.placement == "npu" for p in result.placements),
        "model_ops_on_cpu": sum(p.placement == "cpu" for p in result.placements),
        "compiled_bytes": len(result.model), "version": result.version,
        **per_layer_summary(result),
    }
    placements = tuple(replace(p, perf=result.layers[p.index].to_dict(s.cycles))
                       if p.placement == "npu" and p.index in result.layers else p
                       for p in result.placements)
    notes = list(result.notes)
    left = (summary["per_layer"] or {}).get("unattributed") or {}
    if left.get("rows"):
        notes.append(f"Vela generated {left['rows']} NPU operation(s) of its own "
                     f"({left['cycles']} cycles) that its debug database ties to no op of the "
                     "model: they are in vela.per_layer.unattributed, not in any op's figures")
    for guess, real in zip(predicted, result.placements):
        if guess.placement != real.placement:
            notes.append(f"op {real.index} {real.op}: predicted {guess.placement}, vela put it on "
                         f"{real.placement} ({real.reason})")
    # Vela's per-op table knows the ops, not the Keras layers; the prediction named them from
    # the same model's tensor names (one record per op of the input model, in order).
    named = tuple(replace(real, layer=guess.layer)
                  if real.layer is None and guess.index == real.index else real
                  for guess, real in zip(predicted, placements))
    placements = named + placements[len(named):]
    return CompileResult("vela", result.model, placements, summary, tuple(notes),
                         result.version)


def per_layer_summary(result: Any) -> dict[str, Any]:
    """The per-layer keys of report["vela"]: where the figures come from, the command
    streams, the advice, and the per-op figures' totals (which equal Vela's summary)."""
    if not result.layers:
        return {"per_layer": None, "advice": list(result.advice),
                "command_streams": result.command_streams}
    from edgeq.adapters.vela_perf import unattributed

    layers = result.layers.values()
    return {
        "per_layer": {
            "source": "vela --verbose-performance --enable-debug-db (<model>_per-layer.csv, "
                      "<model>_debug.xml)",
            "cycles": sum(p.cycles for p in layers),
            "npu_cycles": sum(p.npu_cycles for p in layers),
            "macs": sum(p.macs for p in layers),
            "memory_bound_ops": sum(p.bound.startswith("memory") for p in layers),
            "compute_bound_ops": sum(p.bound == "compute" for p in layers),
            # Operations Vela generated that its debug database ties to no op of the model.
            "unattributed": unattributed(result.rows or (), len(result.placements)),
        },
        "advice": list(result.advice),
        "command_streams": result.command_streams,
    }
