"""Serve the dashboard with uvicorn on a thread of the daemon, for as long as a ``with``.

The socket is bound before the thread starts, so a port in use or a wrong
address fails the daemon's start with a clear error instead of a log line from
a thread; leaving the ``with`` asks uvicorn to finish and joins its thread.

Slow and idle connections cannot starve the daemon. uvicorn alone waits forever for
a request that never completes (and for one that never starts), and once descriptors
run out asyncio's accept loop logs every socket it tries: 300 half-sent requests took
all 256 descriptors of a daemon, so its job store could not be opened, and logged
127 MB in 17 s. So here:

* a connection gets :data:`REQUEST_TIMEOUT_SECONDS` for each whole request (head and
  body), counted from when it opened or its last response ended, plus one second for
  every :data:`MIN_BODY_BYTES_PER_SECOND` of body received (an upload of a large file
  keeps its connection while it flows at least that fast; one that trickles does not);
  idle between requests it is closed after :data:`KEEP_ALIVE_SECONDS` (uvicorn's
  keep-alive);
* at most :func:`max_connections` are open at once, derived from the open-file limit
  so that the dashboard (its sockets, the file each one streams, the accept backlog,
  its worker threads' store connections) stays within half of it; more are answered
  503 and closed at once;
* the listen backlog is small (asyncio accepts up to that many sockets at a time);
* a flood is logged once when it starts and once when it is over, with counts.

On stopping, connections whose response is still streaming (server-sent events, a
zip) are closed, so they end at once instead of at uvicorn's graceful timeout.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import anyio.to_thread
import h11
import uvicorn
from starlette.types import ASGIApp
from uvicorn.protocols.http.h11_impl import H11Protocol

from bridge.config import DashboardSettings
from bridge.dashboard.app import Folders, Workers, create_app
from bridge.dashboard.auth import Guard, check_binding, dashboard_url
from bridge.dashboard.intake import JobDefaults
from bridge.dashboard.uploads import Uploads
from bridge.errors import ConfigError
from bridge.jobs.store import JobStore

log = logging.getLogger(__name__)

#: How long starting and stopping may take before the daemon gives up on the server.
_WAIT_SECONDS = 10.0
#: How long a client may take to send a whole request; browsers send one at once.
REQUEST_TIMEOUT_SECONDS = 10.0
#: The slowest an upload's body may come (each such second of body buys a second more).
MIN_BODY_BYTES_PER_SECOND = 64 * 1024
#: How long a connection may sit idle between requests.
KEEP_ALIVE_SECONDS = 5
#: Connections waiting to be accepted; asyncio accepts up to this many at a time.
BACKLOG = 16
#: Worker threads for the dashboard's handlers (each may hold a store connection).
THREADS = 8
#: The most connections taken however high the open-file limit: browsers open about six.
MOST_CONNECTIONS = 64
#: A flood is over once no connection was refused for this long.
FLOOD_QUIET_SECONDS = 5.0
_OUT_OF_DESCRIPTORS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
_BUSY_TEXT = b"the dashboard has too many connections; try again in a moment\n"
_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"connection: close\r\ncontent-length: %d\r\n\r\n%s" % (len(_BUSY_TEXT), _BUSY_TEXT)
)


def dashboard_server(
    settings: DashboardSettings,
    *,
    state_dir: Path,
    store: JobStore,
    folders: Folders,
    workers: Workers | None,
    defaults: JobDefaults,
) -> DashboardServer:
    """The daemon's dashboard, ready to start with ``with``.

    Args:
        settings: ``[dashboard]``.
        state_dir: Where the token hash is (and, by default, the uploads).
        store: The daemon's job store.
        folders: The watched folders' health.
        workers: The studio's live workers, or ``None`` without a broker.
        defaults: The config's job settings, which uploads' choices override.

    Raises:
        ConfigError: It would listen beyond loopback and no token exists.
    """
    check_binding(settings.host, state_dir)
    guard = Guard(host=settings.host, port=settings.port, state_dir=state_dir)
    uploads = Uploads(
        settings.upload_folder or state_dir / "uploads",
        max_bytes=settings.upload_max_mb * 1_000_000,
    )
    app = create_app(
        store=store,
        guard=guard,
        folders=folders,
        workers=workers,
        uploads=uploads,
        defaults=defaults,
    )
    return DashboardServer(
        app,
        host=settings.host,
        port=settings.port,
        max_connections=max_connections(open_files_limit()),
    )


def open_files_limit() -> int | None:
    """This process's limit on open descriptors, ``None`` where there is none to read."""
    try:
        import resource
    except ImportError:  # Windows: sockets are not bound by a descriptor limit
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return None if soft == resource.RLIM_INFINITY else soft


