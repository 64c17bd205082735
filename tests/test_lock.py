"""One daemon per job store, and a probe that never gets in a starting daemon's way."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bridge.errors import JobError
from bridge.jobs.lock import DaemonLock, daemon_running


def test_a_second_daemon_is_refused(tmp_path: Path) -> None:
    with DaemonLock(tmp_path), pytest.raises(JobError, match="already serves"):
        DaemonLock(tmp_path).__enter__()
    assert not daemon_running(tmp_path)


def test_the_running_probe_never_makes_a_starting_daemon_fail(tmp_path: Path) -> None:
    # Given a process asking "is a daemon running?" as fast as it can (a host script polling)
    with DaemonLock(tmp_path):
        pass  # the lock file exists, as after any daemon
    probe = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys\n"
            "from pathlib import Path\n"
            "from bridge.jobs.lock import daemon_running\n"
            "while True:\n"
            "    daemon_running(Path(sys.argv[1]))\n",
            str(tmp_path),
        ]
    )
    try:
        # When daemons start (and stop) again and again meanwhile
        for _ in range(300):
            with DaemonLock(tmp_path):
                assert daemon_running(tmp_path)
        # Then none of them was refused (a JobError would have ended the loop)
    finally:
        probe.kill()
        probe.wait()
