"""Target profiles: the TOML schema as frozen dataclasses, and a strict loader with ``extends``.

A profile is one ``<name>.toml`` file (schema version 1) in the bundled ``targets/`` directory,
or anywhere when given by path. Every key is checked: an unknown key, a wrong type or a bad
value raises ``TargetFileError`` naming the file and key. No TensorFlow here: this module is
imported by ``edgeq --help`` and ``edgeq targets`` and must load in milliseconds.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import os
import sys
from dataclasses import MISSING, dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - only on Python 3.10
    import tomli as tomllib

from edgeq.errors import MissingDependencyError, TargetFileError, TargetNotFoundError

SCHEMA_VERSION = 1
ENV_TARGETS_DIR = "EDGEQ_TARGETS_DIR"


@dataclass(frozen=True)
class _Key:
    kind: str  # "str" | "int" | "bool" | "str-list" | "int-table" | "table"
    required: bool = True
    choices: tuple[str, ...] = ()
    minimum: int = 0


def _key(kind: str, *choices: str, minimum: int = 0, default: Any = MISSING) -> Any:
    # The schema lives on the dataclass fields, so the TOML keys and the Python API cannot drift.
    key = _Key(kind, default is MISSING, choices, minimum)
    return dataclasses.field(default=default, metadata={"key": key})


_DTYPES = ("int8", "uint8", "float32")
_GRANULARITY = ("per-channel", "per-tensor")


@dataclass(frozen=True)
class Quantization:
    """How weights, activations and model inputs/outputs are quantized."""

    weights: str = _key("str", "int8")
    weight_granularity: str = _key("str", *_GRANULARITY)  # CONV_2D, DEPTHWISE_CONV_2D
    dense_granularity: str = _key("str", *_GRANULARITY)  # FULLY_CONNECTED
    activations: str = _key("str", "int8")
    int16_activations: bool = _key("bool")  # 16x8 allowed
    input_dtype: str = _key("str", *_DTYPES)
    output_dtype: str = _key("str", *_DTYPES)
    float_fallback: str = _key("str", "none", "cpu")  # may ops stay float in the model (CPU only)
    # Precision recipes the device can run (edgeq.recipes vocabulary); the first is the default.
    recipes: tuple[str, ...] = _key("str-list", default=("int8",))


@dataclass(frozen=True)
class Shapes:
    """Shape rules: static shapes, batch size, tensor rank."""

    static: bool = _key("bool")
    batch: int = _key("int", minimum=1)
    max_rank: int = _key("int", minimum=1)
    rank_rule: str = _key("str", "any", "three-innermost")  # Edge TPU: 3 innermost dims > 1


@dataclass(frozen=True)
class Ops:
    """TFLite builtin ops the target runs; an empty ``allowed`` means any builtin op."""

    allowed: tuple[str, ...] = _key("str-list")
    max_versions: tuple[tuple[str, int], ...] = _key("int-table", minimum=1, default=())


@dataclass(frozen=True)
class Memory:
    """Budgets in bytes; 0 means no budget. The reserve is RAM kept back for stack and app."""

    flash_bytes: int = _key("int")
    ram_bytes: int = _key("int")
    ram_reserve_bytes: int = _key("int", default=0)


@dataclass(frozen=True)
class Runtime:
    """The interpreter that verifies the model on the host and where ops run on the device."""

    name: str = _key("str", "litert", "tflm")
    placement: str = _key("str", "cpu", "mcu", "tpu", "npu")
    fallback_placement: str = _key("str", "cpu", "none")
    threads: int = _key("int", minimum=1)
    delegate: str = _key("str", "xnnpack", "none")
    # How a compiler splits the graph when an op cannot run on the accelerator: per op (Vela,
    # LiteRT delegates), or one accelerator subgraph up to the first such op (Edge TPU).
    partitioning: str = _key("str", "per-op", "single-subgraph", default="per-op")


@dataclass(frozen=True)
class Compiler:
    """An offline compiler the target needs after quantization."""

    name: str = _key("str", "edgetpu_compiler", "vela")
    install_hint: str = _key("str")
    min_runtime_version: int | None = _key("int", default=None)
    args: tuple[str, ...] = _key("str-list", default=())
    # Vela only: the NPU variant, and the system config / memory mode sections of a Vela .ini
    # file (bundled "Arm/vela.ini" or a path), which set clocks, buses and where tensors live.
    accelerator_config: str | None = _key("str", default=None)
    config_file: str | None = _key("str", default=None)
    system_config: str | None = _key("str", default=None)
    memory_mode: str | None = _key("str", default=None)


@dataclass(frozen=True)
class Export:
    """How `edgeq convert` lays out its outputs for the platform that will load them."""

    # "files": MODEL_<recipe>.tflite + reports. "android": also an app's assets folder,
    # assets/model.tflite, model.json (I/O names, shapes, dtypes, quantization, normalisation)
    # and labels.txt when labels are known.
    layout: str = _key("str", "files", "android", default="files")


@dataclass(frozen=True)
class Emulator:
    """How `edgeq emulate` runs the model on QEMU: the core the firmware is built for (the QEMU
    machine follows from it, edgeq.emulator.cores) and the device clock that turns the
    estimated cycles into milliseconds."""

    core: str = _key("str", "cortex-m4", "cortex-m7", "cortex-m33", "cortex-m55", "cortex-m85")
    clock_hz: int = _key("int", minimum=1)


@dataclass(frozen=True)
class Target:
    """One loaded, merged and validated profile."""

    name: str
    description: str
    device: str
    abstract: bool
    path: str
    extends: tuple[str, ...]  # the chain of parents, nearest first
    quantization: Quantization
    shapes: Shapes
    ops: Ops
    memory: Memory
    runtime: Runtime
    compiler: Compiler | None
    export: Export = Export()
    emulator: Emulator | None = None

    def allows_op(self, op: str) -> bool:
        """Whether the target runs builtin ``op`` (placement rules are checked elsewhere)."""
        return not self.ops.allowed or op in self.ops.allowed

    def max_version(self, op: str) -> int | None:
        """The highest version of ``op`` the target accepts, or None for no limit."""
        return dict(self.ops.max_versions).get(op)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict, for reports and ``edgeq targets NAME --json``."""
        out: dict[str, Any] = {"schema_version": SCHEMA_VERSION}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if dataclasses.is_dataclass(value):
                items = dataclasses.asdict(value).items()
                value = {k: list(v) if isinstance(v, tuple) else v for k, v in items}
            out[field.name] = list(value) if isinstance(value, tuple) else value
        out["ops"]["max_versions"] = dict(self.ops.max_versions)
        return out


