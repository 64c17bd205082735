"""The evaluation report in the headless Chromium the dashboard tests use: it opens, and
every plot it shows has loaded."""

from __future__ import annotations

from pathlib import Path

from bridge.cli import EXIT_OK, main

from evaluation_data import estimates, folders_dataset
from test_dashboard_browser import browser  # noqa: F401 (the fixture)

DUO = ("vocals", "instrumental")


def test_report_html_opens_with_its_plots_loaded(tmp_path: Path, browser: object) -> None:  # noqa: F811
    from selenium.webdriver.remote.webdriver import WebDriver

    assert isinstance(browser, WebDriver)
    # Given a report of two tracks and two folders of estimates
    root = folders_dataset(tmp_path / "songs", 2, DUO)
    true = estimates(tmp_path / "true", root)
    swapped = estimates(tmp_path / "swapped", root, swap=True)
    report = tmp_path / "report"
    argv = ["evaluate", str(root), "--estimates", str(true), "--estimates", str(swapped)]
    assert main([*argv, "-o", str(report), "--json"]) == EXIT_OK
    # When Chromium opens report.html
    browser.get((report / "report.html").as_uri())
    # Then every image (the box plots and one bar chart per track) has loaded
    loaded = browser.execute_script(
        "const images = [...document.querySelectorAll('img')];"
        "return images.map(i => [i.getAttribute('src'), i.complete, i.naturalWidth]);"
    )
    assert [src for src, _, _ in loaded] == [
        "plots/sdr_by_stem.png",
        "plots/track-001.png",
        "plots/track-002.png",
    ]
    assert all(complete and width > 0 for _, complete, width in loaded), loaded
    # And the summary table has a row per model and stem
    rows = browser.execute_script(
        "return [...document.querySelectorAll('#summary tr')].slice(1)"
        ".map(r => [r.cells[0].textContent, r.cells[1].textContent]);"
    )
    assert rows == [[m, s] for m in ("true", "swapped") for s in ("instrumental", "vocals")]
