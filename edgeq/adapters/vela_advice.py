"""Advice from Vela's per-layer figures, of the kinds Arm's MLIA gives, each only where the
figures support it. Every rule cites where it comes from.

1. Low MAC utilisation from channel counts. On the Ethos-U55 and U65 the MAC array works on a
   micro-block of output elements times 8 input channels per cycle, and on output channels in
   groups of the micro-block depth (Vela's ArchitectureConfig: ifm_ublock depth 8 for every
   U55/U65 configuration, ofm_ublock depth 8, 4 on the ethos-u55-32; its cycle model,
   ethosu/vela/npu_performance.py _estimate_conv_cycles, rounds the depths up to those
   blocks). A CONV_2D with 3 input channels therefore leaves 5 of every 8 lanes idle. The rule
   fires for a compute-bound op (its NPU cycles are its cost, so memory does not explain the
   loss) whose utilisation is below MLIA's "low" threshold (Conv2D < 55 %, DepthwiseConv2D
   < 3 %: mlia.target.ethos_u.data_analysis.analyze_mac_util), that takes at least 1 % of
   the cycles, and that has a channel count that is not a multiple of the block. The Ethos-U85
   model lives in Vela's C++ core, whose block sizes edgeq cannot cite, so the rule is not
   applied there.
2. A CPU op between NPU ops. Vela pulls each run of NPU ops into its own subgraph and command
   stream, invoked by one ethos-u op, and leaves the CPU ops between them
   (ethosu/vela/extract_npu_subgraphs.py): the NPU stops, the CPU runs the op, and the next
   stream starts, with the tensors at the boundary in the arena.
3. Weights that do not fit the SRAM in the memory mode. The memory mode says where constants
   live (Vela's Arm/vela.ini: Shared_Sram and Dedicated_Sram keep them behind AXI1, in flash
   or DRAM; Dedicated_Sram caches them in at most arena_cache_size of SRAM). The rule fires
   when ops are memory-bound on that area and most of what they read there is weights (the
   debug database's Weights/Scales bytes), naming the ops and their share of the cycles.
4. Other memory-bound ops (MLIA's "possibly memory bound": access cycles / NPU cycles > 1,
   mlia.target.ethos_u.data_analysis.analyze_memory_pressure) that take at least 1 % of the
   cycles, with the area and what they read there: the NPU waits on memory, so fewer MACs
   would not make them faster, less traffic would.
"""

from __future__ import annotations

import configparser
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeq.adapters.vela_perf import LayerPerf, VelaRow, macs_per_cycle, per_op
from edgeq.formats.tflite import ModelInfo

_LOW_UTIL = {"CONV_2D": 0.55, "TRANSPOSE_CONV": 0.55, "FULLY_CONNECTED": 0.55,
             "DEPTHWISE_CONV_2D": 0.03}  # MLIA's thresholds; FC and transpose as Conv2D
_MIN_SHARE = 0.01
_IFM_BLOCK = 8  # ifm_ublock depth of every U55/U65 ArchitectureConfig in Vela 5.2
_OFM_BLOCK = {"ethos-u55-32": 4}  # ofm_ublock depth; 8 for the others
_AREA_NAMES = {"sram": "SRAM", "dram": "DRAM", "onchip_flash": "on-chip flash",
               "offchip_flash": "off-chip flash"}
_PORTS = {"Sram": "sram", "Dram": "dram", "OnChipFlash": "onchip_flash",
          "OffChipFlash": "offchip_flash"}


@dataclass(frozen=True)
class MemoryLayout:
    """Where a Vela memory mode puts things, from its config file."""

    memory_mode: str
    const_area: str | None  # edgeq area key of the constants (weights), None if unknown
    arena_cache_bytes: int | None  # Dedicated_Sram: the SRAM cache Vela may use


def memory_layout(config_file: str | None, system_config: str | None,
                  memory_mode: str | None) -> MemoryLayout | None:
    """The memory mode's layout from the Vela .ini ("Vendor/file.ini" is bundled with Vela)."""
    if not (config_file and system_config and memory_mode):
        return None
    path = _ini_path(config_file)
    if path is None:
        return None
    ini = configparser.ConfigParser()
    try:
        ini.read(path)
    except configparser.Error:
        return None
    mode = _section(ini, f"Memory_Mode.{memory_mode}")
    system = _section(ini, f"System_Config.{system_config}")
    if mode is None or system is None:
        return None
    port = {"Axi0": system.get("axi0_port"), "Axi1": system.get("axi1_port")}
    const = port.get(mode.get("const_mem_area", ""))
    cache = mode.get("arena_cache_size")
    return MemoryLayout(memory_mode, _PORTS.get(const or ""),
                        int(float(cache)) if cache else None)


