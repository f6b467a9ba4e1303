"""edgeq.outputs.embed: generated C++ sources (golden files), their compilation on the host and for a
Cortex-M4, the CMake integration (ctest), and the TFLite Micro op-resolver names."""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from edgeq.outputs import embed
from edgeq.adapters.tflm import ArenaUsage, TFLMRunner
from edgeq.outputs.embed import embed_model, recommended_arena, resolver_method
from edgeq.errors import ModelFileError, TargetConstraintError, UsageError
from edgeq.outputs.atomic import write_outputs
from edgeq.formats.tflite import builtin_op_names
from tests.conftest import FIXTURES, ROOT

GOLDEN = ROOT / "tests" / "golden"
HELLO = FIXTURES / "models" / "tflm" / "hello_world_int8.tflite"
UPDATE_GOLDEN = os.environ.get("EDGEQ_UPDATE_GOLDEN") == "1"

# --- TFLite Micro's resolver methods, as read from the header ------------------------------------
# File: tensorflow/lite/micro/micro_mutable_op_resolver.h
# Read from AmbiqAI/helia-rt @ 1b6f554e0f595cecaf04f0ac3038afcb1550a06c, a fork that tracks
# tensorflow/tflite-micro (the upstream copy in the code index, @ 933f830139560b2f9a47b5418439350c
# 728a796f, is from 2022 and lacks BatchMatMul, SelectV2, ReverseV2, LogSoftmax ...). The fork
# adds one method upstream does not have, AddGelu(registration, parser) with no default
# kernel, so it is left out; the installed tflite-micro runtime has no GELU kernel either.
# Each entry is the BuiltinOperator_<OP> the method passes to AddBuiltin().
TFLM_BUILTIN_METHODS = {
    "ABS": "AddAbs",
    "ADD": "AddAdd",
    "ADD_N": "AddAddN",
    "ARG_MAX": "AddArgMax",
    "ARG_MIN": "AddArgMin",
    "ASSIGN_VARIABLE": "AddAssignVariable",
    "AVERAGE_POOL_2D": "AddAveragePool2D",
    "BATCH_MATMUL": "AddBatchMatMul",
    "BATCH_TO_SPACE_ND": "AddBatchToSpaceNd",
    "BROADCAST_ARGS": "AddBroadcastArgs",
    "BROADCAST_TO": "AddBroadcastTo",
    "CALL_ONCE": "AddCallOnce",
    "CAST": "AddCast",
    "CEIL": "AddCeil",
    "CONCATENATION": "AddConcatenation",
    "CONV_2D": "AddConv2D",
    "COS": "AddCos",
    "CUMSUM": "AddCumSum",
    "DEPTH_TO_SPACE": "AddDepthToSpace",
    "DEPTHWISE_CONV_2D": "AddDepthwiseConv2D",
    "DEQUANTIZE": "AddDequantize",
    "DIV": "AddDiv",
    "DYNAMIC_UPDATE_SLICE": "AddDynamicUpdateSlice",
    "EMBEDDING_LOOKUP": "AddEmbeddingLookup",
    "ELU": "AddElu",
    "EQUAL": "AddEqual",
    "EXP": "AddExp",
    "EXPAND_DIMS": "AddExpandDims",
    "FILL": "AddFill",
    "FLOOR": "AddFloor",
    "FLOOR_DIV": "AddFloorDiv",
    "FLOOR_MOD": "AddFloorMod",
    "FULLY_CONNECTED": "AddFullyConnected",
    "GATHER": "AddGather",
    "GATHER_ND": "AddGatherNd",
    "GREATER": "AddGreater",
    "GREATER_EQUAL": "AddGreaterEqual",
    "HARD_SWISH": "AddHardSwish",
    "IF": "AddIf",
    "L2_NORMALIZATION": "AddL2Normalization",
    "L2_POOL_2D": "AddL2Pool2D",
    "LEAKY_RELU": "AddLeakyRelu",
    "LESS": "AddLess",
    "LESS_EQUAL": "AddLessEqual",
    "LOG": "AddLog",
    "LOGICAL_AND": "AddLogicalAnd",
    "LOGICAL_NOT": "AddLogicalNot",
    "LOGICAL_OR": "AddLogicalOr",
    "LOGISTIC": "AddLogistic",
    "LOG_SOFTMAX": "AddLogSoftmax",
    "MAXIMUM": "AddMaximum",
    "MAX_POOL_2D": "AddMaxPool2D",
    "MIRROR_PAD": "AddMirrorPad",
    "MEAN": "AddMean",
    "MINIMUM": "AddMinimum",
    "MUL": "AddMul",
    "NEG": "AddNeg",
    "NOT_EQUAL": "AddNotEqual",
    "PACK": "AddPack",
    "PAD": "AddPad",
    "PADV2": "AddPadV2",
    "PRELU": "AddPrelu",
    "QUANTIZE": "AddQuantize",
    "READ_VARIABLE": "AddReadVariable",
    "REDUCE_ALL": "AddReduceAll",
    "REDUCE_MAX": "AddReduceMax",
    "REDUCE_MIN": "AddReduceMin",
    "RELU": "AddRelu",
    "RELU6": "AddRelu6",
    "RESHAPE": "AddReshape",
    "RESIZE_BILINEAR": "AddResizeBilinear",
    "RESIZE_NEAREST_NEIGHBOR": "AddResizeNearestNeighbor",
    "REVERSE_V2": "AddReverseV2",
    "ROUND": "AddRound",
    "RSQRT": "AddRsqrt",
    "SELECT_V2": "AddSelectV2",
    "SHAPE": "AddShape",
    "SIN": "AddSin",
    "SLICE": "AddSlice",
    "SOFTMAX": "AddSoftmax",
    "SPACE_TO_BATCH_ND": "AddSpaceToBatchNd",
    "SPACE_TO_DEPTH": "AddSpaceToDepth",
    "SPLIT": "AddSplit",
    "SPLIT_V": "AddSplitV",
    "SQUEEZE": "AddSqueeze",
    "SQRT": "AddSqrt",
    "SQUARE": "AddSquare",
    "SQUARED_DIFFERENCE": "AddSquaredDifference",
    "STRIDED_SLICE": "AddStridedSlice",
    "SUB": "AddSub",
    "SUM": "AddSum",
    "SVDF": "AddSvdf",
    "TANH": "AddTanh",
    "TRANSPOSE_CONV": "AddTransposeConv",
    "TRANSPOSE": "AddTranspose",
    "UNPACK": "AddUnpack",
    "UNIDIRECTIONAL_SEQUENCE_LSTM": "AddUnidirectionalSequenceLSTM",
    "VAR_HANDLE": "AddVarHandle",
    "WHILE": "AddWhile",
    "ZEROS_LIKE": "AddZerosLike",
}
# Custom ops the same header registers through AddCustom(name, ...): custom_code -> method.
# ethos-u is tflite::GetString_ETHOSU() (kernels/ethosu.cc).
TFLM_CUSTOM_METHODS = {
    "CIRCULAR_BUFFER": "AddCircularBuffer",
    "TFLM_DECODE": "AddDecode",
    "SignalDelay": "AddDelay",
    "TFLite_Detection_PostProcess": "AddDetectionPostprocess",
    "SignalEnergy": "AddEnergy",
    "ethos-u": "AddEthosU",
    "SignalFftAutoScale": "AddFftAutoScale",
    "SignalFilterBank": "AddFilterBank",
    "SignalFilterBankLog": "AddFilterBankLog",
    "SignalFilterBankSquareRoot": "AddFilterBankSquareRoot",
    "SignalFilterBankSpectralSubtraction": "AddFilterBankSpectralSubtraction",
    "SignalFramer": "AddFramer",
    "SignalIrfft": "AddIrfft",
    "SignalOverlapAdd": "AddOverlapAdd",
    "SignalPCAN": "AddPCAN",
    "SignalRfft": "AddRfft",
    "SignalStacker": "AddStacker",
    "SignalWindow": "AddWindow",
}


