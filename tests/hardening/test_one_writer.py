"""Two jobs for one input and one output folder, with different settings, at the same time:
each gets a folder of its own and nothing finished is ever deleted. Real processes: two
studio workers on a real redis-server, and the CLI beside a local daemon."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import soundfile as sf

from bridge.atomic import is_journal, is_temporary
from bridge.jobs.store import JobStore
from bridge.pipeline.folders import RESERVATION_NAME
from bridge.pipeline.spec import JobSpec
from bridge.settings import EffectsSettings, OutputSettings, SeparationSettings

from processes import DaemonProcess, stem_set, wait_for, write_config
from signals import music, write_audio
from test_studio import RedisServer, Studio, free_port

RATE = 44100
TWO = SeparationSettings(stems=("vocals", "instrumental"))
FOUR = SeparationSettings()
FOUR_STEMS = ["drums", "bass", "other", "vocals"]


class FinishedFiles:
    """Watches a folder tree and remembers every file of every finished set (a folder with
    a manifest and no journal), by inode, to show that none is ever deleted or replaced."""

    def __init__(self, root: Path) -> None:
        self._root = root
        self.seen: dict[Path, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="finished-files")

    def __enter__(self) -> FinishedFiles:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._look()

    def _watch(self) -> None:
        while not self._stop.wait(0.02):
            self._look()

    def _look(self) -> None:
        for manifest in self._root.glob("*/manifest.json"):
            folder = manifest.parent
            try:
                if any(is_journal(path) for path in folder.iterdir()):
                    continue  # a set still being published
                listed = json.loads(manifest.read_text(encoding="utf-8"))
                names = [manifest.name]
                for stem in listed["stems"]:
                    names += [stem["path"], *stem["pictures"].values()]
                found = {folder / name: (folder / name).stat().st_ino for name in names}
            except (OSError, ValueError, KeyError):
                continue
            for path, inode in found.items():
                self.seen.setdefault(path, inode)

    def assert_all_kept(self) -> None:
        assert self.seen, "no finished set was seen"
        for path, inode in self.seen.items():
            assert path.exists(), f"{path} was deleted"
            assert path.stat().st_ino == inode, f"{path} was replaced"


def assert_own_folder(folder: Path, job_id: str, stems: list[str], extension: str) -> None:
    """The folder holds exactly the job's set, its manifest names the job, nothing temporary."""
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["job_id"] == job_id
    assert sorted(stem["name"] for stem in manifest["stems"]) == sorted(stems)
    visible = sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))
    assert visible == stem_set(*stems, extension=extension)
    assert [p.name for p in folder.iterdir() if p.name.startswith(".")] == []


def writing(folder: Path) -> bool:
    """Whether a job has begun writing stems into ``folder`` (temporaries beside its
    reservation)."""
    return any(is_temporary(path) and path.name != RESERVATION_NAME for path in folder.glob(".*"))


def assert_nothing_temporary(root: Path, *, settle_seconds: float = 5.0) -> None:
    """Nothing temporary is left under ``root``. A running daemon may be in the middle of
    an atomic status-file update (its hidden ``.part`` exists until the rename), so a
    temporary gets a moment to go before it counts as left behind."""
    deadline = time.monotonic() + settle_seconds
    left = [p for p in root.rglob("*") if is_temporary(p)]
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = [p for p in root.rglob("*") if is_temporary(p)]
    assert left == []


@pytest.fixture
def studio(model_dir: Path, tmp_path: Path) -> Iterator[Studio]:
    from programs import required_program

    required_program("redis-server", package="redis-server", purpose="studio races are not tested")
    server = RedisServer(tmp_path / "redis", free_port())
    setup = Studio(tmp_path, server.url)
    try:
        yield setup
    finally:
        setup.stop()
        server.stop()


def studio_job(store: JobStore, source: Path, out: Path, **settings: object) -> str:
    spec = JobSpec(input=str(source), folder=str(out / source.stem), **settings)  # type: ignore[arg-type]
    return store.submit(spec)[0].id


