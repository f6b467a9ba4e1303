"""The emulator as a regression gate: the emulated device's top-1 and estimated cycles against
a baseline report's `emulator` section. Both are deterministic (the instruction count does not
depend on the host's speed), so a CI job can gate on them without noise."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edgeq.emulator.emulate import EmulatorResult
from edgeq.errors import InputError, UsageError
from edgeq.commands.verify import Check, RegressionError

SCHEMA = "edgeq-emulate/1"


def report(result: EmulatorResult, checks: list[Check] | None = None,
           baseline: str | None = None) -> dict[str, Any]:
    """`edgeq emulate --json` / --report: usable as the next run's --baseline."""
    from dataclasses import asdict

    checks = checks or []
    return {"schema": SCHEMA, "target": result.target, "model": {"path": result.model},
            "emulator": result.to_dict(), "baseline": baseline,
            "checks": [asdict(c) for c in checks], "ok": all(c.ok for c in checks)}


def read_baseline(path: str | Path) -> dict[str, Any]:
    """The `emulator` section of a report.json (convert --emulate, verify --emulate,
    emulate --report)."""
    from edgeq.formats.input_files import REPORT_MAX, read_file

    p = Path(path)
    raw = read_file(p, "--baseline", REPORT_MAX, hint="pass a report.json written by edgeq")
    try:
        data = json.loads(raw)
    except (OSError, ValueError, RecursionError) as exc:
        raise InputError(f"baseline '{p}': cannot read it as JSON: {exc}",
                         hint="pass a report.json written by edgeq") from exc
    section = data.get("emulator") if isinstance(data, dict) else None
    if not isinstance(section, dict):
        raise InputError(f"baseline '{p}' has no emulator section",
                         hint="make the baseline with --emulate (convert or verify) or with "
                         "edgeq emulate --report")
    from edgeq.commands.verify import check_number

    check_number(p, section, "top1", "device")  # what checks() does arithmetic on
    check_number(p, {"emulator": section}, "emulator", "estimated_cycles")
    return section


def checks(now: EmulatorResult, base: dict[str, Any], max_drop: float | None,
           max_growth: float | None) -> list[Check]:
    """Top-1 on the emulated device may fall at most `max_drop` points; estimated cycles may
    grow at most `max_growth` percent."""
    if max_drop is not None and not max_drop >= 0:
        raise UsageError("--max-drop must be a number of percentage points >= 0")
    if max_growth is not None and not max_growth >= 0:
        raise UsageError("--max-growth must be a percentage >= 0")
    out = []
    if max_drop is not None and now.top1 is not None and isinstance(base.get("top1"), dict):
        was, is_ = float(base["top1"]["device"]), float(now.top1["device"])
        drop = 100 * (was - is_)
        ok = drop <= max_drop + 1e-9
        out.append(Check("emulator.top1", was, is_, f"drop <= {max_drop:.2f} pp", ok,
                         f"emulated-device top-1 {100 * was:.2f}% -> {100 * is_:.2f}% "
                         f"(drop {drop:.2f} pp, limit {max_drop:.2f})"))
    if max_growth is not None and base.get("estimated_cycles"):
        was_c, is_c = int(base["estimated_cycles"]), now.estimated_cycles
        growth = 100 * (is_c - was_c) / was_c
        ok = growth <= max_growth + 1e-9
        out.append(Check("emulator.estimated_cycles", was_c, is_c, f"growth <= {max_growth:g}%",
                         ok, f"estimated cycles {was_c:,} -> {is_c:,} ({growth:+.2f}%, limit "
                         f"{max_growth:g}%)"))
    return out


def error(found: list[Check], baseline: str) -> RegressionError | None:
    failures = [c.detail for c in found if not c.ok]
    return RegressionError(failures, baseline) if failures else None


def baseline_section(path: str | Path | None) -> dict[str, Any] | None:
    """The baseline's emulator section, or None when there is no baseline or it has none (then
    the emulated figures are reported but not compared)."""
    if path is None:
        return None
    try:
        return read_baseline(path)
    except InputError:
        return None


def emulate_checked(model: str | Path, target: str, eval_data: str | Path, *,
                    baseline: str | Path | None, max_drop: float | None,
                    max_growth: float | None, preprocess: Any = None,
                    eval_samples: int | None = None, tflm_tree: str | Path | None = None,
                    progress: Any = None) -> tuple[EmulatorResult, list[Check]]:
    """verify --emulate and assert_no_regression(emulate=True): the emulator run and its
    checks against the baseline's emulator section (none when the baseline has none)."""
    from edgeq.emulator.emulate import emulate

    result = emulate(model, target, eval_data=eval_data, preprocess=preprocess,
                     eval_samples=eval_samples, tflm_tree=tflm_tree, progress=progress)
    base = baseline_section(baseline)
    if base is None:
        return result, []
    # verify's policy: with a baseline, no drop and no growth unless allowed
    return result, checks(result, base, 0.0 if max_drop is None else max_drop,
                          0.0 if max_growth is None else max_growth)
