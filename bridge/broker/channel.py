"""What travels through Redis between the daemon and the studio workers, and where.

Two flows, both JSON (nothing is pickled):

* **Jobs** go to the workers as dramatiq messages on queue :data:`QUEUE`, with the
  job id, the :class:`~bridge.pipeline.spec.JobSpec` JSON, the stem folder the daemon
  reserved for it and the attempt, paths as the daemon sees them. dramatiq
  acknowledges a message only after the job has run (late acknowledgement), and puts
  back the messages of a worker whose heartbeats stop, so a worker killed mid-job
  loses nothing.
* A message can so reach two workers (one only paused, not dead). Each delivery
  takes a number from :func:`delivery_key` (Redis ``INCR``): the highest is the
  current one. Events carry the attempt and the delivery, and the daemon applies
  only those of the current delivery of the current attempt; a superseded worker
  finds out before it publishes anything and stops.
* **Events** come back on a Redis list (:data:`EVENTS`): started, progress,
  identity, done, failed, cancelled, requeued. The daemon moves each one to a processing
  list, applies it to its job store, then deletes it, so an event survives a
  daemon restart. Workers also leave a small registry entry (:data:`WORKER_PREFIX`)
  that expires when they stop renewing it.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from typing import Any

from bridge.documents import parse_json

log = logging.getLogger(__name__)

NAMESPACE = "stembridge"
QUEUE = "separate"
ACTOR = "separate"
EVENTS = f"{NAMESPACE}:events"
EVENTS_PROCESSING = f"{NAMESPACE}:events:processing"
WORKER_PREFIX = f"{NAMESPACE}:worker:"
CANCEL_PREFIX = f"{NAMESPACE}:cancel:"
DELIVERY_PREFIX = f"{NAMESPACE}:delivery:"
#: How long a message's delivery counter is kept (longer than any job runs).
DELIVERY_TTL_SECONDS = 7 * 24 * 3600
#: A worker entry lives this long unless renewed (it is renewed every third of it).
WORKER_TTL_SECONDS = 15
#: dramatiq runs queue maintenance (putting back dead workers' messages) on this many
#: of every million Redis calls; studios have few workers, so always.
MAINTENANCE_CHANCE = 1_000_000
EVENT_KINDS = ("started", "progress", "identity", "done", "failed", "cancelled", "requeued")


def delivery_key(message_id: str) -> str:
    """The Redis counter of the deliveries of one message (one attempt at a job)."""
    return f"{DELIVERY_PREFIX}{message_id}"


@dataclass(frozen=True)
class Event:
    """One thing a worker tells the daemon about a job.

    Attributes:
        kind: One of :data:`EVENT_KINDS`.
        job: The job id.
        worker: The worker's id.
        data: ``fraction``/``stage`` (progress), ``identity``, ``manifest``/``reused_from``
            (done, paths as the daemon sees them), ``error``/``error_kind`` (failed);
            nothing for ``requeued`` (the worker stopped before the end: queue it again).
        attempt: The attempt the worker runs (the job's start count when it was sent).
        delivery: Which delivery of that attempt's message the worker got.
    """

    kind: str
    job: str
    worker: str
    data: dict[str, Any] = field(default_factory=dict)
    attempt: int = 0
    delivery: int = 0

    def to_json(self) -> str:
        """The event as one JSON document."""
        return json.dumps(asdict(self), separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str | bytes) -> Event:
        """Parse an event.

        Raises:
            ValueError: Not an event, or without the data its kind carries (the daemon
                logs and drops it, instead of failing on it every round).
        """
        shown = f"{str(text)[:200]!r}"
        data = parse_json(text)
        if not isinstance(data, dict) or data.get("kind") not in EVENT_KINDS:
            raise ValueError(f"not a StemBridge event: {shown}")
        payload = data.get("data", {})
        if not (isinstance(data.get("job"), str) and isinstance(payload, dict)):
            raise ValueError(f"an event needs a job id and a data object: {shown}")
        for key in ("attempt", "delivery"):
            value = data.get(key, 0)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**63:
                raise ValueError(f"an event's {key} is not a count: {shown}")
        kind = data["kind"]
        for key, types in _EVENT_DATA.get(kind, {}).items():
            if not isinstance(payload.get(key), types):
                raise ValueError(f"a {kind} event's {key} is missing or not allowed: {shown}")
        if kind == "progress":
            if not 0 <= payload["fraction"] <= 1:
                raise ValueError(f"a progress event's fraction is not from 0 to 1: {shown}")
            payload = {**payload, "fraction": float(payload["fraction"])}
        return cls(
            kind,
            data["job"],
            str(data.get("worker", "")),
            payload,
            data.get("attempt", 0),
            data.get("delivery", 0),
        )


# What the daemon reads from each kind of event, and the types it may have.
_EVENT_DATA: dict[str, dict[str, tuple[type, ...]]] = {
    "progress": {"fraction": (int, float), "stage": (str,)},
    "identity": {"identity": (str,)},
    "done": {"manifest": (str,), "reused_from": (str, type(None))},
    "failed": {"error": (str,), "error_kind": (str, type(None))},
}


@dataclass(frozen=True)
class WorkerInfo:
    """A live worker as it last described itself.

    Attributes:
        id: ``host:pid``.
        device: Where it separates (``cuda:0``, ``cpu``).
        concurrency: Jobs it runs at once.
        current_jobs: Ids of the jobs it is running.
        jobs_done: Jobs it finished since it started.
        started: When it started (epoch seconds).
        last_seen: When it last renewed its entry (epoch seconds).
    """

    id: str
    device: str
    concurrency: int
    current_jobs: tuple[str, ...] = ()
    jobs_done: int = 0
    started: float = 0.0
    last_seen: float = 0.0

    def to_json(self) -> str:
        """The entry as stored in Redis."""
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str | bytes) -> WorkerInfo:
        """Parse an entry.

        Raises:
            ValueError: Not a worker entry, or a field of the wrong type (the daemon
                sums the workers' concurrency to know how many jobs to send).
        """
        data = parse_json(text)
        if not (
            isinstance(data, dict)
            and {"id", "device", "concurrency"} <= set(data)
            and set(data) <= set(_WORKER_FIELDS)
        ):
            raise ValueError(f"not a StemBridge worker entry: {str(text)[:200]!r}")
        for key, value in data.items():
            if isinstance(value, bool) or not isinstance(value, _WORKER_FIELDS[key]):
                raise ValueError(f"a worker entry's {key} is not allowed: {value!r}")
        jobs = data.get("current_jobs", [])
        if not all(isinstance(job, str) for job in jobs):
            raise ValueError(f"a worker entry's current_jobs is not a list of ids: {jobs!r}")
        if data["concurrency"] < 0:
            raise ValueError(f"a worker entry's concurrency is negative: {data['concurrency']}")
        return cls(
            id=data["id"],
            device=data["device"],
            concurrency=data["concurrency"],
            current_jobs=tuple(jobs),
            jobs_done=data.get("jobs_done", 0),
            started=data.get("started", 0.0),
            last_seen=data.get("last_seen", 0.0),
        )


_WORKER_FIELDS: dict[str, tuple[type, ...]] = {
    "id": (str,),
    "device": (str,),
    "concurrency": (int,),
    "current_jobs": (list,),
    "jobs_done": (int,),
    "started": (float,),
    "last_seen": (float,),
}


def live_workers(redis: Any) -> list[WorkerInfo]:
    """Every worker whose registry entry has not expired, by id."""
    workers = []
    for key in redis.scan_iter(match=f"{WORKER_PREFIX}*"):
        text = redis.get(key)
        if text is None:
            continue
        try:
            workers.append(WorkerInfo.from_json(text))
        except ValueError as exc:
            log.debug("ignoring the broker entry %s (%s)", key, exc)
            continue
    return sorted(workers, key=lambda worker: worker.id)