def test_two_studio_workers_never_share_a_folder(studio: Studio) -> None:
    # Given a daemon on the broker and two workers
    studio.start_daemon()
    studio.start_worker("worker-a")
    studio.start_worker("worker-b")
    wait_for(lambda: len(studio.workers()) == 2, timeout=90, what="two live workers")
    out = studio.tmp / "stems"
    renders = studio.tmp / "renders"
    with FinishedFiles(out) as finished:
        for round_ in range(2):
            # When two jobs for one render and one folder arrive at the same moment...
            source = write_audio(renders / f"take{round_}.wav", music(RATE * 3, seed=round_))
            together = [
                studio_job(studio.store, source, out, separation=TWO),
                studio_job(studio.store, source, out, output=OutputSettings(format="flac")),
            ]
            # ... and two more once the first one's temporaries exist
            late_source = write_audio(
                renders / f"late{round_}.wav", music(RATE * 6, seed=9 + round_)
            )
            first = studio_job(studio.store, late_source, out, separation=TWO)
            wait_for(
                lambda late_source=late_source: writing(out / late_source.stem),
                timeout=120,
                what="the first job's temporaries",
            )
            second = studio_job(
                studio.store,
                late_source,
                out,
                effects=EffectsSettings(preset="vocal-polish"),
            )
            ids = [*together, first, second]
            jobs = wait_for(
                lambda ids=ids: (
                    all(studio.store.get(i).state == "done" for i in ids)
                    and [studio.store.get(i) for i in ids]
                ),
                timeout=240,
                what="the four jobs",
            )
            # Then each is done in a folder of its own, with exactly its own files
            folders = [Path(job.folder) for job in jobs]
            assert len(set(folders)) == 4, folders
            assert {f.name for f in folders[:2]} == {source.stem, f"{source.stem} (2)"}
            assert {f.name for f in folders[2:]} == {late_source.stem, f"{late_source.stem} (2)"}
            for job, stems, extension in zip(
                jobs,
                [["vocals", "instrumental"], FOUR_STEMS, ["vocals", "instrumental"], FOUR_STEMS],
                ["wav", "flac", "wav", "wav"],
                strict=True,
            ):
                assert Path(job.manifest or "").parent == Path(job.folder)
                assert_own_folder(Path(job.folder), job.id, stems, extension)
    finished.assert_all_kept()
    assert_nothing_temporary(studio.tmp)


