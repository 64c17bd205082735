"""A studio GPU worker: one warm model for its threads, jobs from Redis, events back to the daemon.

``stembridge worker`` runs :class:`StudioWorker`: a dramatiq worker (threads, not
forked processes, so the model loads once) consuming :data:`~bridge.broker.channel.QUEUE`.
Its threads share one :class:`~bridge.jobs.worker.ModelCache`, so one copy of the
networks, and the jobs separating at once on a demucs model share its forward passes
(:mod:`bridge.models.batching`).
For each message it maps the job's paths to this machine (``[paths]``), adopts the
stem folder the daemon reserved, runs the same :func:`~bridge.pipeline.run.run_job`
as the daemon's own worker on this worker's device, and pushes events (started,
progress, identity, done, failed, cancelled) for the daemon to apply.

Nothing is lost or done twice: the message is acknowledged only after the job
ended; if this process dies, dramatiq hands the message to another worker once
the heartbeats stop, and that worker takes the folder over, removes what the first
one left behind and finds, through the manifest's identity, a result that was
already complete. If the first one was only paused, its delivery is superseded
(see :mod:`bridge.broker.channel`): it stops before publishing and reports nothing.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from redis import Redis
from redis.exceptions import RedisError

from bridge.broker.channel import (
    ACTOR,
    CANCEL_PREFIX,
    DELIVERY_TTL_SECONDS,
    EVENTS,
    MAINTENANCE_CHANCE,
    NAMESPACE,
    QUEUE,
    WORKER_PREFIX,
    WORKER_TTL_SECONDS,
    Event,
    WorkerInfo,
    delivery_key,
)
from bridge.broker.paths import PathMap
from bridge.errors import JobCancelled, StemBridgeError
from bridge.jobs.worker import ModelCache
from bridge.owners import owner_id
from bridge.pipeline.folders import Superseded
from bridge.pipeline.progress import Progress
from bridge.pipeline.run import run_job
from bridge.pipeline.spec import JobSpec

log = logging.getLogger(__name__)

#: Least time between two progress events of a job.
REPORT_INTERVAL_SECONDS = 0.25


@dataclass(frozen=True)
class _Delivery:
    """One delivery of one attempt's message: what this run's events carry."""

    job: str
    attempt: int
    number: int

    def event(self, kind: str, worker: str, data: dict[str, Any] | None = None) -> Event:
        return Event(kind, self.job, worker, data or {}, self.attempt, self.number)


class _Reports:
    """The pipeline's results on a worker: identities go to the daemon as events; the
    daemon's store, which finds earlier results, is not here (a result already
    complete in the job's own folder is still found, see run_job)."""

    def __init__(self, push: Callable[[Event], None], delivery: _Delivery, worker: str) -> None:
        self._push = push
        self._delivery = delivery
        self._worker = worker

    def set_identity(self, job_id: str, identity: str) -> None:
        self._push(self._delivery.event("identity", self._worker, {"identity": identity}))

    def set_folder(self, job_id: str, folder: str) -> None:
        """The daemon chose the folder; nothing to tell it."""

    def find_done(self, identity: str, *, exclude: str) -> None:
        return None


