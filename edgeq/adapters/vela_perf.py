"""Vela's per-layer performance estimate, per op of the input model.

Vela 5.x (Regor) writes it with ``--verbose-performance``: ``<stem>_per-layer.csv`` in its
output directory, one row per NPU operation after lowering (a CONV_2D and its fused RELU are
two rows, an int8 SOFTMAX about thirty), with the columns Vela also prints: "Op Cycles",
"NPU" (cycles), "SRAM AC" / "DRAM AC" / "OnFlash AC" / "OffFlash AC" (memory access cycles per
memory area), "MAC Count" and "Util% (MAC)". Arm's MLIA reads the same file for its per-layer
table. Which op of the input model a row belongs to is not in the CSV: it is in Vela's debug
database (``--enable-debug-db``, ``<stem>_debug.xml``), whose ``perf`` table holds the same rows
in the same order with a ``source_id``, and whose ``source`` table maps that id to
``ext_key``, the op's index in the input model. The ``perf_debug`` table adds bytes read and
written per memory area.

Per op, edgeq sums Vela's rows (so the totals stay Vela's: the op cycles of all rows add up to
Vela's "Total cycles", the NPU cycles to its "NPU cycles", the MACs to its "Neural network
macs"). How an op is bound follows Vela's own cost model (PERFORMANCE.md, "Cycles": a layer
costs the most expensive of its NPU work and its memory transfers, and only that one counts):
a row's op cycles are max(NPU cycles, each area's access cycles), so an op whose largest access
cycles exceed its NPU cycles is memory-bound on that area. MLIA flags the same layers
(mlia.target.ethos_u.data_analysis.analyze_memory_pressure: access/NPU cycles > 1). MAC
utilisation is Vela's: MACs / (op cycles x the accelerator's MACs per cycle)
(ethosu/vela/stats_writer.py, "Util% (MAC)").
"""

from __future__ import annotations

import csv
import io
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Vela's column for each memory area -> edgeq's key.
AREAS = {"SRAM AC": "sram", "DRAM AC": "dram", "OnFlash AC": "onchip_flash",
         "OffFlash AC": "offchip_flash"}
_DEBUG_AREAS = {"Sram": "sram", "Dram": "dram", "OnChipFlash": "onchip_flash",
                "OffChipFlash": "offchip_flash"}
# perf_debug columns: <Area><Usage>_<read|write>, bytes per inference.
_TRAFFIC = re.compile(r"^(Sram|Dram|OnChipFlash|OffChipFlash)(Lut|FeatureMap|Weights|Scales)_"
                      r"(read|write)$")
_REQUIRED = ("Original Operator", "NNG Operator", "Target", "Op Cycles", "NPU", "MAC Count",
             "Util% (MAC)", "Name", *AREAS)


@dataclass(frozen=True)
class VelaRow:
    """One row of Vela's per-layer table, as Vela wrote it."""

    source_index: int | None  # the input model's op, from the debug database
    original: str  # "Original Operator", e.g. Conv2D
    operator: str  # "NNG Operator": what the NPU runs, e.g. Relu (fused), LUT, Passthrough
    target: str  # NPU or CPU
    op_cycles: int
    npu_cycles: int
    access_cycles: dict[str, int]  # edgeq area key -> cycles
    macs: int
    util_percent: float  # Vela's "Util% (MAC)"
    name: str
    traffic: dict[str, dict[str, int]] = field(default_factory=dict)  # area -> read/write bytes


@dataclass(frozen=True)
class LayerPerf:
    """What one op of the input model costs on the NPU: the sum of its Vela rows."""

    index: int
    rows: int  # NPU operations Vela made of it (0: folded away, e.g. a RESHAPE)
    cycles: int  # Vela's "Op Cycles": the op's time, memory waits included
    npu_cycles: int  # Vela's "NPU": compute cycles
    macs: int
    access_cycles: dict[str, int]
    traffic: dict[str, dict[str, int]]  # bytes per area: read, write, weights_read
    macs_per_cycle: int
    tensor: str = ""  # the op's first output tensor: it names the layer the op came from

    @property
    def mac_utilisation(self) -> float | None:
        """MACs done / MACs the array could do in the op's cycles (None: no cycles)."""
        if self.cycles <= 0:
            return None
        return self.macs / (self.cycles * self.macs_per_cycle)

    @property
    def bound(self) -> str:
        """"compute", "memory:<area>" (Vela's cost is that area's access cycles) or "none"."""
        if self.cycles <= 0:
            return "none"
        area, worst = max(self.access_cycles.items(), key=lambda kv: (kv[1], kv[0]))
        return f"memory:{area}" if worst > self.npu_cycles else "compute"

    def to_dict(self, total_cycles: int | None) -> dict[str, Any]:
        util = self.mac_utilisation
        return {
            "npu_cycles": self.npu_cycles,
            "cycles": self.cycles,
            "cycles_share": (self.cycles / total_cycles) if total_cycles else None,
            "macs": self.macs,
            "mac_utilisation": util,
            "bound": self.bound,
            "memory_access_cycles": dict(self.access_cycles),
            "memory_bytes": {a: dict(rw) for a, rw in self.traffic.items()},
            "npu_operations": self.rows,
            "tensor": self.tensor,
        }


