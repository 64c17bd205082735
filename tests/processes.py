"""Real daemon processes for tests: started with the CLI, stopped or killed, always reaped."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from bridge.jobs.store import Job, JobStore

T = TypeVar("T")


def child_json(script: str, *, timeout: float = 120) -> Any:
    """Run ``python -c script`` in a fresh interpreter; the JSON on its last stdout line."""
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=timeout, check=True
    )
    return json.loads(result.stdout.splitlines()[-1])


def write_config(
    path: Path, state_dir: Path, extra: str = "", *, dashboard_port: int | None = None
) -> Path:
    """A config with a fast tick for tests, plus ``extra`` TOML; the dashboard only with
    ``dashboard_port`` (daemons of parallel tests must not compete for one port)."""
    dashboard = (
        f"[dashboard]\nport = {dashboard_port}\n"
        if dashboard_port is not None
        else "[dashboard]\nenabled = false\n"
    )
    path.write_text(
        "[daemon]\n"
        f'state_dir = "{state_dir}"\n'
        "poll_interval_seconds = 0.2\n"
        "stable_polls = 3\n" + dashboard + extra
    )
    return path


def default_config(state_dir: Path) -> Path:
    """The config ``stembridge`` finds without ``--config`` (host scripts pass none)."""
    path = Path.home() / ".config" / "stembridge" / "config.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_config(path, state_dir)


class DaemonProcess:
    """``python -m bridge ARGS`` in the background, logging to a file.

    ``prefix`` runs it through another command (``setpriv`` to drop root's powers).
    """

    def __init__(self, args: list[str], log: Path, *, prefix: tuple[str, ...] = ()) -> None:
        self.log = log
        self._log_file = open(log, "ab")  # noqa: SIM115 (closed in stop/kill)
        self.process = subprocess.Popen(
            [*prefix, sys.executable, "-m", "bridge", "-v", *args],
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
        )

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM, then wait; returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=timeout)
        self._log_file.close()
        return code

    def kill(self) -> None:
        """SIGKILL: no chance to clean up."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)
        self._log_file.close()

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def watch_daemon(
    tmp_path: Path,
    watched: Path,
    out: Path,
    *extra: str,
    log: str = "daemon.log",
    prefix: tuple[str, ...] = (),
) -> DaemonProcess:
    """``stembridge watch WATCHED -o OUT`` with the test config in ``tmp_path``
    (``config.toml``, state in ``state/``), returned once it is ready."""
    config = write_config(tmp_path / "config.toml", tmp_path / "state")
    daemon = DaemonProcess(
        ["watch", str(watched), "-o", str(out), "--config", str(config), *extra],
        tmp_path / log,
        prefix=prefix,
    )
    try:
        wait_for(lambda: "daemon ready" in daemon.output(), what="the daemon to start")
    except AssertionError:
        daemon.kill()
        raise
    return daemon


# Root ignores file permissions; this makes a daemon meet them like any user would.
NO_ROOT_OVERRIDE = ("setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--")


def wait_for(condition: Callable[[], T], *, timeout: float = 60, what: str = "condition") -> T:
    """Poll ``condition`` until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def all_final(store: JobStore, count: int) -> list[Job] | None:
    """The jobs, once there are ``count`` and every one has ended."""
    jobs = store.list(limit=10_000)
    if len(jobs) == count and all(job.state in ("done", "failed", "cancelled") for job in jobs):
        return jobs
    return None


def stem_set(*stems: str, extension: str = "wav") -> list[str]:
    """What a finished stem folder holds: each stem, its two pictures, the manifest."""
    files = ["manifest.json"]
    for stem in stems:
        files += [f"{stem}.{extension}", f"{stem}.spectrogram.png", f"{stem}.waveform.png"]
    return sorted(files)


def visible_files(folder: Path) -> list[str]:
    """Every file under ``folder``, relative, sorted."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
