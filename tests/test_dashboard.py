"""The dashboard's API, pages and files through Starlette's test client, refusals included;
its token command, its binding rules and its server thread."""

from __future__ import annotations

import json
import os
import socket
import stat
import time
from collections.abc import Sequence
from pathlib import Path

import httpx
import pytest
from starlette.testclient import TestClient

from bridge.broker.channel import WorkerInfo
from bridge.cli import EXIT_OK, EXIT_USAGE, main
from bridge.config import DashboardSettings
from bridge.dashboard.app import create_app
from bridge.dashboard.auth import Guard, check_binding, create_token, token_path
from bridge.dashboard.intake import JobDefaults
from bridge.dashboard.server import (
    BACKLOG,
    MOST_CONNECTIONS,
    THREADS,
    DashboardServer,
    dashboard_server,
    max_connections,
)
from bridge.dashboard.uploads import Uploads
from bridge.errors import BrokerError, ConfigError
from bridge.jobs.store import Job, JobStore
from bridge.models.catalog import MODELS
from bridge.models.lineup import make_lineup
from bridge.models.registry import registry_path
from bridge.pictures import draw_stem_pictures
from bridge.pipeline.spec import JobSpec
from bridge.watch.watcher import FolderHealth

from processes import write_config
from signals import music, write_audio

PORT = 8737
LOOPBACK = f"http://127.0.0.1:{PORT}"
STUDIO_HOST = "192.0.2.10"  # a documentation address: never bound, only named
FOLDERS = [FolderHealth(rule="renders", folder="/r", mode="events", state="watching", restarts=0)]


def done_job(store: JobStore, tmp_path: Path, name: str = "song") -> Job:
    """A finished job with real stems, pictures and manifest."""
    folder = tmp_path / "stems" / name
    stems = {stem: write_audio(folder / f"{stem}.wav", music(4410)) for stem in ("vocals", "bass")}
    drawn = draw_stem_pictures(stems)
    manifest = {
        "input": {"path": str(tmp_path / f"{name}.wav")},
        "stems": [{"name": s, "path": p.name, "pictures": drawn[s]} for s, p in stems.items()],
        "timings": {"total_seconds": 1.5},
    }
    (folder / "manifest.json").write_text(json.dumps(manifest))
    job, _ = store.submit(JobSpec(input=str(tmp_path / f"{name}.wav"), folder=str(folder)))
    store.claim("test")
    return store.finish(job.id, manifest=str(folder / "manifest.json"))


def failed_job(store: JobStore, tmp_path: Path) -> Job:
    job, _ = store.submit(JobSpec(input=str(tmp_path / "bad.wav"), folder=str(tmp_path / "b")))
    store.claim("test")
    return store.fail(job.id, error="bad.wav is not audio", kind="UnreadableAudio")


def client_for(
    tmp_path: Path,
    store: JobStore,
    *,
    host: str = "127.0.0.1",
    workers: object = None,
) -> tuple[TestClient, Guard]:
    guard = Guard(host=host, port=PORT, state_dir=tmp_path / "state")
    app = create_app(
        store=store,
        guard=guard,
        folders=lambda: FOLDERS,
        workers=workers,  # type: ignore[arg-type]
        uploads=Uploads(tmp_path / "uploads", max_bytes=10_000_000),
        defaults=JobDefaults(),
    )
    return TestClient(app, base_url=f"http://{host}:{PORT}"), guard


@pytest.fixture
def store(tmp_path: Path) -> JobStore:
    return JobStore(tmp_path / "state")


def changing(guard: Guard, **headers: str) -> dict[str, str]:
    """Headers of a state-changing request from the dashboard's own page."""
    return {"origin": LOOPBACK, "x-stembridge-csrf": guard.csrf, **headers}


# Reads


def test_pages_and_scripts_are_served_with_security_headers(
    tmp_path: Path, store: JobStore
) -> None:
    client, _ = client_for(tmp_path, store)
    for path, kind in [
        ("/", "text/html"),
        ("/job/abc", "text/html"),
        ("/models", "text/html"),
        ("/static/common.js", "javascript"),
        ("/static/models.js", "javascript"),
        ("/static/style.css", "text/css"),
    ]:
        response = client.get(path)
        assert response.status_code == 200 and kind in response.headers["content-type"]
        assert response.headers["x-frame-options"] == "DENY"
        assert "frame-ancestors 'none'" in response.headers["content-security-policy"]