# --- checks -------------------------------------------------------------------------------------

_TABLES: dict[str, type] = {
    "quantization": Quantization, "shapes": Shapes, "ops": Ops, "memory": Memory,
    "runtime": Runtime, "compiler": Compiler, "export": Export, "emulator": Emulator,
}
_TOP: dict[str, _Key] = {
    "schema_version": _Key("int"), "name": _Key("str"), "description": _Key("str"),
    "device": _Key("str"), "extends": _Key("str", required=False),
    "abstract": _Key("bool", required=False),
    **{table: _Key("table", required=table not in ("compiler", "export", "emulator"))
       for table in _TABLES},
}
# Identity keys belong to one file; a child never inherits them from its parent.
_OWN_KEYS = ("schema_version", "name", "extends", "abstract")


def _spec(table: str) -> dict[str, _Key]:
    return {f.name: f.metadata["key"] for f in dataclasses.fields(_TABLES[table])}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # TOML true is not a count


# kind -> (type check, what the error message says was expected)
_KINDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "str": (lambda v: isinstance(v, str), "a string"),
    "int": (_is_int, "an integer"),
    "bool": (lambda v: isinstance(v, bool), "true or false"),
    "str-list": (lambda v: isinstance(v, list) and all(isinstance(s, str) for s in v),
                 "a list of strings"),
    "int-table": (lambda v: isinstance(v, dict) and all(map(_is_int, v.values())),
                  "a table of op name = integer"),
    "table": (lambda v: isinstance(v, dict), "a table"),
}
_TOML_TYPE = {bool: "boolean", int: "integer", float: "float", str: "string", list: "array",
              dict: "table"}


