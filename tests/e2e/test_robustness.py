"""Robustness (issue 8): malformed models, crashing or hanging native code, hostile Keras and
data files, interrupted conversions. Every bad input ends in one `edgeq: error:` line and
exit 2; nothing takes the process down."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from edgeq.cli import main
from tests.conftest import FIXTURES, ROOT
from tests.fuzz_tflite import mutate, targets

FUZZ_MODELS = ("tflm/hello_world_int8", "coral/split_concat", "tflm/micro_speech_quantized",
               "coral/keras_lstm_mnist_ptq", "mlperf_tiny/kws_dscnn_int8_reference")
FUZZ_TARGETS = ("cortex-m4", "coral")
FUZZ_SEED = 8
FUZZ_BUDGET_S = 30.0  # in-process part; mutants are drawn until it is spent
FUZZ_MIN_MUTANTS = 60


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return env


FUZZ_COMMANDS = ("analyze", "inspect", "verify")


def _mutants(seed: int):
    rng = random.Random(seed)
    sources = {name: (FIXTURES / "models" / f"{name}.tflite").read_bytes() for name in FUZZ_MODELS}
    spots = {name: targets(data) for name, data in sources.items()}
    while True:
        name = rng.choice(FUZZ_MODELS)
        kind, data = mutate(sources[name], rng, spots[name])
        yield name, kind, data, rng.choice(FUZZ_TARGETS)


def _eval_data(tmp_path, name: str) -> str:
    """Four labelled samples shaped like the original model's input, for `edgeq verify`."""
    from edgeq.formats.tflite import read_model_file

    out = tmp_path / f"{name.replace('/', '_')}_eval.npz"
    if not out.exists():
        shape = read_model_file(FIXTURES / "models" / f"{name}.tflite").input_tensors[0].shape
        x = np.random.default_rng(0).uniform(0, 1, (4, *shape[1:])).astype(np.float32)
        np.savez(out, x=x, y=np.zeros(4, dtype=np.int64))
    return str(out)


def _command(command: str, path, target: str, eval_data: str) -> list[str]:
    if command == "inspect":
        return ["inspect", str(path), "--json"]
    if command == "verify":
        return ["verify", str(path), "--target", target, "--eval-data", eval_data,
                "--no-latency", "--json"]
    return ["analyze", str(path), "--target", target, "--json"]


def _check_outcome(code: int, err: str, what: str) -> None:
    assert code in (0, 2, 3), f"{what}: exit {code}\n{err}"
    if code != 0:
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("edgeq: error: "), f"{what}:\n{err}"
        assert "Traceback" not in err


def test_fuzz_analyze_inspect_verify_in_process(tmp_path, capsys):
    """Mutated fixtures through `main()` with analyze, inspect and verify; interpreters run in
    a child, so a native crash is an exit-2 answer here, never a dead pytest."""
    outcomes: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    commands: Counter[str] = Counter()
    start = time.monotonic()
    n = 0
    pick = random.Random(FUZZ_SEED + 100)
    for n, (name, kind, data, target) in enumerate(_mutants(FUZZ_SEED), start=1):
        path = tmp_path / f"m{n % 8}.tflite"
        path.write_bytes(data)
        command = pick.choice(FUZZ_COMMANDS)
        commands[command] += 1
        capsys.readouterr()
        code = main(_command(command, path, target, _eval_data(tmp_path, name)))
        err = capsys.readouterr().err
        _check_outcome(code, err, f"mutant {n} ({name}, {kind}, {command} {target})")
        outcomes[{0: "accepted", 3: "accepted (exit 3: does not fit/place)"}.get(
            code, "rejected")] += 1
        if "crashed" in err or "did not finish" in err:
            outcomes["contained native crash/hang"] += 1
        kinds[kind.split(":")[0]] += 1
        if n >= FUZZ_MIN_MUTANTS and time.monotonic() - start > FUZZ_BUDGET_S:
            break
    with capsys.disabled():
        print(f"\nfuzz: {n} mutants in {time.monotonic() - start:.1f} s: {dict(outcomes)}; "
              f"kinds {dict(kinds)}; commands {dict(commands)}")
    assert outcomes["rejected"] > 0