def test_jobs_list_and_job_page_on_loopback_need_no_token(tmp_path: Path, store: JobStore) -> None:
    # Given a finished and a failed job
    done = done_job(store, tmp_path)
    failed = failed_job(store, tmp_path)
    client, _ = client_for(tmp_path, store)
    # When the queue and the finished job are read
    jobs = client.get("/api/jobs").json()["jobs"]
    detail = client.get(f"/api/jobs/{done.id}").json()
    # Then both jobs are listed, the failure with its error, and the job has its stems
    assert {(j["id"], j["state"], j["error"]) for j in jobs} == {
        (done.id, "done", None),
        (failed.id, "failed", "bad.wav is not audio"),
    }
    assert detail["name"] == "song.wav" and detail["timings"] == {"total_seconds": 1.5}
    assert detail["spec"]["input"] == str(tmp_path / "song.wav")
    assert detail["stems"][0] == {
        "name": "vocals",
        "audio": f"/files/{done.id}/vocals.wav",
        "pictures": {
            "waveform": f"/files/{done.id}/vocals.waveform.png",
            "spectrogram": f"/files/{done.id}/vocals.spectrogram.png",
        },
        "loudness_lufs": None,
        "silent": False,
        "made_by": [],  # the test's manifest names no model
    }
    assert client.get("/api/jobs/ffffff").status_code == 404


def test_folders_and_workers(tmp_path: Path, store: JobStore) -> None:
    worker = WorkerInfo(id="gpu1:7", device="cuda:0", concurrency=1, current_jobs=("abc",))

    def down() -> Sequence[WorkerInfo]:
        raise BrokerError("the broker redis://gpu:6379/0 cannot be reached")

    without, _ = client_for(tmp_path, store)
    assert without.get("/api/folders").json() == {
        "folders": [
            {
                "rule": "renders",
                "folder": "/r",
                "mode": "events",
                "state": "watching",
                "restarts": 0,
            }
        ]
    }
    assert without.get("/api/workers").json() == {"broker": False, "workers": []}
    studio, _ = client_for(tmp_path, store, workers=lambda: [worker])
    listed = studio.get("/api/workers").json()
    assert listed["broker"] is True
    assert [(w["id"], w["device"], w["current_jobs"]) for w in listed["workers"]] == [
        ("gpu1:7", "cuda:0", ["abc"])
    ]
    unreachable, _ = client_for(tmp_path, store, workers=down)
    response = unreachable.get("/api/workers")
    assert response.status_code == 503 and "cannot be reached" in response.json()["error"]


# Models


def test_models_lists_every_model_with_the_installed_ones_marked(
    model_dir: Path, tmp_path: Path, store: JobStore
) -> None:
    # Given the tiny demucs models in the model folder
    client, _ = client_for(tmp_path, store)
    # When the models are read
    response = client.get("/api/models")
    # Then every catalog model is listed, those four installed, the others not
    assert response.status_code == 200
    rows = {row["name"]: row for row in response.json()["models"]}
    assert set(rows) == set(MODELS)
    assert {name for name, row in rows.items() if row["installed"]} == {
        "htdemucs",
        "htdemucs_ft",
        "htdemucs_6s",
        "hdemucs_mmi",
    }
    assert rows["htdemucs_6s"]["stems"] == ["drums", "bass", "other", "vocals", "guitar", "piano"]
    assert rows["htdemucs"]["size_bytes"] > 0 and rows["htdemucs"]["licence"] == "MIT"
    # And a named ensemble comes with its models, not installed while they are not
    best = rows["vocals-best"]
    assert (best["family"], best["installed"]) == ("ensemble", False)
    assert best["members"] == ["bs_roformer_viperx_1297", "mdx23c_instvoc_hq"]
    assert rows["bs_roformer_viperx_1297"]["scores"][0]["sdr_db"] > 0


def test_models_with_an_unreadable_registry_say_which_file_to_delete(
    tmp_path: Path, store: JobStore
) -> None:
    registry_path().parent.mkdir(parents=True, exist_ok=True)
    registry_path().write_text("{not json")
    client, _ = client_for(tmp_path, store)
    response = client.get("/api/models")
    assert response.status_code == 500
    assert str(registry_path()) in response.json()["error"]
    assert "import the folders again" in response.json()["error"]


def job_with_model(store: JobStore, tmp_path: Path, model: object, stems: list[object]) -> Job:
    """A finished job whose manifest holds ``model`` and these stems' ``sources``."""
    job = done_job(store, tmp_path)
    path = Path(job.manifest)  # type: ignore[arg-type]
    manifest = json.loads(path.read_text())
    manifest["model"] = model
    for entry, sources in zip(manifest["stems"], stems, strict=True):
        entry["sources"] = sources
    path.write_text(json.dumps(manifest))
    return job


