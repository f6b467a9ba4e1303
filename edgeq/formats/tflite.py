"""Reads a .tflite flatbuffer into plain values (ops, tensors, I/O) without TensorFlow.

Uses the flatbuffer schema module that ships with ai-edge-litert, so `edgeq analyze` and the
report can list ops and quantization parameters without importing TensorFlow or running an
interpreter.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from edgeq.errors import ModelFileError
from edgeq.formats.tflite_check import check_model
from edgeq.formats.tflite_schema import enum_names as _enum_names
from edgeq.formats.tflite_schema import schema as _schema

_SMALL_CONSTANT_BYTES = 64
_INT_TYPES = {2: 4, 4: 8, 9: 1, 7: 2}  # TensorType INT32, INT64, INT8, INT16 -> bytes
_ITEM_BYTES = {"int8": 1, "uint8": 1, "int16": 2, "float16": 2, "int32": 4, "float32": 4,
               "int64": 8, "bool": 1}


@dataclass(frozen=True)
class TensorInfo:
    index: int
    name: str
    shape: tuple[int, ...]
    shape_signature: tuple[int, ...]
    dtype: str  # lower-case numpy-style name: "int8", "float32", ...
    scales: tuple[float, ...]
    zero_points: tuple[int, ...]
    quantized_dimension: int
    constant_bytes: int  # bytes of constant data held in the model (weights), 0 for activations
    # The stored value every element of a constant tensor holds, when they are all the same
    # (zero-padding constants); None otherwise or for activations.
    constant_fill: int | None = None
    # A variable tensor (e.g. SVDF's state): TFLM keeps it out of the planned arena.
    is_variable: bool = False

    @property
    def is_quantized(self) -> bool:
        return bool(self.scales)


@dataclass(frozen=True)
class OpInfo:
    index: int
    op: str  # builtin name (CONV_2D) or CUSTOM:<custom_code>
    version: int
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    # The op's builtin options as (name, value) pairs of plain values, in the schema's camelCase
    # (fusedActivationFunction, dilationWFactor, keepNumDims, alignCorners, ...).
    options: tuple[tuple[str, object], ...] = ()
    custom_options_bytes: int = 0  # e.g. the Edge TPU executable inside edgetpu-custom-op

    def option(self, name: str, default: object = None) -> object:
        return dict(self.options).get(name, default)


@dataclass(frozen=True)
class ModelInfo:
    ops: tuple[OpInfo, ...]
    tensors: tuple[TensorInfo, ...]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    subgraphs: int
    size_bytes: int
    # Values of small integer constant tensors (axes, paddings, strides, new shapes), by tensor
    # index: the placement rules need them and they cost nothing to keep.
    values: dict[int, tuple[int, ...]] = field(default_factory=dict)
    # A Vela-compiled model: the accelerator each ethos-u op's command stream was compiled for
    # ("ethos-u65-256"; "unknown" when the stream does not say), edgeq.formats.ethos_u.
    npu_configs: tuple[str, ...] = ()

    @property
    def op_names(self) -> tuple[str, ...]:
        return tuple(o.op for o in self.ops)

    @property
    def input_tensors(self) -> tuple[TensorInfo, ...]:
        return tuple(self.tensors[i] for i in self.inputs)

    @property
    def output_tensors(self) -> tuple[TensorInfo, ...]:
        return tuple(self.tensors[i] for i in self.outputs)

    @property
    def dynamic_tensors(self) -> tuple[TensorInfo, ...]:
        """Tensors whose shape signature has an unknown (-1) dimension."""
        return tuple(t for t in self.tensors if any(d < 0 for d in t.shape_signature))

    @property
    def weight_bytes(self) -> int:
        return sum(t.constant_bytes for t in self.tensors)

    def float_op_tensors(self) -> tuple[TensorInfo, ...]:
        """Float32 tensors that ops compute on (a full-integer model has none inside)."""
        used = {i for op in self.ops for i in (*op.inputs, *op.outputs) if i >= 0}
        return tuple(self.tensors[i] for i in sorted(used) if self.tensors[i].dtype == "float32")


def activation_bytes(shape: tuple[int, ...], dtype: str) -> int:
    """The bytes a tensor of this shape and dtype occupies in an interpreter's memory."""
    count = 1
    for d in shape:
        count *= max(d, 1)
    return count * _ITEM_BYTES.get(dtype, 4)


def builtin_op_names() -> tuple[str, ...]:
    """Every TFLite builtin op name the schema knows (for validating target profiles)."""
    return tuple(sorted(_enum_names("BuiltinOperator").values()))


def read_model(data: bytes, path: str | Path = "<bytes>") -> ModelInfo:
    """Parse a TFLite flatbuffer.

    Raises:
        ModelFileError: not a TFLite flatbuffer, or a malformed one (edgeq.formats.tflite_check).
    """
    check_model(data, path)  # every offset and index in range before the parser reads any
    schema = _schema()
    try:
        model = schema.ModelT.InitFromPackedBuf(data, 0)
        return _model_info(model, len(data))
    except ModelFileError:
        raise
    except Exception as exc:  # the generated parser raises anything on corrupt data
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise ModelFileError(
            path, f"corrupt TFLite flatbuffer ({type(exc).__name__}: {first})"
        ) from exc


