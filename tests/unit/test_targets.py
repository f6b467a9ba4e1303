"""Tests for edgeq.targets: the bundled profiles, the strict loader and ``extends``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from edgeq.errors import TargetFileError, TargetNotFoundError
from edgeq.targets import Target, list_targets, load_target, targets_dir

REPO_TARGETS = Path(__file__).resolve().parents[2] / "targets"
BUNDLED = sorted(p.stem for p in REPO_TARGETS.glob("*.toml"))

# A complete, valid profile; tests break one thing in it at a time.
VALID = """\
schema_version = 1
name = "{name}"
description = "test profile"
device = "test device"

[quantization]
weights = "int8"
weight_granularity = "per-channel"
dense_granularity = "per-tensor"
activations = "int8"
int16_activations = false
input_dtype = "int8"
output_dtype = "int8"
float_fallback = "none"

[shapes]
static = true
batch = 1
max_rank = 4
rank_rule = "any"

[ops]
allowed = ["CONV_2D", "FULLY_CONNECTED"]
max_versions = {{ CONV_2D = 3 }}

[memory]
flash_bytes = 1024
ram_bytes = 512

[runtime]
name = "tflm"
placement = "mcu"
fallback_placement = "none"
threads = 1
delegate = "none"
"""


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / f"{name}.toml"
    path.write_text(textwrap.dedent(text))
    return path


def valid(name: str) -> str:
    return VALID.format(name=name)


def file_error(tmp_path: Path, text: str, name: str = "t") -> TargetFileError:
    write(tmp_path, name, text)
    with pytest.raises(TargetFileError) as info:
        load_target(name, directory=tmp_path)
    return info.value


# --- bundled profiles ---------------------------------------------------------------------------


def test_targets_dir_is_the_repo_targets_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EDGEQ_TARGETS_DIR", raising=False)
    assert targets_dir().resolve() == REPO_TARGETS


def test_targets_dir_honours_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("EDGEQ_TARGETS_DIR", str(tmp_path))
    assert targets_dir() == tmp_path


@pytest.mark.parametrize("name", BUNDLED)
def test_bundled_profile_loads(name: str) -> None:
    target = load_target(name, abstract_ok=True)
    assert target.name == name == Path(target.path).stem
    json.dumps(target.to_dict())


def test_bundled_profiles_present() -> None:
    assert {"arm-cpu", "coral", "cortex-m4", "cortex-m7", "tflm-base"} <= set(BUNDLED)
    targets = list_targets()
    # Base profiles are not targets: not listed.
    assert [t.name for t in targets] == [n for n in BUNDLED if n != "tflm-base"]
    assert load_target("tflm-base", abstract_ok=True).abstract


@pytest.mark.parametrize("how", ["name", "path"])
def test_a_base_profile_is_not_a_target(how: str) -> None:
    name = "tflm-base" if how == "name" else str(REPO_TARGETS / "tflm-base.toml")
    with pytest.raises(TargetFileError, match="base profile") as err:
        load_target(name)
    assert "cortex-m4" in str(err.value)  # names the targets that extend it


def test_the_cli_neither_lists_nor_takes_a_base_profile(capsys) -> None:
    from edgeq.cli import main

    assert main(["targets"]) == 0
    assert "tflm-base" not in capsys.readouterr().out
    assert main(["analyze", "x.tflite", "--target", "tflm-base"]) == 2
    err = capsys.readouterr().err
    assert "base profile" in err and "Traceback" not in err and len(err.splitlines()) == 1


def test_cortex_m4_inherits_tflm_base() -> None:
    base, m4 = load_target("tflm-base", abstract_ok=True), load_target("cortex-m4")
    assert m4.extends == ("tflm-base",)
    assert not m4.abstract and base.abstract
    assert m4.ops == base.ops and "CONV_2D" in m4.ops.allowed
    assert m4.runtime == base.runtime and m4.runtime.name == "tflm"
    assert m4.quantization == base.quantization
    assert (m4.memory.flash_bytes, m4.memory.ram_bytes) == (1048576, 262144)
    assert base.memory.flash_bytes == 0


def test_coral_profile_facts() -> None:
    coral = load_target("coral")
    assert coral.shapes.rank_rule == "three-innermost"
    assert coral.compiler is not None and coral.compiler.name == "edgetpu_compiler"
    assert coral.compiler.min_runtime_version == 14
    assert coral.allows_op("CONV_2D") and not coral.allows_op("LEAKY_RELU")


def test_arm_cpu_allows_any_op() -> None:
    arm = load_target("arm-cpu")
    assert arm.ops.allowed == () and arm.allows_op("ANYTHING")
    assert arm.compiler is None


# --- API ----------------------------------------------------------------------------------------


def test_target_api(tmp_path: Path) -> None:
    write(tmp_path, "t", valid("t"))
    target = load_target("t", directory=tmp_path)
    assert isinstance(target, Target)
    assert target.max_version("CONV_2D") == 3 and target.max_version("FULLY_CONNECTED") is None
    assert target.allows_op("FULLY_CONNECTED") and not target.allows_op("SOFTMAX")
    assert target.memory.ram_reserve_bytes == 0 and target.compiler is None
    hash(target)  # frozen all the way down
    data = json.loads(json.dumps(target.to_dict()))
    assert data["ops"]["allowed"] == ["CONV_2D", "FULLY_CONNECTED"]
    assert data["ops"]["max_versions"] == {"CONV_2D": 3}
    assert data["name"] == "t" and data["extends"] == [] and data["compiler"] is None


def test_load_by_path_extending_bundled(tmp_path: Path) -> None:
    path = write(tmp_path, "my-board", """\
        schema_version = 1
        name = "my-board"
        extends = "cortex-m4"
        description = "mine"
        device = "my board"
        [memory]
        ram_reserve_bytes = 32768
    """)
    target = load_target(str(path))
    assert target.extends == ("cortex-m4", "tflm-base")
    assert target.memory.ram_reserve_bytes == 32768 and target.memory.ram_bytes == 262144
    assert target.path == str(path.resolve())


def test_extends_prefers_sibling_and_deep_merges(tmp_path: Path) -> None:
    write(tmp_path, "base", valid("base"))
    write(tmp_path, "child", """\
        schema_version = 1
        name = "child"
        extends = "base"
        description = "child"
        device = "d"
        [ops.max_versions]
        FULLY_CONNECTED = 9
    """)
    child = load_target(str(tmp_path / "child.toml"))
    assert dict(child.ops.max_versions) == {"CONV_2D": 3, "FULLY_CONNECTED": 9}
    assert child.ops.allowed == ("CONV_2D", "FULLY_CONNECTED")


def test_abstract_is_not_inherited(tmp_path: Path) -> None:
    write(tmp_path, "base", valid("base").replace('device = "test device"', 'device = "x"\n'
                                                   "abstract = true"))
    write(tmp_path, "child", 'schema_version = 1\nname = "child"\nextends = "base"\n')
    assert load_target("base", directory=tmp_path, abstract_ok=True).abstract
    assert not load_target("child", directory=tmp_path).abstract


# --- errors -------------------------------------------------------------------------------------


def test_unknown_key_did_you_mean(tmp_path: Path) -> None:
    err = file_error(tmp_path, valid("t").replace('weights = "int8"', 'weigths = "int8"'))
    assert err.key == "quantization.weigths"
    assert "quantization.weigths" in str(err) and "did you mean 'weights'" in str(err)
    assert err.path == str((tmp_path / "t.toml").resolve())


def test_unknown_top_level_table(tmp_path: Path) -> None:
    err = file_error(tmp_path, valid("t").replace("[shapes]", "[shape]"))
    assert err.key == "shape" and "did you mean 'shapes'" in str(err)


def test_bad_enum_value(tmp_path: Path) -> None:
    err = file_error(tmp_path, valid("t").replace('input_dtype = "int8"', 'input_dtype = "int4"'))
    assert err.key == "quantization.input_dtype"
    assert "must be one of: int8, uint8, float32" in str(err) and "int4" in str(err)


def test_wrong_type(tmp_path: Path) -> None:
    err = file_error(tmp_path, valid("t").replace("max_rank = 4", 'max_rank = "4"'))
    assert err.key == "shapes.max_rank"
    assert "expected an integer" in str(err) and "'4'" in str(err)


def test_bool_is_not_an_int(tmp_path: Path) -> None:
    err = file_error(tmp_path, valid("t").replace("batch = 1", "batch = true"))
    assert err.key == "shapes.batch" and "expected an integer" in str(err)


def test_missing_required_key(tmp_path: Path) -> None:
    err = file_error(tmp_path, valid("t").replace("threads = 1\n", ""))
    assert err.key == "runtime.threads" and "missing required key" in str(err)


def test_missing_required_table(tmp_path: Path) -> None:
    text = valid("t")
    err = file_error(tmp_path, text[: text.index("[memory]")] + text[text.index("[runtime]"):])
    assert err.key == "memory" and "missing" in str(err)


def test_invalid_toml(tmp_path: Path) -> None:
    text = valid("t").replace("batch = 1", "batch = = 1")
    err = file_error(tmp_path, text)
    line = text.splitlines().index("batch = = 1") + 1
    assert "invalid TOML" in str(err) and f"line {line}" in str(err) and err.key is None


def test_name_must_match_file(tmp_path: Path) -> None:
    err = file_error(tmp_path, valid("other"))
    assert err.key == "name"


def test_schema_version_checked(tmp_path: Path) -> None:
    err = file_error(tmp_path, valid("t").replace("schema_version = 1", "schema_version = 2"))
    assert err.key == "schema_version"


def test_extends_cycle(tmp_path: Path) -> None:
    write(tmp_path, "a", 'schema_version = 1\nname = "a"\nextends = "b"\n')
    write(tmp_path, "b", 'schema_version = 1\nname = "b"\nextends = "a"\n')
    with pytest.raises(TargetFileError) as info:
        load_target("a", directory=tmp_path)
    assert info.value.key == "extends" and "a -> b -> a" in str(info.value)


def test_extends_unknown_parent(tmp_path: Path) -> None:
    err = file_error(tmp_path, valid("t").replace('device = "test device"',
                                                  'device = "d"\nextends = "cortex-m5"'))
    assert err.key == "extends" and "cortex-m5" in str(err) and "did you mean" in str(err)


def test_unknown_op_name(tmp_path: Path) -> None:
    err = file_error(tmp_path, valid("t").replace('"CONV_2D", ', '"CONV2D", '))
    assert err.key == "ops.allowed" and "CONV2D" in str(err)
    assert "did you mean 'CONV_2D'" in str(err)


def test_unknown_op_in_max_versions(tmp_path: Path) -> None:
    err = file_error(tmp_path, valid("t").replace("{ CONV_2D = 3 }", "{ CONV_3Dx = 3 }"))
    assert err.key == "ops.max_versions"


@pytest.mark.parametrize("typo, expected", [("cortex-m5", ("cortex-m4", "cortex-m7", "cortex-m55",
                                                          "cortex-m85")),
                                            ("corall", ("coral",))])
def test_unknown_target_name(typo: str, expected: tuple[str, ...]) -> None:
    with pytest.raises(TargetNotFoundError) as info:
        load_target(typo)
    assert info.value.name == typo and "coral" in info.value.known
    assert any(f"did you mean '{name}'" in str(info.value) for name in expected)


def test_missing_file_by_path(tmp_path: Path) -> None:
    with pytest.raises(TargetFileError):
        load_target(str(tmp_path / "nope.toml"))


def test_env_dir_used_for_names(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    write(tmp_path, "only", valid("only"))
    monkeypatch.setenv("EDGEQ_TARGETS_DIR", str(tmp_path))
    assert [t.name for t in list_targets()] == ["only"]
    with pytest.raises(TargetNotFoundError):
        load_target("coral")


# --- import cost --------------------------------------------------------------------------------


def test_import_does_not_load_tensorflow() -> None:
    code = (
        "import sys, edgeq.targets as t\n"
        "assert 'ai_edge_litert' not in sys.modules, 'schema imported eagerly'\n"
        "t.list_targets()\n"
        "heavy = [m for m in ('tensorflow', 'keras', 'tf_keras') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_targets_dir_finds_installed_namespace_package(tmp_path: Path) -> None:
    # An installed wheel ships targets/ as edgeq/profiles/ without __init__.py.
    profiles = tmp_path / "edgeq" / "profiles"
    profiles.mkdir(parents=True)
    (profiles / "coral.toml").write_text((REPO_TARGETS / "coral.toml").read_text())
    code = (
        "import edgeq\n"
        f"edgeq.__path__.append({str(tmp_path / 'edgeq')!r})\n"
        "from edgeq.targets import targets_dir, load_target\n"
        "print(targets_dir())\n"
        "assert load_target('coral').path.startswith(str(targets_dir().resolve()))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "EDGEQ_TARGETS_DIR"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    assert Path(result.stdout.strip()) == profiles