def _ini_path(config_file: str) -> Path | None:
    p = Path(config_file)
    if len(p.parts) == 2 and not p.is_absolute():
        spec = importlib.util.find_spec("ethosu")
        if spec is None or not spec.submodule_search_locations:
            return None
        p = Path(next(iter(spec.submodule_search_locations))) / "config_files" / p
    return p if p.is_file() else None


def _section(ini: configparser.ConfigParser, name: str) -> dict[str, str] | None:
    if name not in ini:
        return None
    values = dict(ini[name])
    parent = values.pop("inherit", None)
    if parent:
        base = _section(ini, parent) or {}
        values = {**base, **values}
    return values


def layers_and_advice(source: ModelInfo, placements: tuple[Any, ...],
                      rows: tuple[VelaRow, ...] | None, total_cycles: int | None,
                      accelerator: str, streams: int, config_file: str | None,
                      system_config: str | None, memory_mode: str | None
                      ) -> tuple[dict[int, LayerPerf], list[str]]:
    """Vela's rows summed per op of ``source``, and the advice on them ({}, [] without rows
    tied to the input ops)."""
    if rows is None or all(r.source_index is None for r in rows if r.target == "NPU"):
        return {}, []
    names = [source.tensors[op.outputs[0]].name if op.outputs and op.outputs[0] >= 0 else ""
             for op in source.ops]
    layers = per_op(rows, names, macs_per_cycle(accelerator))
    layout = memory_layout(config_file, system_config, memory_mode)
    total = total_cycles or sum(p.cycles for p in layers.values())
    return layers, advise(source, placements, layers, total, accelerator, streams, layout)


def advise(info: ModelInfo, placements: tuple[Any, ...], layers: dict[int, LayerPerf],
           total_cycles: int, accelerator: str, streams: int,
           layout: MemoryLayout | None) -> list[str]:
    """Advice lines, most costly first within each kind."""
    return (_low_utilisation(info, placements, layers, total_cycles, accelerator)
            + _cpu_splits(placements, streams)
            + _weights_off_sram(info, layers, total_cycles, layout)
            + _memory_bound(info, layers, total_cycles, layout))


def _channels(info: ModelInfo, op_index: int) -> tuple[int | None, int | None]:
    op = info.ops[op_index]
    def depth(indices: tuple[int, ...]) -> int | None:
        if not indices or indices[0] < 0:
            return None
        shape = info.tensors[indices[0]].shape
        return shape[-1] if shape else None
    return depth(op.inputs), depth(op.outputs)


def _low_utilisation(info: ModelInfo, placements: tuple[Any, ...],
                     layers: dict[int, LayerPerf], total: int, accelerator: str) -> list[str]:
    if not accelerator.startswith(("ethos-u55", "ethos-u65")) or total <= 0:
        return []
    ofm_block = _OFM_BLOCK.get(accelerator, 8)
    found = []
    for p in placements:
        limit = _LOW_UTIL.get(p.op)
        perf = layers.get(p.index)
        if limit is None or perf is None or p.placement != "npu" or perf.bound != "compute":
            continue
        util, share = perf.mac_utilisation, perf.cycles / total
        if util is None or util >= limit or share < _MIN_SHARE:
            continue
        c_in, c_out = _channels(info, p.index)
        odd = []
        if p.op != "DEPTHWISE_CONV_2D" and c_in and c_in % _IFM_BLOCK:
            odd.append(f"{c_in} input channel{'s' * (c_in != 1)} (the NPU reads input "
                       f"channels {_IFM_BLOCK} at a time)")
        if c_out and c_out % ofm_block:
            odd.append(f"{c_out} output channel{'s' * (c_out != 1)} (computed {ofm_block} "
                       "at a time)")
        if not odd:
            continue
        who = f"op {p.index} {p.op}" + (f" (layer '{p.layer}')" if p.layer else "")
        found.append((perf.cycles, f"{who}: MAC utilisation {100 * util:.1f} % while "
                      f"compute-bound, {100 * share:.1f} % of the cycles; it has "
                      f"{' and '.join(odd)}, so part of the {accelerator} MAC array idles: "
                      "channel counts that are multiples of the block use all of it"))
    return [text for _, text in sorted(found, key=lambda f: -f[0])]