def test_each_stem_says_which_models_gave_it(tmp_path: Path, store: JobStore) -> None:
    # Given a job whose vocals came from hdemucs_mmi and whose other stem sums three
    # sources of a weighted ensemble, as the manifest records it
    lineup = make_lineup(
        ("htdemucs", "htdemucs_ft"),
        algorithm="avg_spec",
        weights=(2.0, 1.0),
        routes=[("vocals", "hdemucs_mmi")],
    )
    model = {"name": lineup.name, "stems_from": lineup.describe()}
    job = job_with_model(store, tmp_path, model, [["vocals"], ["drums", "bass", "other"]])
    client, _ = client_for(tmp_path, store)
    # When the job is read
    stems = client.get(f"/api/jobs/{job.id}").json()["stems"]
    # Then each stem names its models, the ensemble's once for all three sources
    assert [stem["made_by"] for stem in stems] == [
        [{"sources": ["vocals"], "models": ["hdemucs_mmi"], "ensemble": None, "weights": None}],
        [
            {
                "sources": ["drums", "bass", "other"],
                "models": ["htdemucs", "htdemucs_ft"],
                "ensemble": "avg_spec",
                "weights": [2.0, 1.0],
            }
        ],
    ]


def test_a_stem_from_sources_of_two_models_names_both(tmp_path: Path, store: JobStore) -> None:
    lineup = make_lineup("htdemucs", routes=[("drums", "hdemucs_mmi")])
    model = {"name": lineup.name, "stems_from": lineup.describe()}
    job = job_with_model(store, tmp_path, model, [["vocals"], ["drums", "bass", "other"]])
    client, _ = client_for(tmp_path, store)
    stems = client.get(f"/api/jobs/{job.id}").json()["stems"]
    assert [(g["sources"], g["models"]) for g in stems[1]["made_by"]] == [
        (["drums"], ["hdemucs_mmi"]),
        (["bass", "other"], ["htdemucs"]),
    ]


def test_one_model_gave_every_stem_when_the_manifest_names_only_it(
    tmp_path: Path, store: JobStore
) -> None:
    job = job_with_model(store, tmp_path, {"name": "htdemucs"}, [["vocals"], ["bass"]])
    client, _ = client_for(tmp_path, store)
    stems = client.get(f"/api/jobs/{job.id}").json()["stems"]
    assert [stem["made_by"] for stem in stems] == [
        [{"sources": [name], "models": ["htdemucs"], "ensemble": None, "weights": None}]
        for name in ("vocals", "bass")
    ]


@pytest.mark.parametrize(
    ("model", "sources", "made_by"),
    [
        ("htdemucs", ["vocals"], []),
        ({"name": 5}, ["vocals"], []),
        ({"name": "htdemucs"}, "vocals", [{"sources": [], "models": ["htdemucs"]}]),
        ({"name": "a + b", "stems_from": "a"}, ["vocals"], []),
        ({"stems_from": ["vocals"]}, ["vocals"], []),
        ({"stems_from": {"vocals": {"models": "htdemucs"}}}, ["vocals"], []),
        ({"stems_from": {"vocals": {"models": [1, None]}}}, ["vocals"], []),
        ({"stems_from": {"vocals": "htdemucs"}}, ["vocals", 3, ["x"]], []),
        (
            {"stems_from": {"vocals": {"models": ["a", 3], "ensemble": 7, "weights": [1, "x"]}}},
            ["vocals", "bass"],
            [{"sources": ["vocals"], "models": ["a"]}],
        ),
        (
            {"stems_from": {"vocals": {"models": ["a", "b"], "weights": [float("nan"), 1]}}},
            ["vocals"],
            [{"sources": ["vocals"], "models": ["a", "b"]}],
        ),
        (
            {"stems_from": {"vocals": {"models": ["a", "b"], "weights": [True, 1]}}},
            ["vocals"],
            [{"sources": ["vocals"], "models": ["a", "b"]}],
        ),
    ],
)
def test_a_hand_edited_model_entry_gives_what_can_be_read(
    tmp_path: Path,
    store: JobStore,
    model: object,
    sources: object,
    made_by: list[dict[str, object]],
) -> None:
    # Given a manifest whose model entry someone edited
    job = job_with_model(store, tmp_path, model, [sources, ["bass"]])
    client, _ = client_for(tmp_path, store)
    # When the job is read
    response = client.get(f"/api/jobs/{job.id}")
    # Then it is answered, with only what could be read of the first stem's models
    assert response.status_code == 200
    expected = [{"ensemble": None, "weights": None, **giver} for giver in made_by]
    assert response.json()["stems"][0]["made_by"] == expected


