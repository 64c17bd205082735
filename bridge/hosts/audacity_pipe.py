"""Talk to a running Audacity through its mod-script-pipe module, never blocking without a limit.

Audacity (3.x) serves one client at a time over two pipes:

- POSIX: FIFOs ``/tmp/audacity_script_pipe.to.<uid>`` (commands in) and
  ``/tmp/audacity_script_pipe.from.<uid>`` (replies out);
- Windows: the named pipes ``\\\\.\\pipe\\ToSrvPipe`` and ``\\\\.\\pipe\\FromSrvPipe``.

A command is one line, ``Name: Key="Value" ...``; the reply is any number of lines, then
``BatchCommand finished: OK`` (or ``Failed!``), then an empty line. Audacity's pipe thread
opens its inbound pipe first and blocks there until a client opens it for writing; only then
does it open the outbound one. The FIFOs outlive Audacity, and opening one that nobody reads
blocks forever, so every open, write and read here is non-blocking with a deadline.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import select
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, cast

from bridge.errors import (
    AudacityCommandFailed,
    AudacityNotAnswering,
    AudacityNotRunning,
    HostError,
    ScriptingDisabled,
)

log = logging.getLogger(__name__)

#: How to enable the module, for messages.
ENABLE_HINT = (
    "enable it in Audacity under Edit > Preferences > Modules (mod-script-pipe: Enabled) and "
    "restart Audacity (or set mod-script-pipe=1 under [Module] in audacity.cfg while Audacity "
    "is closed)"
)
_FINISHED = re.compile(rb"BatchCommand finished: ([^\n]*)\n\n$")
_POLL_SECONDS = 0.05
_SYNC_ATTEMPT_SECONDS = 3.0
#: How long a missing command pipe is waited for while Audacity runs, before scripting is
#: called disabled: Audacity replaces its pipes while it starts, and under load the pipe
#: was seen missing for a moment between two clients' connections.
_MISSING_GRACE_SECONDS = 3.0


@dataclass(frozen=True)
class PipePaths:
    """The two pipes: commands go to ``to_server``, replies come from ``from_server``."""

    to_server: Path
    from_server: Path


def default_pipe_paths() -> PipePaths:
    """The pipes mod-script-pipe creates on this platform for this user."""
    if sys.platform == "win32":
        return PipePaths(Path(r"\\.\pipe\ToSrvPipe"), Path(r"\\.\pipe\FromSrvPipe"))
    uid = os.getuid()
    return PipePaths(
        Path(f"/tmp/audacity_script_pipe.to.{uid}"),
        Path(f"/tmp/audacity_script_pipe.from.{uid}"),
    )


def audacity_running() -> bool | None:
    """Whether an Audacity process runs (``None`` where this cannot be told)."""
    proc = Path("/proc")
    if not sys.platform.startswith("linux") or not proc.is_dir():
        return _audacity_in_processes()
    for stat in proc.glob("[0-9]*/stat"):
        try:
            # "pid (comm) state ...": a zombie (Z) has ended and holds no pipes.
            name, _, rest = stat.read_text().partition("(")[2].rpartition(")")
        except OSError:
            continue  # the process ended while we looked
        if name.lower() == "audacity" and rest.split()[:1] != ["Z"]:
            return True
    return False


def _audacity_in_processes() -> bool | None:
    """macOS and Windows: ``Audacity`` / ``Audacity.exe`` among the processes (psutil)."""
    import psutil

    try:
        for process in psutil.process_iter(["name", "status"]):
            name = (process.info["name"] or "").lower().removesuffix(".exe")
            if name == "audacity" and process.info["status"] != psutil.STATUS_ZOMBIE:
                return True
    except psutil.Error:
        return None
    return False


class ScriptPipe:
    """A connection to Audacity's script pipe; use as a context manager.

    Args:
        paths: The pipes (default: :func:`default_pipe_paths`).
        connect_timeout_seconds: How long to wait for Audacity to take the connection and
            answer a first harmless command (it may drop commands while starting up).
        command_timeout_seconds: How long :meth:`command` waits for a reply by default.
        running: Tells whether Audacity runs, to say why the pipes are missing.

    Raises:
        AudacityNotRunning: The pipes are missing and Audacity does not run.
        ScriptingDisabled: The pipes are missing while Audacity runs.
        AudacityNotAnswering: Nobody took the connection or answered in time.
    """

    def __init__(
        self,
        paths: PipePaths | None = None,
        *,
        connect_timeout_seconds: float = 30.0,
        command_timeout_seconds: float = 30.0,
        running: Callable[[], bool | None] = audacity_running,
    ) -> None:
        self.paths = paths or default_pipe_paths()
        self.command_timeout_seconds = command_timeout_seconds
        deadline = time.monotonic() + connect_timeout_seconds
        grace = min(deadline, time.monotonic() + _MISSING_GRACE_SECONDS)
        reconnecting = False
        while True:
            try:
                self._transport = _open_transport(self.paths, deadline, running)
            except (AudacityNotRunning, ScriptingDisabled) as missing:
                # Audacity replaces its pipes while it starts: a pipe that was there a
                # moment ago may be missing for the next connection. A first attempt
                # waits only while Audacity runs, and only for the grace period.
                if reconnecting:
                    give_up = deadline
                elif isinstance(missing, ScriptingDisabled):
                    give_up = grace
                else:
                    raise
                if time.monotonic() >= give_up:
                    raise
                time.sleep(_POLL_SECONDS)
                continue
            try:
                self._synchronise(min(deadline, time.monotonic() + _SYNC_ATTEMPT_SECONDS))
                return
            except AudacityNotAnswering:
                # Right after start-up Audacity can drop a command, or close the pipe we
                # just opened; a new connection then works (seen on 3.2.4 under Xvfb).
                self.close()
                if time.monotonic() >= deadline:
                    raise
                reconnecting = True
                log.debug("Audacity did not answer yet; connecting again")
            except BaseException:
                self.close()
                raise

    def _synchronise(self, deadline: float) -> None:
        """Echo a unique text; replies before it (to commands sent by an earlier,
        abandoned connection) are dropped, so each later reply belongs to its command."""
        marker = f"stembridge-{uuid.uuid4().hex}"
        command = f'Message: Text="{marker}"'
        self._transport.write(command, deadline, self.paths)
        while marker.encode() not in self._transport.read_reply(deadline, self.paths, command)[0]:
            log.debug("dropped a reply meant for an earlier connection")

    def command(self, text: str, *, timeout_seconds: float | None = None) -> str:
        """Send one command and return Audacity's reply without its status line.

        Raises:
            AudacityCommandFailed: Audacity answered with a failure.
            AudacityNotAnswering: No full reply within ``timeout_seconds`` (default:
                ``command_timeout_seconds``), or Audacity closed the pipe.
        """
        if "\n" in text or "\r" in text:
            raise HostError(f"an Audacity command is one line; got {text!r}")
        wait = self.command_timeout_seconds if timeout_seconds is None else timeout_seconds
        deadline = time.monotonic() + wait
        log.debug("audacity <- %s", text)
        self._transport.write(text, deadline, self.paths)
        raw_body, raw_status = self._transport.read_reply(deadline, self.paths, text)
        body = raw_body.decode("utf-8", errors="replace").strip("\n")
        status = raw_status.decode("utf-8", errors="replace").strip()
        log.debug("audacity -> %s (%s)", status, body[:200])
        if status != "OK":
            raise AudacityCommandFailed(
                f"Audacity refused {text!r}: {body or status}", command=text, reply=body
            )
        return body

    def close(self) -> None:
        """Close the connection; Audacity then waits for the next client."""
        self._transport.close()

    def __enter__(self) -> ScriptPipe:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def _open_transport(
    paths: PipePaths, deadline: float, running: Callable[[], bool | None]
) -> _Transport:
    try:
        if sys.platform == "win32":
            return _WindowsTransport(paths, deadline)
        return _FifoTransport(paths, deadline)
    except FileNotFoundError:
        state = running()
        if state is False:
            raise AudacityNotRunning(
                f"Audacity is not running (no script pipe at {paths.to_server}): start "
                "Audacity, open or record the audio, select a range, and run this again",
                path=paths.to_server,
            ) from None
        if state is True:
            raise ScriptingDisabled(
                f"Audacity runs but its script pipe {paths.to_server} does not exist: the "
                f"mod-script-pipe module is not enabled; {ENABLE_HINT}",
                path=paths.to_server,
            ) from None
        raise AudacityNotRunning(
            f"no script pipe at {paths.to_server}: start Audacity; if it is running, "
            f"mod-script-pipe is not enabled: {ENABLE_HINT}",
            path=paths.to_server,
        ) from None


def _complete(buffer: bytes) -> tuple[bytes, bytes] | None:
    """The reply's body and status once ``buffer`` holds a whole reply."""
    match = _FINISHED.search(buffer)
    return None if match is None else (buffer[: match.start()], match.group(1))


