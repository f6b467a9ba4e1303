"""Issue 22, items 1 and 5: names from files are data wherever they go, and a model whose
weights TFLite Micro would not read is refused for it.

- embed: a model file name with a line break, CR, `*/`, `"`, `\\`, `??/` or any control
  character gives C++ that compiles to the same object code as a plain name (host g++ and
  arm-none-eabi-g++), so no name becomes code;
- CMake: edgeq_add_model() with such a globbed model stops at configure time; the recipe the
  name carries never runs (its marker file stays absent);
- the terminal: ESC/BEL sequences shown escaped, rich markup (`[/]`) never applied, a custom-op
  code with line breaks keeps the error on one line (model path, data path, tensor names, op
  codes);
- report.md: a model named like an HTML tag and a table row cannot forge either;
- labels: a class folder or --labels line with a line break is refused with exit 2;
- a Keras layer named `dense 1` (TensorFlow cannot trace the scope): exit 2 naming it;
- weights after the flatbuffer (Buffer.offset/size): exit 3 for TFLite Micro targets, while
  LiteRT targets still read the model.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from edgeq.cli import main
from tests.conftest import EXAMPLE, FIXTURES, ROOT

HELLO = FIXTURES / "models" / "tflm" / "hello_world_int8.tflite"
DIGITS = EXAMPLE / "digits_cnn.keras"
DIGITS_DATA = EXAMPLE / "digits_calibration.npz"
INJECT = 'extern "C" int edgeq_injected() { return 42; }'
# A name that ends a comment, a string or a line in every way C/C++ has, and drives a terminal.
HOSTILE_FILE_NAMES = {
    "newline": f"m\n{INJECT}\n",
    "cr": f"m\r{INJECT}\r",
    "comment-end": f"m*/ {INJECT} /*",
    "quote": f'm" {INJECT} "',
    "backslash": "m\\",  # a '\' at a line end continues a // comment onto the next line
    "trigraph": "m??/",  # ??/ is '\' where trigraphs are on (-std=c++11 -trigraphs)
    "controls": "m" + "".join(chr(c) for c in range(1, 32) if c != 10) + "\x7f",
    "escape-sequences": "m\x1b]0;TITLE\x07\x1b[2J[/]",
}
ESC_OR_BEL = re.compile("[\x07\x1b\x9b]")


def run(capture, *args: str) -> tuple[int, str, str]:
    """The CLI in this process. With capfd the progress lines (written to a duplicate of
    descriptor 2) are seen too; capsys is for runs that import TensorFlow, whose native start-up
    log goes to descriptor 2 as well."""
    code = main([str(a) for a in args])
    captured = capture.readouterr()
    return code, captured.out, captured.err


def one_error_line(err: str, code: int, status: int) -> str:
    assert code == status, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line, got:\n{err}"
    assert lines[0].startswith("edgeq: error: ") and "internal error" not in lines[0]
    assert not ESC_OR_BEL.search(err), "a control sequence reached the terminal"
    return lines[0]


# --- embed: the file name never becomes code -----------------------------------------------------


def _embed(tmp_path: Path, capfd, file_name: str) -> Path:
    model = tmp_path / "in" / f"{file_name}.tflite"
    model.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(HELLO, model)
    out = tmp_path / "gen"
    code, stdout, err = run(capfd, "embed", model, "--out", out, "--name", "g_model")
    assert code == 0, err
    assert not ESC_OR_BEL.search(stdout + err)
    return out


_STUB_RESOLVER = """#pragma once
typedef enum { kTfLiteOk = 0, kTfLiteError = 1 } TfLiteStatus;
namespace tflite {
template <unsigned int tOpCount>
class MicroMutableOpResolver {
 public:
  TfLiteStatus AddFullyConnected() { return kTfLiteOk; }
};
}  // namespace tflite
"""
_USE_OPS = """#include "g_model.h"
#include "g_model_ops.h"
int edgeq_register(tflite::MicroMutableOpResolver<g_model_op_count>& r) {
  return g_model_register_ops(r) + static_cast<int>(g_model_arena_size);
}
"""


def _objects(gen: Path, compiler: list[str]) -> dict[str, bytes]:
    """g_model.cc and a unit using both headers, compiled in `gen` with relative paths (so the
    objects' file symbols match), as bytes."""
    stub = gen / "stub" / "tensorflow" / "lite" / "micro" / "micro_mutable_op_resolver.h"
    stub.parent.mkdir(parents=True, exist_ok=True)
    stub.write_text(_STUB_RESOLVER)
    (gen / "use_ops.cc").write_text(_USE_OPS)
    out = {}
    for src in ("g_model.cc", "use_ops.cc"):
        obj = src.replace(".cc", ".o")
        proc = subprocess.run([*compiler, "-std=c++11", "-trigraphs", "-Wall", "-Werror",
                               "-I.", "-Istub", "-c", src, "-o", obj],
                              cwd=gen, capture_output=True, text=True, check=False)
        assert proc.returncode == 0, proc.stderr
        out[obj] = (gen / obj).read_bytes()
    return out


def _compilers() -> list[list[str]]:
    found = []
    if shutil.which("g++"):
        found.append(["g++", "-O1"])
    if shutil.which("arm-none-eabi-g++"):
        found.append(["arm-none-eabi-g++", "-mcpu=cortex-m4", "-mthumb", "-Os"])
    if not found:
        pytest.skip("neither g++ nor arm-none-eabi-g++ is installed (Debian g++, "
                    "gcc-arm-none-eabi)")
    return found


@pytest.fixture(scope="module")
def plain_embed(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("plain")
    code = main(["embed", str(HELLO), "--out", str(tmp / "gen"), "--name", "g_model"])
    assert code == 0
    return tmp / "gen"


@pytest.mark.parametrize("case", sorted(HOSTILE_FILE_NAMES))
def test_embed_file_name_compiles_to_the_plain_object_code(case, plain_embed, tmp_path, capfd):
    gen = _embed(tmp_path, capfd, HOSTILE_FILE_NAMES[case])
    for name in ("g_model.h", "g_model.cc", "g_model_ops.h"):
        text, plain = (gen / name).read_text(), (plain_embed / name).read_text()
        # Only the first comment line may differ, and it stays one line.
        assert text.split("\n")[1:] == plain.split("\n")[1:], name
        first = text.split("\n")[0]
        assert first.startswith("// Generated by edgeq ") and first.endswith(". Do not edit.")
        assert not re.search(r"[\x00-\x1f\x7f\\]$", first.removesuffix(". Do not edit."))
    for compiler in _compilers():
        got, want = _objects(gen, compiler), _objects(plain_embed, compiler)
        assert got == want, f"{compiler[0]}: the file name changed the object code"
        assert b"edgeq_injected" not in b"".join(got.values())


@pytest.mark.slow
def test_emulate_firmware_ignores_the_file_name(tmp_path, capsys):
    """emulate embeds the model through the same sources: a name carrying a function and an
    #error line builds the same firmware image as a plain name (QEMU, TFLM tree, cached)."""
    import json

    from edgeq.emulator.toolchain import cache_dir, find_toolchain
    from edgeq.errors import MissingDependencyError

    try:
        tool = find_toolchain()
    except MissingDependencyError as exc:
        pytest.skip(str(exc))
    objcopy = shutil.which("arm-none-eabi-objcopy")
    if objcopy is None:
        pytest.skip("arm-none-eabi-objcopy not installed (Debian binutils-arm-none-eabi)")
    tree = FIXTURES.parent / "third_party" / "tflm_tree_cmsis_nn.tar.gz"
    images = []
    for name in ("plain", f"m\n{INJECT}\n#error injected\n"):
        model = tmp_path / f"{len(images)}" / f"{name}.tflite"
        model.parent.mkdir()
        shutil.copyfile(HELLO, model)
        code, out, err = run(capsys, "emulate", model, "--target", "cortex-m4", "--tflm-tree",
                             tree, "--eval-samples", "2", "--json")
        assert code == 0, err
        key = json.loads(out)["emulator"]["toolchain"]["firmware"]
        elf = cache_dir() / "emulator" / "fw" / key / "firmware.elf"
        symbols = subprocess.run([tool.nm, str(elf)], capture_output=True, text=True,
                                 check=True).stdout
        assert "edgeq_injected" not in symbols
        image = tmp_path / f"{len(images)}.bin"
        subprocess.run([objcopy, "-O", "binary", str(elf), str(image)], check=True)
        images.append(image.read_bytes())
    assert images[0] == images[1]


# --- CMake: a model path that would write build steps stops at configure time -------------------


@pytest.mark.parametrize("model_name", [
    "m\n\t>INJECTED_BY_MAKE\nY:x.tflite",  # a line break starts a recipe line in the Makefile
    "m$(shell touch INJECTED_BY_MAKE).tflite",  # make's own expansion
    "m;$(touch INJECTED_BY_MAKE).tflite",  # CMake's list separator, then a shell substitution
])
def test_cmake_refuses_a_model_path_that_would_run(model_name, tmp_path):
    if shutil.which("cmake") is None or shutil.which("make") is None:
        pytest.skip("cmake/make not installed (Debian packages cmake, make)")
    src, build = tmp_path / "src", tmp_path / "build"
    (src / "models").mkdir(parents=True)
    shutil.copyfile(HELLO, src / "models" / model_name)
    (src / "models" / "m").write_bytes(HELLO.read_bytes())  # the first line's prerequisite
    (src / "CMakeLists.txt").write_text(
        "cmake_minimum_required(VERSION 3.16)\nproject(fw LANGUAGES CXX)\n"
        f'include("{ROOT}/cmake/EdgeqEmbed.cmake")\n'
        'file(GLOB models "${CMAKE_CURRENT_SOURCE_DIR}/models/*.tflite")\n'
        "foreach(m IN LISTS models)\n  edgeq_add_model(model MODEL \"${m}\")\nendforeach()\n")
    edgeq = ROOT / ".venv" / "bin" / "edgeq"
    conf = subprocess.run(["cmake", "-S", src, "-B", build, f"-DEDGEQ_EXECUTABLE={edgeq}"],
                          capture_output=True, text=True, timeout=300, check=False)
    assert conf.returncode != 0
    assert "holds a control character or one of" in conf.stderr, conf.stderr
    assert "edgeq_add_model(model): MODEL" in conf.stderr
    assert not (build / "Makefile").exists(), "nothing is generated"
    made = subprocess.run(["make", "-C", build], capture_output=True, text=True, timeout=300, check=False)
    assert made.returncode != 0
    assert not list(tmp_path.rglob("INJECTED_BY_MAKE")), "the injected recipe ran"


def test_cmake_keeps_plain_paths_with_spaces_and_utf8(tmp_path):
    if shutil.which("cmake") is None:
        pytest.skip("cmake not installed (Debian package cmake)")
    src = tmp_path / "my project é"
    (src / "models").mkdir(parents=True)
    shutil.copyfile(HELLO, src / "models" / "kws v1.2+b~c,d@e.tflite")
    (src / "CMakeLists.txt").write_text(
        "cmake_minimum_required(VERSION 3.16)\nproject(fw LANGUAGES CXX)\n"
        f'include("{ROOT}/cmake/EdgeqEmbed.cmake")\n'
        'edgeq_add_model(model MODEL "models/kws v1.2+b~c,d@e.tflite")\n')
    conf = subprocess.run(["cmake", "-S", src, "-B", tmp_path / "build",
                           f"-DEDGEQ_EXECUTABLE={ROOT / '.venv' / 'bin' / 'edgeq'}"],
                          capture_output=True, text=True, timeout=300, check=False)
    assert conf.returncode == 0, conf.stderr


# --- the terminal: names shown as data, on one line ----------------------------------------------

BAD_CODE = "x\n\x1b]0;TITLE\x07\x1b[2J[/]edgeq: verify passed (FORGED LINE)\r\n"


def _hostile_tflite(path: Path, custom_code: str | None) -> Path:
    """hello_world with tensor names holding markup and ESC, and optionally its first op code
    made a custom op with the code given."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    m = schema.ModelT.InitFromPackedBuf(HELLO.read_bytes(), 0)
    for t in m.subgraphs[0].tensors:
        t.name = b"t[/]\x1b[31m" + t.name
    if custom_code is not None:
        code = m.operatorCodes[0]
        code.builtinCode = code.deprecatedBuiltinCode = schema.BuiltinOperator.CUSTOM
        code.customCode = custom_code
    fb = flatbuffers.Builder(0)
    fb.Finish(m.Pack(fb), file_identifier=b"TFL3")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(fb.Output()))
    return path


def test_terminal_custom_op_code_and_tensor_names(tmp_path, capfd):
    model = _hostile_tflite(tmp_path / "d[" / "]m\x1b[2J.tflite", BAD_CODE)
    code, out, err = run(capfd, "inspect", model)
    assert code == 0, err
    assert not ESC_OR_BEL.search(out + err)
    assert "t[/]\\x1b[31mserving_default" in out and "TITLE\\x07" in out
    assert "FORGED LINE)\\r\\n" in out and "\nedgeq: verify passed" not in out

    code, out, err = run(capfd, "analyze", model, "--target", "cortex-m4")
    line = one_error_line(err, code, 3)
    assert "CUSTOM:x\\n\\x1b]0;TITLE\\x07\\x1b[2J[/]edgeq: verify passed (FORGED LINE)" in line
    assert not ESC_OR_BEL.search(out) and "MarkupError" not in out + err

    code, out, err = run(capfd, "embed", model, "--out", tmp_path / "gen")
    line = one_error_line(err, code, 3)
    assert "custom op 'x\\n\\x1b]0;TITLE" in line


def test_terminal_model_and_data_paths_with_markup(tmp_path, capfd):
    model = _hostile_tflite(tmp_path / "m[" / "]hello\x1b]0;T\x07.tflite", None)
    data = tmp_path / "d[" / "]x\x1b[31m.npz"
    data.parent.mkdir()
    x = np.linspace(-1.0, 1.0, 32, dtype=np.float32).reshape(-1, 1)
    np.savez(data, x=x, y=np.zeros(len(x), dtype=np.int64))
    code, out, err = run(capfd, "analyze", model, "--target", "cortex-m4")
    assert code == 0, err
    assert "hello\\x1b]0;T\\x07.tflite on cortex-m4" in out and not ESC_OR_BEL.search(out + err)
    code, out, err = run(capfd, "verify", model, "--target", "cortex-m4", "--eval-data", data,
                         "--no-latency")
    assert code == 0, err
    assert "m[/]hello\\x1b]0;T\\x07.tflite" in out and not ESC_OR_BEL.search(out + err)
    missing = tmp_path / "d[" / "]none\x1b[2J.npz"
    code, out, err = run(capfd, "verify", model, "--target", "cortex-m4", "--eval-data", missing,
                         "--no-latency")
    assert "]none\\x1b[2J.npz" in one_error_line(err, code, 2)


# The real entry point (`python -m edgeq`: entry, supervisor, isolated children), run in a child
# of a fresh wrapper as tests/e2e/test_bombs.py does, which prints its time and peak memory (-s);
# stdout and stderr are checked as raw bytes.
_MEASURE = """
import json, resource, subprocess, sys, time
t0 = time.monotonic()
proc = subprocess.run(sys.argv[1:], capture_output=True, timeout=300)
print(json.dumps({"code": proc.returncode, "out": proc.stdout.decode("utf-8", "replace"),
                  "err": proc.stderr.decode("utf-8", "replace"),
                  "seconds": time.monotonic() - t0,
                  "peak_kib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))
"""


def _measured(*argv) -> dict:
    import json
    import os
    import sys

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    out = subprocess.run([sys.executable, "-c", _MEASURE, sys.executable, "-m", "edgeq",
                          *map(str, argv)], capture_output=True, text=True, timeout=400,
                         env=env, check=True)
    result = json.loads(out.stdout)
    print(f"\n{argv[0]}: exit {result['code']}, {result['seconds']:.1f} s, peak "
          f"{result['peak_kib'] / 1024:.0f} MiB")
    return result


def test_entry_point_keeps_hostile_names_on_one_escaped_line(tmp_path):
    model = _hostile_tflite(tmp_path / "d[" / "]m\x1b[2J.tflite", BAD_CODE)
    for argv, status in ((["analyze", model, "--target", "cortex-m4"], 3),
                         (["inspect", model], 0),
                         (["embed", model, "--out", tmp_path / "gen"], 3)):
        r = _measured(*argv)
        assert r["code"] == status, r["err"]
        assert not ESC_OR_BEL.search(r["out"] + r["err"]) and "MarkupError" not in r["err"]
        if status:
            lines = [line for line in r["err"].splitlines() if line.strip()]
            assert len(lines) == 1 and lines[0].startswith("edgeq: error: "), r["err"]
            assert "CUSTOM:x\\n\\x1b]0;TITLE" in lines[0] or "custom op 'x\\n" in lines[0]


def test_click_usage_errors_escape_the_value(capfd):
    code, _, err = run(capfd, "convert", "m.keras", "--target", "cortex-m4", "--data", "d.npz",
                       "--method", "x\x1b]0;TITLE\x07\ny")
    assert code == 2 and not ESC_OR_BEL.search(err) and "x\\x1b]0;TITLE\\x07\\ny" in err


# --- a Keras convert: report.md, the terminal, class folders and layer names ---------------------

FORGED_NAME = "<img src=x onerror=alert(1)>| top-1 float → quantized | 99.99% (FORGED) |"


def test_convert_report_and_terminal_treat_names_as_data(tmp_path, capfd):
    model = tmp_path / "m[" / f"]{FORGED_NAME}\x1b]0;T\x07.keras"
    model.parent.mkdir()
    shutil.copyfile(DIGITS, model)
    data = tmp_path / "d[" / "]calib\x1b[31m.npz"
    data.parent.mkdir()
    shutil.copyfile(DIGITS_DATA, data)
    out_dir = tmp_path / "out"
    code, out, err = run(capfd, "convert", model, "--target", "cortex-m4", "--data", data,
                         "--input-scale", "1/16", "--out", out_dir, "--no-latency")
    assert code == 0, err
    assert not ESC_OR_BEL.search(out + err) and "MarkupError" not in err
    assert "(FORGED) |\\x1b]0;T\\x07.keras → cortex-m4" in out  # the table title, as data
    md = (out_dir / "report.md").read_text()
    assert not re.search(r"(?<!\\)<img", md) and "\x1b" not in md  # only as escaped text
    assert md.splitlines()[0].startswith("# edgeq report: ") and "\\<img src=x" in md
    # Every row of the summary table has exactly its two cells: no row is forged.
    start = md.index("| | |")
    for row in md[start:].split("\n\n")[0].splitlines():
        assert len(re.findall(r"(?<!\\)\|", row)) == 3, row
    assert not any("(FORGED)" in row and not row.startswith(("| output |", "# "))
                   for row in md.splitlines())


def _png_folders(root: Path, names: list[str]) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for name in names:
        (root / name).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 16, (8, 8), dtype=np.uint8)).save(
                root / name / f"{i}.png")
    return root


def test_class_folder_with_a_line_break_is_refused(tmp_path, capsys):
    names = [f"c{i}" for i in range(10)]
    names[3] = "c3\nINJECTED-LABEL"
    images = _png_folders(tmp_path / "images", names)
    out_dir = tmp_path / "app"
    code, _, err = run(capsys, "convert", DIGITS, "--target", "android-arm64", "--data", images,
                       "--input-scale", "1/16", "--out", out_dir, "--no-latency", "--json")
    line = one_error_line(err, code, 2)
    assert "class folder 'c3\\nINJECTED-LABEL'" in line and "control character" in line
    assert not out_dir.exists()


@pytest.mark.parametrize("bad", ["c3\rINJECTED", "c3\x0bINJECTED", "c3\u2028INJECTED",
                                 "c3\x1b[2J"])
def test_labels_file_with_a_line_break_is_refused(bad, tmp_path, capsys):
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join([*(f"c{i}" for i in range(3)), bad,
                                 *(f"c{i}" for i in range(4, 10))]) + "\n", newline="")
    out_dir = tmp_path / "app"
    code, _, err = run(capsys, "convert", DIGITS, "--target", "android-arm64", "--data",
                       DIGITS_DATA, "--input-scale", "1/16", "--out", out_dir, "--no-latency",
                       "--labels", labels, "--json")
    line = one_error_line(err, code, 2)
    assert "label 3 'c3" in line and "control character" in line
    assert not out_dir.exists()


def test_labels_file_with_crlf_line_ends_is_read(tmp_path):
    from edgeq.outputs.android import read_labels

    labels = tmp_path / "labels.txt"
    labels.write_bytes(b"cat\r\ndog\r\n\r\n")
    assert read_labels(labels) == ("cat", "dog")


def test_layer_name_tensorflow_cannot_trace_is_named(tmp_path, capsys):
    import keras

    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4, name="dense 1"),
                              keras.layers.Dense(3, activation="softmax")])
    path = tmp_path / "spaced.keras"
    model.save(path)
    data = tmp_path / "x.npz"
    np.savez(data, x=np.random.default_rng(0).random((16, 8), dtype=np.float32))
    code, _, err = run(capsys, "convert", path, "--target", "cortex-m4", "--data", data,
                       "--out", tmp_path / "out", "--no-latency", "--json")
    line = one_error_line(err, code, 2)
    assert "layer name 'dense 1'" in line and "rename the layer (e.g. 'dense_1')" in line


# --- weights after the flatbuffer: TFLite Micro does not read them -------------------------------


def _with_offset_buffers(src: bytes) -> bytes:
    """The same model with every constant buffer's bytes moved after the flatbuffer
    (Buffer.offset/size, as the TFLite converter writes models over 2 GB), 16-byte aligned."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    m = schema.ModelT.InitFromPackedBuf(src, 0)
    moved = []
    for b in m.buffers:
        if b.data is not None and len(b.data):
            moved.append((b, np.asarray(b.data, dtype=np.uint8).tobytes()))
            b.data, b.offset, b.size = None, 1, len(moved[-1][1])  # placeholders, same layout

    def pack() -> bytes:
        fb = flatbuffers.Builder(0)
        fb.Finish(m.Pack(fb), file_identifier=b"TFL3")
        return bytes(fb.Output())

    head = pack()
    start = -(-len(head) // 16) * 16
    tail = bytearray()
    for b, data in moved:
        b.offset = start + len(tail)
        tail += data + bytes(-len(data) % 16)
    final = pack()
    assert len(final) == len(head)
    return final + bytes(start - len(final)) + bytes(tail)


@pytest.fixture(scope="module")
def offset_model(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("offset") / "hello_offset.tflite"
    path.write_bytes(_with_offset_buffers(HELLO.read_bytes()))
    return path


def test_tflm_ignores_offset_buffers_but_litert_reads_them(offset_model):
    """Why the refusal exists: on this layout LiteRT computes the model, TFLite Micro does not
    (if a TFLM release starts reading Buffer.offset, this fails and the refusal can go)."""
    from ai_edge_litert.interpreter import Interpreter
    from tflite_micro.python.tflite_micro import runtime

    x = np.arange(-128, 128, 32, dtype=np.int8).reshape(-1, 1, 1)

    def outputs(data: bytes) -> tuple[list[int], list[int]]:
        lite = Interpreter(model_content=data)
        lite.allocate_tensors()
        micro = runtime.Interpreter.from_bytes(data, arena_size=1 << 16)
        a, b = [], []
        for v in x:
            lite.set_tensor(lite.get_input_details()[0]["index"], v)
            lite.invoke()
            a.append(int(lite.get_tensor(lite.get_output_details()[0]["index"]).ravel()[0]))
            micro.set_input(v, 0)
            micro.invoke()
            b.append(int(micro.get_output(0).ravel()[0]))
        return a, b

    inline_lite, inline_micro = outputs(HELLO.read_bytes())
    offset_lite, offset_micro = outputs(offset_model.read_bytes())
    assert inline_lite == inline_micro == offset_lite
    assert offset_micro != inline_micro


def test_offset_buffers_refused_for_tflm_targets(offset_model, tmp_path, capfd):
    data = tmp_path / "x.npz"
    x = np.linspace(-1.0, 1.0, 32, dtype=np.float32).reshape(-1, 1)
    np.savez(data, x=x, y=np.zeros(len(x), dtype=np.int64))
    for argv in (["analyze", offset_model, "--target", "cortex-m4"],
                 ["analyze", offset_model, "--target", "ethos-u55-128"],
                 ["verify", offset_model, "--target", "cortex-m4", "--eval-data", data,
                  "--no-latency"],
                 ["embed", offset_model, "--out", tmp_path / "gen"],
                 # refused before the toolchain or the tree is looked for
                 ["emulate", offset_model, "--target", "cortex-m4", "--tflm-tree",
                  tmp_path / "no_tree"]):
        code, out, err = run(capfd, *argv)
        line = one_error_line(err, code, 3)
        assert "8 buffer(s) (2, 3, 4, 5, 6, ...) store their bytes after the flatbuffer" in line
        assert "TFLite Micro reads only Buffer.data" in line and "top-1" not in out
    assert not (tmp_path / "gen").exists()
    # LiteRT reads the layout: the CPU target still analyzes it.
    code, out, err = run(capfd, "analyze", offset_model, "--target", "arm-cpu")
    assert code == 0, err