def test_numbers_json_cannot_hold_are_given_as_null(tmp_path: Path, store: JobStore) -> None:
    # Given a manifest edited to hold NaN and an infinity (Python's json reads them)
    job = done_job(store, tmp_path)
    path = Path(job.manifest)  # type: ignore[arg-type]
    manifest = json.loads(path.read_text())
    manifest["stems"][0]["loudness_lufs"] = float("nan")
    manifest["timings"] = {"total_seconds": float("inf"), "passes": [1.5, float("-inf")]}
    path.write_text(json.dumps(manifest))
    client, _ = client_for(tmp_path, store)
    # When the job is read
    response = client.get(f"/api/jobs/{job.id}")
    # Then it is answered, those numbers as null
    assert response.status_code == 200
    body = response.json()
    assert body["stems"][0]["loudness_lufs"] is None
    assert body["timings"] == {"total_seconds": None, "passes": [1.5, None]}


# Files


def test_stems_and_pictures_are_served(tmp_path: Path, store: JobStore) -> None:
    job = done_job(store, tmp_path)
    folder = tmp_path / "stems" / "song"
    client, _ = client_for(tmp_path, store)
    for name, kind in [("vocals.wav", "audio/"), ("bass.spectrogram.png", "image/png")]:
        response = client.get(f"/files/{job.id}/{name}")
        assert response.status_code == 200 and kind in response.headers["content-type"]
        assert response.content == (folder / name).read_bytes()
    ranged = client.get(f"/files/{job.id}/vocals.wav", headers={"range": "bytes=0-3"})
    assert ranged.status_code == 206 and ranged.content == b"RIFF"


def test_byte_ranges_let_a_player_seek(tmp_path: Path, store: JobStore) -> None:
    job = done_job(store, tmp_path)
    whole = (tmp_path / "stems" / "song" / "vocals.wav").read_bytes()
    size = len(whole)
    client, _ = client_for(tmp_path, store)
    url = f"/files/{job.id}/vocals.wav"
    etag = client.get(url).headers["etag"]
    for asked, status, part in [
        ("bytes=4-", 206, whole[4:]),  # what <audio> sends when it seeks
        ("bytes=-4", 206, whole[-4:]),
        ("bytes=10-19", 206, whole[10:20]),
        (f"bytes=0-{size + 100}", 206, whole),
        (f"bytes={size}-", 416, b""),
        ("bytes=0-1, 4-5", 200, whole),  # lists of ranges: the whole file
        ("lines=1-2", 200, whole),
        ("bytes=5-3", 200, whole),
    ]:
        response = client.get(url, headers={"range": asked})
        assert (response.status_code, response.content) == (status, part), asked
        assert response.headers["content-length"] == str(len(part)), asked
    assert client.get(url, headers={"range": "bytes=4-"}).headers["content-range"] == (
        f"bytes 4-{size - 1}/{size}"
    )
    assert client.get(url, headers={"range": f"bytes={size}-"}).headers["content-range"] == (
        f"bytes */{size}"
    )
    # A file changed since the player's first request is sent whole (If-Range)
    stale = client.get(url, headers={"range": "bytes=4-", "if-range": '"old"'})
    fresh = client.get(url, headers={"range": "bytes=4-", "if-range": etag})
    assert (stale.status_code, fresh.status_code) == (200, 206)
    head = client.head(url)
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == str(size) and head.headers["accept-ranges"] == "bytes"


def test_files_outside_the_stem_folder_are_refused(tmp_path: Path, store: JobStore) -> None:
    # Given a job whose manifest (edited by someone) lists files outside its folder,
    # one of them through a symlink that looks like a stem
    job = done_job(store, tmp_path)
    folder = tmp_path / "stems" / "song"
    secret = tmp_path / "secret.txt"
    secret.write_text("private")
    (folder / "link.wav").symlink_to(secret)
    (folder / "notes.txt").write_text("not listed")
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["stems"].append({"name": "c", "path": "link.wav"})
    (folder / "manifest.json").write_text(json.dumps(manifest))
    client, _ = client_for(tmp_path, store)
    # Then neither the link, nor an unlisted file, nor a path climbing out is served
    for name, status in [
        ("link.wav", 403),
        ("..%2F..%2Fsecret.txt", 404),
        (f"{str(secret).replace('/', '%2F')}", 404),
        ("notes.txt", 404),
        ("manifest.json", 404),
        ("missing.wav", 404),
    ]:
        response = client.get(f"/files/{job.id}/{name}")
        assert response.status_code == status, name
        assert "private" not in response.text
    # And a manifest that lists paths outside its folder is not trusted for any file
    manifest["stems"] += [
        {"name": "a", "path": "../../secret.txt"},
        {"name": "b", "path": str(secret)},
    ]
    (folder / "manifest.json").write_text(json.dumps(manifest))
    for name in ("..%2F..%2Fsecret.txt", str(secret).replace("/", "%2F"), "vocals.wav"):
        response = client.get(f"/files/{job.id}/{name}")
        assert response.status_code == 404, name
        assert "private" not in response.text
    assert client.get("/files/ffffff/vocals.wav").status_code == 404