def _not_answering(paths: PipePaths, what: str) -> AudacityNotAnswering:
    return AudacityNotAnswering(
        f"{what} on Audacity's script pipe {paths.to_server}: if Audacity is not running "
        "the pipe is a leftover (start Audacity); if it is, it may be showing a dialog "
        "(close it) or its script server may have stopped, as happens when Audacity scans "
        "new plug-ins at start-up (restart Audacity)",
        path=paths.to_server,
    )


class _FifoTransport:
    """POSIX FIFOs, opened non-blocking and polled with ``select``."""

    def __init__(self, paths: PipePaths, deadline: float) -> None:
        # ENXIO: nobody has the FIFO open for reading (yet); Audacity may still be starting.
        while True:
            try:
                self._to = os.open(paths.to_server, os.O_WRONLY | os.O_NONBLOCK)
                break
            except OSError as exc:
                if exc.errno != errno.ENXIO:
                    raise
                if time.monotonic() >= deadline:
                    raise _not_answering(paths, "nobody reads") from None
                time.sleep(_POLL_SECONDS)
        while True:
            try:
                self._from = os.open(paths.from_server, os.O_RDONLY | os.O_NONBLOCK)
                break
            except FileNotFoundError:
                # The reply pipe is made just after the command pipe at start-up.
                if time.monotonic() < deadline:
                    time.sleep(_POLL_SECONDS)
                    continue
                os.close(self._to)
                raise
            except BaseException:
                os.close(self._to)
                raise
        # Until Audacity opens its end of the reply FIFO, reads see end-of-file.
        self._server_opened_replies = False

    def write(self, text: str, deadline: float, paths: PipePaths) -> None:
        data = (text + "\n").encode("utf-8")
        while data:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _not_answering(paths, "Audacity does not take commands")
            _, ready, _ = select.select([], [self._to], [], remaining)
            if not ready:
                continue
            try:
                data = data[os.write(self._to, data) :]
            except BrokenPipeError:
                raise _not_answering(paths, "Audacity closed its end") from None

    def read_reply(self, deadline: float, paths: PipePaths, command: str) -> tuple[bytes, bytes]:
        buffer = b""
        while (reply := _complete(buffer)) is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _not_answering(paths, f"no reply to {command!r} in time")
            ready, _, _ = select.select([self._from], [], [], remaining)
            if not ready:
                continue
            chunk = os.read(self._from, 65536)
            if chunk:
                self._server_opened_replies = True
                buffer += chunk
            elif self._server_opened_replies:
                raise _not_answering(paths, f"Audacity closed its end while answering {command!r}")
            else:
                time.sleep(_POLL_SECONDS)
        return reply

    def close(self) -> None:
        for fd in (self._to, self._from):
            try:
                os.close(fd)
            except OSError:
                log.debug("closing a script pipe descriptor failed", exc_info=True)


