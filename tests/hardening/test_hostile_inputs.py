"""Hostile audio dropped on a running daemon: each gets a clear job error or a correct
result, nothing half-written is left, and the daemon keeps serving."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import soundfile as sf

from bridge.atomic import is_temporary
from bridge.jobs.store import Job, JobStore

from hostile import corpus
from processes import DaemonProcess, all_final, stem_set, visible_files, wait_for, watch_daemon
from signals import music, write_audio

RATE = 44100


@pytest.fixture
def daemon(model_dir: Path, tmp_path: Path) -> Iterator[tuple[DaemonProcess, JobStore, Path, Path]]:
    """A daemon watching ``renders/`` (vocals only, to keep the corpus quick)."""
    watched, out = tmp_path / "renders", tmp_path / "stems"
    watched.mkdir()
    process = watch_daemon(tmp_path, watched, out, "--stems", "vocals")
    yield process, JobStore(tmp_path / "state"), watched, out
    if process.process.poll() is None:
        process.kill()


def no_temporaries(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if is_temporary(p)]


def by_name(jobs: list[Job]) -> dict[str, Job]:
    return {Path(job.spec.input).name: job for job in jobs}


def test_every_hostile_file_gets_a_clear_error_or_a_correct_result(
    daemon: tuple[DaemonProcess, JobStore, Path, Path],
) -> None:
    process, store, watched, out = daemon
    entries = corpus()
    for entry in entries:
        entry.write(watched / entry.name)
    # Empty files are renders that have not started: they must not become jobs
    expected = [e for e in entries if e.name != "empty.wav"]
    jobs = by_name(wait_for(lambda: all_final(store, len(expected)), timeout=240, what="corpus"))
    assert sorted(jobs) == sorted(e.name for e in expected)
    for entry in expected:
        job = jobs[entry.name]
        assert job.state == entry.expect, (entry.name, job.state, job.error)
        stem_folder = out / Path(entry.name).stem
        if entry.expect == "failed":
            assert entry.name in (job.error or ""), job.error
            assert "; " in (job.error or ""), f"no advice in {job.error!r}"
            assert not stem_folder.exists() or visible_files(stem_folder) == []
        else:
            manifest = json.loads(Path(job.manifest or "").read_text())
            info = sf.info(str(stem_folder / "vocals.wav"))
            assert info.frames == entry.frames == manifest["input"]["frames"]
            data, _ = sf.read(str(stem_folder / "vocals.wav"))
            assert data.size and (abs(data) <= 1).all()
    assert no_temporaries(out) == [] and no_temporaries(watched) == []
    # The daemon is still serving: a good file after the corpus is separated
    write_audio(watched / "after.wav", music(RATE // 2))
    final = wait_for(lambda: all_final(store, len(expected) + 1), timeout=60, what="after.wav")
    assert by_name(final)["after.wav"].state == "done"
    assert process.process.poll() is None
    assert process.stop() == 0


def running(store: JobStore, name: str, progress: float = 0.05) -> Job | None:
    """The job of ``name`` once it is separating past ``progress``."""
    for job in store.list():
        if (
            Path(job.spec.input).name == name
            and job.stage == "separating"
            and job.progress > progress
        ):
            return job
    return None


def test_inputs_deleted_or_renamed_while_queued_fail_clearly_and_the_rest_go_on(
    daemon: tuple[DaemonProcess, JobStore, Path, Path],
) -> None:
    process, store, watched, out = daemon
    # Given a long job holding the worker and three short renders queued behind it
    write_audio(watched / "busy.wav", music(60 * RATE))
    wait_for(lambda: running(store, "busy.wav"), what="busy.wav to be separating")
    for name in ("deleted.wav", "renamed.wav", "kept.wav"):
        write_audio(watched / name, music(RATE // 2))
    wait_for(lambda: len(store.list(states=("queued",))) == 3, what="three queued jobs")
    # When one is deleted and one renamed before their turn
    (watched / "deleted.wav").unlink()
    (watched / "renamed.wav").rename(watched / "renamed later.wav")
    # Then those jobs fail naming the missing file, the renamed file is a new job, the rest pass
    jobs = by_name(wait_for(lambda: all_final(store, 5), timeout=120, what="five jobs"))
    for gone in ("deleted.wav", "renamed.wav"):
        assert jobs[gone].state == "failed"
        assert f"{watched / gone}: no such file" in (jobs[gone].error or "")
    for good in ("busy.wav", "kept.wav", "renamed later.wav"):
        assert jobs[good].state == "done", jobs[good].error
    assert not (out / "deleted").exists() and not (out / "renamed").exists()
    assert no_temporaries(out) == []
    assert process.stop() == 0


def test_an_input_deleted_while_being_read_still_gives_whole_stems(
    daemon: tuple[DaemonProcess, JobStore, Path, Path],
) -> None:
    process, store, watched, out = daemon
    write_audio(watched / "take.wav", music(30 * RATE))
    wait_for(lambda: running(store, "take.wav"), what="take.wav to be separating")
    (watched / "take.wav").unlink()
    (job,) = wait_for(lambda: all_final(store, 1), timeout=120, what="the job to end")
    # The open file keeps its data on POSIX: the result is whole and correct
    assert job.state == "done", job.error
    assert sf.info(str(out / "take" / "vocals.wav")).frames == 30 * RATE
    assert process.stop() == 0


def test_a_render_overwritten_while_being_read_fails_and_the_new_version_is_separated(
    daemon: tuple[DaemonProcess, JobStore, Path, Path],
) -> None:
    process, store, watched, out = daemon
    write_audio(watched / "take.wav", music(60 * RATE))
    wait_for(lambda: running(store, "take.wav"), what="take.wav to be separating")
    # The DAW renders the same file again, shorter, while the first version is being read
    write_audio(watched / "take.wav", music(RATE, seed=9))
    jobs = wait_for(lambda: all_final(store, 2), timeout=120, what="two jobs")
    first, second = sorted(jobs, key=lambda job: job.created)
    assert first.state == "failed"
    assert "changed while being read" in (first.error or ""), first.error
    assert second.state == "done", second.error
    assert sf.info(str(out / "take" / "vocals.wav")).frames == RATE
    assert visible_files(out / "take") == stem_set("vocals")
    assert process.stop() == 0


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def test_a_two_hour_file_is_streamed_with_bounded_memory(
    daemon: tuple[DaemonProcess, JobStore, Path, Path],
) -> None:
    process, store, watched, out = daemon
    # Two hours at 8 kHz mono: 115 MB on disk, 2.5 GB as 44.1 kHz stereo float in memory
    path = watched.parent / "two hours.wav"
    with sf.SoundFile(str(path), "w", 8000, 1, subtype="PCM_16") as file:
        block = music(8000 * 60, channels=1, rate=8000)
        for _ in range(120):
            file.write(block)
    os.replace(path, watched / "two hours.wav")
    job = wait_for(lambda: running(store, "two hours.wav", 0.01), timeout=180, what="2 h job")
    peak = peak_rss_mb(process.process.pid)
    print(f"daemon peak RSS after 1% of a 2-hour file: {peak:.0f} MB")
    assert peak < 1200, f"daemon peak RSS {peak:.0f} MB while separating a 2-hour file"
    store.cancel(job.id)
    (job,) = wait_for(lambda: all_final(store, 1), timeout=60, what="the cancel")
    assert job.state == "cancelled"
    assert not (out / "two hours").exists() or visible_files(out / "two hours") == []
    assert no_temporaries(out) == []
    assert process.stop() == 0
