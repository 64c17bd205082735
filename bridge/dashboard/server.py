"""Serve the dashboard with uvicorn on a thread of the daemon, for as long as a ``with``.

The socket is bound before the thread starts, so a port in use or a wrong
address fails the daemon's start with a clear error instead of a log line from
a thread; leaving the ``with`` asks uvicorn to finish and joins its thread.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from pathlib import Path
from types import TracebackType

import uvicorn
from starlette.types import ASGIApp

from bridge.config import DashboardSettings
from bridge.dashboard.app import Folders, Workers, create_app
from bridge.dashboard.auth import Guard, check_binding
from bridge.errors import ConfigError
from bridge.jobs.store import JobStore

log = logging.getLogger(__name__)

#: How long starting and stopping may take before the daemon gives up on the server.
_WAIT_SECONDS = 10.0


def dashboard_server(
    settings: DashboardSettings,
    *,
    state_dir: Path,
    store: JobStore,
    folders: Folders,
    workers: Workers | None,
) -> DashboardServer:
    """The daemon's dashboard, ready to start with ``with``.

    Raises:
        ConfigError: It would listen beyond loopback and no token exists.
    """
    check_binding(settings.host, state_dir)
    guard = Guard(host=settings.host, port=settings.port, state_dir=state_dir)
    app = create_app(store=store, guard=guard, folders=folders, workers=workers)
    return DashboardServer(app, host=settings.host, port=settings.port)


class DashboardServer:
    """uvicorn serving ``app`` on ``host:port`` from its own thread.

    Args:
        app: The ASGI application (:func:`bridge.dashboard.app.create_app`).
        host: Address to listen on.
        port: TCP port.
    """

    def __init__(self, app: ASGIApp, *, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._server = uvicorn.Server(
            uvicorn.Config(
                app,
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
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def __enter__(self) -> DashboardServer:
        try:
            family = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)[0][0]
            self._socket = socket.create_server((self.host, self.port), family=family)
        except OSError as exc:
            raise ConfigError(
                f"the dashboard cannot listen on {self.host}:{self.port} ({exc.strerror or exc}); "
                "set [dashboard] port (or --dashboard-port) to a free port, or pass "
                "--no-dashboard",
                key="port",
                value=self.port,
            ) from exc
        self._thread = threading.Thread(
            target=self._server.run,
            kwargs={"sockets": [self._socket]},
            name="dashboard",
            daemon=True,  # never keeps a stopping daemon alive, even if uvicorn hangs
        )
        self._thread.start()
        deadline = time.monotonic() + _WAIT_SECONDS
        while not self._server.started and self._thread.is_alive():
            if time.monotonic() > deadline:
                break
            time.sleep(0.02)
        log.info("dashboard at %s", self.url)
        return self

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