def _did_you_mean(word: str, options: Any) -> str | None:
    close = difflib.get_close_matches(word, list(options), n=1)
    return f"did you mean '{close[0]}'?" if close else None


def _check_value(key: _Key, dotted: str, value: Any, path: Path) -> None:
    type_ok, expected = _KINDS[key.kind]
    if not type_ok(value):
        found = f"{_TOML_TYPE.get(type(value), type(value).__name__)} {value!r}"
        raise TargetFileError(path, dotted, f"expected {expected}, found {found}")
    if key.choices and value not in key.choices:
        raise TargetFileError(
            path, dotted, f"must be one of: {', '.join(key.choices)} (found {value!r})",
            hint=_did_you_mean(value, key.choices),
        )
    numbers = value.values() if key.kind == "int-table" else [value] if key.kind == "int" else []
    for number in numbers:
        if number < key.minimum:
            raise TargetFileError(path, dotted, f"must be at least {key.minimum} (found {number})")


def _check_table(table: Mapping[str, Any], spec: dict[str, _Key], prefix: str, path: Path) -> None:
    for name, value in table.items():
        dotted = prefix + name
        if name not in spec:
            hint = _did_you_mean(name, spec) or "known keys: " + ", ".join(spec)
            raise TargetFileError(path, dotted, "unknown key", hint=hint)
        _check_value(spec[name], dotted, value, path)
        if spec[name].kind == "table":
            _check_table(value, _spec(name), dotted + ".", path)


@functools.lru_cache(maxsize=1)
def _builtin_ops() -> frozenset[str]:
    # The flatbuffer schema module is pure Python (tens of ms); TensorFlow would take seconds.
    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError as exc:
        raise MissingDependencyError("ai-edge-litert", "pip install ai-edge-litert") from exc
    names = (n for n in vars(schema.BuiltinOperator) if n.isupper() and not n.startswith("_"))
    return frozenset(n for n in names if not n.startswith("PLACEHOLDER"))


def _check_ops(ops: Mapping[str, Any], path: Path) -> None:
    known = _builtin_ops()
    for key in ("allowed", "max_versions"):
        for op in ops.get(key, ()):
            if op not in known:
                hint = _did_you_mean(op.upper(), known) or "use builtin names such as CONV_2D"
                raise TargetFileError(
                    path, f"ops.{key}", f"unknown TFLite builtin op '{op}'", hint=hint
                )
    allowed = ops.get("allowed", [])
    twice = sorted({op for op in allowed if allowed.count(op) > 1})
    if twice:
        raise TargetFileError(path, "ops.allowed", f"lists {', '.join(twice)} more than once")


def _check_file(raw: Mapping[str, Any], path: Path) -> None:
    """Checks one file on its own, so errors name the file that holds the mistake."""
    if "schema_version" not in raw:
        raise TargetFileError(path, "schema_version", "missing required key",
                              hint=f"add schema_version = {SCHEMA_VERSION} at the top")
    _check_table(raw, _TOP, "", path)
    if raw["schema_version"] != SCHEMA_VERSION:
        raise TargetFileError(
            path, "schema_version",
            f"unsupported version {raw['schema_version']}; this edgeq reads {SCHEMA_VERSION}",
            hint="upgrade edgeq, or rewrite the profile for schema version 1",
        )
    if "name" in raw and raw["name"] != path.stem:
        raise TargetFileError(path, "name", f"'{raw['name']}' must equal the file name",
                              hint=f'set name = "{path.stem}" or rename the file')
    if "ops" in raw:
        _check_ops(raw["ops"], path)
    for recipe in raw.get("quantization", {}).get("recipes", ()):
        _check_recipe(recipe, path)


def _check_recipe(name: str, path: Path) -> None:
    from edgeq.errors import UsageError
    from edgeq.recipes import KNOWN, decode

    try:
        decode(name)
    except UsageError as exc:
        hint = _did_you_mean(name, KNOWN) or f"use one of: {', '.join(KNOWN)}"
        raise TargetFileError(path, "quantization.recipes", exc.message, hint=hint) from exc