#: Windows' errors for a named pipe that exists but takes no client now: ERROR_PIPE_BUSY
#: (Audacity serves one client at a time) and ERROR_PIPE_NOT_CONNECTED.
_PIPE_BUSY = (231, 233)


class _WindowsTransport:
    """Windows named pipes; replies are polled with ``PeekNamedPipe`` so reads never block.

    Args:
        paths: The pipes.
        deadline: Until when a busy pipe is tried again.
        opener: Opens a pipe (``open``; tests pass files that play Audacity).
        peek: How many reply bytes wait in a pipe (``PeekNamedPipe``; raises ``OSError``
            once Audacity has closed its end).
    """

    def __init__(
        self,
        paths: PipePaths,
        deadline: float,
        *,
        opener: Callable[[Path, str], BinaryIO] | None = None,
        peek: Callable[[BinaryIO], int] | None = None,
    ) -> None:
        opener = opener or _open_unbuffered
        self._peek = peek or _peek_named_pipe
        self._to = _open_pipe(opener, paths.to_server, "wb", deadline, paths)
        try:
            # Audacity makes both pipes before it waits for a client; the reply pipe can
            # still be missing for a moment while it starts.
            while True:
                try:
                    self._from = _open_pipe(opener, paths.from_server, "rb", deadline, paths)
                    break
                except FileNotFoundError:
                    if time.monotonic() >= deadline:
                        raise
                    time.sleep(_POLL_SECONDS)
        except BaseException:
            self._to.close()
            raise

    def write(self, text: str, deadline: float, paths: PipePaths) -> None:
        # Audacity's own Windows client (scripts/piped-work/pipe_test.py) ends lines so. One
        # short line fits the pipe's buffer, so this write does not wait for Audacity.
        try:
            self._to.write((text + "\r\n\0").encode("utf-8"))
        except OSError:
            raise _not_answering(paths, "Audacity closed its end") from None

    def read_reply(self, deadline: float, paths: PipePaths, command: str) -> tuple[bytes, bytes]:
        buffer = b""
        while (reply := _complete(buffer.replace(b"\r\n", b"\n"))) is None:
            try:
                available = self._peek(self._from)
            except OSError:
                raise _not_answering(
                    paths, f"Audacity closed its end while answering {command!r}"
                ) from None
            if available:
                buffer += self._from.read(available)
            elif time.monotonic() >= deadline:
                raise _not_answering(paths, f"no reply to {command!r} in time")
            else:
                time.sleep(_POLL_SECONDS)
        return reply

    def close(self) -> None:
        self._to.close()
        self._from.close()


