"""Regression checks for users' own test suites (pytest or any runner that takes
AssertionError), the library form of `edgeq verify --baseline`:

    from edgeq.testing import assert_no_regression

    def test_kws_model_did_not_regress():
        assert_no_regression("build/kws_int8.tflite", target="cortex-m4",
                             eval_data="data/kws_test.npz",
                             baseline="release/report.json", max_drop=0.5, max_growth=10)
"""

from __future__ import annotations

from pathlib import Path

from edgeq.data import Preprocess
from edgeq.regression import VerifyOutcome, verify_model


def assert_no_regression(model: str | Path, *, target: str, eval_data: str | Path,
                         baseline: str | Path, max_drop: float = 0.5,
                         max_growth: float | None = None, preprocess: Preprocess | None = None,
                         eval_samples: int | None = None, emulate: bool = False,
                         tflm_tree: str | Path | None = None) -> VerifyOutcome:
    """Measure ``model`` on the target's runtime and fail the test when its top-1 fell more
    than ``max_drop`` points below the baseline report, or (with ``max_growth``) its size or
    arena grew by more than that percentage. Host latency is left out: it is too noisy for a
    test. Returns the measurement for further asserts.

    With ``emulate=True`` the model's firmware also runs on QEMU (`edgeq emulate`, Cortex-M
    targets; ``tflm_tree`` or $EDGEQ_TFLM_TREE) and the emulated device's top-1 and estimated
    cycles are checked against the baseline's emulator section with the same limits; these are
    deterministic, so ``max_growth`` can be tight.

    Raises:
        AssertionError: with every failed check in the message.
        edgeq.errors.EdgeqError: a bad model, target, data or baseline file.
    """
    outcome = verify_model(model, target, eval_data, baseline=baseline, max_drop=max_drop,
                           max_growth=max_growth, preprocess=preprocess,
                           eval_samples=eval_samples, measure_latency=False)
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