def test_files_are_opened_without_following_any_link(tmp_path: Path, store: JobStore) -> None:
    # Given a job whose manifest lists a stem in a subfolder, and someone who can write
    # the stem folder: a FIFO, a hard-to-spot link one folder down, the folder itself a link
    job = done_job(store, tmp_path)
    folder = tmp_path / "stems" / "song"
    secret = tmp_path / "secret"
    (secret / "deep").mkdir(parents=True)
    (secret / "deep" / "x.wav").write_text("private")
    (folder / "sub").mkdir()
    (folder / "sub" / "x.wav").write_bytes(b"RIFF sub stem")
    os.mkfifo(folder / "fifo.wav")
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["stems"] += [
        {"name": "sub", "path": "sub/x.wav"},
        {"name": "deep", "path": "deep/x.wav"},
        {"name": "fifo", "path": "fifo.wav"},
    ]
    (folder / "manifest.json").write_text(json.dumps(manifest))
    (folder / "deep").symlink_to(secret / "deep")
    client, _ = client_for(tmp_path, store)
    # Then a real subfolder's stem is served, the link's target and the FIFO are not
    # (a FIFO opened for reading would wait for a writer forever)
    assert client.get(f"/files/{job.id}/sub/x.wav").content == b"RIFF sub stem"
    for name in ("deep/x.wav", "fifo.wav"):
        response = client.get(f"/files/{job.id}/{name}")
        assert response.status_code == 403 and "private" not in response.text, name
        assert "not served" in response.json()["error"]
    # When the whole stem folder is swapped for a link to a folder with the same files
    os.rename(folder, tmp_path / "moved")
    folder.symlink_to(tmp_path / "moved")
    # Then nothing in it is served
    response = client.get(f"/files/{job.id}/vocals.wav")
    assert response.status_code == 403 and "is a link" in response.json()["error"]


def test_a_nul_in_a_file_name_and_odd_pictures_get_clear_answers(
    tmp_path: Path, store: JobStore
) -> None:
    job = done_job(store, tmp_path)
    folder = tmp_path / "stems" / "song"
    client, _ = client_for(tmp_path, store)
    nul = client.get(f"/files/{job.id}/vocals%00.wav")
    assert nul.status_code == 400 and "NUL" in nul.json()["error"]
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["stems"][0]["pictures"] = ["vocals.waveform.png"]
    manifest["stems"][1]["pictures"] = {"waveform": 5, "spectrogram": "bass.spectrogram.png"}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    stems = client.get(f"/api/jobs/{job.id}").json()["stems"]
    assert [stem["pictures"] for stem in stems] == [
        {},
        {"spectrogram": f"/files/{job.id}/bass.spectrogram.png"},
    ]
    assert client.get(f"/files/{job.id}/vocals.waveform.png").status_code == 404


# Changes


def test_retry_needs_origin_and_csrf_and_never_copies_the_job(
    tmp_path: Path, store: JobStore
) -> None:
    failed = failed_job(store, tmp_path)
    client, guard = client_for(tmp_path, store)
    url = f"/api/jobs/{failed.id}/retry"
    # When the request comes without Origin, from another site, or without the CSRF header
    refused = [
        client.post(url, headers={"x-stembridge-csrf": guard.csrf}),
        client.post(url, headers=changing(guard, origin="http://evil.example")),
        client.post(url, headers=changing(guard, origin="null")),
        client.post(url, headers={"origin": LOOPBACK}),
        client.post(url, headers=changing(guard, **{"x-stembridge-csrf": "guess"})),
        client.get(url),
    ]
    # Then it is refused and the job is still failed
    assert [r.status_code for r in refused] == [403, 403, 403, 403, 403, 405]
    assert store.get(failed.id).state == "failed"
    # When it comes from the page (a Referer stands in for a missing Origin)
    response = client.post(
        url, headers={"referer": LOOPBACK + "/", "x-stembridge-csrf": guard.csrf}
    )
    # Then the same job is queued again, and a second retry is refused
    assert response.status_code == 200 and response.json()["state"] == "queued"
    assert [j.id for j in store.list()] == [failed.id]
    again = client.post(url, headers=changing(guard))
    assert again.status_code == 409 and "only failed or cancelled" in again.json()["error"]


