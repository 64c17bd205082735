"""A job as the store last saw it, and the states a job goes through.

queued → running → done | failed | cancelled; a running job whose worker stops or
dies is queued again. No numpy or torch here: host-facing commands import this.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bridge.pipeline.spec import JobSpec

STATES = ("queued", "running", "done", "failed", "cancelled")
ACTIVE = ("queued", "running")
FINAL = ("done", "failed", "cancelled")


@dataclass(frozen=True)
class Job:
    """A job as the store last saw it.

    Attributes:
        id: Its id (12 hex digits).
        spec: What to do.
        folder: Its stem folder: the one it reserved (``name (2)``... when the asked-for
            one was taken), or the one asked for until then.
        status_file: Where its status file for host scripts lives.
        state: One of :data:`STATES`.
        progress: 0 to 1.
        stage: What it is doing (``analysing``, ``separating``...).
        attempts: How often it was started.
        error: One line a person can act on, once failed.
        error_kind: The error's class name.
        manifest: Its manifest, once done.
        reused_from: The manifest of the identical job whose stems it linked.
        cancel_requested: A cancel waits for the worker's next step.
        owner: Who runs it (see :mod:`bridge.owners`).
        created: When it was submitted (epoch seconds); ``updated``, ``started``,
            ``finished`` likewise.
    """

    id: str
    spec: JobSpec
    folder: str
    status_file: Path
    state: str
    progress: float
    stage: str
    attempts: int
    error: str | None
    error_kind: str | None
    manifest: str | None
    reused_from: str | None
    cancel_requested: bool
    owner: str | None
    created: float
    updated: float
    started: float | None
    finished: float | None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (what ``status --json`` prints)."""
        return {
            "id": self.id,
            "state": self.state,
            "progress": round(self.progress, 4),
            "stage": self.stage,
            "attempts": self.attempts,
            "error": self.error,
            "error_kind": self.error_kind,
            "input": self.spec.input,
            "folder": self.folder,
            "requested_folder": self.spec.folder,
            "manifest": self.manifest,
            "reused_from": self.reused_from,
            "status_file": str(self.status_file),
            "origin": self.spec.origin,
            "source": self.spec.source,
            "created": self.created,
            "started": self.started,
            "finished": self.finished,
        }