def _hello_arena() -> ArenaUsage:
    """The figures recorded with the fixture, so the golden header does not move with the
    installed tflite-micro; test_measured_arena covers the measurement itself."""
    ref = json.loads((FIXTURES / "models" / "tflm" / "arena_reference.json").read_text())
    row = next(m for m in ref["models"] if m["model"].endswith("hello_world_int8.tflite"))
    figures = (row[f"arena_{k}_bytes"] for k in ("total", "head", "tail"))
    return ArenaUsage(*figures, log="")


@pytest.fixture(scope="module")
def hello() -> embed.EmbedResult:
    return embed_model(HELLO.read_bytes(), "g_hello", source=str(HELLO), arena=_hello_arena())


def _tool(*names: str) -> str | None:
    return next((p for p in map(shutil.which, names) if p), None)


def _run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))}\n{proc.stdout}\n{proc.stderr}"
    return proc


# --- (a) golden files ----------------------------------------------------------------------------


@pytest.mark.parametrize("file_name", ["g_hello.h", "g_hello.cc", "g_hello_ops.h"])
def test_matches_golden(hello: embed.EmbedResult, file_name: str) -> None:
    golden = GOLDEN / file_name
    if UPDATE_GOLDEN:
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_bytes(hello.files[file_name])
    assert golden.is_file(), f"{golden} missing: run with EDGEQ_UPDATE_GOLDEN=1 once"
    assert hello.files[file_name] == golden.read_bytes(), (
        f"{file_name} differs from {golden}; if the change is intended (an edgeq version bump "
        "changes the first line), check the diff and rerun with EDGEQ_UPDATE_GOLDEN=1"
    )


