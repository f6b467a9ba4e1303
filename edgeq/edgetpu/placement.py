"""Where the Edge TPU compiler puts each op, predicted from the .tflite alone.

Three steps, as the compiler takes them:
1. whole-model checks that make the compiler refuse the model (dynamic tensors; after
   placement, a model with nothing integer to map: "Model not quantized")
   -> TargetConstraintError (exit 3);
2. per-op rules (`rules.py`): can this op map at all; float and custom ops beside integer
   ones are CPU ops, not a reason to refuse the model;
3. partitioning: the compiler delegates ONE Edge TPU subgraph. It partitions the graph the
   way TFLite's delegate API does (`PartitionGraphIntoIndependentNodeSubsets`: alternating
   runs of supported and unsupported nodes, each run taking every node whose inputs are
   ready) and compiles the first supported run; everything else stays on the CPU and later
   supported ops get "More than one subgraph is not supported". A leading op the TPU cannot
   run (a float QUANTIZE at the input) therefore stays on the CPU without splitting the graph.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Iterable

from edgeq.edgetpu import rules
from edgeq.edgetpu.compiler import CUSTOM_OP
from edgeq.errors import TargetConstraintError
from edgeq.formats.tflite import ModelInfo, OpInfo

ON_CHIP_CACHE_BYTES = 8 * 1024 * 1024  # "roughly 8 MB" of on-chip parameter cache (coral.ai)
_BOUNDARY_OPS = ("QUANTIZE", "DEQUANTIZE")  # float is allowed at the model's edges only
_FLOAT = ("float32", "float16")


@dataclass(frozen=True)
class EdgeTPUOp:
    index: int
    op: str
    placement: str  # tpu | cpu
    status: str  # the compiler's per-op status string we predict
    reason: str
    fix: str | None
    layer: str | None  # the Keras layer the op came from, when the tensor names tell
    rule: str | None = None  # the rules.py constraint(s) or "single_subgraph": why on the CPU


@dataclass(frozen=True)
class EdgeTPUPlan:
    ops: tuple[EdgeTPUOp, ...]
    split: EdgeTPUOp | None  # the first op that broke the TPU subgraph, if any
    parameter_bytes: int  # constant data of the ops on the TPU


def parameter_memory(parameter_bytes: int, cache_bytes: int = ON_CHIP_CACHE_BYTES
                     ) -> dict[str, object]:
    """The report's parameter-cache estimate for this many bytes of TPU weights."""
    return {
        "parameter_bytes": parameter_bytes,
        "on_chip_cache_bytes": cache_bytes,
        "estimated_on_chip_bytes": min(parameter_bytes, cache_bytes),
        "estimated_streamed_bytes": max(0, parameter_bytes - cache_bytes),
        "note": "estimate: weights of the ops on the Edge TPU against the ~8 MiB on-chip "
                "cache; the compiler's own figures are lower because activations share it",
    }


def check_compilable(info: ModelInfo, path: str = "model") -> None:
    """Raise what the compiler refuses the whole model for before it maps any op.

    Raises:
        TargetConstraintError: an already compiled model, or shapes computed at run time
            (exit 3).
    """
    compiled = next((op for op in info.ops if op.op == CUSTOM_OP), None)
    if compiled is not None:
        raise TargetConstraintError(
            f"{path}: op {compiled.index} is an edgetpu-custom-op: this model was already "
            "compiled by edgetpu_compiler, and the compiler does not take its own output",
            hint=f"analyze the model before compilation, or run 'edgeq inspect {path}' to "
                 "see which ops the compiled model runs on the Edge TPU and the CPU",
        )
    runtime_shape = _shape_computed_at_run_time(info)
    if info.dynamic_tensors and runtime_shape is not None:
        t = info.dynamic_tensors[0]
        raise TargetConstraintError(
            f"{path}: the Edge TPU compiler needs static shapes, but tensor {t.name or t.index} "
            f"has shape signature {list(t.shape_signature)} and op {runtime_shape.index} "
            f"{runtime_shape.op} computes a shape at run time (the compiler stops with "
            "'Attempting to use a delegate that only supports static-sized tensors with a "
            "graph that has dynamic-sized tensors')",
            hint="convert with a fixed batch of 1 (edgeq convert does) or set the input shape "
                 "in the Keras model",
        )


