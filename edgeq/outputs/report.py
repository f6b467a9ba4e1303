"""The report: one value built by the pipeline, rendered as report.json (machines), report.md
and report.html (people). Keys named in ARCHITECTURE.md are a contract: add, never rename."""

from __future__ import annotations

import importlib.metadata
import json
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from typing import Any

from edgeq import __version__
from edgeq.outputs.text import markdown as _md
from edgeq.outputs.vela_report import markdown as ethos_u_markdown

SCHEMA_VERSION = 1
# A held-out top-1 drop (float -> quantized, points) this large with a data warning standing:
# the summary names the warning as the likely cause (a badly scaled calibration set costs tens
# of points; a sound int8 conversion costs about one).
LARGE_DROP_PP = 5.0

# What may differ between two runs on the same inputs (determinism contract): wall-clock figures
# only. Paths are inputs (the same --out gives the same output.path). Everything else in
# report.json, and report.md outside its "Stages" table and latency row, is identical.
VOLATILE = {
    "stages": "seconds of each stage",
    "latency_ms": "host latency",
    "statistics": "seconds, converter_calibrate_only_seconds, ratio (histogram pass cost)",
}
_VOLATILE_STATISTICS = ("seconds", "converter_calibrate_only_seconds", "ratio")


def stable_view(report: dict[str, Any]) -> dict[str, Any]:
    """report.json without its volatile figures (VOLATILE), for comparing two runs."""
    out = json.loads(json.dumps(report))
    out["stages"] = [{k: v for k, v in s.items() if k != "seconds"} for s in out.get("stages", [])]
    out.pop("latency_ms", None)
    for key in _VOLATILE_STATISTICS:
        (out.get("statistics") or {}).pop(key, None)
    return out

_PACKAGES = {
    "tensorflow": "tensorflow",
    "tf_keras": "tf-keras",
    "keras": "keras",
    "tfmot": "tensorflow-model-optimization",
    "ai_edge_litert": "ai-edge-litert",
    "tflite_micro": "tflite-micro",
    "vela": "ethos-u-vela",
    "numpy": "numpy",
}


def tool_versions() -> dict[str, str]:
    """Versions of every tool edgeq may use, read from package metadata (no imports)."""
    out = {}
    for key, dist in _PACKAGES.items():
        try:
            out[key] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[key] = "not installed"
    out["edgetpu_compiler"] = _edgetpu_compiler_version()
    return out


def _edgetpu_compiler_version() -> str:
    exe = shutil.which("edgetpu_compiler")
    if exe is None:
        return "not installed"
    try:
        run = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return "installed (version unknown)"
    return (run.stdout.strip().splitlines() or ["installed (version unknown)"])[-1]