def _cpu_splits(placements: tuple[Any, ...], streams: int) -> list[str]:
    """One line for all the CPU runs that sit between NPU ops."""
    where = [p.placement for p in placements]
    runs, i = [], 0
    while i < len(placements):
        j = i
        while j < len(placements) and where[j] == "cpu":
            j += 1
        if j > i and "npu" in where[:i] and "npu" in where[j:]:
            runs.append(placements[i:j])
        i = max(j, i + 1)
    if not runs:
        return []
    names = "; ".join(", ".join(f"op {p.index} {p.op}" for p in run) for run in runs)
    why = sorted({p.reason.removeprefix("not mapped to the NPU: ") for run in runs for p in run})
    return [f"{sum(map(len, runs))} CPU op(s) sit between NPU ops ({names}), which splits the "
            f"NPU work into separate command streams ({streams} ethos-u ops in the compiled "
            "model): at each, the NPU stops, the CPU runs the op and the next stream starts. "
            f"Vela's reason: {' / '.join(why)}. An NPU-supported replacement for "
            f"{'that layer' if len(runs) == 1 and len(runs[0]) == 1 else 'those layers'} keeps "
            "the work in one stream"]


def _weights_off_sram(info: ModelInfo, layers: dict[int, LayerPerf], total: int,
                      layout: MemoryLayout | None) -> list[str]:
    if layout is None or layout.const_area in (None, "sram") or total <= 0:
        return []
    area = layout.const_area
    bound = []
    for perf in layers.values():
        t = perf.traffic.get(area, {})
        if perf.bound == f"memory:{area}" and 2 * t.get("weights_read", 0) >= t.get("read", 0) > 0:
            bound.append(perf)
    share = sum(p.cycles for p in bound) / total
    if share < _MIN_SHARE:
        return []
    bound.sort(key=lambda p: -p.cycles)
    ops = ", ".join(f"op {p.index} {info.ops[p.index].op} "
                    f"({p.traffic[area]['weights_read'] / 1024:.1f} KiB)" for p in bound[:5])
    more = f" and {len(bound) - 5} more" if len(bound) > 5 else ""
    where = _AREA_NAMES[area]
    if layout.arena_cache_bytes:
        mode = (f"the {layout.memory_mode} memory mode keeps the weights in {where} and caches "
                f"them in at most {layout.arena_cache_bytes // 1024} KiB of SRAM")
    else:
        mode = f"the {layout.memory_mode} memory mode keeps the weights in {where}"
    return [f"{len(bound)} op(s) wait on weights read from {where}, "
            f"{100 * share:.1f} % of the cycles: {ops}{more}; {mode}. The model's weights "
            f"are {info.weight_bytes / 1024:.1f} KiB before Vela's compression: a memory mode "
            "with them in SRAM (Sram_Only, or a larger cache) removes the wait if the SRAM "
            "holds them"]


def _memory_bound(info: ModelInfo, layers: dict[int, LayerPerf], total: int,
                  layout: MemoryLayout | None) -> list[str]:
    """Memory-bound ops not already named by the weights rule."""
    const = layout.const_area if layout is not None else None
    found = []
    for perf in sorted(layers.values(), key=lambda p: -p.cycles):
        if not perf.bound.startswith("memory:") or total <= 0 or perf.cycles / total < _MIN_SHARE:
            continue
        area = perf.bound.split(":", 1)[1]
        t = perf.traffic.get(area, {})
        if area == const and 2 * t.get("weights_read", 0) >= t.get("read", 0) > 0:
            continue  # _weights_off_sram names it
        what = t.get("read", 0) - t.get("weights_read", 0)
        moved = (f"; it reads {t.get('read', 0) / 1024:.1f} KiB there ({what / 1024:.1f} KiB of "
                 f"it feature maps) and writes {t.get('write', 0) / 1024:.1f} KiB" if t else "")
        found.append(f"op {perf.index} {info.ops[perf.index].op} is memory-bound: "
                     f"{perf.access_cycles[area]} {_AREA_NAMES[area]} access cycles against "
                     f"{perf.npu_cycles} NPU cycles, {100 * perf.cycles / total:.1f} % of the "
                     f"cycles{moved}: less traffic there, not more MACs, makes it faster")
    return found