def check_mappable(plan: EdgeTPUPlan, info: ModelInfo, path: str = "model") -> None:
    """Raise when not one op of the model can go to the Edge TPU.

    Float or custom ops beside integer ones do not make the compiler refuse a model: they stay
    on the CPU and the integer ops map (SSD post-processing, the PoseNet decoder, MoveNet's
    float tail in fixtures/device_truth/edgetpu). Only a model with no integer compute at all
    gets the whole-model verdict: "Model not quantized" (google-coral/edgetpu#168; the
    published compiled float models yolov5n-fp16 and LeNet float have nothing mapped).

    Raises:
        TargetConstraintError: nothing maps (exit 3).
    """
    if any(r.placement == "tpu" for r in plan.ops):
        return
    floating = next(((op, t) for op in info.ops for t in rules.activation_tensors(op, info)
                     if t.dtype in _FLOAT), None)
    if floating is not None and not any(
            _integer_compute(op, info) for op in info.ops if op.op not in _BOUNDARY_OPS):
        op, t = floating
        raise TargetConstraintError(
            f"{path}: the Edge TPU compiler refuses this model with 'Model not quantized': no "
            f"op computes in 8-bit integers (op {op.index} {op.op} computes in {t.dtype}, "
            f"tensor {t.name or t.index}); the Edge TPU runs only full-integer 8-bit ops",
            hint="quantize to full integer with a representative data set: edgeq "
                 "convert MODEL --target coral --data CALIBRATION_DATA",
        )
    if plan.ops:
        first = plan.ops[0]
        raise TargetConstraintError(
            f"{path}: no op of this model can run on the Edge TPU; the first, op {first.index} "
            f"{first.op}: {first.reason}",
            hint=first.fix or "use ops from the supported-ops table (edgeq targets coral "
                              "--supported-ops)",
        )


def _integer_compute(op: OpInfo, info: ModelInfo) -> bool:
    """The op computes on 8-bit integer activations (what the Edge TPU can run)."""
    acts = rules.activation_tensors(op, info)
    return any(t.dtype in rules.INTEGER_ACTIVATIONS for t in acts) and not any(
        t.dtype in _FLOAT for t in acts)


def _shape_computed_at_run_time(info: ModelInfo) -> OpInfo | None:
    """The first op whose output shape is only known when the model runs: a SHAPE op (TF2's
    converter emits SHAPE/STRIDED_SLICE/PACK for a dynamic batch), or a reshape-like op fed a
    computed shape. A -1 in the input's signature alone is not that: TFLite allocates batch 1
    and every tensor is static, which the compiler accepts."""
    for op in info.ops:
        if op.op == "SHAPE":
            return op
        if op.op in _SHAPE_OPERAND and len(op.inputs) > 1 and 0 <= op.inputs[1] < len(
                info.tensors) and info.tensors[op.inputs[1]].constant_bytes == 0:
            return op
    return None


# Ops whose second input is the output shape (or size): a computed one makes it dynamic.
_SHAPE_OPERAND = ("RESHAPE", "BROADCAST_TO", "FILL", "RESIZE_BILINEAR",
                  "RESIZE_NEAREST_NEIGHBOR", "TILE")


def plan(info: ModelInfo, allowed: tuple[str, ...], max_versions: dict[str, int],
         layer_names: tuple[str, ...] = (), model_name: str | None = None) -> EdgeTPUPlan:
    """Predict the compiler's placement, one record per op in execution order."""
    findings = {op.index: rules.op_findings(op, info, allowed, max_versions) for op in info.ops}
    supported = {i for i, f in findings.items() if not f}
    subsets = partition(info, supported)
    tpu = next((set(s) for s in subsets if s and s[0] in supported), set())
    records: list[EdgeTPUOp] = []
    split: EdgeTPUOp | None = None
    for op in info.ops:
        layer = keras_layer(op, info, layer_names, model_name)
        if op.index in tpu:
            records.append(EdgeTPUOp(op.index, op.op, "tpu", rules.MAPPED,
                                     "supported on the Edge TPU", None, layer))
            continue
        own = findings[op.index]
        if own:
            first = own[0]
            rec = EdgeTPUOp(op.index, op.op, "cpu", first.status,
                            "; ".join(f.message for f in own), first.fix, layer,
                            ",".join(f.constraint for f in own))
            if split is None and _after_tpu(op, info, tpu):
                split = rec
        else:
            cause = split or _first_unmapped_ancestor(op, info, findings, records)
            where = f" after {cause.op} (op {cause.index})" if cause else ""
            rec = EdgeTPUOp(op.index, op.op, "cpu", rules.SUBGRAPH,
                            f"supported, but it runs{where} on the CPU and the compiler maps "
                            "only one Edge TPU subgraph", cause.fix if cause else None, layer,
                            "single_subgraph")
        records.append(rec)
    params = _parameter_bytes(info, tpu)
    return EdgeTPUPlan(tuple(records), split, params)


