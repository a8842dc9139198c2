"""``timeline --html``: a self-contained page, and headless Chromium draws its bars.

The rendering test needs Debian's ``chromium`` (``apt-get install chromium``; ``.ci/run``
installs it). Without it the test skips locally, and fails in CI (``CI=true``).
"""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import pytest
from stabilize_events import EventQuery, EventType, SqliteEventStore
from stabilize_events.cli import main
from stabilize_events.cli.timeline import STATUS_COLOURS
from stabilize_events.demo import run_demo


def _demo(tmp_path: Path) -> tuple[str, dict[str, str]]:
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    store = SqliteEventStore(url)
    try:
        run_demo(store, url, out=io.StringIO())
        created = store.get_events(EventQuery(event_types=[EventType.WORKFLOW_CREATED]))
        ids = {e.data["name"]: e.workflow_id for e in created}
    finally:
        store.close()
    return url, ids


def _html(tmp_path: Path, name: str) -> str:
    url, ids = _demo(tmp_path)
    page = tmp_path / f"{name}.html"
    assert main(["timeline", ids[name], "--html", str(page), "--store", url]) == 0
    return page.read_text()


def test_page_is_self_contained_with_bars_markers_and_events(tmp_path: Path) -> None:
    page = _html(tmp_path, "nightly-etl")
    # No network: no external URL, script or stylesheet link anywhere.
    assert not re.search(r"https?://|<script|<link|@import|url\((?!#)", page)
    assert page.count('class="bar"') == 7  # the workflow, 3 stages, 3 tasks
    assert page.count("<title>retry at") == 2
    assert page.count("<tr><td") == 17  # the event list
    assert "task.retried" in page and "ConnectionResetError" in page


def test_failures_and_skips_are_marked(tmp_path: Path) -> None:
    url, ids = _demo(tmp_path)
    failed, skipped = tmp_path / "f.html", tmp_path / "s.html"
    assert main(["timeline", ids["migrate-orders-db"], "--html", str(failed), "--store", url]) == 0
    assert main(["timeline", ids["release-ios-hotfix"], "--html", str(skipped), "--store", url]) == 0
    statuses = Counter(re.findall(r'data-status="(\w+)"', failed.read_text()))
    assert statuses == {"SUCCEEDED": 2, "TERMINAL": 3}
    assert failed.read_text().count("<title>TERMINAL: ") == 3  # a cross per failure
    assert 'data-status="SKIPPED"' in skipped.read_text() and "url(#hatch)" in skipped.read_text()


def test_unwritable_html_path_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url, ids = _demo(tmp_path)
    code = main(
        ["timeline", ids["nightly-etl"], "--html", str(tmp_path / "no" / "such" / "t.html"), "--store", url]
    )
    assert code == 2 and "cannot write" in capsys.readouterr().err


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _rgb(hex_colour: str) -> tuple[int, int, int]:
    return int(hex_colour[1:3], 16), int(hex_colour[3:5], 16), int(hex_colour[5:7], 16)


def _count_colours(png: Path, colours: dict[str, str]) -> dict[str, int]:
    from PIL import Image

    image = Image.open(png).convert("RGB")
    wanted = {_rgb(c): name for name, c in colours.items()}
    counts = dict.fromkeys(colours, 0)
    for count, pixel in image.getcolors(maxcolors=1 << 24) or []:
        name = wanted.get(pixel)
        if name is not None:
            counts[name] += count
    return counts


def test_chromium_draws_the_bars(tmp_path: Path) -> None:
    binary = _chromium()
    if binary is None:
        reason = "chromium not installed (apt-get install chromium): the timeline rendering is not checked"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must render the timeline: {reason}")
        pytest.skip(reason)
    pytest.importorskip("PIL", reason="pillow not installed (pip install '.[test]')")
    url, ids = _demo(tmp_path)
    shots: dict[str, dict[str, int]] = {}
    for name in ("nightly-etl", "migrate-orders-db"):
        page, png = tmp_path / f"{name}.html", tmp_path / f"{name}.png"
        assert main(["timeline", ids[name], "--html", str(page), "--store", url]) == 0
        subprocess.run(
            [
                binary,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                f"--screenshot={png}",
                "--window-size=1200,900",
                page.as_uri(),
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
        shots[name] = _count_colours(png, {k: STATUS_COLOURS[k] for k in ("SUCCEEDED", "TERMINAL")})
    # Each bar is at least 3 px wide and 18 px tall; the long ones hundreds of px wide.
    etl, failed = shots["nightly-etl"], shots["migrate-orders-db"]
    assert etl["SUCCEEDED"] > 7 * 18 * 200, etl  # 7 green bars, most of them long
    assert etl["TERMINAL"] < 200, etl  # nothing failed (the legend's swatch only)
    assert failed["TERMINAL"] > 18 * 800, failed  # the failed workflow's bar spans the chart
    assert failed["SUCCEEDED"] > 2 * 18 * 600, failed
