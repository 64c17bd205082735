"""The dashboard in a real headless Chromium against a real daemon: a job appears, its
progress moves, it finishes, its page shows the stems' pictures and the model that gave
them, and the models page lists the installed models; two songs uploaded (file input and
drop) are separated, played together in the mixer (mute, solo, gain, seek, A/B, read back
from the Web Audio graph), taken as a zip and rendered as a balance. Screenshots of the
queue and the mixer go to the test's folder and to /tmp/dashboard-shots/."""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import socket
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf

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
        "--window-size=1280,800",
        "--autoplay-policy=no-user-gesture-required",
    ):
        options.add_argument(argument)
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
        browser.find_element(By.CSS_SELECTOR, "#pictures summary").click()
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
        # And the mixer has every stem and the original mix, at the stems' full length
        duration = wait_for(
            lambda: browser.execute_script(
                "const s = window.StemBridgeMixer.snapshot();"
                "return s.tracks.every(t => t.loaded) && s.original.loaded && s.duration;"
            ),
            what="the mixer to load the stems",
        )
        assert duration == pytest.approx(SECONDS, abs=0.1)
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


#: Where the lead looks at the screenshots (besides the test's own folder).
SHOTS = Path("/tmp/dashboard-shots")
#: Short songs: each separates in about a second with the tiny model.
SONG_SECONDS = 6


def shoot(browser: object, folder: Path, name: str) -> Path:
    """A screenshot in the test's folder, copied to :data:`SHOTS`."""
    path = folder / name
    browser.save_screenshot(str(path))  # type: ignore[attr-defined]
    SHOTS.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(path, SHOTS / name)
    return path


