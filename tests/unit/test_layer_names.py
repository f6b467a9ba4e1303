"""Op rows name the user's Keras layer on every target (edgeq.edgetpu.placement.keras_layer,
used by place_ops for all targets): trace suffixes, activation ops and SavedModel scopes."""

from __future__ import annotations

from edgeq.edgetpu import placement
from edgeq.pipeline.place import place_ops
from edgeq.targets import load_target
from tests.unit.test_edgetpu_rules import model, op, t


def _chain(names: list[str], last: str = "SOFTMAX"):
    tensors = [t(0, (1, 4))] + [t(i + 1, (1, 4), name=n) for i, n in enumerate(names)]
    ops = [op(i, "FULLY_CONNECTED" if i < len(names) - 1 else last, [i], [i + 1])
           for i in range(len(names))]
    return model(tensors, ops)


def test_every_target_names_layers_and_an_activation_takes_its_producer():
    info = _chain(["digits_cnn_1/dense_1/MatMul", "digits_cnn_1/dense_1_2/MatMul",
                   "Identity"])
    for name in ("cortex-m4", "ethos-u55-128", "android-arm64", "arm-cpu", "coral"):
        placed = place_ops(info, load_target(name), ("dense", "dense_1"), "digits_cnn")
        assert [p.layer for p in placed] == ["dense", "dense_1", "dense_1"], (name, placed)


def test_trace_suffixes_are_stripped_only_where_every_layer_scope_has_one():
    # A SavedModel exported by Keras: layer scopes as named (activation, activation_1).
    saved = _chain(["functional_1/activation/Relu", "functional_1/activation_1/Relu"],
                   last="RELU")
    assert [placement.keras_layer(o, saved) for o in saved.ops] == ["activation",
                                                                     "activation_1"]
    # Keras 3 traced in the converting process: every scope suffixed (conv2d_1 is conv2d).
    traced = _chain(["functional_1/conv2d_1/Relu", "functional_1/conv2d_1_2/Relu"],
                    last="RELU")
    assert [placement.keras_layer(o, traced) for o in traced.ops] == ["conv2d", "conv2d_1"]
