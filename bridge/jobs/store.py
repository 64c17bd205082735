"""The durable job queue: one SQLite file in write-ahead-log mode.

Several processes share it (the daemon, ``stembridge submit/status/cancel`` from
host scripts, an in-process ``submit --wait``); every change is one short
transaction, and writers wait (busy timeout) instead of failing with "database is
locked". A job is never lost: it is ``queued`` until a worker claims it,
``running`` while one works on it (and back to ``queued`` if that worker dies or
stops), and ends ``done``, ``failed`` or ``cancelled``.

No numpy or torch here: host-facing commands import this module.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

from bridge.errors import JobError, JobNotFound
from bridge.jobs.job import STATES, Job
from bridge.jobs.status_file import status_path
from bridge.permissions import private_folder
from bridge.pipeline.spec import JobSpec

log = logging.getLogger(__name__)

DB_NAME = "jobs.sqlite3"
_JOB_ID = re.compile(r"[0-9a-f]{1,12}")
#: A job whose worker died this many times is failed instead of run again.
MAX_STARTS = 5

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    spec TEXT NOT NULL,
    folder TEXT NOT NULL,
    dedupe_key TEXT,
    identity TEXT,
    state TEXT NOT NULL,
    priority INTEGER NOT NULL,
    progress REAL NOT NULL DEFAULT 0,
    stage TEXT NOT NULL DEFAULT 'queued',
    attempts INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    error_kind TEXT,
    manifest TEXT,
    reused_from TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    not_before REAL NOT NULL DEFAULT 0,
    owner TEXT,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    started REAL,
    finished REAL
);
CREATE INDEX IF NOT EXISTS jobs_queue ON jobs (state, priority, created);
CREATE INDEX IF NOT EXISTS jobs_identity ON jobs (identity);
CREATE INDEX IF NOT EXISTS jobs_dedupe ON jobs (dedupe_key);
CREATE INDEX IF NOT EXISTS jobs_folder ON jobs (folder);
"""