@dataclass
class Report:
    target: str
    method: str
    calibration: str
    model: dict[str, Any]  # path, format, loader, input shape/dtype
    output: dict[str, Any]  # path, bytes, sha256
    ops: list[dict[str, Any]]
    accuracy: dict[str, Any]
    fidelity: dict[str, Any]
    latency_ms: dict[str, Any] | None
    memory: dict[str, Any]
    data: dict[str, Any]
    stages: list[dict[str, Any]]
    versions: dict[str, str] = field(default_factory=tool_versions)
    target_profile: dict[str, Any] = field(default_factory=dict)
    gates: dict[str, Any] = field(default_factory=dict)
    runtimes: dict[str, Any] = field(default_factory=dict)  # emulator vs LiteRT, per output
    vela: dict[str, Any] | None = None  # Ethos-U targets: vela's summary figures
    edgetpu: dict[str, Any] | None = None  # Coral: TPU/CPU split, split point, parameter cache
    autopilot: dict[str, Any] | None = None  # --method auto: every stage tried, the winner
    compiler: dict[str, Any] = field(default_factory=dict)  # name, version, notes
    recipe: dict[str, Any] = field(default_factory=dict)  # edgeq.recipes.Recipe as a dict
    calibration_requested: str = ""  # "auto" when the calibration was chosen by edgeq
    calibration_candidates: list[dict[str, Any]] = field(default_factory=list)  # auto
    layers: list[dict[str, Any]] = field(default_factory=list)  # per tensor, worst first
    statistics: dict[str, Any] = field(default_factory=dict)  # histogram pass cost
    qat: dict[str, Any] = field(default_factory=dict)  # --method qat: baseline, training, table
    rewrites: list[dict[str, Any]] = field(default_factory=list)  # --substitute, --clip, int16
    notes: list[str] = field(default_factory=list)
    emulator: dict[str, Any] | None = None  # convert --emulate: the emulated device's section

    def to_dict(self) -> dict[str, Any]:
        body = asdict(self)
        if body["emulator"] is None:  # only reports of convert --emulate carry the key
            del body["emulator"]
        return {"schema_version": SCHEMA_VERSION, "edgeq_version": __version__, **body}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False, allow_nan=False) + "\n"

    def placement_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for op in self.ops:
            counts[op["placement"]] = counts.get(op["placement"], 0) + 1
        return counts

    def summary_rows(self) -> list[tuple[str, str]]:
        """(label, value) pairs shared by the terminal table and report.md."""
        acc, fid, mem = self.accuracy, self.fidelity, self.memory
        how = (f"auto → {self.calibration}" if self.calibration_requested == "auto"
               else self.calibration)
        calib = "weights only, no calibration" if how.startswith("none") else f"{how} calibration"
        if self.qat:
            t = self.qat["training"]
            calib = (f"fine-tuned {t['epochs']} epoch(s), best {t['best_epoch']}; ranges "
                     "learned in training")
        rows = [("target", self.target), ("method", f"{self.method} ({calib})")]
        if self.recipe:
            r = self.recipe
            rows.append(("recipe", f"{r['name']}: {r['weights']} weights"
                         + (f" ({r['granularity']}" + (f" {r['block_size']}" if r['block_size'] else "")
                            + ")" if r['granularity'] != 'none' else "")
                         + f", {r['activations']} activations"))
        for r in self.rewrites:
            before, after = r.get("float_top1_before"), r.get("float_top1_after")
            rows.append(("model rewrite", f"{r['rewrite']} on {len(r['layers'])} layer(s)"
                         + (f"; float {_pct(before)} → {_pct(after)}" if before is not None
                            and after is not None else "")))
        if acc.get("float") is not None:
            rows.append(("top-1 float → quantized", f"{_pct(acc['float'])} → {_pct(acc['quantized'])} "
                         f"(drop {acc['drop_pp']:+.2f} pp, {acc['runtime']}, n={acc['n']})"))
        warned = self.data.get("warnings") or []
        if warned and (acc.get("drop_pp") or 0.0) >= LARGE_DROP_PP:
            rows.append(("likely cause", f"the data warning{'s' if len(warned) > 1 else ''} "
                         f"({len(warned)}, listed below): top-1 dropped "
                         f"{acc['drop_pp']:.2f} pp; fix the data before the quantization"))
        rows.append(("argmax agreement", f"{_pct(acc['agreement'])} (n={acc['n']})"))
        sqnr = "identical" if fid.get("sqnr_db") is None else f"{fid['sqnr_db']:.1f} dB"
        rows.append(("output SQNR / cosine", f"{sqnr} / {fid['cosine']:.4f}"))
        if self.latency_ms:
            lat = self.latency_ms
            rows.append(("latency (host)", f"{_ms(lat['median'])} median, LiteRT+XNNPACK, "
                         f"{lat['threads']} thread(s), {lat['runs']} runs"))
        rows.append(("flash (model)", _budget(mem["flash_bytes"], mem.get("budget_flash_bytes"))
                     + f"; weights {self.output.get('weight_bytes', 0) / 1024:.1f} KiB"))
        if mem.get("arena_bytes") is not None:
            rows.append(("RAM (TFLM arena)", _budget(mem["arena_bytes"], mem.get("budget_ram_bytes"))
                         + f"; head {mem['arena_head_bytes']} B, tail {mem['arena_tail_bytes']} B; "
                         f"declare {mem['recommended_arena_bytes']} B"))
        from edgeq.outputs.report_mcu import arena_plan_rows

        rows += arena_plan_rows(mem)
        for d in self.runtimes.get("tflm_vs_litert", []):
            rows.append((f"TFLM vs LiteRT (output {d['output']})",
                         f"max |Δ| {d['max_abs_diff']:.4g}, {100 * d['mismatched_fraction']:.2f}% of "
                         f"values differ, argmax agree {_pct(d['argmax_agreement'])}"))
        if self.vela:
            v = self.vela
            rows.append(("vela (Ethos-U)", f"{v['model_ops_on_npu']} ops on NPU, {v['model_ops_on_cpu']}"
                         f" on CPU; SRAM {v['sram_bytes'] / 1024:.1f} KiB, off-chip flash "
                         f"{v['offchip_flash_bytes'] / 1024:.1f} KiB; {v['macs']} MACs; "
                         f"{v['cycles']} cycles ≈ {v['inference_ms']} ms (estimate)"))
        if self.edgetpu:
            rows += edgetpu_rows(self.edgetpu)
        if self.autopilot and self.autopilot.get("winner"):
            a, w = self.autopilot, self.autopilot["winner"]
            rows.append(("auto (budget)", f"{w['name']} {'meets' if w['met_budget'] else 'misses'}"
                         f" the {a['budget_pp']:g}-point budget; {len(a['stages'])} stage "
                         "attempt(s), table below"))
        counts = ", ".join(f"{n} on {p}" for p, n in sorted(self.placement_counts().items()))
        rows.append(("ops", f"{len(self.ops)} ({counts})"))
        rows.append(("output", f"{self.output['path']} ({self.output['bytes']} B)"))
        return rows

    def to_markdown(self) -> str:
        """report.md. Every value is escaped (edgeq.outputs.text.markdown): paths, layer and
        tensor names, op codes and the messages that quote them are data, not Markdown, so a
        name can neither forge a table row nor carry HTML."""
        lines = [f"# edgeq report: {_md(self.model['path'])} → {_md(self.target)}", ""]
        lines += ["| | |", "|---|---|"] + [f"| {_md(k)} | {_md(v)} |"
                                           for k, v in self.summary_rows()]
        if self.data.get("warnings"):
            lines += ["", "## Data warnings", ""] + [f"- {_md(w)}" for w in self.data["warnings"]]
        if self.notes:
            lines += ["", "## Notes", ""] + [f"- {_md(n)}" for n in self.notes]
        if self.rewrites:
            lines += rewrites_markdown(self.rewrites)
        if self.autopilot:
            lines += autopilot_markdown(self.autopilot)
        if self.calibration_candidates:
            lines += ["", "## Calibration methods tried", "",
                      "| method | top-1 | agreement | SQNR dB | chosen |", "|---|---|---|---|---|"]
            for c in self.calibration_candidates:
                a, f = c["accuracy"], c["fidelity"]
                sq = "identical" if f["sqnr_db"] is None else f"{f['sqnr_db']:.1f}"
                label = c["calibration"] + (" + equalize" if c.get("equalized") else "")
                lines.append(f"| {_md(label)} | {_pct(a['quantized'])} | "
                             f"{_pct(a['agreement'])} | {sq} | {'yes' if c['chosen'] else ''} |")
        if self.qat:
            lines += self._qat_markdown()
        if self.layers:
            lines += ["", "## Per-tensor diagnostics (worst first)", "",
                      "| tensor | range | clipped | SQNR dB |", "|---|---|---|---|"]
            for r in self.layers:
                sq = "identical" if r["sqnr_db"] is None else f"{r['sqnr_db']:.1f}"
                lines.append(f"| {_md(tensor_label(r))} | "
                             f"[{r['lo']:.4g}, {r['hi']:.4g}] | "
                             f"{100 * r['clipped_fraction']:.3f}% | {sq} |")
        lines += ethos_u_markdown(self.vela, self.ops)  # edgeq.outputs.vela_report
        lines += ["", "## Ops", "", "| # | op | layer | runs on | reason | fix |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {o['index']} | {_md(o['op'])} | {_md(o.get('layer') or '')} | "
                  f"{_md(o['placement'])} | {_md(o['reason'])} | {_md(o.get('fix') or '')} |"
                  for o in self.ops]
        if self.emulator:
            from edgeq.outputs.report_mcu import emulator_markdown

            lines += emulator_markdown(self.emulator, self.ops)
        lines += ["", "## Stages", "", "| stage | seconds |", "|---|---|"]
        lines += [f"| {_md(s['name'])} | {s['seconds']:.2f} |" for s in self.stages]
        lines += ["", "## Versions", ""] + [f"- {_md(k)}: {_md(v)}"
                                            for k, v in self.versions.items()]
        return "\n".join(lines) + "\n"

    def _qat_markdown(self) -> list[str]:
        q = self.qat
        t = q["training"]
        lines = ["", "## Float / PTQ / QAT", "",
                 f"Same evaluation data, on {self.accuracy['runtime']}; seconds are wall time "
                 "of the quantization step (QAT: bridge + training + conversion).", "",
                 "| model | top-1 | drop pp | agreement | SQNR dB | seconds |",
                 "|---|---|---|---|---|---|"]
        for r in q.get("side_by_side", []):
            sq = "—" if r["sqnr_db"] is None else f"{r['sqnr_db']:.1f}"
            drop = "—" if r["drop_pp"] is None else f"{r['drop_pp']:+.2f}"
            sec = "—" if r["seconds"] is None else f"{r['seconds']:.1f}"
            lines.append(f"| {_md(r['model'])} | {_pct(r['top1'])} | {drop} | "
                         f"{_pct(r['agreement'])} | {sq} | {sec} |")
        lines += ["", f"Training: {t['epochs']} epoch(s), {t['optimizer']} at "
                  f"{t['learning_rate']:.3g} ({t['schedule']}; base {t['base_learning_rate']:.3g}),"
                  f" batch {t['batch_size']}, seed {t['seed']}, {t['train_samples']} samples, "
                  f"validation {t['validation_samples']} ({t['validation']}), strategy "
                  f"{t['strategy']} ({t['replicas']} replica(s))"
                  + (f", float layers: {_md(', '.join(t['skipped_layers']))}"
                     if t["skipped_layers"] else "") + ".", "",
                  "| epoch | loss | accuracy | val loss | val accuracy | lr | kept |",
                  "|---|---|---|---|---|---|---|"]
        for h in t["history"]:
            lines.append(f"| {h['epoch']} | {h['loss']:.4f} | {_pct(h['accuracy'])} | "
                         f"{h['val_loss']:.4f} | {_pct(h['val_accuracy'])} | {h['lr']:.3g} | "
                         f"{'yes' if h['best'] else ''} |")
        return lines


