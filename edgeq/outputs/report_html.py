"""report.html: the report as one self-contained page for people, with charts.

Everything is inline: the style sheet, and the figures as base64 PNG drawn by matplotlib's Agg
renderer through `matplotlib.figure.Figure` (no pyplot, so no global backend state changes under
a caller). A Content-Security-Policy meta tag forbids loading anything from elsewhere, so the
page opens offline and cannot reach out. The same report gives the same bytes: figures are drawn
under fixed rcParams and saved without a timestamp or software tag. All text from the report is
HTML-escaped; the page has no scripts.

matplotlib is imported here only, and this module only when report.html is asked for, so `edgeq --help`
and `import edgeq` never load it.
"""

from __future__ import annotations

import base64
import html
import io
import math
import re
from typing import TYPE_CHECKING, Any, Iterable, Sequence

from edgeq.outputs import vela_report
from edgeq.outputs.report import Report, tensor_label

if TYPE_CHECKING:
    from matplotlib.figure import Figure


_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
_DPI = 200  # figures are laid out at 100 px per inch and saved at 2x for sharp text
_MAX_SQNR_BARS = 40
_HISTOGRAMS = 6

# Fixed drawing settings: the figures must not depend on the caller's matplotlibrc.
_RC = {
    "font.family": "DejaVu Sans",  # ships with matplotlib
    "font.size": 9,
    "axes.titlesize": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "axes.axisbelow": True,
    "grid.color": "#e4e4e4",
    "svg.hashsalt": "edgeq",
    # Labels carry names from the model file: drawn as text, never parsed as mathtext (an odd
    # number of "$" in a layer name would otherwise fail the whole page).
    "text.parse_math": False,
}
_BLUE, _PALE, _RED, _GREEN, _ORANGE, _GREY = (
    "#1f5f99", "#9fb9d1", "#c62828", "#2e7d32", "#ef8a17", "#9e9e9e")

_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
       margin: 2rem auto; max-width: 1100px; padding: 0 1rem; color: #1d1d1d; line-height: 1.4; }