def read_model_file(path: str | Path) -> ModelInfo:
    from edgeq.formats.input_files import TFLITE_MAX, read_file

    p = Path(path)
    return read_model(read_file(p, "model", TFLITE_MAX, error=ModelFileError,
                                hint="check the path"), p)


def _model_info(model, size: int) -> ModelInfo:
    ops_by_code = _enum_names("BuiltinOperator")
    types = _enum_names("TensorType")
    sg = model.subgraphs[0]
    buffers = model.buffers or []

    tensors = []
    values: dict[int, tuple[int, ...]] = {}
    for i, t in enumerate(sg.tensors or []):
        q = t.quantization
        scales = tuple(float(s) for s in (q.scale if q is not None and q.scale is not None else ()))
        zps = tuple(int(z) for z in (q.zeroPoint if q is not None and q.zeroPoint is not None else ()))
        shape = tuple(int(d) for d in (t.shape if t.shape is not None else ()))
        sig = tuple(int(d) for d in t.shapeSignature) if t.shapeSignature is not None else shape
        buf = buffers[t.buffer] if 0 < t.buffer < len(buffers) else None
        nbytes = 0
        fill = None
        if buf is not None:
            nbytes = len(buf.data) if buf.data is not None else int(buf.size or 0)
            small = buf.data is not None and 0 < nbytes <= _SMALL_CONSTANT_BYTES
            if small and t.type in _INT_TYPES:
                width = _INT_TYPES[t.type]
                values[i] = tuple(
                    int.from_bytes(bytes(buf.data[k:k + width]), "little", signed=True)
                    for k in range(0, nbytes - nbytes % width, width)
                )
            if buf.data is not None and nbytes:
                fill = _uniform_fill(bytes(buf.data), t.type)
        tensors.append(
            TensorInfo(
                index=i,
                name=_text(t.name),
                shape=shape,
                shape_signature=sig,
                dtype=types.get(t.type, str(t.type)).lower(),
                scales=scales,
                zero_points=zps,
                quantized_dimension=int(q.quantizedDimension) if q is not None else 0,
                constant_bytes=nbytes,
                constant_fill=fill,
                is_variable=bool(t.isVariable),
            )
        )

    ops = []
    npu_configs = []
    for i, op in enumerate(sg.operators or []):
        code = model.operatorCodes[op.opcodeIndex]
        # Codes above 127 live in builtinCode; deprecatedBuiltinCode keeps old readers working.
        builtin = max(int(code.builtinCode), int(code.deprecatedBuiltinCode))
        name = ops_by_code.get(builtin, f"BUILTIN_{builtin}")
        if name == "CUSTOM":
            name = f"CUSTOM:{_text(code.customCode)}"
        ops.append(
            OpInfo(
                index=i,
                op=name,
                version=int(code.version),
                inputs=tuple(int(x) for x in (op.inputs if op.inputs is not None else ())),
                outputs=tuple(int(x) for x in (op.outputs if op.outputs is not None else ())),
                options=_plain_options(op.builtinOptions),
                custom_options_bytes=len(op.customOptions) if op.customOptions is not None else 0,
            )
        )
        if name == "CUSTOM:ethos-u":
            npu_configs.append(_npu_config(op, sg, buffers))
    return ModelInfo(
        ops=tuple(ops),
        tensors=tuple(tensors),
        inputs=tuple(int(x) for x in sg.inputs),
        outputs=tuple(int(x) for x in sg.outputs),
        subgraphs=len(model.subgraphs),
        size_bytes=size,
        values=values,
        npu_configs=tuple(npu_configs),
    )


def _npu_config(op, sg, buffers) -> str:
    from edgeq.formats.ethos_u import compiled_for

    first = op.inputs[0] if op.inputs is not None and len(op.inputs) else -1
    tensor = sg.tensors[first] if 0 <= first < len(sg.tensors or []) else None
    buf = buffers[tensor.buffer] if tensor is not None and 0 < tensor.buffer < len(buffers) else None
    found = compiled_for(bytes(buf.data)) if buf is not None and buf.data is not None else None
    return found.accelerator if found is not None else "unknown"


def _uniform_fill(data: bytes, tensor_type: int) -> int | None:
    if data.count(data[:1]) != len(data):
        return None
    if tensor_type == 9:  # INT8
        return int.from_bytes(data[:1], "little", signed=True)
    if tensor_type == 3:  # UINT8
        return data[0]
    return 0 if data[0] == 0 else None


def _plain_options(options) -> tuple[tuple[str, object], ...]:
    if options is None:
        return ()
    return tuple(sorted((k, v) for k, v in vars(options).items()
                        if isinstance(v, (bool, int, float))))


def _text(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)
