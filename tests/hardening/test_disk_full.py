"""A full output disk: a small tmpfs mounted by the test as the output folder."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import soundfile as sf

from bridge.atomic import is_temporary
from bridge.jobs.store import JobStore

from processes import all_final, wait_for, watch_daemon
from signals import music, write_audio

RATE = 44100


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs: room for the status files, not for the stems of 10 s of audio."""
    folder = tmp_path / "stems"
    folder.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m,mode=0755", "tmpfs", str(folder)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        reason = f"cannot mount a tmpfs here ({mounted.stderr.strip()}); run as root"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    yield folder
    subprocess.run(["umount", "-l", str(folder)], check=True)


def test_a_full_disk_fails_the_job_cleanly_and_later_jobs_succeed_once_space_returns(
    model_dir: Path, tmp_path: Path, small_disk: Path
) -> None:
    watched = tmp_path / "renders"
    watched.mkdir()
    daemon = watch_daemon(tmp_path, watched, small_disk)
    try:
        store = JobStore(tmp_path / "state")
        # Given two renders whose stems do not fit
        write_audio(watched / "big.wav", music(10 * RATE))
        write_audio(watched / "big2.wav", music(10 * RATE, seed=1))
        jobs = wait_for(lambda: all_final(store, 2), timeout=120, what="both jobs")
        # Then each fails saying the disk is full, and leaves nothing behind
        for job in jobs:
            assert job.state == "failed", job.state
            assert "no space left" in (job.error or "").lower(), job.error
            assert str(small_disk) in (job.error or ""), job.error
        leftovers = [p for p in small_disk.rglob("*") if p.is_file() and p.suffix != ".status"]
        assert leftovers == []
        assert not [p for p in small_disk.rglob("*") if is_temporary(p)]
        # When space comes back, the next render goes through
        subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
        write_audio(watched / "after.wav", music(10 * RATE, seed=2))
        done = wait_for(lambda: all_final(store, 3), timeout=120, what="the job after")
        after = next(job for job in done if job.spec.input.endswith("after.wav"))
        assert after.state == "done", after.error
        assert sf.info(str(small_disk / "after" / "vocals.wav")).frames == 10 * RATE
        assert daemon.process.poll() is None
    finally:
        daemon.stop()
