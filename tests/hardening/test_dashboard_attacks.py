"""The dashboard of a real daemon, attacked over real HTTP on loopback: a stem swapped for a
link while it is requested, a flood of half-sent requests against a low descriptor limit,
and requests built to raise errors."""

from __future__ import annotations

import json
import selectors
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from bridge.dashboard.auth import create_token
from bridge.dashboard.server import REQUEST_TIMEOUT_SECONDS
from bridge.jobs.store import Job, JobStore

from processes import DaemonProcess, all_final, wait_for, write_config
from signals import music, write_audio

RATE = 44100
PRIVATE = b"PRIVATE KEY MATERIAL, never to be served " * 64
#: The flood opens ended connections again at most this many per pass of this long.
REOPEN_PER_PASS, PASS_SECONDS = 50, 0.1
# Swaps vocals.wav for the link swap.link and back, as fast as it can, in its own process.
SWAP = """
import os, sys
folder = sys.argv[1]
stem, real, link = (os.path.join(folder, n) for n in ("vocals.wav", "swap.real", "swap.link"))
while True:
    os.rename(stem, real)
    os.rename(link, stem)
    os.rename(stem, link)
    os.rename(real, stem)
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Dashboard:
    """A daemon watching ``renders/`` into ``stems/``, its dashboard at ``url``."""

    process: DaemonProcess
    store: JobStore
    renders: Path
    url: str

    def job(self, timeout: float = 120) -> Job:
        """The one job, once it has ended."""
        jobs = wait_for(lambda: all_final(self.store, 1), timeout=timeout, what="the job")
        return jobs[0]


@pytest.fixture
def start(model_dir: Path, tmp_path: Path) -> Iterator[Callable[..., Dashboard]]:
    started: list[DaemonProcess] = []

    def make(*, open_files: int | None = None) -> Dashboard:
        renders = tmp_path / "renders"
        renders.mkdir()
        port = free_port()
        config = write_config(tmp_path / "config.toml", tmp_path / "state", dashboard_port=port)
        prefix: tuple[str, ...] = ()
        if open_files is not None:  # the daemon's own descriptor limit, set before it starts
            prefix = (
                sys.executable,
                "-c",
                "import os, resource, sys; "
                f"resource.setrlimit(resource.RLIMIT_NOFILE, ({open_files}, {open_files})); "
                "os.execv(sys.argv[1], sys.argv[1:])",
            )
        args = ["watch", str(renders), "-o", str(tmp_path / "stems"), "--stems", "vocals"]
        daemon = DaemonProcess(
            [*args, "--config", str(config)], tmp_path / "daemon.log", prefix=prefix
        )
        started.append(daemon)
        wait_for(lambda: "daemon ready" in daemon.output(), what="the daemon to start")
        store = JobStore(tmp_path / "state")
        return Dashboard(daemon, store, renders, f"http://127.0.0.1:{port}")

    yield make
    for daemon in started:
        if daemon.process.poll() is None:
            daemon.kill()


def separated(dashboard: Dashboard) -> tuple[Job, Path]:
    write_audio(dashboard.renders / "take.wav", music(RATE // 4))
    job = dashboard.job()
    assert job.state == "done", dashboard.process.output()
    assert job.manifest is not None
    return job, Path(job.manifest).parent


def test_a_stem_swapped_for_a_link_while_requested_never_serves_the_link_target(
    start: Callable[..., Dashboard], tmp_path: Path
) -> None:
    # Given a finished job, a private file the daemon can read, and someone who can write
    # the stem folder swapping the stem with a link to that file, over and over
    dashboard = start()
    job, folder = separated(dashboard)
    stem = folder / "vocals.wav"
    real = stem.read_bytes()
    private = tmp_path / "private.key"
    private.write_bytes(PRIVATE)
    (folder / "swap.link").symlink_to(private)
    swapper = subprocess.Popen([sys.executable, "-c", SWAP, str(folder)])
    # When the stem is requested a few thousand times meanwhile (no token: loopback)
    answers: Counter[str] = Counter()
    try:
        with httpx.Client(base_url=dashboard.url, timeout=10) as client:
            deadline = time.monotonic() + 8
            while answers.total() < 3000 and time.monotonic() < deadline:
                try:
                    response = client.get(f"/files/{job.id}/vocals.wav")
                except httpx.TransportError:  # a response cut short, a reset
                    answers["broken"] += 1
                    continue
                if PRIVATE[:40] in response.content:
                    answers["leaked"] += 1
                elif response.status_code == 200:
                    answers["stem" if response.content == real else "other 200"] += 1
                else:
                    answers[str(response.status_code)] += 1
    finally:
        swapper.kill()
        swapper.wait()
    # Then the private file never came back, nor a broken answer; the stem did, and the
    # link was refused
    assert answers["leaked"] == 0, f"the private file was served: {answers}"
    assert answers["stem"] > 0 and answers["403"] > 0, answers
    assert set(answers) <= {"stem", "403", "404"}, answers
    assert "Traceback" not in dashboard.process.output()


class Flood:
    """``count`` connections to ``port`` that each send half a request head and then
    nothing; each one the daemon ends (closes, or answers 503) is opened again at once.

    Runs on its own thread until left, connecting without blocking so that a slow connect
    never delays noticing the others end: ``lifetimes`` are the seconds each ended one was
    held after sending its half head, ``oldest()`` the age of the oldest one still held.
    """

    def __init__(self, port: int, count: int) -> None:
        self.lifetimes: list[float] = []
        self._head = f"GET /api/jobs HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n".encode()
        self._address = ("127.0.0.1", port)
        self._count = count
        self._stop = threading.Event()
        self._selector = selectors.DefaultSelector()
        self._thread = threading.Thread(target=self._run, name="flood")

    def __enter__(self) -> Flood:
        for _ in range(self._count):
            self._open()
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()
        for key in list(self._selector.get_map().values()):
            self._end(key.fileobj)
        self._selector.close()

    def oldest(self) -> float:
        sent = [key.data for key in list(self._selector.get_map().values()) if key.data]
        return time.monotonic() - min(sent)

    def _open(self) -> None:
        connection = socket.socket()
        connection.setblocking(False)
        connection.connect_ex(self._address)  # completes (or fails) when it turns writable
        self._selector.register(connection, selectors.EVENT_WRITE, None)

    def _end(self, connection: Any) -> None:
        self._selector.unregister(connection)
        connection.close()

    def _run(self) -> None:
        owed = 0  # connections to open again, paced like a client that means to hold them
        while not self._stop.is_set():
            started = time.monotonic()
            for key, _ in self._selector.select(timeout=0.1):
                connection = key.fileobj
                if key.data is not None:  # the daemon ended it
                    self.lifetimes.append(time.monotonic() - key.data)
                    self._end(connection)
                    owed += 1
                    continue
                try:
                    if connection.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):  # type: ignore[union-attr]
                        raise ConnectionRefusedError
                    connection.send(self._head)  # type: ignore[union-attr]
                except OSError:  # refused or reset on the way in: try again
                    self._end(connection)
                    owed += 1
                    continue
                self._selector.modify(connection, selectors.EVENT_READ, time.monotonic())
            for _ in range(min(owed, REOPEN_PER_PASS)):
                self._open()
            owed -= min(owed, REOPEN_PER_PASS)
            time.sleep(max(0.0, started + PASS_SECONDS - time.monotonic()))


@pytest.mark.skipif(sys.platform == "win32", reason="no descriptor limit to lower on Windows")
def test_idle_half_sent_requests_beyond_the_descriptor_limit_do_not_starve_the_daemon(
    start: Callable[..., Dashboard],
) -> None:
    # Given a daemon allowed 256 open files, flooded with 300 connections that each send
    # half a request head and then nothing, each opened again as soon as the daemon ends it
    dashboard = start(open_files=256)
    with Flood(int(dashboard.url.rsplit(":", 1)[1]), 300) as flood:
        began = time.monotonic()
        # When a render lands in the watched folder meanwhile
        write_audio(dashboard.renders / "take.wav", music(RATE // 4))
        # Then it is separated while the flood goes on
        job = dashboard.job(timeout=120)
        # And no connection is held much longer than the request timeout
        time.sleep(max(0.0, began + REQUEST_TIMEOUT_SECONDS + 3 - time.monotonic()))
        oldest = flood.oldest()
        lifetimes = sorted(flood.lifetimes)
    assert job.state == "done", dashboard.process.output()[-3000:]
    assert len(lifetimes) > 300 and lifetimes[-1] < REQUEST_TIMEOUT_SECONDS + 2, lifetimes[-5:]
    assert oldest < REQUEST_TIMEOUT_SECONDS + 2, oldest
    # And the dashboard answers again once the flood is over, which it logged once
    jobs = httpx.get(f"{dashboard.url}/api/jobs", timeout=10).json()["jobs"]
    assert [job["state"] for job in jobs] == ["done"]
    wait_for(
        lambda: "taking connections again" in dashboard.process.output(),
        timeout=15,
        what="the end of the flood to be logged",
    )
    log = dashboard.process.output()
    assert log.count("connections open, the most it takes") == 1, log[-3000:]
    assert "Too many open files" not in log and "unable to open database" not in log
    assert len(log) < 100_000, f"the log grew to {len(log)} characters"
    assert dashboard.process.stop() == 0, log[-3000:]


def test_requests_built_to_raise_errors_get_a_clear_refusal(
    start: Callable[..., Dashboard], tmp_path: Path
) -> None:
    # Given a finished job on a daemon with a dashboard token
    create_token(tmp_path / "state")
    dashboard = start()
    job, folder = separated(dashboard)
    cancel = f"/api/jobs/{job.id}/cancel"
    with httpx.Client(base_url=dashboard.url, timeout=10) as client:
        csrf = client.get("/api/session").json()["csrf"]
        # When requests carry what the handlers did not expect
        answers = {
            "NUL in a file name": client.get(f"/files/{job.id}/vocals%00.wav"),
            "CSRF header not ASCII": client.post(
                cancel, headers={"origin": dashboard.url, "x-stembridge-csrf": "é".encode()}
            ),
            "Origin not a URL": client.post(
                cancel, headers={"origin": "http://[", "x-stembridge-csrf": csrf}
            ),
            "token with a lone surrogate": client.post(
                "/api/login",
                content=b'{"token": "\\ud800"}',
                headers={"origin": dashboard.url, "content-type": "application/json"},
            ),
        }
        # Then each gets a refusal that says why, never a server error
        assert {what: r.status_code for what, r in answers.items()} == {
            "NUL in a file name": 400,
            "CSRF header not ASCII": 403,
            "Origin not a URL": 403,
            "token with a lone surrogate": 401,
        }
        assert "NUL" in answers["NUL in a file name"].json()["error"]
        assert "CSRF" in answers["CSRF header not ASCII"].json()["error"]
        assert "wrong token" in answers["token with a lone surrogate"].json()["error"]
        # And a manifest edited to hold odd pictures still gives the job's page its data
        manifest = json.loads((folder / "manifest.json").read_text())
        vocals = next(stem for stem in manifest["stems"] if stem["name"] == "vocals")
        for pictures, shown in [
            (["vocals.waveform.png"], {}),
            (
                {"waveform": 5, "spectrogram": "vocals.spectrogram.png"},
                {"spectrogram": f"/files/{job.id}/vocals.spectrogram.png"},
            ),
        ]:
            vocals["pictures"] = pictures
            (folder / "manifest.json").write_text(json.dumps(manifest))
            detail = client.get(f"/api/jobs/{job.id}")
            assert detail.status_code == 200, pictures
            [stem] = [stem for stem in detail.json()["stems"] if stem["name"] == "vocals"]
            assert stem["pictures"] == shown
        assert client.get(f"/files/{job.id}/vocals.spectrogram.png").status_code == 200
    assert "Traceback" not in dashboard.process.output()