h1 { font-size: 1.5rem; margin-bottom: .2rem; } h2 { font-size: 1.2rem; margin-top: 2rem;
     border-bottom: 1px solid #ddd; padding-bottom: .2rem; }
.sub { color: #666; margin-top: 0; }
table { border-collapse: collapse; margin: .6rem 0; font-size: .9rem; }
th, td { border: 1px solid #d6d6d6; padding: .25rem .5rem; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
table.summary th { background: #f7f7f7; white-space: nowrap; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.place-tpu td, tr.place-npu td { background: #e6f4ea; }
tr.place-cpu td { background: #fdeed9; }
tr.place-mcu td { background: #e8f0fb; }
tr.chosen td { font-weight: 600; }
img.figure { max-width: 100%; height: auto; display: block; margin: .5rem 0; }
.caption { color: #555; font-size: .85rem; margin-top: 0; }
.swatch { display: inline-block; width: .8rem; height: .8rem; margin: 0 .3rem 0 .6rem;
          vertical-align: middle; border: 1px solid #888; }
code { font-size: .85rem; }
"""


def render(report: Report) -> str:
    """The whole page as text."""
    import matplotlib

    with matplotlib.rc_context(_RC):
        sections = [
            _section("summary", "Summary", _table(report.summary_rows(), cls="summary")),
            *([_section("rewrites", "Model rewrites", _rewrites(report))]
              if report.rewrites else []),
            _section("accuracy", "Accuracy per stage", _accuracy(report)),
            _section("layers", "Per-tensor error", _layers(report)),
            _section("histograms", "Activation histograms and clipping ranges",
                     _histograms(report)),
            _section("ops", "Op placement", _ops(report)),
            *([_section("cycles", "Estimated cycles per layer (emulated device)",
                        _emulator(report))] if report.emulator else []),
            *([_section("ethos-u", "Ethos-U cycles per layer (Vela's estimate)",
                        _ethos_u(report))] if report.vela else []),
            _section("notes", "Notes", _list(report.notes) if report.notes
                     else "<p>No notes.</p>"),
            _section("stages", "Stage timings",
                     _table([(s["name"], f"{s['seconds']:.2f} s") for s in report.stages],
                            header=("stage", "time"))),
            _section("versions", "Versions", _table(list(report.versions.items()),
                                                    header=("tool", "version"))),
        ]
    title = f"edgeq report: {report.model['path']} → {report.target}"
    from edgeq import __version__

    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title>",
        f"<style>{_STYLE}</style>",
        "</head>",
        "<body>",
        f"<h1>{_e(title)}</h1>",
        f'<p class="sub">edgeq {_e(__version__)} · model {_e(report.output["path"])} · '
        f'sha256 <code>{_e(report.output.get("sha256", ""))}</code></p>',
        *sections,
        "</body>",
        "</html>",
        "",
    ])


# --- accuracy ------------------------------------------------------------------------------------


def _rewrites(report: Report) -> str:
    """What --substitute / --clip / the int16 LayerNorm rewrite changed, with float top-1."""
    rows = []
    for r in report.rewrites:
        layers = ", ".join(f"{c['layer']} ≤ {c['hi']:.4g} (max {c['max_seen']:.4g})"
                           for c in r.get("clipped", [])) or ", ".join(r["layers"]) or "none"
        rows.append((r["rewrite"], layers, _pct(r.get("float_top1_before")),
                     _pct(r.get("float_top1_after")), f"{r['max_abs_diff']:.3g}"))
    return _table(rows, header=("rewrite", "layers", "float top-1 before", "after",
                                "max output change"))


def _accuracy(report: Report) -> str:
    """The autopilot's stages when it ran, else the calibration methods tried, else float vs
    quantized."""
    stages = (report.autopilot or {}).get("stages")
    if stages:
        return _autopilot(report, stages)
    if report.calibration_candidates:
        return _candidates(report)
    acc = report.accuracy
    if acc.get("float") is None:
        fig = _bar_chart(["quantized vs float"], [acc["agreement"]], [_BLUE],
                         ylabel="argmax agreement with float (%)")
        return (_img(fig, "argmax agreement of the quantized model with the float model")
                + "<p class=\"caption\">No labels in the evaluation data: the quantized model "
                "is compared with the float model's argmax.</p>")
    fig = _bar_chart(["float", f"quantized ({report.calibration})"],
                     [acc["float"], acc["quantized"]], [_GREY, _BLUE], ylabel="top-1 (%)")
    return (_img(fig, "top-1 accuracy of the float and the quantized model")
            + _caption(f"{acc['runtime']}, n={acc['n']}; drop {acc['drop_pp']:+.2f} pp."))


def _autopilot(report: Report, stages: list[dict[str, Any]]) -> str:
    colours = [_BLUE if s.get("chosen") else _GREEN if s.get("met_budget") else
               _ORANGE if s.get("met_budget") is False else _GREY for s in stages]
    fig = _bar_chart([str(s["name"]) for s in stages], [s.get("accuracy") for s in stages],
                     colours, ylabel="accuracy (%)", reference=report.accuracy.get("float"))
    rows = [(s["name"], _pct(s.get("accuracy")), _num(s.get("drop_pp"), "{:+.2f}"),
             _num(s.get("bytes"), "{:,}"), _num(s.get("latency_ms"), "{:.3f}"),
             _yes_no(s.get("met_budget")), "yes" if s.get("chosen") else "") for s in stages]
    return (_img(fig, "accuracy after each autopilot stage")
            + _key([(_BLUE, "chosen"), (_GREEN, "met the budget"), (_ORANGE, "missed it"),
                    (_GREY, "not measured")])
            + _table(rows, header=("stage", "accuracy", "drop pp", "bytes", "latency ms",
                                   "met budget", "chosen"),
                     row_classes=["chosen" if s.get("chosen") else "" for s in stages]))


def _candidates(report: Report) -> str:
    labelled = report.accuracy.get("float") is not None
    metric = "quantized" if labelled else "agreement"
    cands = report.calibration_candidates
    labels = [c["calibration"] + (" + eq" if c.get("equalized") else "") for c in cands]
    fig = _bar_chart(labels, [c["accuracy"][metric] for c in cands],
                     [_BLUE if c["chosen"] else _PALE for c in cands],
                     ylabel="top-1 (%)" if labelled else "argmax agreement with float (%)",
                     reference=report.accuracy.get("float"))
    rows = [(label, _pct(c["accuracy"]["quantized"]), _pct(c["accuracy"]["agreement"]),
             _sqnr(c["fidelity"]["sqnr_db"]), "yes" if c["chosen"] else "")
            for label, c in zip(labels, cands)]
    return (_img(fig, "accuracy of each calibration method tried")
            + _key([(_BLUE, "chosen"), (_PALE, "tried")])
            + _table(rows, header=("calibration", "top-1", "agreement", "SQNR dB", "chosen"),
                     row_classes=["chosen" if c["chosen"] else "" for c in cands]))


def _bar_chart(labels: Sequence[str], values: Sequence[float | None], colours: Sequence[str],
               *, ylabel: str, reference: float | None = None) -> Figure:
    """Vertical bars of fractions shown as percentages; None is drawn as 'n/a'. The y axis is
    zoomed on the values (accuracies of one model differ by little), which the axis shows."""
    fig = _figure(max(4.5, 1.1 * len(labels) + 2.0), 3.2)
    ax = fig.add_subplot()
    xs = list(range(len(labels)))
    shown = [100.0 * v for v in values if v is not None]
    if reference is not None:
        shown.append(100.0 * reference)
        ax.axhline(100.0 * reference, color="#444444", linestyle="--", linewidth=1,
                   label=f"float {100.0 * reference:.2f}%")
        ax.legend(loc="lower right", frameon=False)
    lo, hi = (min(shown), max(shown)) if shown else (0.0, 100.0)
    span = max(hi - lo, 1.0)
    bottom = max(0.0, lo - 2.0 * span)
    ax.set_ylim(bottom, hi + 0.5 * span)
    heights = [100.0 * v - bottom if v is not None else 0.0 for v in values]
    ax.bar(xs, heights, bottom=bottom, color=list(colours), width=0.6)
    for x, v in zip(xs, values):
        ax.annotate("n/a" if v is None else f"{100.0 * v:.2f}%",
                    (x, bottom if v is None else 100.0 * v), xytext=(0, 3),
                    textcoords="offset points", ha="center", va="bottom")
    crowded = len(labels) > 4
    ax.set_xticks(xs, [_short(label, 22) for label in labels], rotation=20 if crowded else 0,
                  ha="right" if crowded else "center")
    ax.set_ylabel(ylabel)
    ax.grid(axis="x", visible=False)
    return fig


# --- per-tensor error ----------------------------------------------------------------------------


def _layers(report: Report) -> str:
    if not report.layers:
        return ("<p>No per-tensor diagnostics: this recipe quantizes weights only, so there are "
                "no activation statistics.</p>")
    rows = report.layers[:_MAX_SQNR_BARS]
    names = [_short(tensor_label(r), 48, keep="end") for r in rows]
    sqnrs = [r["sqnr_db"] for r in rows]
    top = max([s for s in sqnrs if s is not None], default=1.0)
    fig = _figure(7.5, 0.26 * len(rows) + 1.1)
    ax = fig.add_subplot()
    ys = list(range(len(rows)))
    ax.barh(ys, [top if s is None else s for s in sqnrs], height=0.65,
            color=[_RED if i == 0 else _PALE if s is None else _BLUE
                   for i, s in enumerate(sqnrs)])
    for y, s in zip(ys, sqnrs):
        ax.annotate("identical" if s is None else f"{s:.1f}", (top if s is None else s, y),
                    xytext=(3, 0), textcoords="offset points", va="center")
    ax.set_yticks(ys, names)
    ax.invert_yaxis()
    ax.set_xlim(0, top * 1.12)
    ax.set_xlabel("SQNR of the integer activation vs float (dB, higher is better)")
    ax.grid(axis="y", visible=False)
    more = len(report.layers) - len(rows)
    caption = ("Worst first; the worst tensor is in red. Errors add up through the graph: each "
               "tensor is compared end to end with the float model on the same inputs."
               + (f" {more} better tensor(s) not drawn." if more > 0 else ""))
    table = _table([(tensor_label(r), f"[{r['lo']:.4g}, {r['hi']:.4g}]", r.get("method", ""),
                     f"{100 * r['clipped_fraction']:.3f}%", _sqnr(r["sqnr_db"]))
                    for r in report.layers],
                   header=("tensor", "range", "method", "clipped", "SQNR dB"))
    return _img(fig, "SQNR per tensor, worst first") + _caption(caption) + table


def _histograms(report: Report) -> str:
    rows = [r for r in report.layers if r.get("histogram")][:_HISTOGRAMS]
    if not rows:
        return "<p>No activation histograms in this report (no statistics pass was run).</p>"
    cols = min(3, len(rows))
    fig = _figure(3.4 * cols, 2.6 * math.ceil(len(rows) / cols))
    for i, r in enumerate(rows):
        _histogram(fig.add_subplot(math.ceil(len(rows) / cols), cols, i + 1), r)
    return (_img(fig, "activation histograms of the worst tensors with their clipping ranges")
            + _caption("Calibration activations of the worst tensors (log scale). Dashed lines: "
                       "the chosen range; shaded: values clipped to it."))


def _histogram(ax, row: dict[str, Any]) -> None:
    h = row["histogram"]
    edges, counts = h["edges"], h["counts"]
    lo, hi = row["lo"], row["hi"]
    left, right = min(edges[0], lo), max(edges[-1], hi)
    pad = 0.03 * max(right - left, 1e-12)
    widths = [b - a for a, b in zip(edges, edges[1:])]
    ax.bar(edges[:-1], counts, width=widths, align="edge", color=_BLUE, linewidth=0, log=True)
    ax.set_xlim(left - pad, right + pad)
    # Shade only where calibration values were seen outside the range: those were clipped.
    for a, b in ((h.get("min", lo), lo), (hi, h.get("max", hi))):
        if b > a:
            ax.axvspan(a, b, color=_RED, alpha=0.15, linewidth=0)
    for x in (lo, hi):
        ax.axvline(x, color="#222222", linestyle="--", linewidth=1)
    ax.set_title(f"{_short(tensor_label(row), 40, keep='end')}\n[{lo:.3g}, {hi:.3g}], "
                 f"clipped {100 * row['clipped_fraction']:.3f}%, SQNR {_sqnr(row['sqnr_db'])}"
                 + (" dB" if row["sqnr_db"] is not None else ""))
    ax.grid(axis="x", visible=False)


# --- ops -----------------------------------------------------------------------------------------


def _ops(report: Report) -> str:
    status = any(o.get("status") for o in report.ops)
    header = ("#", "op", "layer", "runs on", "reason", "fix") + (("status",) if status else ())
    rows = [(o["index"], o["op"], o.get("layer") or "", o["placement"], o["reason"],
             o.get("fix") or "") + ((o.get("status") or "",) if status else ())
            for o in report.ops]
    counts = ", ".join(f"{n} on {p}" for p, n in sorted(report.placement_counts().items()))
    classes = ["place-" + re.sub(r"[^a-z0-9-]", "", str(o["placement"]).lower())
               for o in report.ops]
    return (f"<p>{len(report.ops)} ops: {_e(counts)}.</p>"
            + _table(rows, header=header, row_classes=classes, numeric={0}))


def _emulator(report: Report) -> str:
    """The emulated-device section of report.html: a chart of estimated cycles per layer and
    the table behind it."""
    from edgeq.outputs.report_mcu import per_op_rows

    emu, ops = report.emulator, report.ops
    rows = per_op_rows(emu, ops)
    est = emu["estimate"]
    head = _caption(f"{emu['core']} on QEMU {emu['machine']}: {emu['estimated_cycles']:,} "
                    f"estimated cycles per inference = {emu['estimated_ms']:.2f} ms at "
                    f"{emu['clock_hz'] / 1e6:g} MHz ({emu['instructions_per_inference']:,} "
                    f"instructions counted, CPI {est['cycles_per_instruction']}, "
                    f"{'calibrated' if est['calibrated'] else 'uncalibrated'}: an estimate).")
    if not rows:
        return head + "<p>The firmware reported no per-op counts.</p>"
    labels = [f"#{i} {layer or op}" for i, op, layer, *_ in rows]
    cycles = [c for *_, c, _ in rows]
    fig = _figure(7.5, 0.26 * len(rows) + 1.1)
    ax = fig.add_subplot()
    ys = list(range(len(rows)))
    top = max(cycles) or 1
    ax.barh(ys, cycles, height=0.65, color=["#c62828" if c == top else "#1f5f99" for c in cycles])
    for y, (c, sh) in enumerate((c, sh) for *_, c, sh in rows):
        ax.annotate(f"{100 * sh:.1f}%", (c, y), xytext=(3, 0), textcoords="offset points",
                    va="center")
    ax.set_yticks(ys, [_short(label, 44, keep="end") for label in labels])
    ax.invert_yaxis()
    ax.set_xlim(0, top * 1.15)
    ax.set_xlabel("estimated cycles per inference (the most expensive op in red)")
    ax.grid(axis="y", visible=False)
    table = _table([(i, op, layer, f"{n:,}", f"{c:,}", f"{100 * sh:.1f}%")
                    for i, op, layer, n, c, sh in rows],
                   header=("#", "op", "layer", "instructions", "est. cycles", "share"),
                   numeric={0, 3, 4, 5})
    return head + _img(fig, "estimated cycles per layer on the emulated device") + table


# --- Ethos-U per layer (edgeq.outputs.vela_report) ----------------------------------------------


def _ethos_u(report: Report) -> str:
    if not vela_report.npu_layers(report.ops):
        return "<p>Vela gave no per-layer figures for this model.</p>"
    fig = _figure(7.5, 0.24 * len(vela_report.npu_layers(report.ops)) + 1.2)
    vela_report.draw_chart(fig, report.ops)
    header, rows, numeric = vela_report.table(report.ops)
    advice = report.vela.get("advice") if report.vela else None
    return (f"<p>{_e(vela_report.total_line(report.vela or {}))}.</p>"
            + _img(fig, "estimated NPU cycles per layer")
            + _caption(vela_report.CHART_CAPTION) + _table(rows, header=header, numeric=numeric)
            + ("<h3>Advice</h3>" + _list(advice) if advice else ""))


# --- HTML and figure helpers ---------------------------------------------------------------------


def _figure(width: float, height: float) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _img(fig: Figure, alt: str) -> str:
    buf = io.BytesIO()
    # No "Software" tag and no timestamp: the same figure gives the same bytes.
    fig.savefig(buf, format="png", dpi=_DPI, metadata={"Software": None})
    width, height = (round(v * 100) for v in fig.get_size_inches())
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return (f'<img class="figure" src="data:image/png;base64,{data}" alt="{_e(alt)}" '
            f'width="{width}" height="{height}">')


def _section(anchor: str, title: str, body: str) -> str:
    return f'<section id="{anchor}">\n<h2>{_e(title)}</h2>\n{body}\n</section>'


def _table(rows: Iterable[Sequence[Any]], *, header: Sequence[str] | None = None, cls: str = "",
           row_classes: Sequence[str] | None = None, numeric: set[int] | None = None) -> str:
    out = [f'<table class="{cls}">' if cls else "<table>"]
    if header:
        out.append("<tr>" + "".join(f"<th>{_e(h)}</th>" for h in header) + "</tr>")
    for i, row in enumerate(rows):
        rc = row_classes[i] if row_classes and row_classes[i] else ""
        cells = []
        for j, v in enumerate(row):
            if j == 0 and cls == "summary":
                cells.append(f"<th>{_e(v)}</th>")
            else:
                num = ' class="num"' if numeric and j in numeric else ""
                cells.append(f"<td{num}>{_e(v)}</td>")
        out.append((f'<tr class="{rc}">' if rc else "<tr>") + "".join(cells) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def _list(items: Iterable[str]) -> str:
    return "<ul>\n" + "\n".join(f"<li>{_e(i)}</li>" for i in items) + "\n</ul>"


def _key(entries: Iterable[tuple[str, str]]) -> str:
    return ('<p class="caption key">' + "".join(
        f'<span class="swatch" style="background:{c}"></span>{_e(label)} ' for c, label in entries)
        + "</p>")


def _caption(text: str) -> str:
    return f'<p class="caption">{_e(text)}</p>'


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _short(text: str, n: int, keep: str = "start") -> str:
    if len(text) <= n:
        return text
    return text[: n - 1] + "…" if keep == "start" else "…" + text[-(n - 1):]


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100.0 * x:.2f}%"


def _sqnr(x: float | None) -> str:
    return "identical" if x is None else f"{x:.1f}"


def _num(x: Any, fmt: str) -> str:
    return "" if x is None else fmt.format(x)


def _yes_no(x: bool | None) -> str:
    return "" if x is None else "yes" if x else "no"