def rewrites_markdown(rows: list[dict[str, Any]]) -> list[str]:
    """The model rewrites (edgeq.transforms): what changed and the float top-1 around them."""
    lines = ["", "## Model rewrites", "",
             "| rewrite | layers | float top-1 before → after | max output change |",
             "|---|---|---|---|"]
    for r in rows:
        before, after = r.get("float_top1_before"), r.get("float_top1_after")
        acc = (f"{_pct(before)} → {_pct(after)}" if before is not None and after is not None
               else "n/a (no labels)")
        layers = ", ".join(r["layers"]) or "none"
        if r.get("clipped"):
            layers = ", ".join(f"{c['layer']} ≤ {c['hi']:.4g} (max {c['max_seen']:.4g})"
                               for c in r["clipped"])
        lines.append(f"| {_md(r['rewrite'])} | {_md(layers)} | {acc} | "
                     f"{r['max_abs_diff']:.3g} |")
    return lines


def autopilot_markdown(a: dict[str, Any]) -> list[str]:
    """The --method auto sections of report.md: stages side by side, then what was found."""
    budget = f" (budget {a['budget_pp']:g} pp)" if a.get("budget_pp") is not None else ""
    lines = ["", f"## Auto: stages tried{budget}", "",
             "| stage | model | top-1 | drop pp | bytes | host latency | meets budget | chosen |",
             "|---|---|---|---|---|---|---|---|"]
    for r in a.get("stages", []):
        lat = "" if r.get("latency_ms") is None else _ms(r["latency_ms"])
        drop = "" if r.get("drop_pp") is None else f"{r['drop_pp']:+.2f}"
        lines.append(f"| {_md(r.get('stage', ''))} | {_md(r.get('name', ''))} | "
                     f"{_pct(r.get('accuracy'))} | {drop} | {r.get('bytes', '')} | {lat} | "
                     f"{'yes' if r.get('met_budget') else 'no'} | "
                     f"{'✓' if r.get('chosen') else ''} |")
    if a.get("sensitivity"):
        lines += ["", "### Sensitivity (top-1 gained when the op alone stays float)", "",
                  "| op | layer | tensor | gain pp |", "|---|---|---|---|"]
        lines += [f"| {r['op_index']} {_md(r['op'])} | {_md(r['layer'] or '')} | "
                  f"{_md(short_tensor_name(r['tensor']))} | {r['gain_pp']:+.2f} |"
                  for r in a["sensitivity"]]
    if a.get("float_layers"):
        names = ", ".join(r["layer"] or short_tensor_name(r["tensor"]) for r in a["float_layers"])
        lines += ["", f"Kept in float: {len(a['float_layers'])} op(s): {_md(names)}."]
    if a.get("naive"):
        n = a["naive"]
        lines += [f"Naive choice for comparison: {_md(n['rule'])} ({n['float_ops']} op(s)): top-1 "
                  f"{_pct(n['accuracy'])}, drop {n['drop_pp']:+.2f} pp, {n['bytes']} B."]
    if a.get("options"):
        lines += ["", "Integer-only target, so nothing was kept float. Options:", ""]
        lines += [f"- {_md(o)}" for o in a["options"]]
    return lines