def test_cancel_queued_and_refuse_finished(tmp_path: Path, store: JobStore) -> None:
    done = done_job(store, tmp_path)
    queued, _ = store.submit(JobSpec(input=str(tmp_path / "q.wav"), folder=str(tmp_path / "q")))
    client, guard = client_for(tmp_path, store)
    response = client.post(f"/api/jobs/{queued.id}/cancel", headers=changing(guard))
    assert response.status_code == 200 and store.get(queued.id).state == "cancelled"
    assert (Path(store.get(queued.id).status_file)).is_file()
    finished = client.post(f"/api/jobs/{done.id}/cancel", headers=changing(guard))
    assert finished.status_code == 409 and store.get(done.id).state == "done"
    assert client.post("/api/jobs/ffffff/cancel", headers=changing(guard)).status_code == 404


def test_host_header_of_another_name_is_refused(tmp_path: Path, store: JobStore) -> None:
    # A page on evil.example whose name now points at 127.0.0.1 (DNS rebinding)
    client, _ = client_for(tmp_path, store)
    for host in ("evil.example:8737", "127.0.0.1:9999", "127.0.0.1"):
        response = client.get("/api/jobs", headers={"host": host})
        assert response.status_code == 403, host
    assert client.get("/api/jobs", headers={"host": f"localhost:{PORT}"}).status_code == 200


def test_odd_characters_in_csrf_origin_and_token_are_refused_not_raised(
    tmp_path: Path, store: JobStore
) -> None:
    failed = failed_job(store, tmp_path)
    create_token(tmp_path / "state")
    client, guard = client_for(tmp_path, store)
    url = f"/api/jobs/{failed.id}/retry"
    not_ascii = client.post(url, headers={"origin": LOOPBACK, "x-stembridge-csrf": "é".encode()})
    assert not_ascii.status_code == 403 and "CSRF" in not_ascii.json()["error"]
    for origin in ("http://[", "http://[::1", "://"):
        response = client.post(url, headers=changing(guard, origin=origin))
        assert response.status_code == 403 and "Origin" in response.json()["error"], origin
    surrogate = client.post(
        "/api/login",
        content=b'{"token": "\\ud800"}',
        headers={"origin": LOOPBACK, "content-type": "application/json"},
    )
    assert surrogate.status_code == 401 and "wrong token" in surrogate.json()["error"]
    assert store.get(failed.id).state == "failed"


# The token


def test_with_a_token_changes_need_it_even_on_loopback(tmp_path: Path, store: JobStore) -> None:
    failed = failed_job(store, tmp_path)
    token = create_token(tmp_path / "state")
    client, guard = client_for(tmp_path, store)
    url = f"/api/jobs/{failed.id}/retry"
    # Reads stay free on loopback; a change without the token, or with a bad one, is refused
    assert client.get("/api/jobs").status_code == 200
    assert client.post(url, headers=changing(guard)).status_code == 403
    bad = client.post(url, headers=changing(guard, authorization="Bearer wrong"))
    assert bad.status_code == 403 and "dashboard token" in bad.json()["error"]
    # With the token as bearer, it is done
    ok = client.post(url, headers=changing(guard, authorization=f"Bearer {token}"))
    assert ok.status_code == 200


def test_sign_in_sets_a_strict_session_cookie_that_rotation_ends(
    tmp_path: Path, store: JobStore
) -> None:
    failed = failed_job(store, tmp_path)
    token = create_token(tmp_path / "state")
    client, guard = client_for(tmp_path, store)
    url = f"/api/jobs/{failed.id}/retry"
    # A wrong token, or a sign-in from another site, gets no session
    assert (
        client.post("/api/login", json={"token": "x"}, headers={"origin": LOOPBACK}).status_code
        == 401
    )
    foreign = client.post("/api/login", json={"token": token}, headers={"origin": "http://e.x"})
    assert foreign.status_code == 403
    assert client.post("/api/login", content=b"{", headers={"origin": LOOPBACK}).status_code == 401
    # The right token from the page does, as an HttpOnly SameSite=Strict cookie
    response = client.post("/api/login", json={"token": token}, headers={"origin": LOOPBACK})
    cookie = response.headers["set-cookie"]
    assert response.status_code == 200
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and f"_{PORT}=" in cookie
    assert client.get("/api/session").json()["signed_in"] is True
    assert client.post(url, headers=changing(guard)).status_code == 200
    # A new token ends the session
    store.fail(store.claim("test").id, error="again", kind="AudioError")  # type: ignore[union-attr]
    create_token(tmp_path / "state")
    assert client.post(url, headers=changing(guard)).status_code == 403
    assert client.get("/api/session").json()["signed_in"] is False


