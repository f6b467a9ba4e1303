"""`edgeq inspect`: read a .tflite as it is, above all a model compiled by edgetpu_compiler.

A compiled model is a CPU graph in which one `edgetpu-custom-op` stands for every op the
Edge TPU runs; every other op left in it runs on the host CPU, in this order. With the source
model (X.tflite beside X_edgetpu.tflite, or --source) each source op is matched to the
compiled graph by its output tensor names, which tells how many ops the custom op replaced.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeq.edgetpu.compiler import CUSTOM_OP, compiled_placement
from edgeq.errors import ModelFileError
from edgeq.formats.tflite import ModelInfo, read_model


@dataclass(frozen=True)
class Inspection:
    path: str
    info: ModelInfo
    source_path: str | None
    source: ModelInfo | None

    @property
    def compiled_for_edgetpu(self) -> bool:
        return any(op.op == CUSTOM_OP for op in self.info.ops)

    @property
    def cpu_ops(self) -> list[tuple[int, str]]:
        return [(op.index, op.op) for op in self.info.ops if op.op != CUSTOM_OP]

    def source_placement(self) -> list[tuple[int, str, str]] | None:
        if self.source is None:
            return None
        return compiled_placement(self.source, self.info)

    def to_dict(self) -> dict[str, Any]:
        info = self.info
        out: dict[str, Any] = {
            "model": self.path,
            "bytes": info.size_bytes,
            "ops_total": len(info.ops),
            "op_sequence": [op.op for op in info.ops],
            "inputs": [_tensor(t) for t in info.input_tensors],
            "outputs": [_tensor(t) for t in info.output_tensors],
            "subgraphs": info.subgraphs,
            "compiled_for_edgetpu": self.compiled_for_edgetpu,
        }
        if not self.compiled_for_edgetpu:
            return out
        customs = [op for op in info.ops if op.op == CUSTOM_OP]
        out["edgetpu"] = {
            "custom_ops": len(customs),
            "executable_bytes": [op.custom_options_bytes for op in customs],
            "cpu_ops": [{"index": i, "op": name} for i, name in self.cpu_ops],
            "cpu_op_counts": dict(Counter(name for _, name in self.cpu_ops)),
        }
        placement = self.source_placement()
        if placement is not None:
            on_tpu = [i for i, where, _ in placement if where == "tpu"]
            out["edgetpu"] |= {
                "source": self.source_path,
                "source_ops_total": len(placement),
                "ops_on_tpu": len(on_tpu),
                "ops_on_cpu": len(placement) - len(on_tpu),
                "replaced_ops": dict(Counter(self.source.ops[i].op for i in on_tpu)),
            }
        return out


def inspect_model(path: str | Path, source: str | Path | None = None) -> Inspection:
    """Read a .tflite (and, for a compiled model, its source when given or found beside it).

    Raises:
        ModelFileError: missing, not a .tflite, or corrupt (exit 2).
    """
    from edgeq.formats.input_files import TFLITE_MAX, read_file

    p = Path(path)
    info = read_model(read_file(p, "model", TFLITE_MAX, error=ModelFileError,
                                hint="check the path to the .tflite file"), p)
    src_path = Path(source) if source is not None else _beside(p)
    src = None
    if src_path is not None:
        src = read_model(read_file(src_path, "--source", TFLITE_MAX,
                                   hint="pass the model that was compiled"), src_path)
    return Inspection(str(p), info, str(src_path) if src is not None else None, src)


def _beside(p: Path) -> Path | None:
    if not p.stem.endswith("_edgetpu"):
        return None
    candidate = p.with_name(p.stem.removesuffix("_edgetpu") + p.suffix)
    return candidate if candidate.is_file() else None


def _tensor(t) -> dict[str, Any]:
    q = {"scale": t.scales[0], "zero_point": t.zero_points[0]} if len(t.scales) == 1 else {}
    return {"name": t.name, "shape": list(t.shape), "dtype": t.dtype, **q}
