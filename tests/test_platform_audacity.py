"""The Windows named-pipe path to Audacity's mod-script-pipe, played by fake pipes.

``\\\\.\\pipe\\ToSrvPipe`` and ``FromSrvPipe`` exist only on Windows; here the transport
gets an opener and a ``PeekNamedPipe`` stand-in that behave as Audacity's pipe server
does (busy while another client is connected, replies in CRLF lines).
"""

from __future__ import annotations

import time
from pathlib import Path, PureWindowsPath

import pytest

from bridge.errors import AudacityNotAnswering
from bridge.hosts.audacity_pipe import PipePaths, _WindowsTransport

PATHS = PipePaths(Path(r"\\.\pipe\ToSrvPipe"), Path(r"\\.\pipe\FromSrvPipe"))


class PipeBusy(OSError):
    """ERROR_PIPE_BUSY, as Windows raises it while another client holds the pipe."""

    winerror = 231


class FakeAudacity:
    """Both ends of Audacity's pipes: what was written, and replies waiting to be read."""

    def __init__(self, *, busy_opens: int = 0) -> None:
        self.written = b""
        self.pending = b""
        self.busy_opens = busy_opens
        self.closed = False

    def open(self, path: Path, mode: str) -> FakeAudacity:
        if self.busy_opens:
            self.busy_opens -= 1
            raise PipeBusy(22, "All pipe instances are busy")
        assert (str(path), mode) in ((str(PATHS.to_server), "wb"), (str(PATHS.from_server), "rb"))
        return self

    def write(self, data: bytes) -> int:
        self.written += data
        if data.endswith(b"\r\n\0"):  # Audacity answers each whole command
            command = data[:-3].decode()
            self.pending += f"{command} done\r\nBatchCommand finished: OK\r\n\r\n".encode()
        return len(data)

    def peek(self, file: object) -> int:
        if self.closed:
            raise OSError(109, "The pipe has been ended")
        return len(self.pending)

    def read(self, count: int) -> bytes:
        data, self.pending = self.pending[:count], self.pending[count:]
        return data

    def close(self) -> None:
        pass


def test_pipe_paths_are_the_windows_named_pipes() -> None:
    assert PureWindowsPath(str(PATHS.to_server)).as_posix() == "//./pipe/ToSrvPipe"


def test_a_busy_pipe_is_tried_again_then_commands_and_crlf_replies_work() -> None:
    audacity = FakeAudacity(busy_opens=2)
    deadline = time.monotonic() + 5
    transport = _WindowsTransport(PATHS, deadline, opener=audacity.open, peek=audacity.peek)
    transport.write("Select: Start=0 End=1", deadline, PATHS)
    body, status = transport.read_reply(deadline, PATHS, "Select")
    assert audacity.written == b"Select: Start=0 End=1\r\n\0"
    assert (body, status) == (b"Select: Start=0 End=1 done\n", b"OK")


def test_a_pipe_held_by_another_client_past_the_deadline_is_named() -> None:
    audacity = FakeAudacity(busy_opens=10**6)
    with pytest.raises(AudacityNotAnswering, match="another client holds the pipe"):
        _WindowsTransport(PATHS, time.monotonic() + 0.2, opener=audacity.open, peek=audacity.peek)


def test_audacity_closing_its_end_mid_reply_is_named() -> None:
    audacity = FakeAudacity()
    deadline = time.monotonic() + 5
    transport = _WindowsTransport(PATHS, deadline, opener=audacity.open, peek=audacity.peek)
    audacity.closed = True
    with pytest.raises(AudacityNotAnswering, match="closed its end"):
        transport.read_reply(deadline, PATHS, "Select")