def max_connections(open_files: int | None) -> int:
    """The most connections the dashboard takes in a process allowed ``open_files``.

    It keeps to half of them, so the daemon's own files (the job store, renders, stems)
    always have the other half: each connection may hold its socket and a file it
    streams; besides, up to two backlogs of accepted sockets wait to be refused, and
    each worker thread may hold a store connection (a few descriptors).
    """
    if open_files is None:
        return MOST_CONNECTIONS
    share = open_files // 2 - 2 * BACKLOG - 4 * THREADS - 1
    return max(1, min(MOST_CONNECTIONS, share // 2))


class ConnectionGate:
    """Counts the open connections, refuses those over the limit, and logs floods once.

    Used from the server's event loop only.

    Args:
        max_connections: The most open at once.
        request_timeout_seconds: How long a connection may wait for a whole request.
    """

    def __init__(
        self,
        *,
        max_connections: int,
        request_timeout_seconds: float,
    ) -> None:
        self.max_connections = max_connections
        self.request_timeout_seconds = request_timeout_seconds
        self.open = 0
        self._flood_since: float | None = None
        self._last_refusal = 0.0
        self._refused = 0
        self._timed_out = 0
        self._accept_failed = False

    def admit(self) -> bool:
        """Whether a new connection may stay open (then :meth:`release` it when it closes)."""
        if self.open >= self.max_connections:
            self._refuse()
            return False
        self.open += 1
        self.check_flood()
        return True

    def release(self) -> None:
        """An admitted connection closed."""
        self.open -= 1
        self.check_flood()

    def timed_out(self) -> None:
        """A connection was closed for not sending a whole request in time."""
        self._timed_out += 1
        if self._flood_since is None:
            log.debug("dashboard: closed a connection that sent no whole request in time")

    def accept_failed(self, exc: OSError) -> None:
        """The process ran out of descriptors while accepting (the daemon, not us, used them)."""
        if not self._accept_failed:
            log.error(
                "dashboard: cannot accept connections: %s (the open-file limit is %s, and "
                "the daemon's own files hold the rest); raise it with ulimit -n",
                exc.strerror,
                open_files_limit(),
            )
        self._accept_failed = True
        self._refuse()

    def check_flood(self) -> None:
        """Say once that a flood is over, when it is (also called every second)."""
        now = time.monotonic()
        if self._flood_since is None or now - self._last_refusal < FLOOD_QUIET_SECONDS:
            return
        log.info(
            "dashboard: taking connections again after %.0f s: refused %d, closed %d that "
            "sent no whole request within %.0f s",
            self._last_refusal - self._flood_since,
            self._refused,
            self._timed_out,
            self.request_timeout_seconds,
        )
        self._flood_since = None
        self._refused = self._timed_out = 0
        self._accept_failed = False

    def _refuse(self) -> None:
        self._last_refusal = time.monotonic()
        self._refused += 1
        if self._flood_since is None:
            self._flood_since = self._last_refusal
            self._timed_out = 0
            log.warning(
                "dashboard: %d connections open, the most it takes; refusing new ones "
                "until some close (said once per flood)",
                self.open,
            )


class _BoundedH11(H11Protocol):
    """uvicorn's HTTP/1.1 protocol under a :class:`ConnectionGate`.

    A connection over the limit is answered 503 and closed before it is served; one
    whose client owes a request (h11 waits in ``IDLE`` for the head, in ``SEND_BODY``
    for the body) for longer than the gate's timeout is closed.
    """

    gate: ConnectionGate  # set on the subclass each server makes (see _protocol_for)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._admitted = False
        self._request_timer: asyncio.TimerHandle | None = None
        self._owed_since = 0.0
        self._body_bytes = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if not self.gate.admit():
            transport.write(_BUSY)
            transport.close()
            return
        self._admitted = True
        # asyncio sets TCP_NODELAY only on sockets of its own making (proto IPPROTO_TCP);
        # without it each response waits ~40 ms for the client's delayed ACK (Nagle).
        connection = transport.get_extra_info("socket")
        if connection is not None and connection.family in (socket.AF_INET, socket.AF_INET6):
            connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().connection_made(transport)
        self._watch_request()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._admitted:  # refused: uvicorn never saw it
            return
        self._admitted = False
        self.gate.release()
        if self._request_timer is not None:
            self._request_timer.cancel()
            self._request_timer = None
        super().connection_lost(exc)

    def shutdown(self) -> None:
        # A response streaming its body (a page's live events, a zip) would hold the
        # daemon's stop for the graceful timeout and then be cancelled, logged as an
        # error: close its connection instead (it ends as if the browser left). One not
        # started yet is left to finish, as uvicorn does.
        cycle = self.cycle
        if cycle is not None and cycle.response_started and not cycle.response_complete:
            self.transport.close()
            return
        super().shutdown()

    def data_received(self, data: bytes) -> None:
        # Counted before h11 takes it: the part of it that is body buys time (see above).
        in_body = self.conn.their_state == h11.SEND_BODY
        super().data_received(data)
        if in_body:
            self._body_bytes += len(data)
        self._watch_request()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._watch_request()

    def _owes_request(self) -> bool:
        return self.conn.their_state in (h11.IDLE, h11.SEND_BODY)

    def _watch_request(self) -> None:
        # Started when the client begins to owe a request, not on every byte: a client
        # that trickles its head in byte by byte still has one timeout for all of it.
        if self._owes_request() and not self.transport.is_closing():
            if self._request_timer is None:
                self._owed_since = self.loop.time()
                self._body_bytes = 0
                self._request_timer = self.loop.call_at(self._deadline(), self._request_too_slow)
        elif self._request_timer is not None:
            self._request_timer.cancel()
            self._request_timer = None

    def _deadline(self) -> float:
        earned = self._body_bytes / MIN_BODY_BYTES_PER_SECOND
        return self._owed_since + self.gate.request_timeout_seconds + earned

    def _request_too_slow(self) -> None:
        self._request_timer = None
        if not self._owes_request() or self.transport.is_closing():
            return
        if self.loop.time() < self._deadline():  # body came meanwhile: it earned more time
            self._request_timer = self.loop.call_at(self._deadline(), self._request_too_slow)
            return
        self.gate.timed_out()
        self.transport.close()


def _protocol_for(gate: ConnectionGate) -> type[_BoundedH11]:
    """A protocol class bound to ``gate`` (uvicorn makes one instance per connection)."""
    return type("BoundedH11", (_BoundedH11,), {"gate": gate})


class DashboardServer:
    """uvicorn serving ``app`` on ``host:port`` from its own thread.

    Args:
        app: The ASGI application (:func:`bridge.dashboard.app.create_app`).
        host: Address to listen on.
        port: TCP port.
        max_connections: The most open at once (see :func:`max_connections`).
        request_timeout_seconds: How long a client may take to send a request.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        host: str,
        port: int,
        max_connections: int = MOST_CONNECTIONS,
        request_timeout_seconds: float = REQUEST_TIMEOUT_SECONDS,
    ) -> None:
        self.host = host
        self.port = port
        self.gate = ConnectionGate(
            max_connections=max_connections, request_timeout_seconds=request_timeout_seconds
        )
        self._server = uvicorn.Server(
            uvicorn.Config(
                app,
                http=_protocol_for(self.gate),
                loop="asyncio",
                backlog=BACKLOG,
                timeout_keep_alive=KEEP_ALIVE_SECONDS,
                log_level="warning",
                access_log=False,
                lifespan="off",
                timeout_graceful_shutdown=2,
            )
        )
        self._socket: socket.socket | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """Where a browser opens it."""
        return dashboard_url(self.host, self.port)

    def __enter__(self) -> DashboardServer:
        try:
            family = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)[0][0]
            self._socket = socket.create_server(
                (self.host, self.port), family=family, backlog=BACKLOG
            )
        except OSError as exc:
            raise ConfigError(
                f"the dashboard cannot listen on {self.host}:{self.port} ({exc.strerror or exc}); "
                "set [dashboard] port (or --dashboard-port) to a free port, or pass "
                "--no-dashboard",
                key="port",
                value=self.port,
            ) from exc
        self._thread = threading.Thread(
            target=asyncio.run,
            args=(self._serve(self._socket),),
            name="dashboard",
            daemon=True,  # never keeps a stopping daemon alive, even if uvicorn hangs
        )
        self._thread.start()
        deadline = time.monotonic() + _WAIT_SECONDS
        while not self._server.started and self._thread.is_alive():
            if time.monotonic() > deadline:
                break
            time.sleep(0.02)
        log.info("dashboard at %s (at most %d connections)", self.url, self.gate.max_connections)
        return self

    async def _serve(self, listening: socket.socket) -> None:
        asyncio.get_running_loop().set_exception_handler(self._loop_error)
        anyio.to_thread.current_default_thread_limiter().total_tokens = THREADS
        floods = asyncio.create_task(self._end_floods())
        try:
            await self._server.serve(sockets=[listening])
        finally:
            floods.cancel()

    async def _end_floods(self) -> None:
        while True:
            await asyncio.sleep(1)
            self.gate.check_flood()

    def _loop_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        # asyncio reports every accept that fails for lack of descriptors (and keeps
        # trying up to the backlog each time): one line per flood is enough.
        exc = context.get("exception")
        if isinstance(exc, OSError) and exc.errno in _OUT_OF_DESCRIPTORS:
            self.gate.accept_failed(exc)
        else:
            loop.default_exception_handler(context)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=_WAIT_SECONDS)
            if self._thread.is_alive():
                log.warning("the dashboard did not stop within %.0f s", _WAIT_SECONDS)
        if self._socket is not None:
            self._socket.close()
