"""Regression checks for users' own test suites (pytest or any runner that takes
AssertionError), the library form of `edgeq verify --baseline`:

    from edgeq.testing import assert_no_regression

    def test_kws_model_did_not_regress():
        assert_no_regression("build/kws_int8.tflite", target="cortex-m4",
                             eval_data="data/kws_test.npz",
                             baseline="release/report.json", max_drop=0.5, max_growth=10)

The same policy and the same defaults as `edgeq verify`: top-1, model size and arena are
deterministic and always compared, with no drop and no growth allowed unless ``max_drop`` /
``max_growth`` say otherwise; host latency only when ``max_latency_growth`` is given; the
baseline must be of the same model (the same file, or a new build with the same inputs and
outputs) and target unless ``allow_different_model`` / ``allow_different_target``.
"""

from __future__ import annotations

from pathlib import Path

from edgeq.data import Preprocess
from edgeq.commands.verify import VerifyOutcome, verify_model


def assert_no_regression(model: str | Path, *, target: str, eval_data: str | Path,
                         baseline: str | Path, max_drop: float = 0.0,
                         max_growth: float = 0.0, max_latency_growth: float | None = None,
                         preprocess: Preprocess | None = None,
                         eval_samples: int | None = None, emulate: bool = False,
                         tflm_tree: str | Path | None = None,
                         allow_different_model: bool = False,
                         allow_different_target: bool = False) -> VerifyOutcome:
    """Measure ``model`` on the target's runtime and fail the test when its top-1 fell more
    than ``max_drop`` points (default 0, as `edgeq verify --max-drop`) below the baseline
    report, or its size or TFLite Micro arena grew
    by more than ``max_growth`` percent (default: any growth). Host latency is compared only
    with ``max_latency_growth`` (percent): it varies with the machine's load. Returns the
    measurement for further asserts.

    With ``emulate=True`` the model's firmware also runs on QEMU (`edgeq emulate`, Cortex-M
    targets; ``tflm_tree`` or $EDGEQ_TFLM_TREE) and the emulated device's top-1 and estimated
    cycles are checked against the baseline's emulator section with the same limits; these are
    deterministic, so ``max_growth`` can be tight.

    Raises:
        AssertionError: with every failed check in the message.
        edgeq.errors.EdgeqError: a bad model, target, data or baseline file.
    """
    outcome = verify_model(model, target, eval_data, baseline=baseline, max_drop=max_drop,
                           max_growth=max_growth, max_latency_growth=max_latency_growth,
                           preprocess=preprocess, eval_samples=eval_samples,
                           measure_latency=max_latency_growth is not None,
                           allow_different_model=allow_different_model,
                           allow_different_target=allow_different_target)
    if emulate:
        import dataclasses

        from edgeq.emulator.gate import emulate_checked

        _, found = emulate_checked(model, target, eval_data, baseline=baseline,
                                   max_drop=max_drop, max_growth=max_growth,
                                   preprocess=preprocess, eval_samples=eval_samples,
                                   tflm_tree=tflm_tree)
        outcome = dataclasses.replace(outcome, checks=(*outcome.checks, *found))
    if not outcome.ok:
        raise AssertionError(f"{model} regressed against {baseline}:\n  "
                             + "\n  ".join(outcome.failures))
    return outcome
