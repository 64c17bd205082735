"""The dashboard in a real headless Chromium against a real daemon: a job appears, its
progress moves, it finishes, its page shows the stems' pictures and the model that gave
them, and the models page lists the installed models."""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.pictures import SPECTROGRAM_SIZE, WAVEFORM_SIZE

from processes import DaemonProcess, wait_for, write_config
from programs import required_program
from signals import music, write_audio

RATE = 44100
#: Long enough for the tiny model to take a few seconds, so polling sees progress.
SECONDS = 60


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def browser() -> Iterator[object]:
    """Headless Debian Chromium driven by its chromedriver (nothing downloaded)."""
    chromium = required_program(
        "chromium", package="chromium", purpose="the dashboard is not tested in a browser"
    )
    chromedriver = required_program(
        "chromedriver",
        package="chromium-driver",
        purpose="the dashboard is not tested in a browser",
    )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1280,1600",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})  # responses seen
    driver = webdriver.Chrome(service=Service(executable_path=chromedriver), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def test_a_job_appears_progresses_finishes_and_shows_its_pictures(
    model_dir: Path, tmp_path: Path, browser: object
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.remote.webdriver import WebDriver

    assert isinstance(browser, WebDriver)
    # Given a daemon watching renders/ with its dashboard on a free port, open in Chromium
    renders = tmp_path / "renders"
    renders.mkdir()
    port = free_port()
    rule = f'[[rule]]\nfolder = "{renders}"\noutput = "{tmp_path / "stems"}/{{name}}"\n'
    config = write_config(tmp_path / "config.toml", tmp_path / "state", rule, dashboard_port=port)
    daemon = DaemonProcess(["serve", "--config", str(config)], tmp_path / "daemon.log")
    try:
        wait_for(lambda: "daemon ready" in daemon.output(), what="the daemon to start")
        browser.get(f"http://127.0.0.1:{port}/")
        wait_for(
            lambda: browser.find_elements(By.CSS_SELECTOR, "#folders tr[data-state=watching]"),
            what="the watched folder to show as watching",
        )

        # When a render lands in the folder
        staged = write_audio(tmp_path / "take.wav", music(SECONDS * RATE))
        os.replace(staged, renders / "take.wav")

        # Then its job appears in the queue, its progress moves, and it ends done
        def first_row() -> list[str] | None:
            # Read in one script: the page rebuilds its rows on every poll.
            row: list[str] | None = browser.execute_script(
                "const r = document.querySelector('#jobs tr[data-job]');"
                "return r && [r.dataset.job, r.dataset.state, r.dataset.progress];"
            )
            return row

        job_id, state, _ = wait_for(first_row, what="the job to appear")
        seen: list[float] = []
        deadline = time.monotonic() + 120
        while state != "done" and time.monotonic() < deadline:
            job_id, state, progress = first_row() or ("", "", "0")
            assert state in ("queued", "running", "done"), daemon.output()
            seen.append(float(progress))
            time.sleep(0.05)
        assert state == "done", daemon.output()
        between = sorted({p for p in seen if 0 < p < 1})
        assert len(between) >= 2, f"progress seen: {sorted(set(seen))}"
        assert seen == sorted(seen), "progress went backwards"
        browser.save_screenshot(str(tmp_path / "dashboard-queue.png"))

        # And the job page shows every stem with its two pictures, loaded
        browser.find_element(By.LINK_TEXT, job_id).click()
        wait_for(
            lambda: len(browser.find_elements(By.CSS_SELECTOR, ".stem img")) == 8,
            what="the stems' pictures",
        )
        loaded = wait_for(
            lambda: browser.execute_script(
                "const images = [...document.querySelectorAll('.stem img')];"
                "return images.every(i => i.complete && i.naturalWidth > 0)"
                " && images.map(i => [i.className, i.naturalWidth, i.naturalHeight]);"
            ),
            what="the pictures to load",
        )
        assert sorted(set(map(tuple, loaded))) == [
            ("spectrogram", *SPECTROGRAM_SIZE),
            ("waveform", *WAVEFORM_SIZE),
        ]
        assert len(browser.find_elements(By.CSS_SELECTOR, ".stem audio")) == 4
        # And a player seeks within its stem, which it is sent in byte ranges (206)
        browser.get_log("performance")  # forget the responses so far
        duration = wait_for(
            lambda: browser.execute_script(
                "const a = document.querySelector('.stem audio');"
                "if (a.preload !== 'metadata') { a.preload = 'metadata'; a.load(); }"
                "return a.readyState >= 1 && a.duration;"
            ),
            what="a player to load its stem's header",
        )
        assert duration == pytest.approx(SECONDS, abs=0.1)
        browser.execute_script("document.querySelector('.stem audio').currentTime = 45")
        wait_for(
            lambda: browser.execute_script(
                "const a = document.querySelector('.stem audio');"
                "return !a.seeking && a.readyState >= 2 && a.currentTime >= 44.9;"
            ),
            what="the player to seek to 45 s",
        )
        statuses = [
            event["params"]["response"]["status"]
            for entry in browser.get_log("performance")
            for event in [json.loads(entry["message"])["message"]]
            if event["method"] == "Network.responseReceived"
            and event["params"]["response"]["url"].endswith(".wav")
        ]
        assert statuses and set(statuses) == {206}, statuses
        screenshot = tmp_path / "dashboard-job.png"
        browser.save_screenshot(str(screenshot))
        print(f"dashboard screenshots: {screenshot} and {tmp_path / 'dashboard-queue.png'}")
        assert screenshot.stat().st_size > 10_000
        # And each stem says which model gave it
        made_by = browser.execute_script(
            "return [...document.querySelectorAll('.stem .made-by')].map(s => s.textContent);"
        )
        assert made_by == [" — htdemucs"] * 4

        # When the models page is opened from the header
        browser.find_element(By.LINK_TEXT, "Models").click()

        # Then it lists the models, the installed tiny ones first
        def model_rows() -> list[list[str]] | None:
            rows: list[list[str]] | None = browser.execute_script(
                "const rows = [...document.querySelectorAll('#models tr[data-model]')];"
                "return rows.length && rows.map(r => [r.dataset.model, r.dataset.installed,"
                " r.cells[3].textContent]);"
            )
            return rows

        rows = wait_for(model_rows, what="the models to be listed")
        installed = ["htdemucs", "htdemucs_ft", "htdemucs_6s", "hdemucs_mmi"]
        assert [name for name, _, _ in rows[:4]] == installed
        assert all(flag == "true" and text.startswith("yes") for _, flag, text in rows[:4])
        assert rows[4][1:] == ["false", "no"]
        # And "installed only" leaves those, and no named ensemble
        browser.find_element(By.ID, "installed-only").click()
        wait_for(lambda: len(model_rows() or []) == 4, what="only the installed models")
        assert browser.find_element(By.ID, "no-ensembles").is_displayed()
        browser.save_screenshot(str(tmp_path / "dashboard-models.png"))
    finally:
        assert daemon.stop() == 0, daemon.output()