def _check_merged(merged: Mapping[str, Any], path: Path) -> None:
    """Checks what only the merged profile shows: required keys and cross-key rules."""
    hint = "add it to this file or to a profile it extends"
    for name, key in _TOP.items():
        if key.required and name not in merged:
            own = name in _OWN_KEYS  # never inherited, so only this file can supply it
            raise TargetFileError(path, name, "missing required key",
                                  hint=f'add name = "{path.stem}"' if own else hint)
    for table in _TABLES:
        for name, key in _spec(table).items():
            if table in merged and key.required and name not in merged[table]:
                raise TargetFileError(path, f"{table}.{name}", "missing required key", hint=hint)
    ops, memory = merged["ops"], merged["memory"]
    for op in ops.get("max_versions", {}):
        if ops["allowed"] and op not in ops["allowed"]:
            raise TargetFileError(path, "ops.max_versions", f"'{op}' is not in ops.allowed")
    if memory["ram_bytes"] and memory.get("ram_reserve_bytes", 0) > memory["ram_bytes"]:
        raise TargetFileError(path, "memory.ram_reserve_bytes", "is larger than memory.ram_bytes")


# --- loading ------------------------------------------------------------------------------------


def _merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value  # scalars and lists replace
    return out


def _read(path: Path) -> dict[str, Any]:
    from edgeq.formats.input_files import TOML_MAX, open_file

    fh, _ = open_file(path, "--target", TOML_MAX,
                      error=lambda p, message, hint=None: TargetFileError(p, None, message,
                                                                           hint=hint))
    try:
        with fh as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise TargetFileError(path, None, f"invalid TOML: {exc}") from exc
    except OSError as exc:
        raise TargetFileError(path, None, f"cannot read: {exc.strerror or exc}") from exc


def _find_parent(name: str, child: Path, bundled: Path) -> Path:
    # The child's own directory first, so a user's profile can extend a sibling of its own.
    for directory in (child.parent, bundled):
        if (directory / f"{name}.toml").is_file():
            return directory / f"{name}.toml"
    known = {p.stem for d in (child.parent, bundled) for p in d.glob("*.toml")}
    raise TargetFileError(child, "extends", f"no profile named '{name}' next to this file or in "
                          f"{bundled}", hint=_did_you_mean(name, known))


def _build(merged: Mapping[str, Any], path: Path, parents: tuple[str, ...]) -> Target:
    parts: dict[str, Any] = {"compiler": None, "export": Export(), "emulator": None}
    for table in _TABLES.keys() & merged.keys():
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in merged[table].items()}
        if "max_versions" in values:
            values["max_versions"] = tuple(sorted(values["max_versions"].items()))
        parts[table] = _TABLES[table](**values)
    return Target(
        name=merged["name"], description=merged["description"], device=merged["device"],
        abstract=merged.get("abstract", False), path=str(path), extends=parents, **parts,
    )


def _load_file(path: Path, bundled: Path) -> Target:
    path = path.resolve()
    chain, raws = [path], []
    while True:
        raws.append(_read(chain[-1]))
        _check_file(raws[-1], chain[-1])
        if "extends" not in raws[-1]:
            break
        parent = _find_parent(raws[-1]["extends"], chain[-1], bundled).resolve()
        if parent in chain:
            cycle = " -> ".join(p.stem for p in [*chain, parent])
            raise TargetFileError(path, "extends", f"extends cycle: {cycle}",
                                  hint="remove one of the extends keys")
        chain.append(parent)
    inherited: dict[str, Any] = {}
    for raw in reversed(raws[1:]):
        inherited = _merge(inherited, raw)
    merged = _merge({k: v for k, v in inherited.items() if k not in _OWN_KEYS}, raws[0])
    _check_merged(merged, path)
    return _build(merged, path, tuple(raw["extends"] for raw in raws[:-1]))