def read_per_layer(out_dir: Path, stem: str) -> tuple[VelaRow, ...] | None:
    """Vela's per-layer rows from its output directory, or None when it wrote none (the
    legacy core, or a Vela without --verbose-performance's CSV).

    Raises:
        ValueError: the files are there but do not read as Vela 5.x writes them.
    """
    csv_path = out_dir / f"{stem}_per-layer.csv"
    xml_path = out_dir / f"{stem}_debug.xml"
    if not csv_path.is_file():
        return None
    rows = parse_per_layer_csv(csv_path.read_text(encoding="utf-8", errors="replace"))
    if not xml_path.is_file():
        return rows
    return attach_sources(rows, parse_debug_db(xml_path.read_bytes()))


def read_rows(out_dir: Path, stem: str) -> tuple[tuple[VelaRow, ...] | None, tuple[str, ...]]:
    """read_per_layer, with a note instead of an error when there is nothing to read."""
    try:
        rows = read_per_layer(out_dir, stem)
    except (ValueError, KeyError, SyntaxError) as exc:  # SyntaxError: ElementTree's ParseError
        return None, (f"no per-layer figures: Vela's per-layer output did not read ({exc})",)
    if rows is None:
        return None, ("no per-layer figures: Vela wrote no per-layer table",)
    return rows, ()


def parse_per_layer_csv(text: str) -> tuple[VelaRow, ...]:
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if header is None or any(col not in header for col in _REQUIRED):
        missing = [c for c in _REQUIRED if header is None or c not in header]
        raise ValueError(f"Vela's per-layer CSV lacks the columns {missing}")
    col = {name: i for i, name in enumerate(header)}
    rows = []
    for raw in reader:
        if not raw or raw == header:
            continue
        # The name (last column) is a tensor name that may itself hold commas.
        cells = raw[:len(header) - 1] + [",".join(raw[len(header) - 1:])]
        rows.append(VelaRow(
            source_index=None,
            original=cells[col["Original Operator"]],
            operator=cells[col["NNG Operator"]],
            target=cells[col["Target"]],
            op_cycles=int(cells[col["Op Cycles"]]),
            npu_cycles=int(cells[col["NPU"]]),
            access_cycles={key: int(cells[col[name]]) for name, key in AREAS.items()},
            macs=int(cells[col["MAC Count"]]),
            util_percent=float(cells[col["Util% (MAC)"]]),
            name=cells[col["Name"]],
        ))
    return tuple(rows)


def parse_debug_db(data: bytes) -> dict[str, Any]:
    """The tables of Vela's debug database edgeq reads: ``perf`` and ``source`` as rows of
    column -> text, and ``perf_debug`` as row id -> bytes per area (a large model's database
    is tens of MB, so only the traffic columns of that table are kept)."""
    root = ET.fromstring(data)  # Vela's own output in edgeq's temporary directory
    tables: dict[str, Any] = {}
    for table in root.iter("table"):
        name = table.get("name", "")
        if name not in ("perf", "source", "perf_debug"):
            continue
        reader = csv.reader(io.StringIO((table.text or "").strip()))
        header = next(reader, [])
        if name == "perf_debug":
            tables[name] = _traffic_table(header, reader)
        else:
            tables[name] = [dict(zip(header, r)) for r in reader if r]
    return tables


def _traffic_table(header: list[str], reader: Any) -> dict[str, dict[str, dict[str, int]]]:
    columns = []
    for i, column in enumerate(header):
        match = _TRAFFIC.match(column)
        if match is not None:
            area, usage, way = match.groups()
            columns.append((i, _DEBUG_AREAS[area], way, usage in ("Weights", "Scales")))
    ident = header.index("id") if "id" in header else None
    out = {}
    for row in reader:
        if not row or ident is None:
            continue
        traffic: dict[str, dict[str, int]] = {}
        for i, area, way, constant in columns:
            text = row[i] if i < len(row) else ""
            if text in ("", "0"):  # most cells: skip the conversion
                continue
            value = _int(text)
            if not value:
                continue
            rw = traffic.setdefault(area, {"read": 0, "write": 0, "weights_read": 0})
            rw[way] += value
            if way == "read" and constant:
                rw["weights_read"] += value  # constants: encoded weights, scales and biases
        out[row[ident]] = traffic
    return out


