"""What ``serve`` and ``watch`` say without ``-v``: model and device, dashboard, folders,
one line per job as it is queued, starts and ends."""

from __future__ import annotations

import io
import logging
import re
import signal
import socket
import subprocess
from pathlib import Path

from rich.console import Console

from bridge.cli.daemon import progress_lines

from lean import command
from processes import wait_for, write_config
from signals import music, write_audio

TIME = r"\d\d:\d\d:\d\d"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_watch_says_what_it_does_in_short_lines(model_dir: Path, tmp_path: Path) -> None:
    # Given a daemon watching a folder, with its dashboard, started without -v, on an
    # install without the studio and pictures extras (the daemon needs neither)
    watched, out = tmp_path / "renders", tmp_path / "stems"
    watched.mkdir()
    port = free_port()
    config = write_config(tmp_path / "config.toml", tmp_path / "state", dashboard_port=port)
    log = tmp_path / "daemon.log"
    args = ["watch", str(watched), "-o", str(out), "--config", str(config)]
    with open(log, "wb") as sink:
        daemon = subprocess.Popen(
            command(tmp_path, ("dramatiq", "redis", "PIL"), args),
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_for(lambda: "daemon ready" in log.read_text(), what="the daemon to start")
            # When a render arrives and is separated, and the daemon is stopped
            write_audio(watched / "take.wav", music(30000))
            wait_for(lambda: ": done, " in log.read_text(), what="the job to end")
            daemon.send_signal(signal.SIGTERM)
            assert daemon.wait(timeout=60) == 0
        finally:
            if daemon.poll() is None:
                daemon.kill()
                daemon.wait()
    lines = log.read_text().splitlines()
    # Then it said which model runs on which device, then where everything is
    assert re.fullmatch(r"separating with htdemucs on (cpu|cuda) \(auto\)", lines[0]), lines
    for expected in (
        rf"{TIME} dashboard at http://127\.0\.0\.1:{port}/( \(.*\))?",
        rf"{TIME} watching {re.escape(str(watched))} \(events\)",
        rf"{TIME} StemBridge daemon ready: 1 watched folder\(s\), jobs in .*",
        rf"{TIME} stopped",
    ):
        assert any(re.fullmatch(expected, line) for line in lines), (expected, lines)
    # And the job had a line as it was queued, as it started and as it ended, in that order
    (queued,) = [line for line in lines if re.fullmatch(rf"{TIME} queued job \w+ for .*", line)]
    job = queued.split()[3]
    about_job = [line.split(" ", 1)[1] for line in lines if job in line]
    expected = [
        f"queued job {job} for {watched / 'take.wav'}",
        f"job {job}: {watched / 'take.wav'}",
        f"job {job}: done, {out / 'take' / 'manifest.json'}",
    ]
    assert [line for line in about_job if line in expected] == expected, about_job
    assert len(about_job) <= len(expected) + 1, about_job  # e.g. how long separating took
    # And none of it was the full log's format (level and logger name on every line)
    assert not [line for line in lines if " INFO " in line], lines


def test_progress_lines_show_info_once_and_leave_logging_as_it_was() -> None:
    # Given the root log as main sets it up without -v (warnings and worse)
    buffer = io.StringIO()
    console = Console(file=buffer, width=200)
    bridge_logger = logging.getLogger("bridge")
    before = (bridge_logger.level, list(bridge_logger.handlers))
    # When StemBridge logs while progress lines are on
    with progress_lines(console):
        logging.getLogger("bridge.watch.watcher").info("watching %s", "/renders")
        logging.getLogger("bridge.jobs.worker").info("job %s: done", "3f9a")
        logging.getLogger("bridge.daemon").warning("a warning: the log's own handler shows it")
        logging.getLogger("elsewhere").info("not StemBridge's")
    logging.getLogger("bridge.daemon").info("after the block")
    # Then only StemBridge's own info records became lines, each with the time
    assert re.fullmatch(rf"{TIME} watching /renders\n{TIME} job 3f9a: done\n", buffer.getvalue())
    # And the bridge logger is back as it was
    assert (bridge_logger.level, list(bridge_logger.handlers)) == before


def test_verbose_turns_progress_lines_off() -> None:
    buffer = io.StringIO()
    with progress_lines(Console(file=buffer), enabled=False):
        logging.getLogger("bridge.daemon").info("StemBridge daemon ready")
    assert buffer.getvalue() == ""