class JobStore:
    """The queue in ``<state_dir>/jobs.sqlite3``.

    Args:
        state_dir: Created with user-only permissions if missing.
        clock: Seconds since the epoch (injectable for tests of backoff).
    """

    def __init__(self, state_dir: Path, *, clock: Callable[[], float] = time.time) -> None:
        self.path = state_dir / DB_NAME
        self._clock = clock
        try:
            private_folder(state_dir)
            if not self.path.exists():
                os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
            with closing(self._connect()) as db:
                db.execute("PRAGMA journal_mode=WAL")
                db.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise JobError(
                f"{self.path}: the job store cannot be opened ({exc}); check the folder's "
                "permissions or set [daemon] state_dir to a local folder",
                path=self.path,
            ) from exc

    def submit(self, spec: JobSpec, *, dedupe_key: str | None = None) -> tuple[Job, bool]:
        """Queue a job, unless an active one has the same ``dedupe_key``.

        Returns:
            The job and whether it was newly created.
        """
        now = self._clock()
        with self._transaction() as db:
            if dedupe_key is not None:
                row = db.execute(
                    "SELECT * FROM jobs WHERE dedupe_key = ? AND state IN ('queued', 'running')",
                    (dedupe_key,),
                ).fetchone()
                if row is not None:
                    return _job(row, self.path), False
            job_id = secrets.token_hex(6)
            db.execute(
                "INSERT INTO jobs (id, spec, folder, dedupe_key, state, priority, created, "
                "updated) VALUES (?, ?, ?, ?, 'queued', ?, ?, ?)",
                (job_id, spec.to_json(), spec.folder, dedupe_key, spec.priority, now, now),
            )
            row = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return _job(row, self.path), True

    def claim(self, owner: str, *, job_id: str | None = None) -> Job | None:
        """Take the next runnable job (or the given one) and mark it running for ``owner``.

        Interactive jobs come first, then the oldest. A job whose workers died
        :data:`MAX_STARTS` times is failed here instead of started again.
        """
        now = self._clock()
        with self._transaction() as db:
            while True:
                if job_id is None:
                    row = db.execute(
                        "SELECT * FROM jobs WHERE state = 'queued' AND not_before <= ? "
                        "ORDER BY priority, created LIMIT 1",
                        (now,),
                    ).fetchone()
                else:
                    row = db.execute(
                        "SELECT * FROM jobs WHERE id = ? AND state = 'queued' AND not_before <= ?",
                        (job_id, now),
                    ).fetchone()
                if row is None:
                    return None
                problem = _unrunnable(row)
                if problem is not None:
                    db.execute(
                        "UPDATE jobs SET state = 'failed', error = ?, error_kind = 'JobError', "
                        "updated = ?, finished = ? WHERE id = ?",
                        (problem, now, now, row["id"]),
                    )
                    if job_id is not None:
                        return None
                    continue
                db.execute(
                    "UPDATE jobs SET state = 'running', owner = ?, attempts = attempts + 1, "
                    "progress = 0, stage = 'starting', started = ?, updated = ? WHERE id = ?",
                    (owner, now, now, row["id"]),
                )
                row = db.execute("SELECT * FROM jobs WHERE id = ?", (row["id"],)).fetchone()
                return _job(row, self.path)

    def progress(self, job_id: str, fraction: float, stage: str) -> bool:
        """Record progress of a running job; returns whether cancelling was requested."""
        with self._transaction() as db:
            db.execute(
                "UPDATE jobs SET progress = ?, stage = ?, updated = ? "
                "WHERE id = ? AND state = 'running'",
                (fraction, stage, self._clock(), job_id),
            )
            row = db.execute("SELECT cancel_requested FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return bool(row and row["cancel_requested"])

    def set_identity(self, job_id: str, identity: str) -> None:
        """Record what a job's result depends on (see :meth:`JobSpec.identity`)."""
        with self._transaction() as db:
            db.execute("UPDATE jobs SET identity = ? WHERE id = ?", (identity, job_id))

    def set_folder(self, job_id: str, folder: str) -> None:
        """Record the stem folder a job reserved (``name (2)`` when the one asked for was
        taken): ``status``, status files and the watchers then name the real one."""
        with self._transaction() as db:
            db.execute("UPDATE jobs SET folder = ? WHERE id = ?", (folder, job_id))

    def finish(self, job_id: str, *, manifest: str, reused_from: str | None = None) -> Job:
        """Mark a job done with the manifest of its stems."""
        return self._end(
            job_id,
            "done",
            progress=1.0,
            stage="done",
            manifest=manifest,
            reused_from=reused_from,
        )

    def fail(
        self,
        job_id: str,
        *,
        error: str,
        kind: str,
        retry_in_seconds: float | None = None,
        spec: JobSpec | None = None,
    ) -> Job:
        """Mark a job failed, or queue it again after ``retry_in_seconds``.

        Args:
            job_id: The job.
            error: One line a person can act on.
            kind: The error's class name (hosts map it to what to tell the user).
            retry_in_seconds: Queue the job again after this delay instead of failing it.
            spec: For a retry, the spec to run next time (a smaller batch, the CPU).
        """
        if retry_in_seconds is None:
            return self._end(job_id, "failed", error=error, error_kind=kind, stage="failed")
        now = self._clock()
        with self._transaction() as db:
            db.execute(
                "UPDATE jobs SET state = 'queued', stage = 'waiting to retry', error = ?, "
                "error_kind = ?, not_before = ?, owner = NULL, updated = ?, "
                "spec = COALESCE(?, spec) WHERE id = ?",
                (error, kind, now + retry_in_seconds, now, spec and spec.to_json(), job_id),
            )
        return self.get(job_id)

    def requeue(self, job_id: str, *, wait_seconds: float = 0.0, stage: str = "queued") -> Job:
        """Queue a running job again (its worker is stopping, or its folder is busy), after
        ``wait_seconds``; that start is not counted."""
        now = self._clock()
        with self._transaction() as db:
            db.execute(
                "UPDATE jobs SET state = 'queued', stage = ?, progress = 0, owner = NULL, "
                "attempts = MAX(attempts - 1, 0), not_before = ?, updated = ? "
                "WHERE id = ? AND state = 'running'",
                (stage, now + wait_seconds, now, job_id),
            )
        return self.get(job_id)

    def cancel(self, job_id: str) -> Job:
        """Cancel a job: at once if queued, at the worker's next step if running.

        The job is read and changed in one transaction, so a worker claiming or finishing
        it meanwhile cannot slip in between.

        Raises:
            JobNotFound: No such job.
        """
        job = self.get(job_id)
        now = self._clock()
        with self._transaction() as db:
            db.execute(
                "UPDATE jobs SET state = 'cancelled', stage = 'cancelled', updated = ?, "
                "finished = ? WHERE id = ? AND state = 'queued'",
                (now, now, job.id),
            )
            db.execute(
                "UPDATE jobs SET cancel_requested = 1 WHERE id = ? AND state = 'running'",
                (job.id,),
            )
        return self.get(job.id)

    def retry(self, job_id: str) -> Job:
        """Queue a failed or cancelled job again, under the same id (never a second copy).

        Its starts are counted afresh and its error is cleared.

        Raises:
            JobNotFound: No such job.
            JobError: The job is not failed or cancelled (it is queued, running or done).
        """
        job = self.get(job_id)
        with self._transaction() as db:
            changed = db.execute(
                "UPDATE jobs SET state = 'queued', stage = 'queued', progress = 0, attempts = 0, "
                "cancel_requested = 0, not_before = 0, owner = NULL, error = NULL, "
                "error_kind = NULL, started = NULL, finished = NULL, updated = ? "
                "WHERE id = ? AND state IN ('failed', 'cancelled')",
                (self._clock(), job.id),
            ).rowcount
        if not changed:
            raise JobError(
                f"job {job.id} is {self.get(job.id).state}; only failed or cancelled jobs can be "
                "retried",
                path=self.path,
            )
        return self.get(job.id)

    def mark_cancelled(self, job_id: str) -> Job:
        """A running job stopped on request; nothing was written."""
        return self._end(job_id, "cancelled", stage="cancelled")

    def recover(self, is_alive: Callable[[str], bool]) -> list[str]:
        """Queue again the running jobs whose worker is gone (killed, crashed).

        Args:
            is_alive: Says whether an owner (as passed to :meth:`claim`) still runs.

        Returns:
            The ids of the jobs put back in the queue.
        """
        recovered = []
        with self._transaction() as db:
            rows = db.execute("SELECT id, owner FROM jobs WHERE state = 'running'").fetchall()
            for row in rows:
                if row["owner"] is None or not is_alive(row["owner"]):
                    db.execute(
                        "UPDATE jobs SET state = 'queued', stage = 'queued', progress = 0, "
                        "owner = NULL, updated = ? WHERE id = ?",
                        (self._clock(), row["id"]),
                    )
                    recovered.append(row["id"])
        return recovered

    def get(self, job_id: str) -> Job:
        """A job by id, or by a unique prefix of its id.

        Raises:
            JobNotFound: No job, or several, match.
        """
        rows = []
        if _JOB_ID.fullmatch(job_id):
            with closing(self._connect()) as db:
                rows = db.execute(
                    "SELECT * FROM jobs WHERE id LIKE ? ORDER BY created LIMIT 2", (job_id + "%",)
                ).fetchall()
        if len(rows) != 1:
            found = "several jobs start with" if rows else "no job has the id"
            raise JobNotFound(
                f"{found} {job_id!r}; see the ids with: stembridge jobs", path=self.path
            )
        return _job(rows[0], self.path)

    def list(self, *, limit: int = 50, states: tuple[str, ...] = STATES) -> list[Job]:
        """The newest jobs first."""
        marks = ", ".join("?" for _ in states)
        with closing(self._connect()) as db:
            rows = db.execute(
                f"SELECT * FROM jobs WHERE state IN ({marks}) ORDER BY created DESC LIMIT ?",
                (*states, limit),
            ).fetchall()
        jobs = []
        for row in rows:
            try:
                jobs.append(_job(row, self.path))
            except JobError as exc:  # one unreadable job must not hide the others
                log.warning("%s", exc)
        return jobs

    def find_done(self, identity: str, *, exclude: str) -> str | None:
        """The manifest of the newest finished job with this identity, other than ``exclude``."""
        with closing(self._connect()) as db:
            row = db.execute(
                "SELECT manifest FROM jobs WHERE identity = ? AND state = 'done' AND id != ? "
                "AND manifest IS NOT NULL ORDER BY finished DESC LIMIT 1",
                (identity, exclude),
            ).fetchone()
        return str(row["manifest"]) if row else None

    def output_folders(self) -> set[str]:
        """Every stem folder a job was given (watchers never take files from these)."""
        with closing(self._connect()) as db:
            rows = db.execute("SELECT DISTINCT folder FROM jobs").fetchall()
        return {row["folder"] for row in rows}

    def _end(self, job_id: str, state: str, **values: Any) -> Job:
        now = self._clock()
        assignments = ", ".join(f"{key} = ?" for key in values)
        with self._transaction() as db:
            db.execute(
                f"UPDATE jobs SET state = ?, {assignments}, owner = NULL, updated = ?, "
                "finished = ? WHERE id = ?",
                (state, *values.values(), now, now, job_id),
            )
        return self.get(job_id)

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        db.row_factory = sqlite3.Row
        return db

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        db = self._connect()
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        finally:
            db.close()


def _unrunnable(row: sqlite3.Row) -> str | None:
    """Why a queued job must fail instead of starting, or ``None``."""
    if row["attempts"] >= MAX_STARTS:
        return (
            f"the job was started {row['attempts']} times and its worker died "
            "each time; check the daemon's log, then submit it again"
        )
    try:
        JobSpec.from_json(row["spec"])
    except JobError as exc:
        return f"the job's spec cannot be read ({exc}); submit the file again"
    return None


def _job(row: sqlite3.Row, store: Path) -> Job:
    """A job from its row.

    Raises:
        JobError: The row's spec cannot be read (edited, or written by another version).
    """
    try:
        spec = JobSpec.from_json(row["spec"])
    except JobError as exc:
        raise JobError(
            f"{store}: job {row['id']}: {exc}; it cannot run: submit the file again",
            path=store,
        ) from exc
    return Job(
        id=row["id"],
        spec=spec,
        folder=row["folder"],
        status_file=status_path(Path(spec.folder), row["id"]),
        state=row["state"],
        progress=row["progress"],
        stage=row["stage"],
        attempts=row["attempts"],
        error=row["error"],
        error_kind=row["error_kind"],
        manifest=row["manifest"],
        reused_from=row["reused_from"],
        cancel_requested=bool(row["cancel_requested"]),
        owner=row["owner"],
        created=row["created"],
        updated=row["updated"],
        started=row["started"],
        finished=row["finished"],
    )