def test_result_figures(hello: embed.EmbedResult) -> None:
    assert set(hello.files) == {"g_hello.h", "g_hello.cc", "g_hello_ops.h"}
    assert (hello.name, hello.model_len, hello.ops) == ("g_hello", 2704, ("FULLY_CONNECTED",))
    # 1504 measured + 16 + 144 for Helium's kernel sums of the three FC layers (16, 16 and 1
    # outputs, 4 B each, 16-byte units: no target given, so the larger of DSP 0 and Helium 144)
    # + 1024 planner margin
    assert (hello.arena_measured, hello.arena_size) == (1504, 2688)
    header = hello.files["g_hello.h"].decode()
    assert "constexpr unsigned int g_hello_arena_size = 2688;" in header
    assert "head 32 bytes" in header and "tail 1472 bytes" in header


def test_array_holds_the_model(hello: embed.EmbedResult) -> None:
    source = hello.files["g_hello.cc"].decode()
    rows = re.findall(r"^    ((?:0x[0-9a-f]{2}, )*0x[0-9a-f]{2}),$", source, re.MULTILINE)
    assert all(len(r.split(", ")) == 12 for r in rows[:-1]) and 1 <= len(rows[-1].split(", ")) <= 12
    data = bytes(int(b, 16) for r in rows for b in r.split(", "))
    assert data == HELLO.read_bytes()
    assert "alignas(16) const unsigned char g_hello[] = {" in source
    assert "const unsigned int g_hello_len = 2704;" in source


def test_deterministic_and_independent_of_the_model_directory(tmp_path: Path) -> None:
    copy = tmp_path / HELLO.name
    copy.write_bytes(HELLO.read_bytes())
    a = embed_model(HELLO.read_bytes(), "g_hello", source=str(HELLO), arena=_hello_arena())
    b = embed_model(copy.read_bytes(), "g_hello", source=str(copy), arena=_hello_arena())
    assert a.files == b.files