def test_beyond_loopback_every_read_needs_the_token(tmp_path: Path, store: JobStore) -> None:
    job = done_job(store, tmp_path)
    token = create_token(tmp_path / "state")
    client, _ = client_for(tmp_path, store, host=STUDIO_HOST)
    # Without the token, or with a bad one: no data, no files, no CSRF secret
    for path in (
        "/api/jobs",
        f"/api/jobs/{job.id}",
        "/api/folders",
        "/api/models",
        f"/files/{job.id}/vocals.wav",
    ):
        assert client.get(path).status_code == 401, path
        assert client.get(path, headers={"authorization": "Bearer nope"}).status_code == 401
    session = client.get("/api/session").json()
    assert session["csrf"] is None and session["can_read"] is False
    # The page itself loads (it shows the sign-in form)
    assert client.get("/").status_code == 200
    # With the token everything is readable
    bearer = {"authorization": f"Bearer {token}"}
    assert client.get("/api/jobs", headers=bearer).status_code == 200
    assert client.get("/api/models", headers=bearer).status_code == 200
    assert client.get(f"/files/{job.id}/vocals.wav", headers=bearer).status_code == 200
    # And loopback names are not accepted as Host there
    assert (
        client.get("/api/jobs", headers={**bearer, "host": f"127.0.0.1:{PORT}"}).status_code == 403
    )


def test_bound_to_every_address_any_name_of_the_machine_is_taken(
    tmp_path: Path, store: JobStore
) -> None:
    token = create_token(tmp_path / "state")
    client, _ = client_for(tmp_path, store, host="0.0.0.0")
    bearer = {"authorization": f"Bearer {token}"}
    for host in (f"studio.lan:{PORT}", f"192.0.2.10:{PORT}", f"127.0.0.1:{PORT}"):
        assert client.get("/api/jobs", headers={**bearer, "host": host}).status_code == 200
        assert client.get("/api/jobs", headers={"host": host}).status_code == 401
    assert client.get("/api/jobs", headers={**bearer, "host": "studio.lan:80"}).status_code == 403


def test_token_is_stored_hashed_and_user_only(tmp_path: Path) -> None:
    token = create_token(tmp_path / "state")
    path = token_path(tmp_path / "state")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert token not in path.read_text() and len(path.read_text().strip()) == 64
    assert create_token(tmp_path / "state") != token


def test_binding_beyond_loopback_needs_a_token(tmp_path: Path) -> None:
    check_binding("127.0.0.1", tmp_path)
    check_binding("::1", tmp_path)
    with pytest.raises(ConfigError, match="run `stembridge dashboard token` first"):
        check_binding("0.0.0.0", tmp_path)
    create_token(tmp_path)
    check_binding("0.0.0.0", tmp_path)


# Command line and server


def test_token_command_prints_the_token_once_and_rotates(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path / "config.toml", tmp_path / "state")
    assert main(["dashboard", "token", "--config", str(config)]) == EXIT_OK
    first = capsys.readouterr()
    assert main(["dashboard", "token", "--config", str(config)]) == EXIT_OK
    second = capsys.readouterr().out.strip()
    assert first.out.strip() != second and "not shown again" in first.err
    guard = Guard(host="127.0.0.1", port=PORT, state_dir=tmp_path / "state")
    assert guard.sign_in(second) is not None and guard.sign_in(first.out.strip()) is None


@pytest.mark.parametrize(
    ("dashboard", "flags", "url"),
    [
        ('port = 9123\nhost = "::1"\n', [], "http://[::1]:9123/"),
        ("port = 9123\n", ["--dashboard-port", "9200"], "http://127.0.0.1:9200/"),
        ("", ["--dashboard-host", "127.0.0.2"], "http://127.0.0.2:8737/"),
        ('host = "0.0.0.0"\n', [], f"http://{socket.gethostname()}:8737/"),
    ],
)
def test_token_command_names_the_dashboard_as_configured(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    dashboard: str,
    flags: list[str],
    url: str,
) -> None:
    config = tmp_path / "config.toml"
    config.write_text(f'[daemon]\nstate_dir = "{tmp_path / "state"}"\n[dashboard]\n{dashboard}')
    assert main(["dashboard", "token", "--config", str(config), *flags]) == EXIT_OK
    assert f"Sign in at {url} with it" in " ".join(capsys.readouterr().err.split())


