"""Embeds a .tflite model in firmware: C++ sources for TensorFlow Lite Micro.

`embed_model` turns the flatbuffer into three files: `NAME.h` (declarations and the recommended
tensor-arena size; compiles without TFLM), `NAME.cc` (the bytes as a 16-byte aligned array) and
`NAME_ops.h` (registers exactly the ops the model uses on a `tflite::MicroMutableOpResolver`).
The output is deterministic: the same model and name give the same bytes.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from edgeq import __version__
from edgeq.errors import TargetConstraintError, UsageError
from edgeq.formats.cmsis_nn_buffers import KernelBuffers, kernel_buffers
from edgeq.formats.tflite import ModelInfo, read_model
from edgeq.outputs.text import c_comment_text

if TYPE_CHECKING:  # for the annotation only; the TFLM adapter is loaded when measuring
    from edgeq.adapters.tflm import ArenaUsage

# Every builtin-op method of tflite::MicroMutableOpResolver
# (tensorflow/lite/micro/micro_mutable_op_resolver.h). tests/integration/test_embed.py checks
# this set, the CamelCase rule and _METHOD_EXCEPTIONS against the list read from the header.
_TFLM_BUILTIN_METHODS = frozenset({
    "AddAbs", "AddAdd", "AddAddN", "AddArgMax", "AddArgMin", "AddAssignVariable",
    "AddAveragePool2D", "AddBatchMatMul", "AddBatchToSpaceNd", "AddBroadcastArgs",
    "AddBroadcastTo", "AddCallOnce", "AddCast", "AddCeil", "AddConcatenation", "AddConv2D",
    "AddCos", "AddCumSum", "AddDepthToSpace", "AddDepthwiseConv2D", "AddDequantize", "AddDiv",
    "AddDynamicUpdateSlice", "AddElu", "AddEmbeddingLookup", "AddEqual", "AddExp",
    "AddExpandDims", "AddFill", "AddFloor", "AddFloorDiv", "AddFloorMod", "AddFullyConnected",
    "AddGather", "AddGatherNd", "AddGreater", "AddGreaterEqual", "AddHardSwish", "AddIf",
    "AddL2Normalization", "AddL2Pool2D", "AddLeakyRelu", "AddLess", "AddLessEqual", "AddLog",
    "AddLogSoftmax", "AddLogicalAnd", "AddLogicalNot", "AddLogicalOr", "AddLogistic",
    "AddMaxPool2D", "AddMaximum", "AddMean", "AddMinimum", "AddMirrorPad", "AddMul", "AddNeg",
    "AddNotEqual", "AddPack", "AddPad", "AddPadV2", "AddPrelu", "AddQuantize",
    "AddReadVariable", "AddReduceAll", "AddReduceMax", "AddReduceMin", "AddRelu", "AddRelu6",
    "AddReshape", "AddResizeBilinear", "AddResizeNearestNeighbor", "AddReverseV2", "AddRound",
    "AddRsqrt", "AddSelectV2", "AddShape", "AddSin", "AddSlice", "AddSoftmax",
    "AddSpaceToBatchNd", "AddSpaceToDepth", "AddSplit", "AddSplitV", "AddSqrt", "AddSquare",
    "AddSquaredDifference", "AddSqueeze", "AddStridedSlice", "AddSub", "AddSum", "AddSvdf",
    "AddTanh", "AddTranspose", "AddTransposeConv", "AddUnidirectionalSequenceLSTM", "AddUnpack",
    "AddVarHandle", "AddWhile", "AddZerosLike",
})

# Builtins whose TFLM method is not the CamelCase of the schema name.
_METHOD_EXCEPTIONS = {
    "BATCH_MATMUL": "AddBatchMatMul",
    "CUMSUM": "AddCumSum",
    "PADV2": "AddPadV2",
    "UNIDIRECTIONAL_SEQUENCE_LSTM": "AddUnidirectionalSequenceLSTM",
}

# Custom ops TFLM registers by name (the custom_code in the model -> the resolver method).
_CUSTOM_METHODS = {
    "ethos-u": "AddEthosU",
    "TFLite_Detection_PostProcess": "AddDetectionPostprocess",
    "CIRCULAR_BUFFER": "AddCircularBuffer",
    "TFLM_DECODE": "AddDecode",
    # TFLM's signal library (audio front ends) registers its ops with a "Signal" prefix.
    "SignalDelay": "AddDelay",
    "SignalEnergy": "AddEnergy",
    "SignalFftAutoScale": "AddFftAutoScale",
    "SignalFilterBank": "AddFilterBank",
    "SignalFilterBankLog": "AddFilterBankLog",
    "SignalFilterBankSpectralSubtraction": "AddFilterBankSpectralSubtraction",
    "SignalFilterBankSquareRoot": "AddFilterBankSquareRoot",
    "SignalFramer": "AddFramer",
    "SignalIrfft": "AddIrfft",
    "SignalOverlapAdd": "AddOverlapAdd",
    "SignalPCAN": "AddPCAN",
    "SignalRfft": "AddRfft",
    "SignalStacker": "AddStacker",
    "SignalWindow": "AddWindow",
}

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_CXX_KEYWORDS = frozenset(
    "alignas alignof and and_eq asm auto bitand bitor bool break case catch char char8_t "
    "char16_t char32_t class compl concept const consteval constexpr constinit const_cast "
    "continue co_await co_return co_yield decltype default delete do double dynamic_cast else "
    "enum explicit export extern false float for friend goto if inline int long mutable "
    "namespace new noexcept not not_eq nullptr operator or or_eq private protected public "
    "register reinterpret_cast requires return short signed sizeof static static_assert "
    "static_cast struct switch template this thread_local throw true try typedef typeid "
    "typename union unsigned using virtual void volatile wchar_t while xor xor_eq".split()
)

_BYTES_PER_LINE = 12
# CMSIS-NN and other optimized kernels request scratch buffers at Prepare that the host's
# reference kernels do not; at least this much, or this fraction of the measured total.
_MIN_KERNEL_MARGIN = 1024
_KERNEL_MARGIN_PERCENT = 10
# TFLM: "the optimal arena size would be arena_used_bytes() + 16" when the buffer may not be
# 16-byte aligned (micro_interpreter.h); the arena is also handed out in 16-byte units.
_ALIGNMENT = 16


@dataclass(frozen=True)
class EmbedResult:
    files: dict[str, bytes]  # file name -> content: NAME.h, NAME.cc, NAME_ops.h
    name: str
    model_len: int
    arena_size: int  # the recommended kTensorArenaSize written to NAME_arena_size
    arena_measured: int  # TFLM recording allocator total on this host
    ops: tuple[str, ...]  # op names the resolver registers (CONV_2D, CUSTOM:ethos-u), sorted


def recommended_arena(total: int, kernel_bytes: int = 0) -> int:
    """The tensor arena to declare on the device for a host-measured TFLM arena `total`.

    total + 16 (alignment slack TFLM asks for) + `kernel_bytes` (the scratch and persistent
    buffers the device's CMSIS-NN kernels request beyond the host's reference kernels:
    edgeq.formats.cmsis_nn_buffers) + max(1 KiB, 10% of total) for the memory planner's
    layout of those buffers and kernels not modelled there, rounded up to a multiple of 16.
    """
    if total < 0 or kernel_bytes < 0:
        raise ValueError(f"arena sizes must be >= 0, got {total}, {kernel_bytes}")
    size = total + _ALIGNMENT + kernel_bytes + _kernel_margin(total)
    return -(-size // _ALIGNMENT) * _ALIGNMENT


def _kernel_margin(total: int) -> int:
    return max(_MIN_KERNEL_MARGIN, -(-total * _KERNEL_MARGIN_PERCENT // 100))


def resolver_method(op: str) -> str:
    """The `tflite::MicroMutableOpResolver` method that registers `op`.

    Args:
        op: a builtin name (``CONV_2D``) or ``CUSTOM:<custom_code>``, as edgeq reports ops.

    Returns:
        The method name, e.g. ``AddConv2D``.

    Raises:
        TargetConstraintError: TFLite Micro has no registration for the op.
    """
    if op.startswith("CUSTOM:"):
        code = op[len("CUSTOM:"):]
        if code in _CUSTOM_METHODS:
            return _CUSTOM_METHODS[code]
        raise TargetConstraintError(
            f"custom op '{code}' ({op}): TFLite Micro has no registration for it",
            hint="register your own kernel with MicroMutableOpResolver::AddCustom(), or "
            "convert the model without it",
        )
    method = _METHOD_EXCEPTIONS.get(op) or "Add" + "".join(_camel(p) for p in op.split("_"))
    if method not in _TFLM_BUILTIN_METHODS:
        raise TargetConstraintError(
            f"op {op}: TFLite Micro has no kernel for it (MicroMutableOpResolver has no "
            f"{method}())",
            hint="replace the layer that produces it, or choose a target that is not a "
            "microcontroller",
        )
    return method


def _camel(part: str) -> str:
    # "2D" stays "2D" (AddConv2D); "L2" and "V2" already read right after capitalize().
    return part if part[:1].isdigit() else part.capitalize()


def embed_model(
    model: bytes,
    name: str = "g_model",
    *,
    source: str = "model.tflite",
    arena: ArenaUsage | None = None,
    cmsis_nn: str | None = None,
) -> EmbedResult:
    """C++ sources that embed `model` for TensorFlow Lite Micro.

    Args:
        model: the .tflite flatbuffer.
        name: the C++ symbol of the array; also names the files (NAME.h, NAME.cc, NAME_ops.h).
        source: where the model came from; errors name it, the headers carry its file name
            (as written when plain, else as an escaped C string: a name is never code).
        arena: the TFLM arena measured for this model; measured when None (in a child process,
            edgeq.process.isolation: a model that crashes or hangs TFLite Micro is exit 2).
        cmsis_nn: the device's CMSIS-NN code path ("dsp": Cortex-M4/M7/M33, "mve": M55/M85;
            `kernel_variant(target)`), whose kernel buffers the recommended arena covers;
            None: the larger of the two.

    Returns:
        The three files and the figures written into them.

    Raises:
        UsageError: `name` is not a valid C++ identifier.
        ModelFileError: `model` is not a TFLite flatbuffer.
        TargetConstraintError: the model uses an op TFLite Micro cannot register.
    """
    _check_name(name)
    info = read_model(model, source)
    ops = tuple(sorted(_all_ops(model, info)))
    methods = _resolver_methods(ops)
    if arena is None:  # TFLite Micro loads the user's model in a bounded child, as analyze does
        from edgeq.adapters.tflm import ArenaUsage
        from edgeq.process.isolation import run_in_child

        got = run_in_child("tflm_arena", model, stage="TFLite Micro (arena measurement)",
                           source=source, info=info)
        arena = ArenaUsage(got["total"], got["head"], got["tail"], got["log"])
    buffers = kernel_buffers(info, cmsis_nn)
    arena_size = recommended_arena(arena.total, buffers.total)
    stamp = _Stamp(Path(str(source)).name, hashlib.sha256(model).hexdigest())
    files = {
        f"{name}.h": _header(name, stamp, arena, arena_size, buffers),
        f"{name}.cc": _source(name, stamp, model),
        f"{name}_ops.h": _ops_header(name, stamp, ops, methods),
    }
    return EmbedResult(
        files={k: v.encode("utf-8") for k, v in files.items()},
        name=name,
        model_len=len(model),
        arena_size=arena_size,
        arena_measured=arena.total,
        ops=ops,
    )


def _resolver_methods(ops: tuple[str, ...]) -> list[str]:
    """One method per op, or one error naming every op TFLM cannot register."""
    methods, refused = [], []
    for op in ops:
        try:
            methods.append(resolver_method(op))
        except TargetConstraintError as err:
            refused.append(err)
    if len(refused) == 1:
        raise refused[0]
    if refused:
        raise TargetConstraintError(
            "TFLite Micro cannot register these ops: " + "; ".join(e.message for e in refused),
            hint="replace the layers that produce them, or register your own kernels with "
            "MicroMutableOpResolver::AddCustom()",
        )
    return methods


def _check_name(name: str) -> None:
    if not _IDENTIFIER.fullmatch(name) or name in _CXX_KEYWORDS:
        raise UsageError(
            f"--name '{name}' is not a valid C++ identifier",
            hint="use letters, digits and '_', not starting with a digit and not a C++ "
            "keyword, e.g. --name g_model",
        )


def _all_ops(model: bytes, info: ModelInfo) -> set[str]:
    """Ops of every subgraph: IF/WHILE bodies live in subgraphs that ModelInfo does not list,
    and the resolver needs their ops too."""
    ops = set(info.op_names)
    if info.subgraphs > 1:
        from ai_edge_litert import schema_py_generated as schema

        parsed = schema.ModelT.InitFromPackedBuf(model, 0)
        names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
        for sg in parsed.subgraphs[1:]:
            for op in sg.operators or []:
                code = parsed.operatorCodes[op.opcodeIndex]
                builtin = max(int(code.builtinCode), int(code.deprecatedBuiltinCode))
                op_name = names.get(builtin, f"BUILTIN_{builtin}")
                if op_name == "CUSTOM":
                    custom = code.customCode
                    if isinstance(custom, bytes):
                        custom = custom.decode("utf-8", errors="replace")
                    op_name = f"CUSTOM:{custom or ''}"
                ops.add(op_name)
    return ops


@dataclass(frozen=True)
class _Stamp:
    source: str
    sha256: str

    def lines(self) -> str:
        return (
            f"// Generated by edgeq {__version__} from {c_comment_text(self.source)}. "
            "Do not edit.\n"
            f"// Model sha256: {self.sha256}\n"
        )


def cmake_dir() -> Path:
    """The directory of edgeq's CMake helpers (EdgeqEmbed.cmake): the installed edgeq.cmake
    package (the repo's cmake/ shipped as package data), else cmake/ beside the source tree."""
    import importlib.resources

    try:
        res = importlib.resources.files("edgeq.cmake")
    except (ImportError, TypeError):
        res = None
    if isinstance(res, Path) and (res / "EdgeqEmbed.cmake").is_file():
        return res
    if res is not None:  # a namespace package gives a MultiplexedPath; its children are paths
        for child in res.iterdir():
            if isinstance(child, Path) and child.name == "EdgeqEmbed.cmake":
                return child.parent
    return Path(__file__).resolve().parents[2] / "cmake"


def kernel_variant(target) -> str | None:
    """The CMSIS-NN code path of a target profile's core (its [emulator] core), else None."""
    emu = getattr(target, "emulator", None)
    if emu is None:
        return None
    from edgeq.emulator.cores import CORES

    core = CORES.get(emu.core)
    return core.cmsis_nn if core is not None else None


def _header(name: str, stamp: _Stamp, arena: ArenaUsage, arena_size: int,
            buffers: KernelBuffers) -> str:
    path = {"dsp": "DSP (Cortex-M4/M7/M33)", "mve": "Helium (Cortex-M55/M85)"}[buffers.variant]
    which = "; no target given: the larger path" if buffers.any_core else ""
    guard = f"EDGEQ_{name.upper()}_H_"
    return (
        stamp.lines()
        + f"#ifndef {guard}\n"
        f"#define {guard}\n"
        "\n"
        "// The model flatbuffer, 16-byte aligned: tflite::GetModel(" + name + ").\n"
        f"extern const unsigned char {name}[];\n"
        f"extern const unsigned int {name}_len;\n"
        "\n"
        "// Tensor arena to declare:\n"
        f"//   alignas(16) static unsigned char tensor_arena[{name}_arena_size];\n"
        "// TFLite Micro's recording allocator on the host measured "
        f"{arena.total} bytes:\n"
        f"//   head {arena.head} bytes (planned, non-persistent: activations and scratch)\n"
        f"//   tail {arena.tail} bytes (persistent: tensors, node structs, op data)\n"
        f"// Recommended = {arena.total} + 16 (TFLM asks for arena_used_bytes() + 16 when the\n"
        f"// buffer may not be 16-byte aligned) + {buffers.total} for the kernel buffers of\n"
        f"// CMSIS-NN's {path} path (largest scratch {buffers.scratch},\n"
        f"// persistent {buffers.persistent}; the host's reference kernels request none{which})\n"
        f"// + {_kernel_margin(arena.total)} planner margin (max(1024, 10% of the total)), "
        "rounded up to a multiple of 16.\n"
        "// The host is 64-bit: a 32-bit MCU needs slightly less tail.\n"
        f"constexpr unsigned int {name}_arena_size = {arena_size};\n"
        "\n"
        f"#endif  // {guard}\n"
    )


def _source(name: str, stamp: _Stamp, model: bytes) -> str:
    rows = []
    for start in range(0, len(model), _BYTES_PER_LINE):
        chunk = model[start : start + _BYTES_PER_LINE]
        rows.append("    " + ", ".join(f"0x{b:02x}" for b in chunk) + ",")
    return (
        stamp.lines()
        + f'#include "{name}.h"\n'
        "\n"
        "// 16-byte aligned because TFLite Micro reads the flatbuffer in place (schema\n"
        "// force_align: 16). The extern declaration in the header gives these const\n"
        "// definitions external linkage.\n"
        f"alignas(16) const unsigned char {name}[] = {{\n"
        + "\n".join(rows)
        + "\n};\n"
        f"const unsigned int {name}_len = {len(model)};\n"
    )


def _ops_header(name: str, stamp: _Stamp, ops: tuple[str, ...], methods: list[str]) -> str:
    guard = f"EDGEQ_{name.upper()}_OPS_H_"
    calls = "".join(
        f"  if ((status = resolver.{m}()) != kTfLiteOk) return status;  // {op}\n"
        for op, m in zip(ops, methods)
    )
    return (
        stamp.lines()
        + f"#ifndef {guard}\n"
        f"#define {guard}\n"
        "\n"
        '#include "tensorflow/lite/micro/micro_mutable_op_resolver.h"\n'
        "\n"
        f"// The {len(ops)} distinct op(s) {name} uses; the resolver holds exactly these.\n"
        f"constexpr int {name}_op_count = {len(ops)};\n"
        "\n"
        f"// Registers every op {name} uses. Returns the first error (the resolver is full,\n"
        "// or an op was already added) instead of going on with a partial resolver.\n"
        f"inline TfLiteStatus {name}_register_ops(\n"
        f"    tflite::MicroMutableOpResolver<{name}_op_count>& resolver) {{\n"
        "  TfLiteStatus status = kTfLiteOk;\n"
        + calls
        + "  return status;\n"
        "}\n"
        "\n"
        f"#endif  // {guard}\n"
    )