def test_measured_arena(hello: embed.EmbedResult) -> None:
    measured = TFLMRunner(HELLO.read_bytes()).arena
    result = embed_model(HELLO.read_bytes(), "g_hello", source=str(HELLO))
    assert result.arena_measured == measured.total > 0
    from edgeq.formats.cmsis_nn_buffers import kernel_buffers
    from edgeq.formats.tflite import read_model

    extra = kernel_buffers(read_model(HELLO.read_bytes()), None).total
    assert result.arena_size == recommended_arena(measured.total, extra)
    # per core: the DSP build asks for nothing more here, the Helium build for its kernel sums
    dsp = embed_model(HELLO.read_bytes(), "g_hello", arena=measured, cmsis_nn="dsp")
    mve = embed_model(HELLO.read_bytes(), "g_hello", arena=measured, cmsis_nn="mve")
    assert dsp.arena_size == recommended_arena(measured.total) < mve.arena_size
    assert mve.arena_size == result.arena_size
    assert result.files["g_hello.cc"] == hello.files["g_hello.cc"]
    assert result.files["g_hello_ops.h"] == hello.files["g_hello_ops.h"]


def test_registers_each_distinct_op_sorted() -> None:
    model = FIXTURES / "models" / "tflm" / "micro_speech_quantized.tflite"
    result = embed_model(model.read_bytes(), "g_speech", arena=ArenaUsage(7584, 5968, 1616, ""))
    ops_h = result.files["g_speech_ops.h"].decode()
    assert result.ops == ("DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "RESHAPE", "SOFTMAX")
    assert "constexpr int g_speech_op_count = 4;" in ops_h
    calls = re.findall(r"resolver\.(Add\w+)\(\)", ops_h)
    assert calls == ["AddDepthwiseConv2D", "AddFullyConnected", "AddReshape", "AddSoftmax"]


def _hello_with_subgraph_ops(*ops: str) -> bytes:
    """hello_world plus one subgraph per op (a copy of its body running that op), as IF/WHILE
    bodies are stored."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(HELLO.read_bytes(), 0)
    for op in ops:
        code = schema.OperatorCodeT()
        builtin, _, custom = op.partition(":")
        code.builtinCode = getattr(schema.BuiltinOperator, builtin)
        # Codes above 127 keep the int8 legacy field at PLACEHOLDER_FOR_GREATER_OP_CODES.
        code.deprecatedBuiltinCode = min(code.builtinCode, 127)
        code.customCode = custom or None
        code.version = 1
        model.operatorCodes.append(code)
        body = copy.deepcopy(model.subgraphs[0])
        body.operators[0].opcodeIndex = len(model.operatorCodes) - 1
        model.subgraphs.append(body)
    builder = flatbuffers.Builder(0)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def test_ops_of_every_subgraph_are_registered() -> None:
    """IF/WHILE bodies are other subgraphs: their ops need registering too."""
    model = _hello_with_subgraph_ops("RESHAPE", "CUSTOM:ethos-u")
    result = embed_model(model, arena=ArenaUsage(1, 1, 0, ""))
    assert result.ops == ("CUSTOM:ethos-u", "FULLY_CONNECTED", "RESHAPE")
    assert "resolver.AddEthosU()" in result.files["g_model_ops.h"].decode()


def test_every_refused_op_is_named_at_once() -> None:
    model = _hello_with_subgraph_ops("GELU", "CUSTOM:my_op", "RESHAPE")
    with pytest.raises(TargetConstraintError, match="CUSTOM:my_op.*GELU") as err:
        embed_model(model, arena=ArenaUsage(1, 1, 0, ""))
    assert "RESHAPE" not in str(err.value) and "FULLY_CONNECTED" not in str(err.value)


# --- (b) the sources compile on their own --------------------------------------------------------


def _cxx() -> str:
    cxx = _tool("c++", "g++", "clang++")
    if cxx is None:
        pytest.skip("no C++ compiler (c++, g++ or clang++) on PATH (Debian package g++)")
    return cxx


def test_header_and_source_compile_alone(hello: embed.EmbedResult, tmp_path: Path) -> None:
    cxx = _cxx()
    write_outputs(tmp_path / "gen", hello.files, overwrite=False)
    (tmp_path / "only_header.cc").write_text('#include "g_hello.h"\n')
    flags = ["-std=c++17", "-Wall", "-Wextra", "-Werror", "-pedantic", "-I", str(tmp_path / "gen")]
    _run([cxx, *flags, "-c", str(tmp_path / "gen" / "g_hello.cc"), "-o", str(tmp_path / "a.o")])
    _run([cxx, *flags, "-c", str(tmp_path / "only_header.cc"), "-o", str(tmp_path / "b.o")])


def test_ops_header_compiles_against_the_resolver_methods(tmp_path: Path) -> None:
    """A stand-in resolver with exactly TFLM's method names: every generated call must exist."""
    cxx = _cxx()
    model = FIXTURES / "models" / "tflm" / "keyword_scrambled.tflite"
    result = embed_model(model.read_bytes(), "g_kws", arena=ArenaUsage(15152, 672, 14480, ""))
    write_outputs(tmp_path / "gen", result.files, overwrite=False)
    stub = tmp_path / "stub" / "tensorflow" / "lite" / "micro" / "micro_mutable_op_resolver.h"
    stub.parent.mkdir(parents=True)
    methods = sorted({*TFLM_BUILTIN_METHODS.values(), *TFLM_CUSTOM_METHODS.values()})
    stub.write_text(
        "#pragma once\n"
        "typedef enum { kTfLiteOk = 0, kTfLiteError = 1 } TfLiteStatus;\n"
        "namespace tflite {\ntemplate <unsigned int tOpCount>\nclass MicroMutableOpResolver {\n"
        " public:\n  unsigned int added = 0;\n"
        + "".join(
            f"  TfLiteStatus {m}() {{ return ++added <= tOpCount ? kTfLiteOk : kTfLiteError; }}\n"
            for m in methods
        )
        + "};\n}  // namespace tflite\n"
    )
    main = tmp_path / "main.cc"
    main.write_text(
        '#include "g_kws_ops.h"\n'
        "int main() {\n"
        "  tflite::MicroMutableOpResolver<g_kws_op_count> resolver;\n"
        "  return g_kws_register_ops(resolver) == kTfLiteOk && resolver.added == 4 ? 0 : 1;\n"
        "}\n"
    )
    exe = tmp_path / "ops_check"
    _run([cxx, "-std=c++17", "-Wall", "-Werror", "-I", str(tmp_path / "gen"),
          "-I", str(tmp_path / "stub"), str(main), "-o", str(exe)])
    _run([str(exe)])


# --- (c) CMake: edgeq_add_model() and its ctest --------------------------------------------------


def _edgeq_executable() -> Path:
    """The edgeq command CMake runs; EDGEQ_EXECUTABLE overrides the checkout's .venv."""
    return Path(os.environ.get("EDGEQ_EXECUTABLE", ROOT / ".venv" / "bin" / "edgeq"))


def test_cmake_ctest(tmp_path: Path) -> None:
    if shutil.which("cmake") is None or shutil.which("ctest") is None:
        pytest.skip("cmake not installed (Debian package cmake)")
    _cxx()
    edgeq = _edgeq_executable()
    assert edgeq.is_file(), f"{edgeq} not found: install edgeq (bash tools/demo.sh)"
    build = tmp_path / "build"
    _run(["cmake", "-S", str(ROOT), "-B", str(build), f"-DEDGEQ_EXECUTABLE={edgeq}",
          f"-DEDGEQ_TEST_MODEL={HELLO}"])
    _run(["cmake", "--build", str(build)])
    proc = _run(["ctest", "--output-on-failure"], cwd=build)
    assert "100% tests passed" in proc.stdout
    generated = build / "edgeq_test_model" / "g_edgeq_test_model.cc"
    assert "const unsigned int g_edgeq_test_model_len = 2704;" in generated.read_text()

    # The model has not changed: a second build must not run edgeq embed again.
    again = _run(["cmake", "--build", str(build)])
    assert "edgeq embed" not in again.stdout


# --- (d) cross-compile for a Cortex-M4 -----------------------------------------------------------


def test_cross_compiles_for_cortex_m4(hello: embed.EmbedResult, tmp_path: Path) -> None:
    cc = _tool("arm-none-eabi-g++", "arm-none-eabi-gcc")
    size = _tool("arm-none-eabi-size")
    if cc is None or size is None:
        from tests.conftest import REQUIRE_EMULATOR

        if REQUIRE_EMULATOR:  # .ci/run installs it: a missing install step fails, not skips
            pytest.fail("EDGEQ_REQUIRE_EMULATOR=1 and arm-none-eabi-gcc is not installed")
        pytest.skip("arm-none-eabi-gcc not installed (Debian package gcc-arm-none-eabi)")
    write_outputs(tmp_path / "gen", hello.files, overwrite=False)
    obj = tmp_path / "g_hello.o"
    lang = [] if cc.endswith("g++") else ["-x", "c++"]
    _run([cc, *lang, "-std=c++17", "-mcpu=cortex-m4", "-mthumb", "-Os", "-I", str(tmp_path / "gen"),
          "-c", str(tmp_path / "gen" / "g_hello.cc"), "-o", str(obj)])
    sections = dict(
        (m.group(1), int(m.group(2)))
        for m in re.finditer(r"^(\.\S+)\s+(\d+)\s+\d+", _run([size, "-A", str(obj)]).stdout, re.M)
    )
    assert sections.get(".rodata", 0) >= hello.model_len, sections
    # The array must land in flash (.rodata), not be copied to RAM (.data).
    assert sections.get(".data", 0) == 0, sections


# --- (e) values and errors -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "total, expected",
    [
        (0, 1040),  # 0 + 16 + 1024
        (1504, 2544),  # hello_world: 1504 + 16 + 1024
        (10240, 11280),  # 10% is exactly 1024
        (10241, 11296),  # 10241 + 16 + 1025 = 11282, rounded up to 16
        (85264, 93808),  # person_detect: 85264 + 16 + 8527 = 93807, rounded up to 16
    ],
)
def test_recommended_arena(total: int, expected: int) -> None:
    assert recommended_arena(total) == expected
    assert expected % 16 == 0 and expected >= total + 16 + max(1024, total // 10)
    # the device's CMSIS-NN buffers come on top
    assert recommended_arena(total, 4464) == expected + 4464


@pytest.mark.parametrize(
    "op, method",
    [
        ("UNIDIRECTIONAL_SEQUENCE_LSTM", "AddUnidirectionalSequenceLSTM"),
        ("SPACE_TO_BATCH_ND", "AddSpaceToBatchNd"),
        ("BATCH_TO_SPACE_ND", "AddBatchToSpaceNd"),
        ("GATHER_ND", "AddGatherNd"),
        ("L2_NORMALIZATION", "AddL2Normalization"),
        ("L2_POOL_2D", "AddL2Pool2D"),
        ("PRELU", "AddPrelu"),
        ("PADV2", "AddPadV2"),
        ("SPLIT_V", "AddSplitV"),
        ("SELECT_V2", "AddSelectV2"),
        ("REVERSE_V2", "AddReverseV2"),
        ("ADD_N", "AddAddN"),
        ("BATCH_MATMUL", "AddBatchMatMul"),
        ("LOG_SOFTMAX", "AddLogSoftmax"),
        ("HARD_SWISH", "AddHardSwish"),
        ("LEAKY_RELU", "AddLeakyRelu"),
        ("RELU6", "AddRelu6"),
        ("CONV_2D", "AddConv2D"),
        ("DEPTHWISE_CONV_2D", "AddDepthwiseConv2D"),
        ("AVERAGE_POOL_2D", "AddAveragePool2D"),
        ("MAX_POOL_2D", "AddMaxPool2D"),
        ("TRANSPOSE_CONV", "AddTransposeConv"),
        ("FULLY_CONNECTED", "AddFullyConnected"),
        ("SVDF", "AddSvdf"),
        ("ARG_MAX", "AddArgMax"),
        ("CUSTOM:ethos-u", "AddEthosU"),
        ("CUSTOM:TFLite_Detection_PostProcess", "AddDetectionPostprocess"),
    ],
)
def test_resolver_method(op: str, method: str) -> None:
    assert resolver_method(op) == method


def test_resolver_table_matches_the_tflm_header() -> None:
    """Every builtin the header registers maps to its method; every other builtin is refused."""
    assert embed._TFLM_BUILTIN_METHODS == frozenset(TFLM_BUILTIN_METHODS.values())
    for op, method in TFLM_BUILTIN_METHODS.items():
        assert resolver_method(op) == method, op
    for code, method in TFLM_CUSTOM_METHODS.items():
        assert resolver_method(f"CUSTOM:{code}") == method, code
    assert set(TFLM_BUILTIN_METHODS) <= set(builtin_op_names())
    for op in sorted(set(builtin_op_names()) - set(TFLM_BUILTIN_METHODS)):
        with pytest.raises(TargetConstraintError, match=op):
            resolver_method(op)


def test_the_installed_tflm_runtime_has_a_kernel_for_every_method() -> None:
    """Cross-check the header list against the tflite-micro package edgeq verifies with."""
    nm = shutil.which("nm")
    runtime = next(Path(__import__("tflite_micro").__file__).parent.rglob("_runtime*.so"), None)
    if nm is None or runtime is None:
        pytest.skip("nm (binutils) or the tflite-micro runtime library not found")
    symbols = subprocess.run([nm, "-C", str(runtime)], capture_output=True, text=True).stdout
    kernels = set(re.findall(r"Register_([A-Z0-9_]+)\(", symbols))
    if not kernels:
        pytest.skip(f"{runtime.name} has no symbol table")
    assert set(TFLM_BUILTIN_METHODS) - kernels == set()
    assert (kernels & set(builtin_op_names())) - set(TFLM_BUILTIN_METHODS) == set()


@pytest.mark.parametrize("op", ["GELU", "REDUCE_PROD", "STABLEHLO_ADD", "CUSTOM:edgetpu-custom-op"])
def test_ops_tflm_cannot_register(op: str) -> None:
    with pytest.raises(TargetConstraintError, match="TFLite Micro has no"):
        resolver_method(op)


def test_custom_op_model_is_refused() -> None:
    model = FIXTURES / "models" / "coral" / "split_concat_edgetpu.tflite"
    with pytest.raises(TargetConstraintError, match="edgetpu-custom-op.*no registration"):
        embed_model(model.read_bytes(), arena=ArenaUsage(1, 1, 0, ""))


@pytest.mark.parametrize("name", ["", "1model", "g-model", "g model", "class", "g_model.h", "é"])
def test_invalid_name(name: str) -> None:
    with pytest.raises(UsageError, match="--name .* not a valid C\\+\\+ identifier"):
        embed_model(HELLO.read_bytes(), name, arena=_hello_arena())


def test_not_a_tflite_file() -> None:
    with pytest.raises(ModelFileError, match="weights.h5.*not a TFLite flatbuffer"):
        embed_model(b"\x89HDF\r\n\x1a\n" + bytes(64), source="weights.h5")



# --- (e) CMake from the installed wheel, in a project outside the checkout ------------------------


@pytest.fixture(scope="module")
def installed_wheel(tmp_path_factory) -> Path:
    """edgeq built as a wheel and installed (not editable) in a fresh venv: what `pip install
    .` gives a user. Its dependencies come from this interpreter's site-packages through a .pth
    (they are not what is tested; edgeq's own files, the CMake helpers among them, are)."""
    import site
    import sys

    if shutil.which("cmake") is None:
        pytest.skip("cmake not installed (Debian package cmake)")
    work = tmp_path_factory.mktemp("wheel")
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(work / "dist"),
          str(ROOT)])
    venv = work / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    wheel = next((work / "dist").glob("edgeq-*.whl"))
    _run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q",
          "--no-deps", str(wheel)])
    deps = []
    for d in site.getsitepackages():
        deps.append(d)
        for pth in Path(d).glob("*.pth"):  # e.g. a worktree's link to its main venv
            for line in pth.read_text().splitlines():
                if line.startswith("/") and Path(line).is_dir() and Path(line) != ROOT:
                    deps.append(line)
    purelib = Path(subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()"
         "['purelib'])"], capture_output=True, text=True, check=True).stdout.strip())
    (purelib / "zz_edgeq_test_deps.pth").write_text("\n".join(deps) + "\n")
    return venv