def edgetpu_rows(e: dict[str, Any]) -> list[tuple[str, str]]:
    """Summary rows for the Edge TPU section (report and `edgeq analyze`)."""
    how = "edgetpu_compiler" if e["source"] == "edgetpu_compiler" else "predicted by edgeq"
    rows = [("Edge TPU", f"{e['ops_on_tpu']} of {e['ops_total']} ops on the TPU, "
                         f"{e['ops_on_cpu']} on the CPU ({how})")]
    s = e.get("split")
    if s:
        layer = f" (Keras layer '{s['layer']}')" if s.get("layer") else ""
        rows.append(("Edge TPU split", f"op {s['index']} {s['op']}{layer}: {s['reason']}; "
                     f"{s['ops_cut_off']} later op(s) follow it to the CPU"))
        if s.get("fix"):
            rows.append(("Edge TPU fix", s["fix"]))
    m = e["parameter_memory"]
    rows.append(("Edge TPU parameters", f"{m['parameter_bytes'] / 1024:.1f} KiB of the "
                 f"{m['on_chip_cache_bytes'] / 2**20:.0f} MiB on-chip cache; "
                 f"~{m['estimated_streamed_bytes'] / 1024:.1f} KiB streamed from host memory"))
    return rows


def short_tensor_name(name: str) -> str:
    """TFLite fuses op names with ';'; the first part names the layer that made the tensor."""
    return name.split(";")[0]


def tensor_label(row: dict[str, Any]) -> str:
    """A diagnostics row's tensor as the user knows it: the Keras layer and the op's last name
    segment ("conv2d_1 (Relu)") where the layer is known, else the converter's name."""
    short = short_tensor_name(row["tensor"])
    layer = row.get("layer")
    return f"{layer} ({short.rsplit('/', 1)[-1]})" if layer else short


def _ms(ms: float) -> str:
    return f"{ms * 1000:.1f} µs" if ms < 0.1 else f"{ms:.3f} ms"


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100.0 * x:.2f}%"


def _budget(used: int, budget: int | None) -> str:
    if not budget:
        return f"{used / 1024:.1f} KiB (no budget)"
    return f"{used / 1024:.1f} KiB of {budget / 1024:.0f} KiB ({100.0 * used / budget:.0f}%)"