def test_two_dashboards_on_one_machine_keep_their_sessions_apart(
    tmp_path: Path, store: JobStore
) -> None:
    # Given two dashboards on 127.0.0.1 sharing a token (browsers send a cookie to every
    # port of a host, so each must know its own)
    token = create_token(tmp_path / "state")
    ports = [free_port(), free_port()]
    servers = [
        dashboard_server(
            DashboardSettings(port=port),
            state_dir=tmp_path / "state",
            store=store,
            folders=lambda: FOLDERS,
            workers=None,
            defaults=JobDefaults(),
        )
        for port in ports
    ]
    with servers[0], servers[1]:
        first, second = (f"http://127.0.0.1:{port}" for port in ports)
        # When a browser signs in on the first
        signed = httpx.post(f"{first}/api/login", json={"token": token}, headers={"origin": first})
        # Then its cookie is named for that port, and the second takes it for nothing
        assert list(signed.cookies) == [f"stembridge_session_{ports[0]}"]
        cookie = {"cookie": signed.headers["set-cookie"].split(";")[0]}
        assert httpx.get(f"{first}/api/session", headers=cookie).json()["signed_in"] is True
        assert httpx.get(f"{second}/api/session", headers=cookie).json()["signed_in"] is False


def test_serve_beyond_loopback_without_a_token_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path / "config.toml", tmp_path / "state", dashboard_port=PORT)
    code = main(["serve", "--config", str(config), "--dashboard-host", "0.0.0.0"])
    assert code == EXIT_USAGE
    assert "run `stembridge dashboard token` first" in capsys.readouterr().err


def test_server_serves_on_a_thread_and_stops(tmp_path: Path, store: JobStore) -> None:
    done_job(store, tmp_path)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = DashboardSettings(port=port)
    server = dashboard_server(
        settings,
        state_dir=tmp_path / "state",
        store=store,
        folders=lambda: FOLDERS,
        workers=None,
        defaults=JobDefaults(),
    )
    with server:
        jobs = httpx.get(f"http://127.0.0.1:{port}/api/jobs").json()["jobs"]
        assert [j["state"] for j in jobs] == ["done"]
        # A second dashboard on the same port fails at start, saying what to do
        with (
            pytest.raises(ConfigError, match=f"cannot listen on 127.0.0.1:{port}.*--no-dashboard"),
            DashboardServer(server_app(store, tmp_path), host="127.0.0.1", port=port),
        ):
            pass
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/api/jobs", timeout=2)


def server_app(store: JobStore, tmp_path: Path, port: int = PORT) -> object:
    guard = Guard(host="127.0.0.1", port=port, state_dir=tmp_path / "state")
    return create_app(
        store=store,
        guard=guard,
        folders=lambda: FOLDERS,
        workers=None,
        uploads=Uploads(tmp_path / "uploads", max_bytes=10_000_000),
        defaults=JobDefaults(),
    )


def test_status_commands_do_not_import_the_dashboard(tmp_path: Path) -> None:
    # The host-facing commands stay light: no web framework either.
    import subprocess
    import sys

    config = write_config(tmp_path / "config.toml", tmp_path / "state")
    code = (
        "import sys\n"
        "from bridge.cli import main\n"
        f"main(['jobs', '--config', {str(config)!r}])\n"
        "heavy = [m for m in ('starlette', 'uvicorn', 'PIL') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, capture_output=True)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_open_connections_stay_within_half_the_descriptor_limit() -> None:
    for limit in (256, 1024, 4096, 1_048_576):
        most = max_connections(limit)
        # each: its socket and a file it streams; plus the backlog and the threads
        assert most >= 1 and 2 * most + 2 * BACKLOG + 4 * THREADS + 1 <= limit // 2, limit
    assert max_connections(256) == 31 and max_connections(None) == MOST_CONNECTIONS


def test_slow_idle_and_surplus_connections_are_closed_and_a_flood_logged_once(
    tmp_path: Path, store: JobStore, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    app = server_app(store, tmp_path, port)
    address = ("127.0.0.1", port)
    with DashboardServer(
        app, host="127.0.0.1", port=port, max_connections=2, request_timeout_seconds=0.5
    ):
        # Given two connections that never send a whole request: one says nothing, one
        # trickles a head in a byte at a time
        silent = socket.create_connection(address, timeout=5)
        trickling = socket.create_connection(address, timeout=5)
        began = time.monotonic()
        # When a third comes, it is answered 503 at once
        with socket.create_connection(address, timeout=5) as third:
            assert third.recv(4096).startswith(b"HTTP/1.1 503 ")
        # Then both are closed by the request timeout, the trickle despite its bytes
        for byte in b"GET /api/jobs HTTP/1.1\r\n":
            try:
                trickling.send(bytes([byte]))
            except OSError:
                break
            time.sleep(0.05)
        assert silent.recv(1) == b"" and trickling.recv(1) == b""
        assert time.monotonic() - began < 3
        silent.close()
        trickling.close()
        # And a client that sends whole requests keeps its connection across them
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            for _ in range(3):
                assert client.get("/api/jobs").status_code == 200
                time.sleep(0.6)  # longer than the request timeout, within keep-alive
    floods = [r for r in caplog.records if "the most it takes" in r.getMessage()]
    assert len(floods) == 1
