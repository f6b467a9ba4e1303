"""The Ethos-U sections of the report: Vela's per-layer estimate, top layers first, and the
advice edgeq derives from it (edgeq.adapters.vela_advice), for report.md, report.html and the
terminal. The figures are the per-op keys the Vela stage puts on report["ops"] (npu_cycles,
cycles, macs, mac_utilisation, bound, memory_access_cycles); the totals are in report["vela"].
"""

from __future__ import annotations

from typing import Any

from edgeq.outputs.text import markdown as _md

TOP = 10  # layers in report.md and on the terminal
_AREAS = (("sram", "SRAM"), ("dram", "DRAM"), ("onchip_flash", "on-chip flash"),
          ("offchip_flash", "off-chip flash"))


def npu_layers(ops: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The ops with Vela figures, most cycles first (ties in op order)."""
    return sorted((o for o in ops if "cycles" in o and "npu_cycles" in o),
                  key=lambda o: (-o["cycles"], o["index"]))


def _areas(ops: list[dict[str, Any]]) -> list[tuple[str, str]]:
    used = {a for o in ops for a, n in o.get("memory_access_cycles", {}).items() if n}
    return [(key, label) for key, label in _AREAS if key in used]


def _bound(o: dict[str, Any]) -> str:
    b = o.get("bound", "")
    return dict(_AREAS).get(b.split(":", 1)[1], b) + " (memory)" if b.startswith("memory:") else b


def _layer(o: dict[str, Any]) -> str:
    """The Keras layer when known, else the first part of the output tensor's name (TFLite
    fuses names with ';', the first part is the layer that made it)."""
    return o.get("layer") or (o.get("tensor") or "").split(";")[0]


def _util(o: dict[str, Any]) -> str:
    u = o.get("mac_utilisation")
    return "—" if u is None else f"{100 * u:.1f}%"


def _share(o: dict[str, Any]) -> str:
    s = o.get("cycles_share")
    return "—" if s is None else f"{100 * s:.1f}%"


def total_line(vela: dict[str, Any]) -> str:
    p = vela.get("per_layer") or {}
    return (f"{p.get('cycles', vela.get('cycles'))} cycles in all ({p.get('npu_cycles')} NPU "
            f"cycles, {p.get('macs')} MACs; {p.get('compute_bound_ops', 0)} op(s) "
            f"compute-bound, {p.get('memory_bound_ops', 0)} memory-bound), "
            f"{vela.get('command_streams', 0)} command stream(s); Vela's estimate for "
            f"{vela.get('accelerator')} / {vela.get('system_config')} / "
            f"{vela.get('memory_mode')} at {vela.get('clock_mhz')} MHz")


def markdown(vela: dict[str, Any] | None, ops: list[dict[str, Any]]) -> list[str]:
    """report.md's "Ethos-U per layer" and "Ethos-U advice" sections ([] off Ethos-U)."""
    if not vela:
        return []
    layers = npu_layers(ops)
    lines = ["", "## Ethos-U per layer (Vela's estimate, top layers)", ""]
    if not layers:
        return lines + ["Vela gave no per-layer figures for this model."]
    areas = _areas(layers)
    lines += [total_line(vela) + ".", "",
              "| # | op | layer (output) | cycles | share | NPU cycles | MACs | MAC util | bound | "
              + " | ".join(f"{label} access cycles" for _, label in areas) + " |",
              "|---" * (9 + len(areas)) + "|"]
    for o in layers[:TOP]:
        access = o.get("memory_access_cycles", {})
        lines.append(f"| {o['index']} | {_md(o['op'])} | {_md(_layer(o))} | {o['cycles']} | "
                     f"{_share(o)} | {o['npu_cycles']} | {o['macs']} | {_util(o)} | "
                     f"{_bound(o)} | " + " | ".join(str(access.get(k, 0)) for k, _ in areas)
                     + " |")
    if len(layers) > TOP:
        lines.append(f"\n{len(layers) - TOP} more NPU op(s) in report.json (ops[].cycles).")
    if vela.get("advice"):
        lines += ["", "## Ethos-U advice", ""] + [f"- {_md(a)}" for a in vela["advice"]]
    return lines


def terminal_rows(vela: dict[str, Any] | None, ops: list[dict[str, Any]], top: int = 5
                  ) -> list[tuple[str, str]]:
    """(label, value) lines for `edgeq analyze` and the convert summary."""
    if not vela:
        return []
    layers = npu_layers(ops)
    if not layers:
        return []
    rows = [("Ethos-U cycles", total_line(vela))]
    for o in layers[:top]:
        rows.append((f"  op {o['index']} {o['op']} {_layer(o)}".rstrip(),
                     f"{o['cycles']} cycles ({_share(o)}), MAC util {_util(o)}, {_bound(o)}"))
    rows += [("Ethos-U advice", a) for a in vela.get("advice", [])]
    return rows


CHART_CAPTION = ("Per op of the model, in execution order. An op costs the larger of its NPU "
                 "work and its memory transfers (Vela's cost model); orange is the part spent "
                 "waiting on memory.")


def draw_chart(fig: Any, ops: list[dict[str, Any]]) -> None:
    """Cycles per layer on a matplotlib Figure (report.html): NPU work, and the memory wait
    on top of it, per op in execution order."""
    layers = sorted(npu_layers(ops), key=lambda o: o["index"])
    ax = fig.add_subplot()
    ys = list(range(len(layers)))
    npu = [min(o["npu_cycles"], o["cycles"]) for o in layers]
    ax.barh(ys, npu, height=0.65, color="#1f5f99", label="NPU work")
    ax.barh(ys, [o["cycles"] - n for o, n in zip(layers, npu)], left=npu, height=0.65,
            color="#ef8a17", label="waiting on memory (memory-bound)")
    labels = []
    for o in layers:
        name = _layer(o)
        name = name if len(name) <= 30 else "…" + name[-29:]
        labels.append(f"{o['index']} {o['op']} {name}".rstrip())
    ax.set_yticks(ys, labels)
    ax.invert_yaxis()
    ax.set_xlabel("estimated cycles per inference (Vela)")
    ax.legend(loc="lower right", frameon=False)
    ax.grid(axis="y", visible=False)


def table(ops: list[dict[str, Any]]) -> tuple[tuple[str, ...], list[tuple[Any, ...]], set[int]]:
    """The per-layer table, most cycles first: header, rows, numeric columns."""
    layers = npu_layers(ops)
    areas = _areas(layers)
    header = ("#", "op", "layer (output)", "cycles", "share", "NPU cycles", "MACs", "MAC util",
              "bound", *(f"{label} access cycles" for _, label in areas))
    rows = [(o["index"], o["op"], _layer(o), o["cycles"], _share(o), o["npu_cycles"], o["macs"],
             _util(o), _bound(o), *(o.get("memory_access_cycles", {}).get(k, 0)
                                    for k, _ in areas))
            for o in layers]
    return header, rows, {0, 3, 4, 5, 6, 7, *range(9, 9 + len(areas))}