def attach_sources(rows: tuple[VelaRow, ...], db: dict[str, Any]) -> tuple[VelaRow, ...]:
    """Each row with its input op (and its bytes per area), checked row by row against the
    debug database's perf table, which Vela writes the CSV from (stats_writer.py,
    postprocess_regor_performance_database)."""
    perf, source = db.get("perf", []), db.get("source", [])
    if len(perf) != len(rows):
        raise ValueError(f"Vela's per-layer CSV has {len(rows)} rows, its debug database "
                         f"{len(perf)}")
    ext_key = {s["id"]: int(s["ext_key"]) for s in source if s.get("ext_key", "").isdigit()}
    traffic = db.get("perf_debug", {})
    out = []
    for row, p in zip(rows, perf):
        if (_int(p.get("op_cycles")), _int(p.get("npu_cycles")), _int(p.get("mac_count"))) != (
                row.op_cycles, row.npu_cycles, row.macs):
            raise ValueError(f"Vela's per-layer row '{row.name}' differs from its debug database")
        out.append(VelaRow(ext_key.get(p.get("source_id", "")), row.original, row.operator,
                           row.target, row.op_cycles, row.npu_cycles, row.access_cycles,
                           row.macs, row.util_percent, row.name, traffic.get(p["id"], {})))
    return tuple(out)


def _int(text: str | None) -> int:
    try:
        return int(float((text or "0").strip('"') or 0))
    except ValueError:
        return 0


def per_op(rows: tuple[VelaRow, ...], names: list[str], macs_per_cycle: int
           ) -> dict[int, LayerPerf]:
    """The NPU rows summed per input op index (``names``: each op's output tensor); ops
    without a row cost nothing on the NPU. Rows Vela tied to no input op (operations it
    generated itself, e.g. when it lowers a large RESIZE_BILINEAR) are left out here and
    counted by ``unattributed``."""
    mine: dict[int, list[VelaRow]] = {}
    for r in rows:
        if r.target == "NPU" and r.source_index is not None:
            mine.setdefault(r.source_index, []).append(r)
    out: dict[int, LayerPerf] = {}
    for i, name in enumerate(names):
        own = mine.get(i, [])
        access = {key: sum(r.access_cycles[key] for r in own) for key in AREAS.values()}
        traffic: dict[str, dict[str, int]] = {}
        for r in own:
            for area, rw in r.traffic.items():
                t = traffic.setdefault(area, {"read": 0, "write": 0, "weights_read": 0})
                for key in t:
                    t[key] += rw.get(key, 0)
        out[i] = LayerPerf(i, len(own), sum(r.op_cycles for r in own),
                           sum(r.npu_cycles for r in own), sum(r.macs for r in own), access,
                           traffic, macs_per_cycle, name)
    return out


def unattributed(rows: tuple[VelaRow, ...], op_count: int) -> dict[str, int]:
    """Vela's NPU rows tied to no op of the input model, summed."""
    left = [r for r in rows if r.target == "NPU"
            and (r.source_index is None or not 0 <= r.source_index < op_count)]
    return {"rows": len(left), "cycles": sum(r.op_cycles for r in left),
            "npu_cycles": sum(r.npu_cycles for r in left), "macs": sum(r.macs for r in left)}


def macs_per_cycle(accelerator: str) -> int:
    """The MAC array of an --accelerator-config: ethos-u55-128 -> 128 (ethos-u65-512 is two
    256-MAC cores, 512 in all, as Vela's "Util% (MAC)" counts them)."""
    return int(accelerator.rsplit("-", 1)[-1])


def placement_by_index(rows: tuple[VelaRow, ...], op_count: int) -> list[str] | None:
    """Where Vela put each input op, by index, from the per-layer table's Target column: "cpu"
    when every row of the op is a CPU pass-through, else "npu" (an op with no row was folded
    into its neighbours on the NPU, e.g. a RESHAPE). None when a row has no input op."""
    if any(r.source_index is None for r in rows):
        return None
    targets: dict[int, set[str]] = {}
    for r in rows:
        targets.setdefault(r.source_index, set()).add(r.target)
    return ["cpu" if targets.get(i) == {"CPU"} else "npu" for i in range(op_count)]