def test_drop_two_songs_mix_their_stems_and_take_them_away(
    model_dir: Path, tmp_path: Path, browser: object
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.remote.webdriver import WebDriver

    assert isinstance(browser, WebDriver)
    # Given a daemon with its dashboard, its uploads kept in a folder of the config's
    port = free_port()
    uploads = tmp_path / "uploads"
    # (write_config's extra follows its [dashboard] table, so this key lands in it)
    config = write_config(
        tmp_path / "config.toml",
        tmp_path / "state",
        f'upload_folder = "{uploads}"\n',
        dashboard_port=port,
    )
    daemon = DaemonProcess(["serve", "--config", str(config)], tmp_path / "daemon.log")
    url = f"http://127.0.0.1:{port}"
    first = write_audio(tmp_path / "songs" / "First Song.wav", music(SONG_SECONDS * RATE))
    second = write_audio(tmp_path / "songs" / "second.wav", music(SONG_SECONDS * RATE, seed=1))
    try:
        wait_for(lambda: "daemon ready" in daemon.output(), what="the daemon to start")
        browser.get(url + "/")
        wait_for(
            lambda: browser.find_elements(By.CSS_SELECTOR, "#model option[value=htdemucs]"),
            what="the installed models to be offered",
        )
        assert browser.execute_script("return StemBridge.mode()") in ("events", "connecting")
        offered = [
            box.get_attribute("value")
            for box in browser.find_elements(By.CSS_SELECTOR, "#stem-boxes input")
        ]
        assert offered == ["drums", "bass", "other", "vocals", "instrumental"]

        # When one song is chosen with the file input and another dropped on the page
        browser.find_element(By.ID, "files").send_keys(str(first))
        browser.execute_script(
            "const [b64, name] = arguments;"
            "const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));"
            "const data = new DataTransfer();"
            "data.items.add(new File([bytes], name, {type: 'audio/wav'}));"
            "const drop = document.getElementById('drop');"
            "for (const type of ['dragenter', 'dragover', 'drop'])"
            "  drop.dispatchEvent(new DragEvent(type,"
            "    {dataTransfer: data, bubbles: true, cancelable: true}));",
            base64.b64encode(second.read_bytes()).decode(),
            second.name,
        )

        # Then both become jobs, which the queue shows live until they are done
        def done_rows() -> dict[str, str] | None:
            rows: list[list[str]] = browser.execute_script(
                "return [...document.querySelectorAll('#jobs tr[data-job]')]"
                ".map(r => [r.cells[1].textContent, r.dataset.job, r.dataset.state]);"
            )
            done = {name: job for name, job, state in rows if state == "done"}
            return done if len(done) == 2 else None

        jobs = wait_for(done_rows, timeout=120, what="both uploads to be separated")
        assert sorted(jobs) == ["First Song.wav", "second.wav"], daemon.output()
        uploaded = browser.execute_script(
            "return [...document.querySelectorAll('#uploads li')].map(li => li.dataset.state);"
        )
        assert uploaded == ["queued", "queued"]
        assert sorted(p.name for p in uploads.glob("*/*.wav")) == ["First Song.wav", "second.wav"]
        shoot(browser, tmp_path, "queue.png")
        browser.set_window_size(820, 1180)
        shoot(browser, tmp_path, "queue-tablet.png")
        browser.set_window_size(1280, 800)

        # When the first song's page is opened
        browser.find_element(By.LINK_TEXT, jobs["First Song.wav"]).click()

        # Then its four stems and the original load into the mixer
        def snapshot() -> dict:
            state: dict = browser.execute_script("return window.StemBridgeMixer.snapshot();")
            return state

        wait_for(
            lambda: (
                (
                    s := browser.execute_script(
                        "return window.StemBridgeMixer && window.StemBridgeMixer.snapshot();"
                    )
                )
                and all(t["loaded"] for t in s["tracks"])
                and s["original"]["loaded"]
            ),
            what="the stems to load",
        )
        state = snapshot()
        assert [t["name"] for t in state["tracks"]] == ["drums", "bass", "other", "vocals"]
        assert state["sampleRate"] == RATE
        assert {t["frames"] for t in state["tracks"]} == {SONG_SECONDS * RATE}

        # When it plays
        browser.find_element(By.ID, "play").click()
        started = wait_for(
            lambda: (s := snapshot())["playing"] and s["position"] > 0.2 and s,
            what="the mixer to play",
        )
        later = wait_for(
            lambda: (s := snapshot())["position"] > started["position"] + 0.2 and s,
            what="the playhead to move",
        )
        # Then the context's clock advances, and every source started at one context time
        assert later["contextTime"] > started["contextTime"]
        sources = [*started["tracks"], started["original"]]
        assert all(t["playing"] for t in sources)
        assert len({t["startedAt"] for t in sources}) == 1 and {t["offset"] for t in sources} == {0}
        assert all(t["gain"] == pytest.approx(1) for t in started["tracks"])
        assert started["original"]["gain"] == pytest.approx(0)

        def gains() -> dict[str, float]:
            return {t["name"]: round(t["gain"], 3) for t in snapshot()["tracks"]}

        def row(stem: str, part: str) -> object:
            return browser.find_element(By.CSS_SELECTOR, f".track[data-stem={stem}] {part}")

        # When drums are muted, then vocals soloed, then the solo taken off again
        row("drums", ".mute").click()  # type: ignore[attr-defined]
        wait_for(
            lambda: gains() == {"drums": 0, "bass": 1, "other": 1, "vocals": 1},
            what="drums muted",
        )
        row("vocals", ".solo").click()  # type: ignore[attr-defined]
        wait_for(
            lambda: gains() == {"drums": 0, "bass": 0, "other": 0, "vocals": 1},
            what="vocals alone",
        )
        # (the keyboard's S takes it off: vocals are the chosen stem once clicked)
        browser.find_element(By.TAG_NAME, "body").send_keys("s")
        wait_for(
            lambda: gains() == {"drums": 0, "bass": 1, "other": 1, "vocals": 1},
            what="the solo off",
        )
        # And the bass turned down to half
        browser.execute_script(
            "const level = arguments[0]; level.value = '0.5';"
            "level.dispatchEvent(new Event('input'));",
            row("bass", ".level"),
        )
        wait_for(lambda: gains()["bass"] == 0.5, what="the bass at half")
        # When the space bar pauses, and a click at the waveform's middle seeks there
        browser.find_element(By.TAG_NAME, "body").send_keys(Keys.SPACE)
        wait_for(lambda: not snapshot()["playing"], what="the space bar to pause")
        wave = row("other", ".wave")
        browser.execute_script(
            "const box = arguments[0].getBoundingClientRect();"
            "arguments[0].dispatchEvent(new MouseEvent('click', {bubbles: true,"
            " clientX: box.left + box.width / 2, clientY: box.top + 5}));",
            wave,
        )
        assert snapshot()["position"] == pytest.approx(SONG_SECONDS / 2, abs=0.05)
        browser.find_element(By.TAG_NAME, "body").send_keys(Keys.SPACE)
        # Then every source starts again at one context time, from the middle
        resumed = wait_for(
            lambda: (s := snapshot())["playing"] and s["starts"] == 2 and s, what="playing again"
        )
        sources = [*resumed["tracks"], resumed["original"]]
        assert len({t["startedAt"] for t in sources}) == 1
        assert all(t["offset"] == pytest.approx(SONG_SECONDS / 2, abs=0.05) for t in sources)
        # And the A/B button plays the original alone
        browser.find_element(By.ID, "ab-original").click()
        wait_for(
            lambda: set(gains().values()) == {0} and snapshot()["original"]["gain"] > 0.999,
            what="the original alone",
        )
        browser.find_element(By.ID, "ab-stems").click()
        shoot(browser, tmp_path, "mixer.png")
        browser.set_window_size(820, 1180)
        shoot(browser, tmp_path, "mixer-tablet.png")
        browser.set_window_size(1280, 800)

        # When all stems are taken as a zip
        job_id = jobs["First Song.wav"]
        job = httpx.get(f"{url}/api/jobs/{job_id}").json()
        manifest = Path(job["manifest"])
        listed = [s["path"] for s in json.loads(manifest.read_text())["stems"]]
        archive = zipfile.ZipFile(io.BytesIO(httpx.get(f"{url}/api/jobs/{job_id}/zip").content))
        # Then it holds exactly the manifest's stems, byte for byte
        assert archive.namelist() == listed
        for name in listed:
            assert archive.read(name) == (manifest.parent / name).read_bytes()

        # When the balance is rendered
        browser.find_element(By.ID, "render").click()
        balance_id = wait_for(
            lambda: browser.find_element(By.ID, "render-note").get_attribute("data-job"),
            what="the balance job",
        )
        balance = wait_for(
            lambda: (
                (b := httpx.get(f"{url}/api/jobs/{balance_id}").json())["state"] == "done" and b
            ),
            what="the balance to be rendered",
        )
        # Then its stems are the mixer's gains times the stems, and its mix their sum
        gains_sent = {"drums": 0.0, "bass": 0.5, "other": 1.0, "vocals": 1.0}
        rendered = Path(balance["manifest"]).parent
        assert json.loads(Path(balance["manifest"]).read_text())["balance"]["gains"] == gains_sent
        total = 0
        for name, gain in gains_sent.items():
            stem, rate = sf.read(str(manifest.parent / f"{name}.wav"))
            out, _ = sf.read(str(rendered / f"{name}.wav"))
            np.testing.assert_allclose(out, gain * stem, atol=0.5 / 32768 + 1e-12)
            total = total + gain * stem
        mix, mix_rate = sf.read(str(rendered / "mix.wav"))
        assert mix_rate == rate and mix.shape == total.shape
        np.testing.assert_allclose(mix, total, atol=0.5 / 32768 + 1e-12)
        assert sf.info(str(rendered / "mix.wav")).subtype == sf.info(str(first)).subtype

        # When a browser without server-sent events opens the queue
        browser.execute_cdp_cmd(
            "Page.addScriptToEvaluateOnNewDocument", {"source": "window.EventSource = undefined;"}
        )
        browser.get(url + "/")
        # Then it polls instead, and shows the three jobs all the same
        wait_for(
            lambda: browser.execute_script(
                "return StemBridge.mode() === 'polling'"
                " && document.querySelectorAll('#jobs tr[data-state=done]').length === 3;"
            ),
            what="the queue by polling",
        )
    finally:
        assert daemon.stop() == 0, daemon.output()


def test_the_live_queue_polls_while_the_daemon_is_down_and_goes_live_again(
    tmp_path: Path, browser: object
) -> None:
    from selenium.webdriver.remote.webdriver import WebDriver

    assert isinstance(browser, WebDriver)
    # Given the queue open live on a daemon's dashboard
    port = free_port()
    config = write_config(tmp_path / "config.toml", tmp_path / "state", dashboard_port=port)

    def start() -> DaemonProcess:
        daemon = DaemonProcess(["serve", "--config", str(config)], tmp_path / "daemon.log")
        wait_for(lambda: "daemon ready" in daemon.output(), what="the daemon to start")
        return daemon

    def mode_is(mode: str) -> bool:
        return bool(browser.execute_script(f"return StemBridge.mode() === '{mode}'"))

    daemon = start()
    try:
        browser.get(f"http://127.0.0.1:{port}/")
        wait_for(lambda: mode_is("events"), what="the queue to go live")
        # When the daemon stops, the page falls back to polling and says it is unreachable
        assert daemon.stop() == 0, daemon.output()
        wait_for(lambda: mode_is("polling"), what="the queue to poll")
        wait_for(
            lambda: (
                "not reachable"
                in browser.execute_script("return document.getElementById('status').textContent")
            ),
            what="the status to say so",
        )
        # Then, once a daemon serves that port again, the page is live again on its own
        daemon = start()
        wait_for(lambda: mode_is("events"), timeout=30, what="the queue to go live again")
        status = browser.execute_script("return document.getElementById('status').textContent")
        assert status.startswith("live ")
    finally:
        assert daemon.stop() == 0, daemon.output()