def partition(info: ModelInfo, supported: set[int]) -> list[list[int]]:
    """TFLite's node-subset partitioning: alternate runs of supported / unsupported ops, each
    run taking every op (in execution order, repeatedly) whose inputs are ready."""
    produced = {t for op in info.ops for t in op.outputs}
    ready = {i for i in range(len(info.tensors)) if i not in produced}
    done: set[int] = set()
    subsets: list[list[int]] = []
    while len(done) < len(info.ops):
        subset: list[int] = []
        kind: bool | None = None
        progress = True
        while progress:
            progress = False
            for op in info.ops:
                if op.index in done or not all(i < 0 or i in ready for i in op.inputs):
                    continue
                is_supported = op.index in supported
                if kind is None:
                    kind = is_supported
                if is_supported != kind:
                    continue
                done.add(op.index)
                subset.append(op.index)
                ready.update(op.outputs)
                progress = True
        if not subset:  # a cycle or a dangling input: leave the rest on the CPU
            subsets.append([op.index for op in info.ops if op.index not in done])
            break
        subsets.append(subset)
    return subsets


def keras_layer(op: OpInfo, info: ModelInfo, layer_names: tuple[str, ...] = (),
                model_name: str | None = None) -> str | None:
    """The Keras layer an op came from, read from its output tensor's name.

    Converter names look like "sequential/leaky_re_lu/LeakyRelu" (tf_keras) or
    "digits_cnn_1/conv2d_1/Relu;..." (Keras 3, whose traced scopes gain a "_1" suffix): the
    segment after the model's scope. With the model at hand (edgeq convert) the scope is its
    name and the segment must be one of its layers; for a bare .tflite only the usual Keras
    model scopes (sequential, model, functional) are trusted, so TF1 graph names are not
    mistaken for layers."""
    for i in op.outputs:
        if not 0 <= i < len(info.tensors):
            continue
        layer = tensor_layer(info.tensors[i].name, layer_names, model_name,
                             strip=bool(layer_names) or _strips(info))
        if layer:
            return layer
    if op.op in _FOLLOW_ON and op.inputs:
        # A layer's own activation (Dense(activation="softmax")) becomes a second op whose
        # output is often the model's output, named after the signature
        # ("StatefulPartitionedCall_1:0"): it belongs to the layer that feeds it.
        producer = next((o for o in info.ops if op.inputs[0] in o.outputs), None)
        if producer is not None and producer.index != op.index:
            return keras_layer(producer, info, layer_names, model_name)
    return None


def tensor_layer(name: str, layer_names: tuple[str, ...] = (),
                 model_name: str | None = None, *, strip: bool = True) -> str | None:
    """The Keras layer a converter tensor name belongs to (see `keras_layer`), or None.
    ``strip``: a suffixed model scope's "_N" trace suffix is taken off the layer's scope
    (see `strip_suffixes`; always checked against ``layer_names`` when they are given)."""
    for part in name.split(";"):
        layer = _layer_in(part.split("/"), layer_names, model_name, strip)
        if layer:
            return layer
    return None


def strip_suffixes(names: Iterable[str]) -> bool:
    """Whether a model's layer scopes carry a trace suffix, judged from all its tensor names
    when the layer names are not at hand. Keras 3 traced in the converting process suffixes
    every layer's scope ("digits_cnn_1/conv2d_1_2/Relu" is layer conv2d_1); a SavedModel
    exported by Keras does not ("functional_1/activation_1/Relu" is layer activation_1, next
    to "functional_1/activation/Relu"). So: strip only when every layer scope under a suffixed
    model scope is suffixed."""
    found = [seg[1] for name in names for part in name.split(";")
             for seg in [part.split("/")]
             if len(seg) >= 3 and _KERAS_SCOPE.fullmatch(seg[0]) and _SUFFIX.search(seg[0])]
    return bool(found) and all(_SUFFIX.search(c) for c in found)


