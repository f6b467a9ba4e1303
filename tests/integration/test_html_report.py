"""`edgeq convert --html` on the bundled example: report.html is one self-contained page with
its figures and every op, the same run gives the same page (stage timings aside), the model is
the same with or without --html, and headless Chromium renders it without console messages
into a screenshot that is not blank."""

from __future__ import annotations

import hashlib
import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from edgeq.cli import main
from tests.conftest import EXAMPLE

pytestmark = pytest.mark.slow

ARGS = ["convert", str(EXAMPLE / "digits_cnn.keras"), "--target", "cortex-m4",
        "--data", str(EXAMPLE / "digits_calibration.npz"),
        "--eval-data", str(EXAMPLE / "digits_eval.npz"),
        "--input-scale", "1/16", "--no-latency", "--json"]
BROWSERS = ("chromium", "chromium-browser", "google-chrome")


@pytest.fixture(scope="module")
def out(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("html") / "out"
    assert main(ARGS + ["--html", "--out", str(out)]) == 0
    return out


def _section(page: str, anchor: str) -> str:
    return page.split(f'<section id="{anchor}">', 1)[1].split("</section>", 1)[0]


def test_report_html_is_self_contained(out: Path):
    page = (out / "report.html").read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    figures = re.findall(r'<img class="figure" src="data:image/png;base64,[A-Za-z0-9+/=]+"', page)
    assert len(figures) == 3, "accuracy, per-tensor SQNR and histogram figures"
    # Nothing is fetched: no scripts, style sheets, fonts or remote images, and a CSP that
    # would block them anyway.
    assert not re.search(r"<script|<link|<iframe|<object|@import|url\(", page, re.I)
    assert not re.search(r"https?://", page)
    for value in re.findall(r'\b(?:src|href)\s*=\s*"([^"]*)"', page):
        assert value.startswith(("data:", "#")), value
    assert "default-src 'none'" in page
    for anchor in ("summary", "accuracy", "layers", "histograms", "ops", "notes", "versions"):
        assert f'<section id="{anchor}">' in page


def test_summary_and_op_table_match_report_json(out: Path):
    page = (out / "report.html").read_text(encoding="utf-8")
    report = json.loads((out / "report.json").read_text())
    summary = _section(page, "summary")
    assert html.escape(report["target"]) in summary and "argmax agreement" in summary
    rows = re.findall(r'<tr class="place-([a-z0-9-]+)">(.*?)</tr>', _section(page, "ops"), re.S)
    assert len(rows) == len(report["ops"]) > 0
    for (placement, cells), op in zip(rows, report["ops"]):
        tds = [html.unescape(c) for c in re.findall(r"<td[^>]*>(.*?)</td>", cells, re.S)]
        assert placement == op["placement"]
        assert tds[:2] == [str(op["index"]), op["op"]]
        assert tds[3:5] == [op["placement"], op["reason"]]


def test_report_carries_histograms_of_the_worst_tensors(out: Path):
    report = json.loads((out / "report.json").read_text())
    layers = report["layers"]
    assert layers and report["statistics"]["tensors"] >= 5, "--html runs the statistics pass"
    with_hist = [r for r in layers if "histogram" in r]
    assert with_hist == layers[: min(6, len(layers))]
    for r in with_hist:
        h = r["histogram"]
        assert 0 < len(h["counts"]) <= 64 and len(h["edges"]) == len(h["counts"]) + 1
        assert sum(h["counts"]) == h["count"] and np.all(np.diff(h["edges"]) > 0)
        assert h["edges"][0] <= h["min"] <= h["max"] < h["edges"][-1]


def test_same_run_same_page_and_same_model(out: Path, tmp_path):
    """Only the stage timings (volatile) may differ between two runs; --html does not change
    the model."""
    first = (out / "report.html").read_text(encoding="utf-8")
    assert main(ARGS + ["--html", "--out", str(out), "--overwrite"]) == 0
    second = (out / "report.html").read_text(encoding="utf-8")
    strip = lambda p: re.sub(r'<section id="stages">.*?</section>', "", p, flags=re.S)  # noqa
    assert strip(first) == strip(second)
    plain = tmp_path / "plain"
    assert main(ARGS + ["--out", str(plain)]) == 0
    assert not (plain / "report.html").exists()
    digest = hashlib.sha256((plain / "digits_cnn_int8.tflite").read_bytes()).hexdigest()
    assert digest == json.loads((out / "report.json").read_text())["output"]["sha256"]


def _browser() -> str | None:
    return next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)


def _render(browser: str, page: Path, png: Path, profile: Path) -> list[str]:
    """Screenshot `page`; returns the console messages Chromium logged (to stderr)."""
    proc = subprocess.run(
        [browser, "--headless", "--disable-gpu", "--no-sandbox", "--hide-scrollbars",
         "--no-first-run", f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
         f"--screenshot={png}", "--window-size=1280,2000", page.resolve().as_uri()],
        capture_output=True, text=True, timeout=180,
    )
    assert png.is_file(), f"no screenshot (exit {proc.returncode}):\n{proc.stderr[-3000:]}"
    return [line for line in proc.stderr.splitlines()
            if ":CONSOLE" in line or "Uncaught" in line]


def test_renders_in_headless_chromium(out: Path, tmp_path):
    browser = _browser()
    if browser is None:
        pytest.skip("no Chromium found (apt-get install chromium); .ci/run installs it")
    from PIL import Image

    # The console check can fail: a page whose image is blocked by the same CSP logs a message.
    canary = tmp_path / "canary.html"
    canary.write_text(re.sub(r"<body>.*</body>", '<body><img src="https://example.invalid/x.png">'
                             "</body>", (out / "report.html").read_text(encoding="utf-8"),
                             flags=re.S), encoding="utf-8")
    assert _render(browser, canary, tmp_path / "canary.png", tmp_path / "profile"), \
        "Chromium logged no console message for a blocked image: the check below would be blind"

    messages = _render(browser, out / "report.html", tmp_path / "report.png", tmp_path / "profile")
    assert messages == [], "\n".join(messages)
    shot = np.asarray(Image.open(tmp_path / "report.png").convert("RGB"))
    assert shot.shape[:2] == (2000, 1280)
    colours = np.unique(shot.reshape(-1, 3), axis=0)
    assert len(colours) > 200, f"only {len(colours)} colours: blank page?"  # text alone: ~70
    assert shot.std() > 20  # a page of text alone: ~2
    # The figures are drawn: the charts' blue fills a visible share of the page.
    blue = np.all(np.abs(shot.astype(int) - (0x1F, 0x5F, 0x99)) < 12, axis=-1).mean()
    assert blue > 0.01, f"chart colour covers {blue:.2%} of the screenshot"