class StudioWorker:
    """Takes separation jobs from the broker until stopped.

    Args:
        redis: Client for the broker's Redis.
        device: Where jobs run (``cuda:0``, ``cpu``...): overrides the job's device.
        concurrency: Jobs run at once, each on its own thread, all on one warm model.
        paths: Maps the daemon's paths to this machine's.
        models: The warm model cache the threads share (made with ``batching`` to share
            forward passes between jobs; injectable for tests).
        heartbeat_timeout_seconds: How long without heartbeats before dramatiq gives a
            worker's messages to another one.
    """

    def __init__(
        self,
        redis: Redis,
        *,
        device: str = "auto",
        concurrency: int = 1,
        paths: PathMap | None = None,
        models: ModelCache | None = None,
        heartbeat_timeout_seconds: float = 60.0,
    ) -> None:
        self._redis = redis
        self._device = device
        self._concurrency = concurrency
        self._paths = paths or PathMap()
        self._models = models or ModelCache()
        self.id = f"{socket.gethostname()}:{os.getpid()}"
        self._current: set[str] = set()
        self._done = 0
        self._started = time.time()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._broker = RedisBroker(
            client=redis,
            namespace=NAMESPACE,
            middleware=[],
            maintenance_chance=MAINTENANCE_CHANCE,
            heartbeat_timeout=int(heartbeat_timeout_seconds * 1000),
        )
        dramatiq.Actor(
            self._handle,
            broker=self._broker,
            actor_name=ACTOR,
            queue_name=QUEUE,
            priority=0,
            options={},
        )

    def run(self, stop: threading.Event) -> None:
        """Serve until ``stop`` is set; a running job stops at its next step and goes back
        to the daemon's queue (nothing of it is kept)."""
        # An idle worker asks Redis for work at least every 100 ms (dramatiq's default
        # backs off to a second, which would add up to a second to every job).
        worker = dramatiq.Worker(self._broker, worker_threads=self._concurrency, worker_timeout=100)
        # Hold no more messages than can run: the rest stay for the other workers.
        worker.queue_prefetch = self._concurrency
        worker.start()
        log.info(
            "StemBridge worker %s ready on %s (%d at a time)",
            self.id,
            self._device,
            self._concurrency,
        )
        try:
            while not stop.is_set():
                self._register()
                stop.wait(WORKER_TTL_SECONDS / 3)
        finally:
            # Leave the registry first, so the daemon sends the handed-back job elsewhere.
            self._stopping.set()
            self._redis.delete(WORKER_PREFIX + self.id)
            worker.stop()
            log.info("worker %s stopped", self.id)

    def _register(self) -> None:
        if self._stopping.is_set():
            return
        with self._lock:
            info = WorkerInfo(
                id=self.id,
                device=self._device,
                concurrency=self._concurrency,
                current_jobs=tuple(sorted(self._current)),
                jobs_done=self._done,
                started=self._started,
                last_seen=time.time(),
            )
        try:
            self._redis.set(WORKER_PREFIX + self.id, info.to_json(), ex=WORKER_TTL_SECONDS)
        except RedisError as exc:
            log.error("cannot reach the broker to renew this worker's entry (%s)", exc)

    def _handle(self, job_id: str, spec_json: str, folder: str, attempt: int) -> None:
        """One message: run the job and report; never raises (no dramatiq retries)."""
        with self._lock:
            self._current.add(job_id)
        self._register()
        try:
            key = delivery_key(f"{job_id}-{attempt}")
            delivery = _Delivery(job_id, attempt, int(self._redis.incr(key)))
            self._redis.expire(key, DELIVERY_TTL_SECONDS)
            self._push(delivery.event("started", self.id))
            end = self._run(delivery, spec_json, folder)
            if end is not None:
                self._push_until_sent(end)
        finally:
            with self._lock:
                self._current.discard(job_id)
                self._done += 1
            self._register()

    def _run(self, delivery: _Delivery, spec_json: str, folder: str) -> Event | None:
        job_id = delivery.job
        cancel = threading.Event()
        key = delivery_key(f"{job_id}-{delivery.attempt}")

        def current() -> bool:
            return int(self._redis.get(key) or 0) == delivery.number

        try:
            spec = JobSpec.from_json(spec_json)
            local = dataclasses.replace(
                spec,
                input=self._paths.to_local(spec.input),
                folder=self._paths.to_local(spec.folder),
                separation=dataclasses.replace(spec.separation, device=self._device),
            )
            with self._models.session() as model_for:
                result = run_job(
                    job_id,
                    local,
                    attempt=delivery.attempt,
                    results=_Reports(self._push, delivery, self.id),
                    model_for=model_for,
                    on_progress=self._reporter(delivery, cancel, current),
                    cancel=cancel,
                    reserved=Path(self._paths.to_local(folder)),
                    owner=owner_id(),
                    still_current=current,
                )
        except JobCancelled as exc:
            if isinstance(exc, Superseded) or not current():
                log.info(
                    "job %s: superseded by another delivery of its message (%s); this run "
                    "stops and keeps nothing",
                    job_id,
                    exc,
                )
                return None
            if self._stopping.is_set():
                log.info("job %s: this worker is stopping; handing the job back", job_id)
                return delivery.event("requeued", self.id)
            return delivery.event("cancelled", self.id)
        except StemBridgeError as exc:
            log.info("job %s failed: %s", job_id, exc)
            return delivery.event(
                "failed", self.id, {"error": str(exc), "error_kind": type(exc).__name__}
            )
        except Exception as exc:  # reported, so the daemon's job does not hang
            log.error("job %s: unexpected error", job_id, exc_info=exc)
            return delivery.event(
                "failed",
                self.id,
                {
                    "error": f"unexpected error on worker {self.id} ({type(exc).__name__}: {exc}); "
                    "see that worker's log, then submit the job again",
                    "error_kind": type(exc).__name__,
                },
            )
        reused = str(result.reused_from) if result.reused_from else None
        return delivery.event(
            "done",
            self.id,
            {
                "manifest": self._paths.to_daemon(str(result.manifest)),
                "reused_from": self._paths.to_daemon(reused) if reused else None,
            },
        )

    def _reporter(
        self, delivery: _Delivery, cancel: threading.Event, current: Callable[[], bool]
    ) -> Callable[[Progress], None]:
        last = 0.0

        def report(progress: Progress) -> None:
            nonlocal last
            if self._stopping.is_set():
                cancel.set()
            now = time.monotonic()
            if now - last < REPORT_INTERVAL_SECONDS and progress.stage != "done":
                return
            last = now
            data: dict[str, Any] = {"fraction": progress.fraction, "stage": progress.stage}
            self._push(delivery.event("progress", self.id, data))
            # A cancel, or another worker that got this message again: stop early.
            if self._redis.exists(CANCEL_PREFIX + delivery.job) or not current():
                cancel.set()

        return report

    def _push(self, event: Event) -> None:
        self._redis.lpush(EVENTS, event.to_json())

    def _push_until_sent(self, event: Event) -> None:
        """The end of a job must reach the daemon: wait out a Redis outage (the stems
        are already on disk; the message stays unacknowledged meanwhile)."""
        while True:
            try:
                self._push(event)
                return
            except RedisError as exc:
                log.error("cannot report job %s to the broker (%s); retrying", event.job, exc)
                time.sleep(2.0)
