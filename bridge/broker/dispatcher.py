"""The daemon's side of a studio: hand queued jobs to GPU workers, apply what they report.

The daemon's SQLite store stays the one truth about jobs (``status``, status files
and host scripts work unchanged). Each round the dispatcher

1. applies the events workers pushed (progress, done, failed...) to the store and
   rewrites the jobs' status files,
2. passes cancel requests on to the workers,
3. sends queued jobs, best priority first, but only as many as the live workers
   can run at once: a job waits in the daemon's queue, not in Redis, so an
   interactive submission still overtakes a folder batch that was queued earlier.
   Before a job is sent its input is checked and its stem folder reserved here
   (:mod:`bridge.pipeline.folders`), so workers on other machines never choose a
   folder, and a folder that already holds the job's result finishes it unsent.

Events are applied only when they come from the current attempt and the current
delivery of its message (see :mod:`bridge.broker.channel`): a worker that was paused
past redelivery and wakes up changes nothing.

A job handed to the broker is marked running with owner ``broker:...``, which
:func:`~bridge.jobs.worker.owner_alive` treats as alive: a daemon restart does
not send it twice, and its events are still waiting in Redis. The hand-over has
two steps, claim (stage ``starting``) and then, once the message is in Redis,
stage ``sent``; a daemon killed between them finds, after its restart, whether
the message (named after the job and attempt) reached Redis, and queues the job
again when it did not. When Redis cannot
be reached (down, wrong password), the dispatcher says so once, keeps everything
in the local store, and carries on when Redis is back.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from redis import Redis
from redis.exceptions import RedisError

from bridge.broker.channel import (
    ACTOR,
    CANCEL_PREFIX,
    EVENTS,
    EVENTS_PROCESSING,
    MAINTENANCE_CHANCE,
    NAMESPACE,
    QUEUE,
    Event,
    delivery_key,
    live_workers,
)
from bridge.broker.url import BrokerUrl
from bridge.effects.plan import plan_effects
from bridge.errors import StemBridgeError
from bridge.jobs.job import Job
from bridge.jobs.status_file import update_status
from bridge.jobs.store import JobStore
from bridge.manifest import MANIFEST_NAME
from bridge.pipeline import folders
from bridge.pipeline.analyse import file_sha256
from bridge.pipeline.prepare import prepare

log = logging.getLogger(__name__)

#: How long a cancel request waits in Redis for a worker to read it.
CANCEL_TTL_SECONDS = 24 * 3600
#: Redis hash of the messages dramatiq holds until a worker acknowledges them.
MESSAGES = f"{NAMESPACE}:{QUEUE}.msgs"


def connect(url: BrokerUrl) -> Redis:
    """A Redis client for ``url`` (auth and TLS as the URL says)."""
    return Redis.from_url(url.url, socket_timeout=10, socket_connect_timeout=5)


class Dispatcher:
    """Sends jobs to studio workers and records what they report.

    Args:
        store: The daemon's job store.
        url: The broker.
        connect_redis: Makes the Redis client (injectable).
        poll_interval_seconds: Pause between rounds.
    """

    def __init__(
        self,
        store: JobStore,
        *,
        url: BrokerUrl,
        connect_redis: Callable[[BrokerUrl], Redis] = connect,
        poll_interval_seconds: float = 0.5,
    ) -> None:
        self._store = store
        self._url = url
        self._connect = connect_redis
        self._poll = poll_interval_seconds
        self.owner = f"broker:{url.host}:{url.port}/{url.db}"
        self._redis: Redis | None = None
        self._broker: RedisBroker | None = None
        self._reachable: bool | None = None
        self._handovers_checked = False
        self._refreshed = 0.0

    def run(self, stop: threading.Event) -> None:
        """Dispatch and apply events until ``stop`` is set; Redis trouble never ends it."""
        while not stop.is_set():
            try:
                self.round()
                self._note_reachable(True, None)
                self._wait_for_event()
            except RedisError as exc:
                self._note_reachable(False, exc)
                self._redis = self._broker = None
                stop.wait(self._poll)
            except Exception:  # the daemon outlives any one failure; it is logged
                log.exception("dispatching failed this round; trying again")
                stop.wait(self._poll)

    def _wait_for_event(self) -> None:
        """Sleep until a worker reports (a finished job frees a slot at once) or a poll
        interval passes; the event waits in the processing list for the next round."""
        if self._redis is not None:
            # Redis blocks in whole seconds (0 would mean for ever).
            timeout = max(1, round(self._poll))
            self._redis.blmove(EVENTS, EVENTS_PROCESSING, timeout, "RIGHT", "LEFT")

    def round(self) -> None:
        """One round: events, cancels, then new jobs."""
        redis, broker = self._client()
        self._apply_events(redis)
        if not self._handovers_checked:
            self._check_handovers(redis)
            self._handovers_checked = True
        dispatched = self._dispatched()
        self._pass_cancels(redis, dispatched)
        self._refresh_reservations(dispatched)
        self._send_jobs(redis, broker, len(dispatched))

    def _client(self) -> tuple[Redis, RedisBroker]:
        if self._redis is not None and self._broker is not None:
            self._apply_processing(self._redis)
        else:
            redis = self._connect(self._url)
            redis.ping()
            broker = RedisBroker(
                client=redis,
                namespace=NAMESPACE,
                middleware=[],
                maintenance_chance=MAINTENANCE_CHANCE,
            )
            broker.declare_queue(QUEUE)
            # Events moved but not applied (a daemon stopped in between) come first.
            self._apply_processing(redis)
            self._redis, self._broker = redis, broker
        return self._redis, self._broker

    def _apply_processing(self, redis: Redis) -> None:
        """Apply what waits in the processing list, oldest first."""
        for raw in reversed(redis.lrange(EVENTS_PROCESSING, 0, -1)):
            self._apply(redis, raw)
            _remove_processed(redis, raw)

    def _apply_events(self, redis: Redis) -> None:
        while True:
            raw = redis.lmove(EVENTS, EVENTS_PROCESSING, "RIGHT", "LEFT")
            if raw is None:
                return
            self._apply(redis, raw)
            _remove_processed(redis, raw)

    def _apply(self, redis: Redis, raw: Any) -> None:
        try:
            event = Event.from_json(raw)
            job = self._store.get(event.job)
        except Exception as exc:  # a bad or unknown event must not stop the others
            log.warning("dropping an event that cannot be applied (%s)", exc)
            return
        if job.state != "running" or job.owner != self.owner:
            log.debug("job %s is %s; ignoring its %s event", job.id, job.state, event.kind)
            return
        current = int(redis.get(delivery_key(message_id(job))) or 0)
        if (event.attempt, event.delivery) != (job.attempts, current):
            log.info(
                "job %s: ignoring a %s event of a superseded run (attempt %d, delivery %d; "
                "current %d, %d)",
                job.id,
                event.kind,
                event.attempt,
                event.delivery,
                job.attempts,
                current,
            )
            return
        data = event.data
        if event.kind == "started":
            log.info("job %s: started on worker %s", job.id, event.worker)
            self._store.progress(job.id, 0.0, "starting")
        elif event.kind == "progress":
            self._store.progress(job.id, float(data["fraction"]), str(data["stage"]))
        elif event.kind == "identity":
            self._store.set_identity(job.id, str(data["identity"]))
        elif event.kind == "done":
            job = self._store.finish(
                job.id, manifest=str(data["manifest"]), reused_from=data.get("reused_from")
            )
            log.info("job %s: done on worker %s, %s", job.id, event.worker, job.manifest)
        elif event.kind == "failed":
            job = self._store.fail(
                job.id, error=str(data["error"]), kind=str(data.get("error_kind", "JobError"))
            )
            log.info("job %s failed on worker %s: %s", job.id, event.worker, job.error)
        elif event.kind == "cancelled":
            job = self._store.mark_cancelled(job.id)
        elif event.kind == "requeued":
            job = self._store.requeue(job.id)
            log.info("job %s: worker %s stopped; queued again", job.id, event.worker)
        update_status(self._store.get(job.id))

    def _pass_cancels(self, redis: Redis, dispatched: list[Job]) -> None:
        for job in dispatched:
            if job.cancel_requested:
                redis.set(f"{CANCEL_PREFIX}{job.id}", "1", ex=CANCEL_TTL_SECONDS)

    def _send_jobs(self, redis: Redis, broker: RedisBroker, in_flight: int) -> None:
        capacity = sum(worker.concurrency for worker in live_workers(redis))
        free = capacity - in_flight
        while free > 0:
            job = self._store.claim(self.owner)
            if job is None:
                return
            folder = self._reserve(job)
            if folder is None:
                continue  # it ended here, without a worker
            try:
                _enqueue(broker, job, folder)
            except RedisError:
                self._store.requeue(job.id)
                raise
            free -= 1
            self._store.progress(job.id, 0.0, "sent")
            log.info("job %s: sent to the studio workers", job.id)
            update_status(self._store.get(job.id))

    def _reserve(self, job: Job) -> Path | None:
        """Check a claimed job's input and reserve its stem folder for the worker that
        will take it; ``None`` when the job ended here (already done, or failed)."""
        spec = job.spec
        try:
            plans = spec.separation.stem_plans
            effects = plan_effects(spec.effects, stems=plans, model_sources=spec.separation.sources)
            prepared = prepare(
                Path(spec.input),
                stems=plans,
                output=spec.output,
                time_range=spec.time_range,
                effects=effects,
            )
            identity: list[str] = []

            def holds(folder: Path) -> bool:
                if not (folder / MANIFEST_NAME).exists():
                    return False  # nothing to compare: the input is hashed only when needed
                if not identity:
                    digest = file_sha256(Path(spec.input))
                    identity.append(spec.identity(digest, effects.preset.sha256))
                names, extension = prepared.names, prepared.output.extension
                return folders.holds_result(folder, identity[0], names, extension)

            folder, reservation = folders.choose(
                Path(spec.folder),
                folders.Writer(job.id, job.attempts, owner=self.owner),
                names=prepared.names,
                extension=prepared.output.extension,
                overwrite=spec.output.overwrite,
                holds=holds,
                poll_seconds=None,
            )
        except folders.FolderBusy as exc:
            log.info("job %s: %s", job.id, exc)
            update_status(
                self._store.requeue(job.id, wait_seconds=2.0, stage="waiting for its folder")
            )
            return None
        except StemBridgeError as exc:
            log.info("job %s failed before it was sent: %s", job.id, exc)
            update_status(self._store.fail(job.id, error=str(exc), kind=type(exc).__name__))
            return None
        self._store.set_folder(job.id, str(folder))
        if reservation is None:
            log.info("job %s: %s already holds these stems", job.id, folder)
            update_status(self._store.finish(job.id, manifest=str(folder / MANIFEST_NAME)))
            return None
        reservation.hand_over()
        return folder

    def _refresh_reservations(self, dispatched: list[Job]) -> None:
        """Keep the folders of sent jobs reserved while they wait for (or run on) a worker."""
        if time.monotonic() - self._refreshed < folders.REFRESH_SECONDS:
            return
        self._refreshed = time.monotonic()
        for job in dispatched:
            folders.refresh(Path(job.folder))

    def _check_handovers(self, redis: Redis) -> None:
        """Jobs an earlier daemon claimed but may not have sent: send again those whose
        message never reached Redis (a worker's events, applied first, move the rest on)."""
        for job in self._dispatched():
            if job.stage != "starting":
                continue
            if redis.hexists(MESSAGES, message_id(job)):
                self._store.progress(job.id, 0.0, "sent")
            else:
                log.warning("job %s: the daemon stopped before sending it; queued again", job.id)
                update_status(self._store.requeue(job.id))

    def _dispatched(self) -> list[Job]:
        return [
            job
            for job in self._store.list(limit=10_000, states=("running",))
            if job.owner == self.owner
        ]

    def _note_reachable(self, reachable: bool, exc: Exception | None) -> None:
        if reachable == self._reachable:
            return
        self._reachable = reachable
        if reachable:
            log.info("connected to the broker at %s", self._url.redacted)
        else:
            log.error(
                "cannot reach the broker at %s (%s); jobs stay queued here and are sent "
                "when it is back; check that Redis runs and the URL and password are right",
                self._url.redacted,
                exc,
            )


def _remove_processed(redis: Redis, raw: bytes | str) -> None:
    """Take an applied (or dropped) event off the processing list by its exact bytes; an
    event that is not UTF-8 must leave too (redis-py's typed ``lrem`` takes only text)."""
    redis.execute_command("LREM", EVENTS_PROCESSING, 1, raw)


def message_id(job: Job) -> str:
    """The message of this attempt at ``job``: found again in Redis after a restart."""
    return f"{job.id}-{job.attempts}"


def _enqueue(broker: RedisBroker, job: Job, folder: Path) -> None:
    broker.enqueue(
        dramatiq.Message(
            queue_name=QUEUE,
            actor_name=ACTOR,
            args=(job.id, job.spec.to_json(), str(folder), job.attempts),
            kwargs={},
            options={},
            message_id=message_id(job),
        )
    )
