"""The job store: queue order, dedupe, progress, cancel, retries, recovery, many writers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bridge.errors import JobError, JobNotFound
from bridge.jobs.store import MAX_STARTS, JobStore
from bridge.owners import owner_alive, owner_id
from bridge.pipeline.spec import PRIORITY_INTERACTIVE, PRIORITY_WATCHED, JobSpec


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def spec(name: str, priority: int = PRIORITY_WATCHED) -> JobSpec:
    return JobSpec(input=f"/in/{name}.wav", folder=f"/out/{name}", priority=priority)


def test_interactive_jobs_go_first_then_oldest(tmp_path: Path) -> None:
    clock = Clock()
    store = JobStore(tmp_path, clock=clock)
    ids = []
    for name, priority in [
        ("a", PRIORITY_WATCHED),
        ("b", PRIORITY_WATCHED),
        ("c", PRIORITY_INTERACTIVE),
    ]:
        ids.append(store.submit(spec(name, priority))[0].id)
        clock.now += 1
    claimed = [store.claim("w") for _ in range(4)]
    assert [job.id if job else None for job in claimed] == [ids[2], ids[0], ids[1], None]
    assert all(job.state == "running" and job.attempts == 1 for job in claimed if job)


def test_duplicate_submissions_coalesce_while_active(tmp_path: Path) -> None:
    store = JobStore(tmp_path)
    first, created = store.submit(spec("a"), dedupe_key="k")
    again, created_again = store.submit(spec("a"), dedupe_key="k")
    assert created and not created_again and again.id == first.id
    store.claim("w")
    store.finish(first.id, manifest="/out/a/manifest.json")
    later, created_later = store.submit(spec("a"), dedupe_key="k")
    assert created_later and later.id != first.id


def test_progress_cancel_and_final_states(tmp_path: Path) -> None:
    store = JobStore(tmp_path)
    queued = store.submit(spec("a"))[0]
    assert store.cancel(queued.id).state == "cancelled"
    running = store.submit(spec("b"))[0]
    store.claim("w")
    assert store.progress(running.id, 0.5, "separating") is False
    assert store.cancel(running.id).state == "running"
    assert store.progress(running.id, 0.6, "separating") is True
    assert store.mark_cancelled(running.id).state == "cancelled"


def test_retry_waits_for_its_backoff(tmp_path: Path) -> None:
    clock = Clock()
    store = JobStore(tmp_path, clock=clock)
    job = store.submit(spec("a"))[0]
    store.claim("w")
    store.fail(job.id, error="flaky", kind="OSError", retry_in_seconds=30)
    assert store.claim("w") is None
    clock.now += 31
    again = store.claim("w")
    assert again is not None and again.id == job.id and again.attempts == 2


def test_retry_queues_a_failed_or_cancelled_job_again_without_a_copy(tmp_path: Path) -> None:
    # Given a failed job and a cancelled one
    store = JobStore(tmp_path)
    failed = store.submit(spec("a"))[0]
    store.claim("w")
    store.fail(failed.id, error="bad input", kind="AudioError")
    cancelled = store.cancel(store.submit(spec("b"))[0].id)
    # When both are retried
    again = [store.retry(failed.id), store.retry(cancelled.id)]
    # Then they are queued again under the same ids, fresh, and nothing was copied
    assert [(j.id, j.state, j.attempts, j.error) for j in again] == [
        (failed.id, "queued", 0, None),
        (cancelled.id, "queued", 0, None),
    ]
    assert len(store.list()) == 2
    assert store.claim("w").id == failed.id  # type: ignore[union-attr]
    # And a job that is not failed or cancelled is refused, by name
    with pytest.raises(JobError, match=f"job {failed.id} is running; only failed or cancelled"):
        store.retry(failed.id)
    with pytest.raises(JobNotFound):
        store.retry("abc")


def test_requeue_on_stop_does_not_count_the_start(tmp_path: Path) -> None:
    store = JobStore(tmp_path)
    job = store.submit(spec("a"))[0]
    store.claim("w")
    assert store.requeue(job.id).attempts == 0


def test_jobs_of_dead_owners_are_recovered_and_repeat_crashers_failed(tmp_path: Path) -> None:
    store = JobStore(tmp_path)
    job = store.submit(spec("a"))[0]
    for _ in range(MAX_STARTS):
        assert store.claim("gone") is not None
        assert store.recover(lambda owner: owner != "gone") == [job.id]
    assert store.claim("gone") is None
    failed = store.get(job.id)
    assert failed.state == "failed" and "worker died" in (failed.error or "")


def test_owner_ids_tell_live_from_dead_processes() -> None:
    assert owner_alive(owner_id())
    child = subprocess.run(
        [sys.executable, "-c", "from bridge.owners import owner_id; print(owner_id())"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert not owner_alive(child.stdout.strip())


def test_unknown_or_ambiguous_ids_are_refused(tmp_path: Path) -> None:
    store = JobStore(tmp_path)
    job = store.submit(spec("a"))[0]
    assert store.get(job.id[:4]).id == job.id
    for bad in ("zzzz", "", "%"):
        with pytest.raises(JobNotFound, match="stembridge jobs"):
            store.get(bad)


def test_store_is_private_to_the_user(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "state")
    assert (tmp_path / "state").stat().st_mode & 0o777 == 0o700
    assert store.path.stat().st_mode & 0o777 == 0o600


def test_many_processes_submitting_at_once_lose_nothing(tmp_path: Path) -> None:
    # Given 20 processes submitting 10 jobs each, all at the same time
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from bridge.pipeline.spec import JobSpec\n"
        "from bridge.jobs.store import JobStore\n"
        "store = JobStore(Path(sys.argv[1]))\n"
        "for n in range(10):\n"
        "    store.submit(JobSpec(input=f'/in/{sys.argv[2]}-{n}.wav', folder='/out'))\n"
    )
    JobStore(tmp_path)
    children = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(tmp_path), str(i)], stderr=subprocess.PIPE
        )
        for i in range(20)
    ]
    errors = [child.communicate(timeout=120)[1] for child in children]
    # Then every submission is recorded once and nobody saw "database is locked"
    assert all(child.returncode == 0 for child in children), errors
    jobs = JobStore(tmp_path).list(limit=1000)
    assert len(jobs) == 200 and len({job.spec.input for job in jobs}) == 200
