"""kill -9 the daemon at many exact points of a run of jobs; after a restart every job is
done exactly once and nothing temporary or partial is visible."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf

from bridge.atomic import is_temporary
from bridge.jobs.status_file import read_status
from bridge.jobs.store import JobStore
from bridge.pipeline.spec import JobSpec
from bridge.settings import SeparationSettings

from processes import DaemonProcess, all_final, stem_set, visible_files, wait_for, write_config
from signals import music, write_audio

RATE = 44100
LAUNCHER = Path(__file__).parent.parent / "crashpoint.py"
STEMS = ["drums", "bass", "other", "vocals"]

# (what is being called, which call, kill before or after it): decoding, hashing, the
# model, writing stems, flushing, each rename (stems, manifest, status files), the store.
KILL_POINTS = [
    ("bridge.jobs.store.JobStore.claim", 1, "after"),
    ("bridge.pipeline.analyse.file_sha256", 1, "before"),
    ("soundfile.SoundFile.read", 1, "before"),
    ("soundfile.SoundFile.read", 2, "after"),
    ("demucs.htdemucs.HTDemucs.forward", 1, "before"),
    ("demucs.htdemucs.HTDemucs.forward", 3, "after"),
    ("soundfile.SoundFile.write", 1, "before"),
    ("soundfile.SoundFile.write", 6, "after"),
    ("os.fsync", 2, "before"),
    ("os.replace", 1, "before"),
    ("os.replace", 2, "after"),
    ("os.replace", 4, "before"),
    ("os.replace", 5, "after"),
    ("os.replace", 7, "before"),
    ("os.replace", 9, "after"),
    ("bridge.jobs.store.JobStore.finish", 1, "before"),
    ("bridge.jobs.store.JobStore.finish", 1, "after"),
    ("bridge.jobs.store.JobStore.finish", 2, "after"),
    ("bridge.jobs.status_file.write_status", 3, "before"),
]
JOBS = 3


def queue_jobs(store: JobStore, renders: Path, out: Path) -> list[str]:
    ids = []
    for n in range(JOBS):
        source = write_audio(renders / f"take{n}.wav", music(RATE, seed=n))
        spec = JobSpec(
            input=str(source), folder=str(out / source.stem), separation=SeparationSettings()
        )
        job, _ = store.submit(spec)
        ids.append(job.id)
    return ids


@pytest.mark.parametrize(("target", "nth", "when"), KILL_POINTS)
def test_killed_at_a_point_then_restarted_every_job_is_done_once(
    model_dir: Path, tmp_path: Path, target: str, nth: int, when: str
) -> None:
    config = write_config(tmp_path / "config.toml", tmp_path / "state")
    store = JobStore(tmp_path / "state")
    out = tmp_path / "stems"
    ids = queue_jobs(store, tmp_path / "renders", out)
    # Given a daemon that dies by SIGKILL at the chosen point
    killed = subprocess.run(
        [
            sys.executable,
            str(LAUNCHER),
            target,
            str(nth),
            when,
            "--",
            "-v",
            "serve",
            "--config",
            str(config),
        ],
        capture_output=True,
        timeout=120,
        text=True,
    )
    assert killed.returncode == -9, f"the kill point was never reached:\n{killed.stderr[-2000:]}"
    # When a normal daemon starts again
    daemon = DaemonProcess(["serve", "--config", str(config)], tmp_path / "daemon.log")
    try:
        jobs = wait_for(lambda: all_final(store, JOBS), timeout=120, what="every job to end")
        # Then every job is done once, in its own folder, with whole stems and nothing else
        assert sorted(job.id for job in jobs) == sorted(ids)
        for job in jobs:
            assert job.state == "done", (job.id, job.error)
            folder = Path(job.manifest or "").parent
            assert folder == out / Path(job.spec.input).stem
            assert visible_files(folder) == stem_set(*STEMS)
            manifest = json.loads((folder / "manifest.json").read_text())
            assert manifest["job_id"] == job.id
            for stem in STEMS:
                assert sf.info(str(folder / f"{stem}.wav")).frames == RATE
            # A host polling the status file sees the end too
            wait_for(
                lambda job=job: read_status(job.status_file).get("state") == "done",
                timeout=10,
                what=f"{job.id}'s status file to say done",
            )
        assert sorted(p.name for p in out.iterdir()) == [".stembridge", "take0", "take1", "take2"]
    finally:
        assert daemon.stop() == 0
    assert [p for p in tmp_path.rglob("*") if is_temporary(p)] == []
