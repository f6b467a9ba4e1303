"""Reading a Keras 3 model's graph from its serialized config (shared by the weight
transforms, equalize and smooth), so they need no Keras private attributes."""

from __future__ import annotations

from typing import Any


def history_names(node: Any) -> list[str]:
    """Names of the layers whose outputs a serialized argument (or the output list) refers to:
    tensors appear as {"keras_history": [name, node_index, tensor_index]}, outputs as bare
    [name, node_index, tensor_index] triples."""
    if isinstance(node, dict):
        if "keras_history" in node:
            return [node["keras_history"][0]]
        return [n for value in node.values() for n in history_names(value)]
    if isinstance(node, (list, tuple)):
        if len(node) == 3 and isinstance(node[0], str) and isinstance(node[1], int):
            return [node[0]]
        return [n for value in node for n in history_names(value)]
    return []