_USER_PROJECT = """cmake_minimum_required(VERSION 3.16)
project(user_firmware LANGUAGES CXX)
include("${EDGEQ_CMAKE_DIR}/EdgeqEmbed.cmake")
edgeq_add_model(kws_model MODEL "${MODEL}" NAME g_user TARGET cortex-m4)
add_executable(app main.cc)
target_link_libraries(app PRIVATE kws_model)
"""
_USER_MAIN = """#include <cstdio>
#include "g_user.h"
int main() { std::printf("%u %u\\n", g_user_len, g_user_arena_size); return 0; }
"""


def test_cmake_project_outside_the_checkout_uses_the_installed_wheel(
        installed_wheel: Path, tmp_path: Path) -> None:
    """The README's snippet, as a pip user runs it: the CMake helpers come from the installed
    wheel (`edgeq embed --cmake-dir`), and the edgeq that runs is the one on PATH, or the one
    EDGEQ_EXECUTABLE names."""
    _cxx()
    bindir = installed_wheel / "bin"
    env = {k: v for k, v in os.environ.items() if k not in ("EDGEQ_TARGETS_DIR", "PYTHONPATH")}
    env["PATH"] = f"{bindir}{os.pathsep}{env['PATH']}"
    cmake_dir = _run([str(bindir / "edgeq"), "embed", "--cmake-dir"], env=env,
                     cwd=tmp_path).stdout.strip()
    assert Path(cmake_dir, "EdgeqEmbed.cmake").is_file()
    assert not Path(cmake_dir).resolve().is_relative_to(ROOT), cmake_dir  # from the wheel
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "CMakeLists.txt").write_text(_USER_PROJECT)
    (proj / "main.cc").write_text(_USER_MAIN)
    size = HELLO.stat().st_size

    # 1. edgeq from PATH.
    build = tmp_path / "build"
    _run(["cmake", "-S", str(proj), "-B", str(build), f"-DEDGEQ_CMAKE_DIR={cmake_dir}",
          f"-DMODEL={HELLO}"], env=env, cwd=tmp_path)
    cache = (build / "CMakeCache.txt").read_text()
    assert f"EDGEQ_EXECUTABLE:FILEPATH={bindir / 'edgeq'}" in cache
    _run(["cmake", "--build", str(build)], env=env, cwd=tmp_path)
    length, arena = map(int, _run([str(build / "app")]).stdout.split())
    assert length == size and arena > 0

    # 2. EDGEQ_EXECUTABLE given, no edgeq on PATH at all.
    bare = dict(env, PATH=os.pathsep.join(p for p in env["PATH"].split(os.pathsep)
                                          if not (Path(p) / "edgeq").exists()))
    build2 = tmp_path / "build2"
    _run(["cmake", "-S", str(proj), "-B", str(build2), f"-DEDGEQ_CMAKE_DIR={cmake_dir}",
          f"-DMODEL={HELLO}", f"-DEDGEQ_EXECUTABLE={bindir / 'edgeq'}"], env=bare, cwd=tmp_path)
    _run(["cmake", "--build", str(build2)], env=bare, cwd=tmp_path)
    assert _run([str(build2 / "app")]).stdout.split() == [str(length), str(arena)]

    # 3. Neither: configure fails, naming the fix.
    proc = subprocess.run(["cmake", "-S", str(proj), "-B", str(tmp_path / "build3"),
                           f"-DEDGEQ_CMAKE_DIR={cmake_dir}", f"-DMODEL={HELLO}"],
                          env=bare, cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode != 0 and "EDGEQ_EXECUTABLE" in proc.stderr