def test_fuzz_subprocess(tmp_path):
    """A subset through real processes: a segfault would show as a negative return code."""
    for n, (name, kind, data, target) in enumerate(_mutants(FUZZ_SEED + 1), start=1):
        if n > 12:
            break
        path = tmp_path / f"s{n}.tflite"
        path.write_bytes(data)
        command = FUZZ_COMMANDS[n % len(FUZZ_COMMANDS)]
        proc = subprocess.run([sys.executable, "-m", "edgeq",
                               *_command(command, path, target, _eval_data(tmp_path, name))],
                              capture_output=True, text=True, timeout=120, env=_env())
        _check_outcome(proc.returncode, proc.stderr, f"mutant {n} ({name}, {kind}, {target})")


# --- each class of malformed .tflite: exit 2, the file and the defect named ---------------------

HELLO = FIXTURES / "models" / "tflm" / "hello_world_int8.tflite"


def _patched(data: bytes, pos: int, value: int) -> bytes:
    import struct

    buf = bytearray(data)
    struct.pack_into("<I", buf, pos, value & 0xFFFFFFFF)
    return bytes(buf)


def _repacked(edit) -> bytes:
    """hello_world rebuilt through the flatbuffers object API after `edit(model)`."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(HELLO.read_bytes(), 0)
    edit(model)
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _spot(kind: str, data: bytes | None = None) -> int:
    return targets(data or HELLO.read_bytes())[kind][0]


def _bad_files() -> dict[str, tuple[bytes, str]]:
    import numpy as np

    hello = HELLO.read_bytes()
    first_shape_dim = _spot("shape_dim")

    def no_subgraphs(m):
        m.subgraphs = []

    def external_buffer(m):
        b = next(b for b in m.buffers if b.data is not None and len(b.data) > 0)
        b.data, b.offset, b.size = None, len(hello) * 4, 64

    def short_weights(m):
        b = max(m.buffers, key=lambda b: 0 if b.data is None else len(b.data))
        b.data = b.data[:3]

    def zero_points(m):
        t = next(t for t in m.subgraphs[0].tensors if t.quantization is not None
                 and t.quantization.scale is not None)
        t.quantization.zeroPoint = np.zeros(len(t.quantization.scale) + 2, dtype=np.int64)

    return {
        "identifier": (hello[:4] + b"TFL2" + hello[8:], "TFL3"),
        "empty": (b"", "TFL3"),
        "root offset": (_patched(hello, 0, len(hello) + 64), "outside"),
        "truncated": (hello[: len(hello) // 2], "outside"),
        "tensor buffer index": (_patched(hello, _spot("tensor_buffer"), 1000), "refers to buffer"),
        "op input index": (_patched(hello, _spot("op_input"), 77), "refers to tensor 77"),
        "vector length": (_patched(hello, _spot("vector_length"), 1 << 28), "outside"),
        "negative dimension": (_patched(hello, first_shape_dim, -5), "negative dimension"),
        "huge tensor": (_patched(_patched(hello, first_shape_dim, 1 << 20), first_shape_dim + 4,
                                 1 << 20), "does not match shape [1048576, 1048576]"),
        "buffer length": (_patched(hello, _spot("buffer_size"), 1 << 27), "outside"),
        "no subgraph": (_repacked(no_subgraphs), "no subgraph"),
        "buffer past the end": (_repacked(external_buffer), "past the end"),
        "weights shorter than shape": (_repacked(short_weights), "needs"),
        "zero points": (_repacked(zero_points), "zero point"),
    }


@pytest.mark.parametrize("case", sorted(_bad_files()))
def test_malformed_tflite_is_refused_before_any_interpreter(tmp_path, capsys, case):
    data, expected = _bad_files()[case]
    path = tmp_path / "bad.tflite"
    path.write_bytes(data)
    for target in ("cortex-m4", "coral"):
        assert main(["analyze", str(path), "--target", target]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and str(path) in err and expected in err, err


def test_opcode_index_out_of_range(tmp_path, capsys):
    data = (FIXTURES / "models" / "mlperf_tiny" / "kws_dscnn_int8_reference.tflite").read_bytes()
    path = tmp_path / "bad.tflite"
    path.write_bytes(_patched(data, _spot("opcode_index", data), 4000))
    assert main(["analyze", str(path), "--target", "cortex-m4"]) == 2
    assert "refers to operator code 4000" in capsys.readouterr().err


def test_embed_refuses_a_malformed_model(tmp_path, capsys):
    path = tmp_path / "bad.tflite"
    path.write_bytes(_patched(HELLO.read_bytes(), _spot("op_input"), 77))
    assert main(["embed", str(path), "--out", str(tmp_path / "src")]) == 2
    assert "refers to tensor 77" in capsys.readouterr().err
    assert not (tmp_path / "src").exists()


# --- native crashes and hangs are contained -----------------------------------------------------


def test_a_crash_in_the_child_is_an_input_error_naming_the_stage():
    from edgeq.errors import ConversionError, ModelFileError
    from edgeq.process.isolation import run_in_child

    with pytest.raises(ModelFileError, match=r"my stage crashed \(SIGSEGV\)") as info:
        run_in_child("crash", b"", stage="my stage", source="m.tflite")
    assert info.value.exit_status == 2 and "m.tflite" in str(info.value)
    with pytest.raises(ConversionError, match=r"my stage failed: crashed \(SIGSEGV\)") as info:
        run_in_child("crash", b"", stage="my stage", source="m.tflite", user_file=False)
    assert info.value.exit_status == 1


def test_a_hang_in_the_child_is_cut_off_at_the_limit():
    from edgeq.errors import ModelFileError
    from edgeq.process.isolation import run_in_child

    t0 = time.monotonic()
    with pytest.raises(ModelFileError, match="did not finish within 1 s"):
        run_in_child("hang", b"", stage="s", source="m.tflite", timeout_s=1)
    assert time.monotonic() - t0 < 10


def test_litert_invoke_task_runs_a_valid_model():
    from edgeq.process.isolation import run_in_child

    got = run_in_child("litert_invoke", HELLO.read_bytes(), stage="LiteRT", source=HELLO)
    assert got["outputs"] == [[1, 1]]


# --- convert: a native crash or hang names the stage (edgeq.process.supervise) --------------------------


def _fake_child(body: str) -> list[str]:
    head = "import os, ctypes, time\nfd = int(os.environ['EDGEQ_STAGE_FD'])\n"
    return [sys.executable, "-c", head + body]


@pytest.mark.parametrize("stage,code", [("quantize", 1), ("load", 2)])
def test_supervisor_turns_a_native_crash_into_one_line(capsys, stage, code):
    from edgeq.process import supervise

    body = f"os.write(fd, b'{stage}\\t60\\n')\nctypes.string_at(0)\n"
    assert supervise.run(["convert"], command=_fake_child(body)) == code
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"edgeq: error: {stage} crashed in native code (SIGSEGV)" in err


def test_supervisor_stops_a_stage_past_its_limit(capsys):
    from edgeq.process import supervise

    t0 = time.monotonic()
    body = "os.write(fd, b'verify\\t1\\n')\ntime.sleep(60)\n"
    assert supervise.run(["convert"], command=_fake_child(body)) == 1
    assert time.monotonic() - t0 < 15
    assert "edgeq: error: verify did not finish within 1 s" in capsys.readouterr().err


def test_supervisor_passes_the_exit_status_through():
    from edgeq.process import supervise

    assert supervise.run(["convert"], command=_fake_child("os.write(fd, b'x\\t5\\n')\nraise SystemExit(4)\n")) == 4


# --- Ctrl-C during a conversion: the old outputs or the complete new ones -----------------------

EXAMPLE_DIR = ROOT / "representative_data"
OUTPUT_NAMES = ("digits_cnn_int8.tflite", "report.json", "report.md")


def _digest(folder: Path) -> dict[str, str]:
    import hashlib

    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def _convert_argv(out: Path) -> list[str]:
    return [sys.executable, "-m", "edgeq", "convert", str(EXAMPLE_DIR / "digits_cnn.keras"),
            "--target", "cortex-m4", "--data", str(EXAMPLE_DIR / "digits_calibration.npz"),
            "--input-scale", "1/16", "--calibration-samples", "50", "--eval-samples", "50",
            "--out", str(out), "--no-latency", "--overwrite"]


HOLD_HOOK = Path(__file__).resolve().parent / "hold_import"
# The supervised child runs isolated (-I ignores PYTHONPATH, so the hold's sitecustomize never
# loads there): a hold in the child comes through the supervisor's `command=` seam instead, in
# a parent that is the supervisor and nothing else.
_HELD_CHILD = ("import sys\n"
               "from edgeq.process import spawn, supervise\n"
               "argv = sys.argv[1:]\n"
               "sys.exit(supervise.run(argv, command=spawn.python_command('held_edgeq', *argv)))\n")
# (command, module whose first import the run waits in when the Ctrl-C comes, where that is);
# both commands run supervised: every module but click is first imported by the child.
INTERRUPT_POINTS = [
    ("convert", "click", "the supervisor's own start-up imports"),
    ("convert", "edgeq.commands.convert", "the child's start-up, after the CLI is set up"),
    ("convert", "tensorflow.python.framework.ops", "halfway through `import tensorflow`"),
    ("convert", "tflite_micro.python.tflite_micro.runtime", "the verify stage (TFLite Micro)"),
    ("analyze", "click", "the supervisor's own start-up imports"),
    ("analyze", "tensorflow.python.framework.ops", "halfway through `import tensorflow` "
                                                   "(converting the Keras model first)"),
]


def _interrupted_run(tmp_path: Path, command: str, module: str, out: Path):
    """Run the `edgeq` program, wait until it is inside the first import of ``module`` and
    send SIGINT there (as a terminal's Ctrl-C does): no timing guesses, the program is held at
    that point until the signal arrives."""
    marker = tmp_path / f"held-{command}-{module}"
    env = _env()
    env["PYTHONPATH"] = os.pathsep.join((str(HOLD_HOOK), env["PYTHONPATH"]))
    env |= {"HOLD_IMPORT": module, "HOLD_MARKER": str(marker)}
    argv = _convert_argv(out) if command == "convert" else [
        sys.executable, "-m", "edgeq", "analyze", str(EXAMPLE_DIR / "digits_cnn.keras"),
        "--target", "cortex-m4", "--data", str(EXAMPLE_DIR / "digits_calibration.npz")]
    if module != "click":  # held in the child
        argv = [sys.executable, "-c", _HELD_CHILD, *argv[3:]]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env=env)
    while not marker.exists():
        if proc.poll() is not None:
            pytest.fail(f"{command} ended (exit {proc.returncode}) without importing {module}: "
                        + proc.stderr.read())
        time.sleep(0.01)
    proc.send_signal(2)  # SIGINT
    _, err = proc.communicate(timeout=300)
    return proc.returncode, err


@pytest.mark.slow
@pytest.mark.parametrize("command,module,where", INTERRUPT_POINTS,
                         ids=[f"{c}-{m}" for c, m, _ in INTERRUPT_POINTS])
def test_ctrl_c_anywhere_is_one_line_exit_130_and_the_old_outputs(tmp_path, command, module,
                                                                   where):
    out = tmp_path / "out"
    out.mkdir()
    for name in OUTPUT_NAMES:
        (out / name).write_bytes(b"old " + name.encode())
    (out / "notes.txt").write_text("the user's own file")
    before = _digest(out)
    code, err = _interrupted_run(tmp_path, command, module, out)
    assert code == 130, f"Ctrl-C in {where}: exit {code}\n{err}"
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    lines = [ln for ln in err.splitlines() if ln.startswith("edgeq: error:")]
    assert len(lines) == 1 and lines[0].startswith("edgeq: error: interrupted"), err
    assert _digest(out) == before, f"Ctrl-C in {where} changed the outputs"
    leftovers = [p.name for p in (*tmp_path.iterdir(), *out.iterdir()) if ".edgeq-tmp-" in p.name]
    assert not leftovers, leftovers


def test_ctrl_c_during_the_commit_is_held_until_the_set_is_complete(tmp_path, monkeypatch):
    import signal as sig

    from edgeq.outputs import atomic as outputs

    out = tmp_path / "out"
    outputs.write_outputs(out, {"a": b"old a", "b": b"old b"}, overwrite=False)
    real_replace = os.replace

    def interrupted_replace(src, dst):
        os.kill(os.getpid(), sig.SIGINT)  # arrives between two renames
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", interrupted_replace)
    with pytest.raises(KeyboardInterrupt):
        outputs.write_outputs(out, {"a": b"new a", "b": b"new b"}, overwrite=True)
    assert (out / "a").read_bytes() == b"new a" and (out / "b").read_bytes() == b"new b"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    assert sorted(p.name for p in out.iterdir()) == ["a", "b"]


# --- Keras files: code is never loaded without --allow-unsafe -----------------------------------


def _keras_with(tmp_path: Path, edit) -> Path:
    import json
    import zipfile

    src = EXAMPLE_DIR / "digits_cnn.keras"
    dst = tmp_path / "edited.keras"
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename == "config.json":
                config = json.loads(data)
                edit(config)
                data = json.dumps(config).encode()
            zout.writestr(item, data)
    return dst


def _first_layer(config: dict) -> dict:
    return config["config"]["layers"][1]


def _convert(model: Path, tmp_path: Path, *extra: str) -> int:
    return main(["convert", str(model), "--target", "cortex-m4", "--data",
                 str(EXAMPLE_DIR / "digits_calibration.npz"), "--out", str(tmp_path / "o"),
                 *extra])


@pytest.mark.parametrize("edit,named", [
    (lambda c: _first_layer(c).update(module="evil.layers", class_name="Backdoor"),
     "class 'Backdoor' from module 'evil.layers'"),
    (lambda c: _first_layer(c).update(registered_name="MyPackage>Conv"),
     "custom registered class 'MyPackage>Conv'"),
    (lambda c: _first_layer(c)["config"].update(
        activation={"module": "builtins", "class_name": "__lambda__", "config": {}}),
     "a serialized lambda function"),
    (lambda c: c["config"]["layers"].insert(2, {
        "module": "keras.layers", "class_name": "Lambda",
        "config": {"name": "sneaky", "function": {"class_name": "__lambda__"}}}),
     "Lambda layer(s) sneaky"),
])
def test_keras_file_with_code_is_refused_without_allow_unsafe(tmp_path, capsys, edit, named):
    model = _keras_with(tmp_path, edit)
    assert _convert(model, tmp_path) == 2
    err = capsys.readouterr().err
    assert named in err and "--allow-unsafe" in err and err.count("\n") == 1, err
    assert not (tmp_path / "o").exists()


def test_h5_with_lambda_bytecode_is_refused(tmp_path, capsys):
    import json

    import h5py

    config = {"class_name": "Sequential", "config": {"name": "s", "layers": [
        {"class_name": "InputLayer", "config": {"batch_input_shape": [None, 8, 8, 1]}},
        {"class_name": "Lambda", "config": {"name": "payload", "function": [
            "4wEAAAAAAAAAAAAAAAEAAAACAAAAQwAAAHMIAAAAfABkARQAUwApAk7pAgAAAKkAKQHaAXhyAgAAAHIC",
            None, None], "function_type": "lambda"}}]}}
    path = tmp_path / "lambda.h5"
    with h5py.File(path, "w") as f:
        f.attrs["model_config"] = json.dumps(config)
    assert _convert(path, tmp_path) == 2
    err = capsys.readouterr().err
    assert "Lambda layer(s) payload" in err and "arbitrary Python code" in err, err


# --- data: huge, pickled, mismatched or undecodable files are named before memory goes ----------


def _npy_header_only(path: Path, shape: tuple[int, ...], descr: str = "<f4") -> Path:
    import numpy as np

    with open(path, "wb") as fh:
        np.lib.format.write_array_header_1_0(
            fh, {"descr": descr, "fortran_order": False, "shape": shape})
    return path


def test_enormous_npy_header_is_refused_before_loading_anything(tmp_path):
    huge = _npy_header_only(tmp_path / "huge.npy", (10**9, 8, 8, 1))
    t0 = time.monotonic()
    proc = subprocess.run(_convert_argv(tmp_path / "o")[:7] + [
        "--data", str(huge), "--out", str(tmp_path / "o")], capture_output=True, text=True,
        env=_env(), timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "GiB in memory, over the 4.0 GiB limit" in proc.stderr and str(huge) in proc.stderr
    assert time.monotonic() - t0 < 20  # no TensorFlow import, no allocation


def test_pickled_npz_is_refused(tmp_path, capsys):
    import numpy as np

    path = tmp_path / "pickled.npz"
    np.savez(path, x=np.array([object(), 1], dtype=object))
    assert _convert(EXAMPLE_DIR / "digits_cnn.keras", tmp_path, "--data", str(path)) == 2
    assert "object array" in capsys.readouterr().err


def test_data_that_does_not_match_the_model_is_named(tmp_path, capsys):
    import numpy as np

    path = tmp_path / "wrong.npz"
    np.savez(path, x=np.zeros((4, 28, 28, 1), dtype=np.float32))
    code = main(["convert", str(EXAMPLE_DIR / "digits_cnn.keras"), "--target", "cortex-m4",
                 "--data", str(path), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "expects (8, 8, 1)" in err and str(path) in err, err


def test_an_image_that_does_not_decode_is_named(tmp_path):
    from edgeq.data import InputSpec, load_dataset
    from edgeq.errors import DataError

    shutil.copy(FIXTURES / "data" / "images" / "cat.bmp", tmp_path / "a_cat.bmp")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    with pytest.raises(DataError, match=r"image 'broken.png' could not be decoded"):
        load_dataset(tmp_path, InputSpec(shape=(8, 8, 1)))


def test_a_ctrl_c_swallowed_by_a_callback_stops_at_the_next_stage(monkeypatch):
    """Python cannot raise KeyboardInterrupt out of a weakref/__del__ callback; it prints
    "Exception ignored" and goes on. The guard records it instead and the next stage raises."""
    import gc
    import weakref

    from edgeq.process import supervise

    monkeypatch.setattr(sys, "unraisablehook", sys.unraisablehook)
    monkeypatch.setattr(supervise, "_SWALLOWED", [])
    supervise.guard_interrupts()

    class Thing:
        pass

    def callback(ref):
        raise KeyboardInterrupt  # what a Ctrl-C landing in this callback does

    thing = Thing()
    ref = weakref.ref(thing, callback)
    del thing
    gc.collect()
    assert ref() is None and supervise.interrupted()
    with pytest.raises(KeyboardInterrupt):
        supervise.mark("quantize")
