"""Uploads, zips, balances and live events through the dashboard's API, and every bad
input: a file that is not audio, one over the limit, one cut off, a full disk, a zip of
a running job, a forged request. In-process (Starlette's client) where the app alone is
tested, through the real server (uvicorn on a thread) where the network matters."""

from __future__ import annotations

import errno
import io
import json
import os
import shutil
import socket
import subprocess
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import httpx
import numpy as np
import pytest
import soundfile as sf
from starlette.testclient import TestClient
from test_dashboard import FOLDERS, done_job, free_port

from bridge.dashboard.app import create_app
from bridge.dashboard.auth import Guard
from bridge.dashboard.intake import JobDefaults
from bridge.dashboard.server import DashboardServer
from bridge.dashboard.uploads import Uploads, open_part, upload_name
from bridge.jobs.store import JobStore
from bridge.pipeline.run import NoResults, run_job

from processes import wait_for
from signals import music, write_audio

PORT = 8737
ORIGIN = f"http://127.0.0.1:{PORT}"
LIMIT = 2_000_000


def make_app(
    tmp_path: Path, store: JobStore, *, port: int = PORT, opener: object = open_part
) -> tuple[object, Guard]:
    guard = Guard(host="127.0.0.1", port=port, state_dir=tmp_path / "state")
    uploads = Uploads(tmp_path / "uploads", max_bytes=LIMIT, opener=opener)  # type: ignore[arg-type]
    app = create_app(
        store=store,
        guard=guard,
        folders=lambda: FOLDERS,
        workers=None,
        uploads=uploads,
        defaults=JobDefaults(),
    )
    return app, guard


@pytest.fixture
def store(tmp_path: Path) -> JobStore:
    return JobStore(tmp_path / "state")


def client(tmp_path: Path, store: JobStore, **kwargs: object) -> tuple[TestClient, Guard]:
    app, guard = make_app(tmp_path, store, **kwargs)  # type: ignore[arg-type]
    return TestClient(app, base_url=ORIGIN), guard  # type: ignore[arg-type]


def headers(guard: Guard, origin: str = ORIGIN) -> dict[str, str]:
    return {
        "origin": origin,
        "x-stembridge-csrf": guard.csrf,
        "content-type": "application/octet-stream",
    }


def wav_bytes(tmp_path: Path, frames: int = 4410, name: str = "take.wav") -> bytes:
    return write_audio(tmp_path / "src" / name, music(frames)).read_bytes()


def left_in_uploads(tmp_path: Path) -> list[str]:
    root = tmp_path / "uploads"
    while True:
        try:
            found = root.rglob("*") if root.exists() else []
            return sorted(str(p.relative_to(root)) for p in found)
        except FileNotFoundError:  # removed while listed: look again
            continue


# Uploads


def test_an_upload_is_stored_under_its_own_folder_and_queued_with_the_choices(
    tmp_path: Path, store: JobStore
) -> None:
    # Given a dashboard and a WAV file
    web, guard = client(tmp_path, store)
    data = wav_bytes(tmp_path)
    # When the page uploads it with a model, stems, preset and format chosen
    response = web.post(
        "/api/uploads",
        params={
            "name": "My Song.wav",
            "model": "htdemucs_6s",
            "stems": "vocals,instrumental,rhythm=drums+bass",
            "preset": "broadcast",
            "format": "flac",
        },
        content=data,
        headers=headers(guard),
    )
    # Then a job is queued for it, from the dashboard, with those settings
    assert response.status_code == 201, response.text
    job = store.get(response.json()["id"])
    assert job.state == "queued" and job.spec.source == "dashboard"
    assert job.spec.separation.model == "htdemucs_6s"
    assert job.spec.separation.stems == ("vocals", "instrumental", "rhythm=drums+bass")
    assert job.spec.effects.preset == "broadcast"
    assert job.spec.output.format == "flac"
    # And the file lies whole in its own upload folder, its stems to go beside it
    stored = Path(job.spec.input)
    assert stored.name == "My Song.wav" and stored.read_bytes() == data
    assert stored.parent.parent == tmp_path / "uploads"
    assert Path(job.spec.folder) == stored.parent / "My Song"
    assert sorted(p.name for p in stored.parent.iterdir()) == [".stembridge", "My Song.wav"]


