"""Locks, liveness and graceful stops through the cross-platform code paths: filelock's
lock, psutil's pid + start time, the stop request a Windows service is stopped with,
the Windows stop signals, and renames onto files a DAW holds open."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

from bridge import atomic
from bridge.daemon import STOP_NAME, request_stop, stop_signals
from bridge.errors import JobError, OutputError
from bridge.jobs.lock import OWNER_NAME, DaemonLock, daemon_running
from bridge.jobs.store import JobStore
from bridge.owners import machine_id, on_this_host, owner_alive, owner_id

from processes import visible_files, wait_for, watch_daemon
from signals import music, write_audio

RATE = 44100


def test_the_lock_names_its_holder_and_a_killed_holder_frees_it(tmp_path: Path) -> None:
    # Given a daemon lock held by another process
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from pathlib import Path\n"
            "from bridge.jobs.lock import DaemonLock\n"
            "with DaemonLock(Path(sys.argv[1])):\n"
            "    print('held', flush=True)\n"
            "    time.sleep(60)\n",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        # Then it is seen running, and a second daemon is refused naming its pid
        assert daemon_running(tmp_path)
        with pytest.raises(JobError, match=f"pid {holder.pid}"):
            DaemonLock(tmp_path).__enter__()
    finally:
        # When the holder is killed without a chance to clean up
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # Then the OS let go of its lock: nobody runs, and the next daemon takes it
    assert not daemon_running(tmp_path)
    with DaemonLock(tmp_path):
        assert owner_alive((tmp_path / OWNER_NAME).read_text())
    assert not (tmp_path / OWNER_NAME).exists()


def test_liveness_is_pid_and_start_time_on_this_machine_whatever_its_host_name() -> None:
    me = owner_id()
    host, pid, start = me.split(":")
    assert owner_alive(me)
    # A Mac that joined another network has another host name, but the same machine
    renamed = f"other-name@{machine_id()}:{pid}:{start}"
    assert on_this_host(renamed) and owner_alive(renamed)
    # The same pid started at another time is another process: it has ended
    assert not owner_alive(f"other-name@{machine_id()}:{pid}:{int(start) + 1}")
    # Another machine cannot be asked: assumed alive
    assert owner_alive(f"studio-pc@000000000000:{pid}:1") and not on_this_host("x@1:1:1")
    # Ids written before machine ids are still compared by host name
    assert on_this_host(f"{host.split('@')[0]}:{pid}:{start}")


def test_stop_signals_include_ctrl_break_on_windows_and_are_put_back() -> None:
    # Given a signal module as Windows' has it (SIGBREAK: Ctrl-Break)
    installed: dict[int, object] = {}

    def install(number: int, handler: object) -> object:
        previous = installed.get(number, "default")
        installed[number] = handler
        return previous

    windows = SimpleNamespace(SIGTERM=15, SIGINT=2, SIGBREAK=21, signal=install)
    stop = threading.Event()
    # When the daemon runs under stop_signals and Ctrl-Break comes
    with stop_signals(stop, signals=windows, platform="linux"):
        assert set(installed) == {15, 2, 21}
        handler = installed[21]
        assert callable(handler)
        handler(21, None)
    # Then a stop was asked for, and the handlers were put back
    assert stop.is_set()
    assert installed == {15: "default", 2: "default", 21: "default"}


def test_a_stop_request_requeues_the_running_job_like_sigterm(
    model_dir: Path, tmp_path: Path
) -> None:
    # Given a daemon separating a long file
    watched, out = tmp_path / "renders", tmp_path / "stems"
    watched.mkdir()
    daemon = watch_daemon(tmp_path, watched, out)
    try:
        store = JobStore(tmp_path / "state")
        write_audio(watched / "long.wav", music(90 * RATE))
        wait_for(lambda: any(j.stage == "separating" for j in store.list()), what="separating")
        # When it is asked to stop the way a Windows service is
        request_stop(tmp_path / "state")
        code = daemon.process.wait(timeout=60)
    finally:
        if daemon.process.poll() is None:
            daemon.kill()
    # Then it stopped cleanly, the job waits in the queue, nothing partial is left
    assert code == 0, daemon.output()
    (job,) = store.list()
    assert job.state == "queued"
    assert not (out / "long").exists() or visible_files(out / "long") == []
    assert not (tmp_path / "state" / STOP_NAME).exists()


class HeldOpen:
    """``os.replace`` onto a file a DAW holds open on Windows: refused ``times`` times."""

    def __init__(self, times: int) -> None:
        self.times = times
        self.calls = 0

    def __call__(self, source: Path, target: Path) -> None:
        self.calls += 1
        if self.calls <= self.times:
            raise PermissionError(13, "The process cannot access the file", str(target))
        os.replace(source, target)


def test_a_stem_held_open_for_a_moment_is_replaced_once_let_go(tmp_path: Path) -> None:
    final = tmp_path / "vocals.wav"
    final.write_bytes(b"old")
    held = HeldOpen(times=3)
    waits: list[float] = []
    replace = atomic.Replacer(rename=held, sleep=waits.append)
    atomic.write_bytes(final, b"new", replace=replace)
    assert final.read_bytes() == b"new" and held.calls == 4 and len(waits) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vocals.wav"]


def test_a_stem_held_open_too_long_fails_clearly_and_leaves_no_temporary(tmp_path: Path) -> None:
    final = tmp_path / "vocals.wav"
    final.write_bytes(b"old")
    replace = atomic.Replacer(rename=HeldOpen(times=10**6), sleep=lambda _: None)
    with pytest.raises(OutputError, match=r"another program holds it open.*close it there"):
        atomic.write_bytes(final, b"new", replace=replace)
    assert final.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vocals.wav"]


def test_a_set_whose_stem_is_held_open_takes_back_what_it_published(tmp_path: Path) -> None:
    # Given a set of two stems, the second of which a DAW keeps open
    (tmp_path / "drums.wav").write_bytes(b"old drums")

    def held(source: Path, target: Path) -> None:
        if target.name == "drums.wav":
            raise PermissionError(13, "The process cannot access the file", str(target))
        os.replace(source, target)

    replace = atomic.Replacer(rename=held, sleep=lambda _: None)
    journal = atomic.Journal(tmp_path, tag="job1.1.1", key="k", replace=replace)
    pairs = [
        (atomic.write_temp(tmp_path / name, b"new", tag="job1.1.1"), tmp_path / name)
        for name in ("vocals.wav", "drums.wav")
    ]
    # When it is published, and the failure undone as the publish stage does
    with pytest.raises(OutputError, match=r"drums\.wav"):
        journal.publish(pairs)
    journal.undo()
    # Then the held file is untouched, the new vocals taken back, and no temporary is left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["drums.wav"]
    assert (tmp_path / "drums.wav").read_bytes() == b"old drums"