def test_the_cli_beside_a_local_daemon_never_shares_a_folder(
    model_dir: Path, tmp_path: Path
) -> None:
    # Given a local daemon
    config = write_config(tmp_path / "config.toml", tmp_path / "state")
    daemon = DaemonProcess(["serve", "--config", str(config)], tmp_path / "daemon.log")
    wait_for(lambda: "daemon ready" in daemon.output(), what="the daemon to start")
    store = JobStore(tmp_path / "state")
    out = tmp_path / "stems"

    def separate(source: Path, *flags: str) -> subprocess.Popen[str]:
        command = [sys.executable, "-m", "bridge", "separate", str(source), "-o", str(out)]
        return subprocess.Popen(
            [*command, *flags, "--json"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def submit(source: Path, *flags: str) -> str:
        command = [sys.executable, "-m", "bridge", "submit", str(source), "-o", str(out)]
        answer = subprocess.run(
            [*command, *flags, "--config", str(config), "--json"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return str(json.loads(answer.stdout)["id"])

    try:
        with FinishedFiles(out) as finished:
            for round_ in range(2):
                # When the daemon's job and a `separate` run start for one render at once...
                source = write_audio(tmp_path / f"take{round_}.wav", music(RATE * 3, seed=round_))
                cli = separate(source, "--format", "flac")
                job_id = submit(source, "--stems", "vocals,instrumental")
                # ... and once more, the CLI starting when the daemon's temporaries exist
                late = write_audio(tmp_path / f"late{round_}.wav", music(RATE * 6, seed=7 + round_))
                late_id = submit(late, "--stems", "vocals,instrumental")
                wait_for(
                    lambda late=late: any(
                        p.name != RESERVATION_NAME
                        for p in (out / late.stem).glob(".stembridge-*.part")
                    ),
                    timeout=120,
                    what="the daemon's temporaries",
                )
                late_cli = separate(late, "--preset", "vocal-polish")
                answers = [cli.communicate(timeout=240), late_cli.communicate(timeout=240)]
                for process, (_, stderr) in zip((cli, late_cli), answers, strict=True):
                    assert process.returncode == 0, stderr
                jobs = [
                    wait_for(
                        lambda i=i: store.get(i).state in ("done", "failed") and store.get(i),
                        timeout=240,
                        what=f"job {i}",
                    )
                    for i in (job_id, late_id)
                ]
                # Then every job is done, each in its own folder with its own files
                for job in jobs:
                    assert job.state == "done", job.error
                    assert_own_folder(Path(job.folder), job.id, ["vocals", "instrumental"], "wav")
                for (stdout, _), extension in zip(answers, ("flac", "wav"), strict=True):
                    (result,) = json.loads(stdout)["results"]
                    folder = Path(result["folder"])
                    assert folder not in {Path(job.folder) for job in jobs}
                    assert_own_folder(folder, result["job_id"], FOUR_STEMS, extension)
                    assert sf.info(str(folder / f"vocals.{extension}")).frames > 0
        finished.assert_all_kept()
        assert_nothing_temporary(out)
    finally:
        assert daemon.stop() == 0


def test_a_worker_paused_past_redelivery_changes_nothing_when_it_wakes(studio: Studio) -> None:
    # Given a daemon and one worker running a long job
    daemon = studio.start_daemon()
    paused = studio.start_worker("worker-a")
    wait_for(lambda: len(studio.workers()) == 1, timeout=90, what="the first worker")
    source = write_audio(studio.tmp / "renders" / "long.wav", music(RATE * 120, seed=3))
    job_id = studio_job(studio.store, source, studio.tmp / "stems", separation=TWO)
    wait_for(
        lambda: studio.store.get(job_id).progress > 0.05, timeout=120, what="the job under way"
    )
    # When that worker is paused until its message is handed to a second worker...
    os.kill(paused.process.pid, signal.SIGSTOP)
    try:
        other = studio.start_worker("worker-b")
        wait_for(
            lambda: any(
                job_id in worker["current_jobs"] and worker["id"].endswith(f":{other.process.pid}")
                for worker in studio.workers()
            ),
            timeout=120,
            what="the second worker to take the job",
        )
    finally:
        # ... and wakes up while the second one runs it
        os.kill(paused.process.pid, signal.SIGCONT)
    done = wait_for(
        lambda: studio.store.get(job_id).state in ("done", "failed") and studio.store.get(job_id),
        timeout=240,
        what="the job to end",
    )
    assert done.state == "done", done.error
    folder = Path(done.folder)
    kept = {p.name: p.stat().st_ino for p in folder.iterdir()}
    wait_for(
        lambda: "superseded by another delivery" in paused.output(),
        timeout=120,
        what="the woken worker to find out",
    )
    # Then the woken worker's late events were ignored, it published nothing, and the job,
    # its folder and its files are as the second worker left them
    assert "superseded run" in daemon.output()
    assert "separated " in other.output() and "separated " not in paused.output()
    after = studio.store.get(job_id)
    assert (after.state, after.stage, after.progress) == ("done", "done", 1.0)
    assert (after.manifest, after.folder) == (done.manifest, done.folder)
    assert {p.name: p.stat().st_ino for p in folder.iterdir()} == kept
    assert_own_folder(folder, job_id, ["vocals", "instrumental"], "wav")
    assert_nothing_temporary(studio.tmp / "stems")