def targets_dir() -> Path:
    """The directory of the bundled profiles.

    ``$EDGEQ_TARGETS_DIR`` wins; then the installed ``edgeq.profiles`` package (the repo's
    ``targets/`` shipped as package data); then ``targets/`` next to the source tree.
    """
    if os.environ.get(ENV_TARGETS_DIR):
        return Path(os.environ[ENV_TARGETS_DIR])
    import importlib.resources  # here, not at the top: it costs ~10 ms of every CLI start

    try:
        resources: Any = importlib.resources.files("edgeq.profiles")
    except (ImportError, TypeError):
        resources = None
    if isinstance(resources, Path) and resources.is_dir():
        return resources
    if resources is not None:
        # A namespace package gives a MultiplexedPath; its children are real paths.
        for child in resources.iterdir():
            if isinstance(child, Path) and child.suffix == ".toml":
                return child.parent
    return Path(__file__).resolve().parent.parent / "targets"


def list_targets(directory: Path | None = None) -> list[Target]:
    """Loads every target profile in ``directory`` (default: the bundled ones), sorted by name.
    Base profiles (``abstract = true``) are left out: they are not targets.

    Raises:
        TargetFileError: a profile is malformed.
    """
    bundled = targets_dir()
    directory = Path(directory) if directory is not None else bundled
    loaded = [_load_file(p, bundled) for p in sorted(directory.glob("*.toml"))]
    return [t for t in loaded if not t.abstract]


def load_target(name_or_path: str, directory: Path | None = None, *,
                abstract_ok: bool = False) -> Target:
    """Loads a profile by name (from ``directory``, default bundled) or by path to a .toml file.

    A file outside the directory may ``extends`` a bundled profile: parents are looked up next to
    the file first, then in the bundled directory.

    A base profile (``abstract = true``) is refused unless ``abstract_ok``: it is not a target.

    Raises:
        TargetNotFoundError: no profile of that name.
        TargetFileError: the profile, or one it extends, is malformed; or it is a base profile.
    """
    bundled = targets_dir()
    directory = Path(directory) if directory is not None else bundled
    if name_or_path.endswith(".toml") or "/" in name_or_path or os.sep in name_or_path:
        target = _load_file(Path(name_or_path), bundled)
        return target if abstract_ok else _concrete(target, directory)
    path = directory / f"{name_or_path}.toml"
    if not path.is_file():
        known = [t.name for t in list_targets(directory)]
        raise TargetNotFoundError(name_or_path, known, suggest_target(name_or_path, known))
    target = _load_file(path, bundled)
    return target if abstract_ok else _concrete(target, directory)


def suggest_target(name: str, known: list[str]) -> str | None:
    """The profile a mistyped target name most likely meant, by family first: among the names
    sharing the longest prefix with it (at least a family word such as 'arm', 'cortex-m',
    'ethos-u55-'), the most similar ('ethos-u55' -> 'ethos-u55-128', where plain string
    similarity says 'ethos-u65-256'); otherwise the most similar name of all."""
    low = name.lower()

    def shared(k: str) -> int:
        return len(os.path.commonprefix([low, k.lower()]))

    best = max((shared(k) for k in known), default=0)
    if best >= 3:
        pool = [k for k in known if shared(k) == best]
        return difflib.get_close_matches(low, pool, n=1, cutoff=0)[0]
    close = difflib.get_close_matches(low, known, n=1)
    return close[0] if close else None


def _concrete(target: Target, directory: Path) -> Target:
    """A base profile only gathers what its children share (tflm-base has no memory budget):
    converting for it would check against nothing, so it is refused by name."""
    if not target.abstract:
        return target
    children = [t.name for t in list_targets(directory) if target.name in t.extends]
    raise TargetFileError(
        target.path, "abstract",
        "is a base profile for other profiles to extend (abstract = true), not a target",
        hint=f"use a target that extends it: {', '.join(children)}" if children
        else "use one of the targets `edgeq targets` lists")


def supported_ops_table(target: Target) -> list[dict[str, Any]]:
    """One row per op the target runs, with its version cap and limitations. For the Edge TPU
    the limitations are the docstrings of the constraint functions that enforce them."""
    if target.compiler is not None and target.compiler.name == "edgetpu_compiler":
        from edgeq.edgetpu.rules import supported_ops_table as edgetpu_table

        return edgetpu_table(target.ops.allowed, dict(target.ops.max_versions))
    caps = dict(target.ops.max_versions)
    ops = target.ops.allowed or ("(any builtin op)",)
    return [{"op": op, "max_version": caps.get(op), "limitations": []} for op in sorted(ops)]
