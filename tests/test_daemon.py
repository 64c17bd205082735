"""The daemon as a real process on real folders: finished renders, load, crashes, loops."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import soundfile as sf

from bridge.atomic import is_temporary
from bridge.jobs.status_file import read_status
from bridge.jobs.store import JobStore

from processes import DaemonProcess, all_final, visible_files, wait_for, watch_daemon, write_config
from signals import music, write_audio

RATE = 44100


@pytest.fixture
def daemons(model_dir: Path, tmp_path: Path) -> Iterator[list[DaemonProcess]]:
    """Started daemons, killed at the end whatever happened."""
    started: list[DaemonProcess] = []
    yield started
    for daemon in started:
        if daemon.process.poll() is None:
            daemon.kill()


def watch_renders(
    daemons: list[DaemonProcess], tmp_path: Path, *extra: str
) -> tuple[DaemonProcess, JobStore, Path, Path]:
    """A daemon watching ``renders/`` with stems going to ``stems/``."""
    watched, out = tmp_path / "renders", tmp_path / "stems"
    watched.mkdir(exist_ok=True)
    daemon, store = start_watch(daemons, tmp_path, watched, out, *extra)
    return daemon, store, watched, out


def start_watch(
    daemons: list[DaemonProcess], tmp_path: Path, folder: Path, out: Path, *extra: str
) -> tuple[DaemonProcess, JobStore]:
    daemon = watch_daemon(tmp_path, folder, out, *extra, log=f"daemon{len(daemons)}.log")
    daemons.append(daemon)
    return daemon, JobStore(tmp_path / "state")


def test_slow_render_gives_one_job_after_it_is_complete(
    daemons: list[DaemonProcess], tmp_path: Path
) -> None:
    # Given a daemon watching a folder
    daemon, store, watched, _out = watch_renders(daemons, tmp_path)
    # When a DAW-like writer renders a file over about three seconds
    audio = music(3 * RATE)
    with sf.SoundFile(str(watched / "take.wav"), "w", RATE, 2, subtype="PCM_24") as file:
        for start in range(0, len(audio), RATE // 4):
            file.write(audio[start : start + RATE // 4])
            file.flush()
            time.sleep(0.25)
            assert store.list() == [], "a job started before the render was finished"
    finished_writing = time.time()
    # Then exactly one job is made, after the file was complete, over the whole file
    (job,) = wait_for(lambda: all_final(store, 1), what="the job to end")
    assert job.state == "done", job.error
    assert job.created >= finished_writing - 0.05
    manifest = json.loads(Path(job.manifest or "").read_text())
    assert manifest["input"]["frames"] == len(audio)
    time.sleep(1)
    assert len(store.list()) == 1
    assert daemon.stop() == 0


def test_fifty_files_dropped_at_once_give_fifty_results(
    daemons: list[DaemonProcess], tmp_path: Path
) -> None:
    daemon, store, watched, out = watch_renders(daemons, tmp_path, "--stems", "vocals")
    for n in range(50):
        write_audio(watched / f"clip{n:02d}.wav", music(RATE // 2, seed=n))
    jobs = wait_for(lambda: all_final(store, 50), timeout=180, what="50 jobs to end")
    assert all(job.state == "done" for job in jobs), [job.error for job in jobs]
    assert sorted(Path(job.spec.input).name for job in jobs) == [
        f"clip{n:02d}.wav" for n in range(50)
    ]
    expected = sorted(
        f"clip{n:02d}/{name}"
        for n in range(50)
        for name in ("manifest.json", "vocals.wav", "vocals.waveform.png", "vocals.spectrogram.png")
    )
    assert [p for p in visible_files(out) if not p.startswith(".stembridge")] == expected
    assert daemon.stop() == 0


def test_kill_during_a_job_then_restart_completes_it_once(
    daemons: list[DaemonProcess], tmp_path: Path
) -> None:
    # Given a daemon separating a long file
    daemon, store, watched, out = watch_renders(daemons, tmp_path)
    write_audio(watched / "long.wav", music(90 * RATE))
    wait_for(
        lambda: any(j.stage == "separating" and j.progress > 0.1 for j in store.list()),
        what="the job to be separating",
    )
    # When the daemon is killed -9 mid-job
    daemon.kill()
    (job,) = store.list()
    assert job.state == "running"
    # Then a restarted daemon runs it again to completion: one output set, nothing partial
    start_watch(daemons, tmp_path, watched, out)
    (job,) = wait_for(lambda: all_final(store, 1), timeout=120, what="the job to end")
    assert job.state == "done" and job.attempts == 2
    files = visible_files(out / "long")
    stems = ("bass", "drums", "other", "vocals")
    pictures = [f"{stem}.{kind}.png" for stem in stems for kind in ("spectrogram", "waveform")]
    assert files == sorted(["manifest.json", *(f"{stem}.wav" for stem in stems), *pictures])
    assert not [p for p in (out / "long").iterdir() if is_temporary(p)]
    assert sf.info(str(out / "long" / "vocals.wav")).frames == 90 * RATE


def test_sigterm_requeues_the_running_job_and_leaves_nothing_partial(
    daemons: list[DaemonProcess], tmp_path: Path
) -> None:
    daemon, store, watched, out = watch_renders(daemons, tmp_path)
    write_audio(watched / "long.wav", music(90 * RATE))
    wait_for(lambda: any(j.stage == "separating" for j in store.list()), what="separating")
    assert daemon.stop() == 0
    (job,) = store.list()
    assert job.state == "queued"
    assert not (out / "long").exists() or visible_files(out / "long") == []


def test_same_audio_twice_is_separated_once(daemons: list[DaemonProcess], tmp_path: Path) -> None:
    # Given one render, and the same bytes under another name a bit later
    daemon, store, watched, out = watch_renders(daemons, tmp_path)
    write_audio(watched / "mix.wav", music(2 * RATE))
    wait_for(lambda: all_final(store, 1), what="the first job")
    shutil.copyfile(watched / "mix.wav", watched / "mix copy.wav")
    jobs = wait_for(lambda: all_final(store, 2), what="the second job")
    first, second = sorted(jobs, key=lambda job: job.created)
    # Then the second reused the first's stems instead of separating again
    assert first.state == second.state == "done"
    assert first.reused_from is None
    assert second.reused_from == first.manifest
    for name in ("drums", "bass", "other", "vocals"):
        for file in (f"{name}.wav", f"{name}.waveform.png", f"{name}.spectrogram.png"):
            assert (out / "mix copy" / file).read_bytes() == (out / "mix" / file).read_bytes()
    copied = json.loads((out / "mix copy" / "manifest.json").read_text())
    assert (
        copied["stems"][0]["pictures"]["waveform"] == f"{copied['stems'][0]['name']}.waveform.png"
    )
    assert copied["reused_from"] == first.manifest
    assert copied["input"]["path"] == str(watched / "mix copy.wav")
    assert "separated" not in daemon.output().split("mix copy")[-1]


def test_output_folder_inside_the_watched_folder_does_not_loop(
    daemons: list[DaemonProcess], tmp_path: Path
) -> None:
    watched = tmp_path / "renders"
    watched.mkdir()
    _, store = start_watch(daemons, tmp_path, watched, watched / "Stems", "--recursive")
    write_audio(watched / "song.wav", music(RATE))
    wait_for(lambda: all_final(store, 1), what="the job")
    time.sleep(2)  # several ticks: stems, manifest and status files are all there now
    (job,) = store.list()
    assert job.state == "done" and Path(job.spec.input).name == "song.wav"


def test_corrupt_file_fails_its_job_and_the_daemon_goes_on(
    daemons: list[DaemonProcess], tmp_path: Path
) -> None:
    daemon, store, watched, _out = watch_renders(daemons, tmp_path)
    (watched / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot really audio at all")
    wait_for(lambda: all_final(store, 1), what="the broken file's job")
    write_audio(watched / "good.wav", music(RATE))
    jobs = {Path(job.spec.input).name: job for job in wait_for(lambda: all_final(store, 2))}
    assert jobs["broken.wav"].state == "failed"
    assert "not audio" in (jobs["broken.wav"].error or "")
    assert jobs["broken.wav"].error_kind == "UnreadableAudio"
    status = read_status(jobs["broken.wav"].status_file)
    assert status["state"] == "failed" and "broken.wav" in status["error"]
    assert jobs["good.wav"].state == "done"
    assert daemon.process.poll() is None


def test_polling_observer_survives_its_folder_being_removed(
    daemons: list[DaemonProcess], tmp_path: Path
) -> None:
    # Given a polling daemon (as on a network share)
    watched, out = tmp_path / "share", tmp_path / "stems"
    watched.mkdir()
    daemon, store = start_watch(daemons, tmp_path, watched, out, "--polling")
    # When the folder disappears and comes back
    shutil.rmtree(watched)
    wait_for(lambda: "is gone" in daemon.output(), what="the daemon to notice")
    watched.mkdir()
    wait_for(lambda: "is back" in daemon.output(), what="the daemon to pick it up")
    # Then files dropped into it are still separated
    write_audio(watched / "after.wav", music(RATE))
    (job,) = wait_for(lambda: all_final(store, 1), what="the job")
    assert job.state == "done" and Path(job.spec.input).name == "after.wav"


def test_config_error_stops_start_up_with_the_key(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "config.toml", tmp_path / "state", "[separation]\novelap = 0.5\n"
    )
    daemon = DaemonProcess(["serve", "--config", str(config)], tmp_path / "daemon.log")
    assert daemon.process.wait(timeout=60) == 2
    assert "unknown key 'ovelap'" in daemon.output()
    assert str(config) in daemon.output()