def test_two_uploads_of_one_name_do_not_meet(tmp_path: Path, store: JobStore) -> None:
    web, guard = client(tmp_path, store)
    data = wav_bytes(tmp_path)
    ids = [
        web.post(
            "/api/uploads", params={"name": "a.wav"}, content=data, headers=headers(guard)
        ).json()["id"]
        for _ in range(2)
    ]
    inputs = {store.get(i).spec.input for i in ids}
    assert len(inputs) == 2 and all(Path(p).read_bytes() == data for p in inputs)


@pytest.mark.parametrize(
    ("sent", "stored"),
    [
        ("../../../etc/cron.d/evil.wav", "evil.wav"),
        ("C:\\Users\\me\\CON.WAV", "_CON.wav"),
        ("..wav", "untitled.wav"),
        ("song\nname.wav", "song_name.wav"),
    ],
)
def test_upload_names_are_sanitised(sent: str, stored: str) -> None:
    assert upload_name(sent) == stored


def test_a_climbing_name_stays_in_the_upload_folder(tmp_path: Path, store: JobStore) -> None:
    web, guard = client(tmp_path, store)
    response = web.post(
        "/api/uploads",
        params={"name": "../../escape.wav"},
        content=wav_bytes(tmp_path),
        headers=headers(guard),
    )
    stored = Path(store.get(response.json()["id"]).spec.input)
    assert stored.parent.parent == tmp_path / "uploads" and stored.name == "escape.wav"
    assert not (tmp_path / "escape.wav").exists()


def test_a_file_that_is_not_audio_is_refused_and_not_kept(tmp_path: Path, store: JobStore) -> None:
    web, guard = client(tmp_path, store)
    # A text file named .wav, and a PNG: refused by content, whatever the name says
    for name, body in [("notes.wav", b"hello, not a song\n" * 100), ("x.mp3", b"\x89PNG\r\n" * 50)]:
        response = web.post(
            "/api/uploads", params={"name": name}, content=body, headers=headers(guard)
        )
        assert response.status_code == 415, response.text
        assert response.json()["error"].startswith(f"{name}: not audio that StemBridge can read")
    assert store.list() == [] and left_in_uploads(tmp_path) == []


