"""The TFLite flatbuffer schema as LiteRT ships it (`schema_py_generated`), loaded once, and its
enums as number -> name maps. Its own module so that the reader (`tflite`) and the structural
checks (`tflite_check`) both use it without importing each other."""

from __future__ import annotations

import functools

from edgeq.errors import MissingDependencyError


@functools.lru_cache(maxsize=1)
def schema():
    try:
        from ai_edge_litert import schema_py_generated
    except ImportError as exc:  # pragma: no cover - a broken install
        raise MissingDependencyError("ai-edge-litert", "pip install ai-edge-litert") from exc
    return schema_py_generated


@functools.lru_cache(maxsize=None)
def enum_names(enum_name: str) -> dict[int, str]:
    """``{value: NAME}`` of a schema enum, e.g. ``enum_names("BuiltinOperator")[3]``."""
    enum_cls = getattr(schema(), enum_name)
    return {v: k for k, v in vars(enum_cls).items() if not k.startswith("_")}
