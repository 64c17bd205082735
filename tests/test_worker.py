"""The worker's failure policy: bad input fails at once, memory trouble retries smaller,
anything unexpected retries with backoff and then fails; the daemon's loop survives."""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path

import pytest

from bridge.jobs.store import JobStore
from bridge.jobs.worker import RETRY_DELAYS_SECONDS, ModelCache, Worker
from bridge.models.loaded import LoadedModel
from bridge.pipeline.spec import JobSpec
from bridge.settings import SeparationSettings

from signals import music, write_audio


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FlakyModels(ModelCache):
    """The real warm model, except that some settings fail the way a GPU or a bug would."""

    def __init__(self, folders: list[Path], fail: type[Exception], message: str, when) -> None:
        super().__init__(folders=folders, offline=True)
        self.fail, self.message, self.when = fail, message, when
        self.seen: list[SeparationSettings] = []

    def model(self, settings: SeparationSettings) -> LoadedModel:
        self.seen.append(settings)
        if self.when(settings):
            raise self.fail(self.message)
        return super().model(settings)


def run_until_final(store: JobStore, worker: Worker, clock: Clock, job_id: str) -> None:
    for _ in range(10):
        job = store.claim("w")
        if job is None:
            clock.now += 1000
            continue
        worker.run_job(job, threading.Event())
        if store.get(job_id).state in ("done", "failed", "cancelled"):
            return
    raise AssertionError("the job never ended")


@pytest.fixture
def source(tmp_path: Path) -> Path:
    return write_audio(tmp_path / "in.wav", music(22050))


def submit(store: JobStore, source: Path, **separation: object) -> str:
    settings = dataclasses.replace(SeparationSettings(stems=("vocals",)), **separation)
    spec = JobSpec(input=str(source), folder=str(source.parent / "out"), separation=settings)
    return store.submit(spec)[0].id


def test_out_of_memory_retries_with_half_the_batch_then_the_cpu(
    tiny_models: Path, tmp_path: Path, source: Path
) -> None:
    clock = Clock()
    store = JobStore(tmp_path / "state", clock=clock)
    models = FlakyModels(
        [tiny_models],
        RuntimeError,
        "CUDA out of memory. Tried to allocate 2.00 GiB",
        when=lambda s: (s.batch_size or 8) > 2,
    )
    job_id = submit(store, source, batch_size=8)
    run_until_final(store, Worker(store, models=models, owner="w"), clock, job_id)
    assert [s.batch_size for s in models.seen] == [8, 4, 2]
    assert store.get(job_id).state == "done"


def test_unexpected_errors_retry_with_backoff_then_fail(
    tiny_models: Path, tmp_path: Path, source: Path
) -> None:
    clock = Clock()
    store = JobStore(tmp_path / "state", clock=clock)
    models = FlakyModels([tiny_models], ZeroDivisionError, "a bug", when=lambda s: True)
    job_id = submit(store, source)
    worker = Worker(store, models=models, owner="w")
    job = store.claim("w")
    assert job is not None
    worker.run_job(job, threading.Event())
    waiting = store.get(job_id)
    assert waiting.state == "queued" and "retrying in 5 s" in (waiting.error or "")
    assert store.claim("w") is None, "the retry must wait for its backoff"
    run_until_final(store, worker, clock, job_id)
    failed = store.get(job_id)
    assert failed.state == "failed" and failed.attempts == len(RETRY_DELAYS_SECONDS) + 1
    assert "ZeroDivisionError: a bug" in (failed.error or "")


def test_bad_input_fails_at_once_without_retry(tiny_models: Path, tmp_path: Path) -> None:
    store = JobStore(tmp_path / "state")
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"nope")
    job_id = submit(store, bad)
    job = store.claim("w")
    assert job is not None
    Worker(store, models=ModelCache(folders=[tiny_models]), owner="w").run_job(
        job, threading.Event()
    )
    failed = store.get(job_id)
    assert (failed.state, failed.attempts, failed.error_kind) == ("failed", 1, "UnreadableAudio")


def test_the_worker_loop_survives_a_broken_store(tmp_path: Path) -> None:
    class BrokenStore(JobStore):
        calls = 0

        def claim(self, owner: str, *, job_id: str | None = None):  # type: ignore[override]
            BrokenStore.calls += 1
            if BrokenStore.calls >= 3:
                stop.set()
            raise OSError("disk went away")

    stop = threading.Event()
    worker = Worker(
        BrokenStore(tmp_path), models=ModelCache(), owner="w", poll_interval_seconds=0.01
    )
    worker.run(stop)
    assert BrokenStore.calls >= 3


def test_run_to_end_takes_a_job_through_its_retries(tiny_models: Path, source: Path) -> None:
    # Given a store whose clock moves on a minute at every look (no real waiting) and a
    # model that fails unexpectedly the first time
    ticks = iter(range(10**6))
    store = JobStore(source.parent / "state", clock=lambda: 1000.0 + 60 * next(ticks))
    job_id = submit(store, source)
    calls: list[int] = []

    def first_time(settings: SeparationSettings) -> bool:
        calls.append(1)
        return len(calls) == 1

    models = FlakyModels([tiny_models], RuntimeError, "a bug", first_time)
    worker = Worker(store, models=models, owner="w", poll_interval_seconds=0.01)
    # When it is run to its end in this process (what submit --wait does without a daemon)
    job = worker.run_to_end(job_id, threading.Event())
    # Then the retry ran here too, and the job is done
    assert job.state == "done", job.error
    assert len(calls) == 2 and job.attempts == 2