_STRIPS: dict[int, tuple[ModelInfo, bool]] = {}


def _strips(info: ModelInfo) -> bool:
    hit = _STRIPS.get(id(info))
    if hit is None or hit[0] is not info:
        hit = (info, strip_suffixes(t.name for t in info.tensors))
        _STRIPS.clear()  # one model at a time: keep the cache (and the model it holds) small
        _STRIPS[id(info)] = hit
    return hit[1]


_FOLLOW_ON = frozenset({"SOFTMAX", "LOGISTIC", "TANH", "RELU", "RELU6", "RELU_N1_TO_1",
                        "LEAKY_RELU", "HARD_SWISH", "ELU", "GELU"})


_KERAS_SCOPE = re.compile(r"(sequential|model|functional)(_\d+)?")
_SUFFIX = re.compile(r"_\d+$")


def _layer_in(segments: list[str], layer_names: tuple[str, ...],
              model_name: str | None, strip: bool = True) -> str | None:
    if len(segments) < 3:
        return None
    scope, candidate = segments[0], segments[1]
    if model_name:
        if scope != model_name and _SUFFIX.sub("", scope) != model_name:
            return None
    elif not _KERAS_SCOPE.fullmatch(scope):
        return None
    suffixed = _SUFFIX.search(scope) is not None and scope != model_name
    if suffixed and strip:
        stripped = _SUFFIX.sub("", candidate)
        if not layer_names or stripped in layer_names:
            candidate = stripped
    if layer_names and candidate not in layer_names:
        return None
    return candidate


def _after_tpu(op: OpInfo, info: ModelInfo, tpu: set[int]) -> bool:
    """Whether the op comes after the TPU subgraph (a split), not before it (an input op)."""
    return bool(tpu) and op.index > min(tpu)


def _first_unmapped_ancestor(op: OpInfo, info: ModelInfo, findings, records) -> EdgeTPUOp | None:
    producers = {t: o.index for o in info.ops for t in o.outputs}
    seen, stack = set(), [producers[i] for i in op.inputs if i in producers]
    best = None
    while stack:
        k = stack.pop()
        if k in seen:
            continue
        seen.add(k)
        if findings[k] and (best is None or k < best):
            best = k
        stack.extend(producers[i] for i in info.ops[k].inputs if i in producers)
    return records[best] if best is not None and best < len(records) else None


def _parameter_bytes(info: ModelInfo, tpu: set[int]) -> int:
    used = {i for k in tpu for i in info.ops[k].inputs if 0 <= i < len(info.tensors)}
    return sum(info.tensors[i].constant_bytes for i in used)


def summarize(records, info: ModelInfo, source: str = "prediction") -> dict[str, object]:
    """The report's `edgetpu` section from per-op records (edgeq's or the compiler's): counts,
    the split point with its layer and fix, CPU ops in order and the parameter memory."""
    tpu = {r.index for r in records if r.placement == "tpu"}
    cpu = [r for r in records if r.placement != "tpu"]
    counts = dict(Counter(r.op for r in cpu))
    first_tpu = min(tpu) if tpu else None
    split = next((r for r in cpu if first_tpu is not None and r.index > first_tpu
                  and r.status != rules.SUBGRAPH), None)
    memory = parameter_memory(_parameter_bytes(info, tpu))
    return {
        "source": source,
        "ops_total": len(records),
        "ops_on_tpu": len(tpu),
        "ops_on_cpu": len(cpu),
        "cpu_op_counts": counts,
        "cpu_ops": [{"index": r.index, "op": r.op, "status": r.status,
                     **({"rule": r.rule} if getattr(r, "rule", None) else {})} for r in cpu],
        "split": None if split is None else {
            "index": split.index, "op": split.op, "layer": split.layer, "status": split.status,
            "reason": split.reason, "fix": split.fix,
            "ops_cut_off": sum(1 for r in cpu if r.index > split.index),
        },
        "parameter_memory": memory,
    }
