"""The allow-list the Keras config policy reads (edgeq/formats/keras_builtins.py) is exactly what
tools/gen_keras_builtins.py finds in the installed Keras and tf_keras: it cannot drift."""

from __future__ import annotations

import importlib.util

from edgeq.formats import keras_builtins
from edgeq.formats.keras_config_policy import DENIED
from tests.conftest import ROOT


def _generator():
    spec = importlib.util.spec_from_file_location("gen_keras_builtins",
                                                  ROOT / "tools" / "gen_keras_builtins.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_allow_list_matches_the_installed_keras_and_tf_keras():
    gen = _generator()
    names, versions = gen.collect()
    hint = "run: python tools/gen_keras_builtins.py"
    assert versions == keras_builtins.GENERATED_FROM, hint
    assert sorted(names - keras_builtins.NAMES) == [], f"new in Keras: {hint}"
    assert sorted(keras_builtins.NAMES - names) == [], f"gone from Keras: {hint}"
    assert gen.render(names, versions) == (ROOT / "edgeq/formats/keras_builtins.py").read_text()


def test_dangerous_built_ins_are_denied_by_the_policy_not_left_out_of_the_list():
    # They are built-ins, so they stay in the generated list; the policy refuses them by name.
    assert {"Lambda", "TFSMLayer", "TorchModuleWrapper"} <= keras_builtins.NAMES
    assert {"Lambda", "TFSMLayer", "TorchModuleWrapper", "JaxLayer", "FlaxLayer"} <= set(DENIED)
    assert not {"load_model", "deserialize", "get", "serialize"} & keras_builtins.NAMES