def test_an_upload_over_the_limit_is_refused_whether_announced_or_not(
    tmp_path: Path, store: JobStore
) -> None:
    web, guard = client(tmp_path, store)
    big = wav_bytes(tmp_path, frames=LIMIT // 4 + 1000)
    assert len(big) > LIMIT
    # Announced by Content-Length: refused before the body is read
    announced = web.post(
        "/api/uploads", params={"name": "big.wav"}, content=big, headers=headers(guard)
    )
    # Sent in chunks, without a length: refused once the count passes the limit
    chunked = web.post(
        "/api/uploads",
        params={"name": "big.wav"},
        content=(big[i : i + 65536] for i in range(0, len(big), 65536)),
        headers=headers(guard),
    )
    for response in (announced, chunked):
        assert response.status_code == 413, response.text
        assert "limit of 2 MB; raise [dashboard] upload_max_mb" in response.json()["error"]
    assert store.list() == [] and left_in_uploads(tmp_path) == []


def test_wrong_choices_are_refused_before_the_file_is_stored(
    tmp_path: Path, store: JobStore
) -> None:
    web, guard = client(tmp_path, store)
    data = wav_bytes(tmp_path)
    for params, says in [
        ({"model": "no_such_model"}, "model 'no_such_model' is not one StemBridge lists"),
        # Settings may name files; a browser may not (nothing it sends is opened as a path)
        ({"model": "/tmp/evil.ckpt"}, "model '/tmp/evil.ckpt' is not one StemBridge lists"),
        ({"stems": "vocals@/tmp/x.onnx"}, "model '/tmp/x.onnx' is not one StemBridge lists"),
        ({"preset": "/etc/stembridge.toml"}, "preset '/etc/stembridge.toml' is not one of"),
        ({"stems": "kazoo"}, "kazoo"),
        ({"format": "wma"}, "format = 'wma' is not allowed"),
        ({"preset": "no-such-preset"}, "no-such-preset"),
        ({"device": "cuda"}, "unknown upload choice 'device'"),
        ({"name": " "}, "no file name"),
    ]:
        response = web.post(
            "/api/uploads",
            params={"name": "a.wav", **params},
            content=data,
            headers=headers(guard),
        )
        assert response.status_code == 400 and says in response.json()["error"], response.text
    assert store.list() == [] and left_in_uploads(tmp_path) == []


def test_an_upload_when_the_disk_is_full_leaves_nothing(tmp_path: Path, store: JobStore) -> None:
    # Given a disk that fills up after 1 MB (an injected file opener: no tmpfs can be
    # mounted without privileges the tests do not have)
    class FullDisk(io.FileIO):
        def write(self, data: bytes) -> int:  # type: ignore[override]
            if self.tell() + len(data) > 1_000_000:
                raise OSError(errno.ENOSPC, "No space left on device")
            return super().write(data)

    def opener(path: Path) -> BinaryIO:
        return FullDisk(path, "xb")  # type: ignore[return-value]

    web, guard = client(tmp_path, store, opener=opener)
    # When a 1.7 MB file is uploaded
    response = web.post(
        "/api/uploads",
        params={"name": "song.wav"},
        content=wav_bytes(tmp_path, frames=440_000),
        headers=headers(guard),
    )
    # Then it is refused, saying so, and neither a partial file nor a job is left
    assert response.status_code == 507, response.text
    assert "the disk is full" in response.json()["error"]
    assert store.list() == [] and left_in_uploads(tmp_path) == []


def test_forged_uploads_are_refused(tmp_path: Path, store: JobStore) -> None:
    web, guard = client(tmp_path, store)
    data = wav_bytes(tmp_path)
    good = headers(guard)
    for forged, says in [
        ({k: v for k, v in good.items() if k != "x-stembridge-csrf"}, "CSRF header"),
        ({**good, "x-stembridge-csrf": "guessed"}, "CSRF header"),
        ({**good, "origin": "http://evil.example"}, "dashboard's own page"),
        ({k: v for k, v in good.items() if k != "origin"}, "dashboard's own page"),
    ]:
        response = web.post("/api/uploads", params={"name": "a.wav"}, content=data, headers=forged)
        assert response.status_code == 403 and says in response.json()["error"]
    # A form post (what another site can send without CORS) is refused for its type too
    form = web.post(
        "/api/uploads",
        params={"name": "a.wav"},
        content=data,
        headers={**good, "content-type": "multipart/form-data; boundary=x"},
    )
    assert form.status_code == 415
    assert store.list() == [] and left_in_uploads(tmp_path) == []


@pytest.fixture
def served(tmp_path: Path, store: JobStore) -> Iterator[tuple[str, Guard]]:
    """The app behind the real server (uvicorn on a thread), with a 1 s request timeout."""
    port = free_port()
    app, guard = make_app(tmp_path, store, port=port)
    with DashboardServer(
        app,  # type: ignore[arg-type]
        host="127.0.0.1",
        port=port,
        request_timeout_seconds=1.0,
    ):
        yield f"http://127.0.0.1:{port}", guard


def raw_upload_head(url: str, guard: Guard, length: int) -> bytes:
    host = url.removeprefix("http://")
    return (
        f"POST /api/uploads?name=cut.wav HTTP/1.1\r\nHost: {host}\r\nOrigin: {url}\r\n"
        f"X-StemBridge-CSRF: {guard.csrf}\r\nContent-Type: application/octet-stream\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


def test_an_upload_cut_off_leaves_no_file_and_no_job(
    tmp_path: Path, store: JobStore, served: tuple[str, Guard]
) -> None:
    url, guard = served
    data = wav_bytes(tmp_path, frames=200_000)
    host, port = url.removeprefix("http://").split(":")
    # Given an upload whose browser goes away half way through its body
    with socket.create_connection((host, int(port))) as connection:
        connection.sendall(raw_upload_head(url, guard, len(data)) + data[: len(data) // 2])
        wait_for(lambda: left_in_uploads(tmp_path), what="the upload to begin")
    # Then the partial file and its folder go, and no job is made
    wait_for(lambda: left_in_uploads(tmp_path) == [], timeout=10, what="the partial file to go")
    assert store.list() == []


def test_a_flowing_upload_outlasts_the_request_timeout_and_a_trickle_does_not(
    tmp_path: Path, store: JobStore, served: tuple[str, Guard]
) -> None:
    url, guard = served
    data = wav_bytes(tmp_path, frames=100_000)  # 400 kB: earns about 6 s at 64 kB/s
    host, port = url.removeprefix("http://").split(":")
    # When a body flows in for 2 s (twice the 1 s request timeout)
    with socket.create_connection((host, int(port))) as connection:
        connection.sendall(raw_upload_head(url, guard, len(data)))
        pieces = [data[i : i + 40_000] for i in range(0, len(data), 40_000)]
        for piece in pieces:
            connection.sendall(piece)
            time.sleep(2.0 / len(pieces))
        # Then it is taken
        answer = connection.recv(65536).decode()
    assert answer.startswith("HTTP/1.1 201"), answer
    kept = left_in_uploads(tmp_path)
    # When another trickles in one byte at a time
    with socket.create_connection((host, int(port))) as connection:
        connection.sendall(raw_upload_head(url, guard, len(data)))
        started = time.monotonic()
        closed = False
        while time.monotonic() - started < 5 and not closed:
            try:
                connection.sendall(data[:1])
                connection.settimeout(0.3)
                closed = connection.recv(1) == b""
            except TimeoutError:
                pass
            except OSError:
                closed = True
    # Then it is closed soon after the timeout, and leaves nothing
    assert closed and time.monotonic() - started < 3
    wait_for(lambda: left_in_uploads(tmp_path) == kept, what="the trickle's file to go")
    assert len(store.list()) == 1


# Zips


def test_a_zip_holds_exactly_the_manifest_stems_byte_for_byte(
    tmp_path: Path, store: JobStore
) -> None:
    web, _ = client(tmp_path, store)
    job = done_job(store, tmp_path)
    response = web.get(f"/api/jobs/{job.id}/zip")
    assert response.status_code == 200 and response.headers["content-type"] == "application/zip"
    assert "attachment" in response.headers["content-disposition"]
    archive = zipfile.ZipFile(io.BytesIO(response.content))
    manifest = json.loads(Path(job.manifest or "").read_text())
    folder = Path(job.manifest or "").parent
    assert archive.namelist() == [stem["path"] for stem in manifest["stems"]]
    for name in archive.namelist():
        assert archive.read(name) == (folder / name).read_bytes()


def test_a_zip_of_a_job_not_done_is_refused(tmp_path: Path, store: JobStore) -> None:
    web, _ = client(tmp_path, store)
    done_job(store, tmp_path)
    from bridge.pipeline.spec import JobSpec

    queued, _ = store.submit(JobSpec(input=str(tmp_path / "x.wav"), folder=str(tmp_path / "x")))
    running = store.claim("test")
    assert running is not None and running.id == queued.id
    response = web.get(f"/api/jobs/{running.id}/zip")
    assert response.status_code == 409
    assert "is running; its stems can be taken once it is done" in response.json()["error"]
    assert web.get("/api/jobs/nope/zip").status_code == 404


# Balances


def test_a_balance_is_rendered_as_the_gain_weighted_stems_and_their_sum(
    tmp_path: Path, store: JobStore
) -> None:
    # Given a done job with two 16-bit stems
    web, guard = client(tmp_path, store)
    job = done_job(store, tmp_path)
    # When the mixer's balance is sent (vocals down 6 dB, bass down 3 dB: the sum stays
    # below full scale, so nothing clips)
    gains = {"vocals": 0.5, "bass": 0.7079}
    response = web.post(
        f"/api/jobs/{job.id}/balance",
        json={"gains": gains},
        headers={"origin": ORIGIN, "x-stembridge-csrf": guard.csrf},
    )
    # Then a balance job is queued, and the pipeline renders it
    assert response.status_code == 201, response.text
    balance = store.claim("test")
    assert balance is not None and balance.id == response.json()["id"]
    assert balance.spec.balance is not None and balance.spec.balance.gains == gains
    assert response.json()["name"] == "song.wav (balance)"
    result = run_job(balance.id, balance.spec, results=NoResults(), model_for=_no_model)
    assert result.folder == Path(job.manifest or "").parent.with_name("song balance")
    stems = Path(job.manifest or "").parent
    written = json.loads(result.manifest.read_text())
    assert [s["name"] for s in written["stems"]] == ["vocals", "bass", "mix"]
    assert written["balance"]["gains"] == gains
    assert [s["clipped_samples"] for s in written["stems"]] == [0, 0, 0]
    # And each stem is its source times its gain, the mix their sum (within PCM rounding),
    # in the same format, subtype and length
    total = 0
    for name, gain in gains.items():
        source, rate = sf.read(str(stems / f"{name}.wav"))
        out, out_rate = sf.read(str(result.folder / f"{name}.wav"))
        assert out_rate == rate and out.shape == source.shape
        assert sf.info(str(result.folder / f"{name}.wav")).subtype == "PCM_16"
        np.testing.assert_allclose(out, gain * source, atol=0.5 / 32768 + 1e-12)
        total = total + gain * source
    mix, _ = sf.read(str(result.folder / "mix.wav"))
    np.testing.assert_allclose(mix, total, atol=0.5 / 32768 + 1e-12)
    assert not [p for p in result.folder.iterdir() if p.name.startswith(".")]


def _no_model(settings: object) -> object:
    raise AssertionError("a balance loads no model")


def test_bad_balances_are_refused(tmp_path: Path, store: JobStore) -> None:
    web, guard = client(tmp_path, store)
    job = done_job(store, tmp_path)
    good = {"origin": ORIGIN, "x-stembridge-csrf": guard.csrf}
    for body, status, says in [
        ({"gains": {"vocals": -1}}, 400, "from 0 (muted)"),
        ({"gains": {"vocals": "loud"}}, 400, "is not allowed"),
        ({"gain": {}}, 400, '{"gains"'),
    ]:
        response = web.post(f"/api/jobs/{job.id}/balance", json=body, headers=good)
        assert response.status_code == status and says in response.json()["error"]
    forged = web.post(f"/api/jobs/{job.id}/balance", json={"gains": {}}, headers={"origin": ORIGIN})
    assert forged.status_code == 403
    # A gain for a stem the set lacks fails the job, naming the stems there are
    response = web.post(f"/api/jobs/{job.id}/balance", json={"gains": {"kazoo": 1}}, headers=good)
    balance = store.claim("test")
    assert balance is not None and balance.id == response.json()["id"]
    with pytest.raises(Exception, match="no stem 'kazoo' to give a gain to; its stems are vocals"):
        run_job(balance.id, balance.spec, results=NoResults(), model_for=_no_model)


# Live events


def test_events_send_the_queue_and_each_change(
    tmp_path: Path, store: JobStore, served: tuple[str, Guard]
) -> None:
    url, guard = served
    with httpx.stream("GET", f"{url}/api/events", timeout=10) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        events = _events(stream.iter_lines())
        first = next(events)
        assert first[0] == "queue" and first[1]["jobs"] == []
        assert first[1]["folders"][0]["rule"] == "renders"
        # When a file is uploaded meanwhile, the next event shows its job
        threading.Thread(
            target=httpx.post,
            args=(f"{url}/api/uploads",),
            kwargs={
                "params": {"name": "a.wav"},
                "content": wav_bytes(tmp_path),
                "headers": {**headers(guard, url)},
            },
        ).start()
        kind, body = next(events)
        assert kind == "queue" and [j["name"] for j in body["jobs"]] == ["a.wav"]
    job_id = body["jobs"][0]["id"]
    with httpx.stream("GET", f"{url}/api/events", params={"job": job_id}, timeout=10) as stream:
        kind, body = next(_events(stream.iter_lines()))
        assert kind == "job" and body["id"] == job_id and body["state"] == "queued"
    assert httpx.get(f"{url}/api/events", params={"job": "nope"}).status_code == 404


def _events(lines: Iterator[str]) -> Iterator[tuple[str, dict]]:
    kind = None
    for line in lines:
        if line.startswith("event: "):
            kind = line.removeprefix("event: ")
        elif line.startswith("data: ") and kind is not None:
            yield kind, json.loads(line.removeprefix("data: "))


def test_a_page_left_open_on_live_events_does_not_hold_up_a_stop(
    tmp_path: Path, store: JobStore, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a page reading the live events
    port = free_port()
    app, _ = make_app(tmp_path, store, port=port)
    server = DashboardServer(app, host="127.0.0.1", port=port)  # type: ignore[arg-type]
    ended = threading.Event()

    def read() -> None:
        try:
            with httpx.stream("GET", f"http://127.0.0.1:{port}/api/events", timeout=30) as stream:
                for _ in stream.iter_lines():
                    pass
        except httpx.RemoteProtocolError:  # closed mid-stream, as a stopping server does
            ended.set()

    with server:
        reader = threading.Thread(target=read)
        reader.start()
        wait_for(lambda: server.gate.open == 1, what="the page to connect")
        stopping = time.monotonic()
    # When the dashboard stops, then it does so at once, the stream is closed (the page
    # falls back to polling), and no error is logged
    assert time.monotonic() - stopping < 1.5
    reader.join(timeout=5)
    assert ended.is_set()
    assert not [r for r in caplog.records if r.levelname == "ERROR"]


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs, where this machine lets the tests mount one (root in a container
    that allows it); skipped elsewhere, where the injected full disk above still runs."""
    folder = tmp_path / "tiny"
    folder.mkdir()
    mount = shutil.which("mount")
    if mount is None or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root and mount(8)")
    done = subprocess.run(
        [mount, "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"no tmpfs can be mounted here: {done.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def test_an_upload_onto_a_disk_that_fills_up_leaves_it_empty(
    tmp_path: Path, store: JobStore, tiny_disk: Path
) -> None:
    # Given the upload folder on a real 1 MiB disk, behind the real server
    port = free_port()
    guard = Guard(host="127.0.0.1", port=port, state_dir=tmp_path / "state")
    app = create_app(
        store=store,
        guard=guard,
        folders=lambda: FOLDERS,
        workers=None,
        uploads=Uploads(tiny_disk / "uploads", max_bytes=LIMIT),
        defaults=JobDefaults(),
    )
    url = f"http://127.0.0.1:{port}"
    with DashboardServer(app, host="127.0.0.1", port=port):
        # When a 1.7 MB file is uploaded
        response = httpx.post(
            f"{url}/api/uploads",
            params={"name": "song.wav"},
            content=wav_bytes(tmp_path, frames=440_000),
            headers=headers(guard, url),
        )
    # Then it is refused as the disk being full, and the disk is left as it was
    assert response.status_code == 507, response.text
    assert "the disk is full" in response.json()["error"]
    assert [p.name for p in (tiny_disk / "uploads").iterdir()] == []
    assert store.list() == []


def test_bad_uploads_and_forged_requests_are_refused_by_the_real_server(
    tmp_path: Path, store: JobStore, served: tuple[str, Guard]
) -> None:
    # Given the dashboard behind uvicorn, and a job still running
    url, guard = served
    from bridge.pipeline.spec import JobSpec

    store.submit(JobSpec(input=str(tmp_path / "x.wav"), folder=str(tmp_path / "x")))
    running = store.claim("test")
    assert running is not None
    good = headers(guard, url)
    data = wav_bytes(tmp_path)
    big = wav_bytes(tmp_path, frames=LIMIT // 4 + 1000, name="big.wav")

    def post(body: bytes, sent: dict[str, str], name: str = "a.wav") -> httpx.Response:
        return httpx.post(f"{url}/api/uploads", params={"name": name}, content=body, headers=sent)

    # When each bad request is sent, then each is refused as it should be
    refused = [
        (post(b"not a song\n" * 100, good), 415, "not audio"),
        (post(big, good), 413, "limit of 2 MB"),
        (post(data, {k: v for k, v in good.items() if k != "x-stembridge-csrf"}), 403, "CSRF"),
        (post(data, {**good, "origin": "http://evil.example"}), 403, "own page"),
        (httpx.get(f"{url}/api/jobs/{running.id}/zip"), 409, "is running"),
    ]
    for response, status, says in refused:
        assert response.status_code == status and says in response.json()["error"]
    # And nothing was stored, and no job made beside the running one
    assert left_in_uploads(tmp_path) == [] and [j.id for j in store.list()] == [running.id]