def _open_pipe(
    opener: Callable[[Path, str], BinaryIO],
    path: Path,
    mode: str,
    deadline: float,
    paths: PipePaths,
) -> BinaryIO:
    """Open one named pipe, waiting while another client holds it (until ``deadline``)."""
    while True:
        try:
            return opener(path, mode)
        except OSError as exc:
            if (
                isinstance(exc, FileNotFoundError)
                or getattr(exc, "winerror", None) not in _PIPE_BUSY
            ):
                raise
            if time.monotonic() >= deadline:
                raise _not_answering(paths, "another client holds the pipe") from None
            time.sleep(_POLL_SECONDS)


def _open_unbuffered(path: Path, mode: str) -> BinaryIO:
    return cast(BinaryIO, open(path, mode, buffering=0))


def _peek_named_pipe(file: BinaryIO) -> int:
    """Bytes waiting in the pipe ``file`` reads from, without blocking."""
    if sys.platform != "win32":  # lets mypy check the Windows calls on every platform
        raise HostError("Windows named pipes exist only on Windows")
    import ctypes
    import msvcrt

    count = ctypes.c_ulong(0)
    handle = msvcrt.get_osfhandle(file.fileno())
    if not ctypes.windll.kernel32.PeekNamedPipe(handle, None, 0, None, ctypes.byref(count), None):
        raise OSError(ctypes.GetLastError(), "PeekNamedPipe failed")
    return count.value


_Transport = _FifoTransport | _WindowsTransport
