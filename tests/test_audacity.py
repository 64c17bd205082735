"""``stembridge audacity separate`` against the real Audacity (Debian 3.2.4) under Xvfb.

Audacity starts from a prepared profile (``audacity_profile``): a first run in a throwaway
home writes the plug-in registry. Without it, Audacity 3.2 scans plug-ins at start-up in a
child process that loads mod-script-pipe too and re-creates the pipes under the main
process, which then never answers (seen on 3.2.4). Its script pipes are per user
(``/tmp/audacity_script_pipe.*.<uid>``), so no other Audacity may run during these tests.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from bridge.cli import EXIT_HOST, EXIT_OK, main
from bridge.errors import (
    AudacityNotAnswering,
    AudacityNotRunning,
    ScriptingDisabled,
)
from bridge.hosts.audacity import export_float_wav, quoted, tracks
from bridge.hosts.audacity_pipe import PipePaths, ScriptPipe, audacity_running, default_pipe_paths

from processes import wait_for
from programs import required_program
from signals import music, write_audio

RATE = 44100  # Audacity's default project rate
MODULE = Path("/usr/lib/audacity/modules/mod-script-pipe.so")
STEMS = ("drums", "bass", "other", "vocals")


def audacity_cfg(temp_dir: Path, *, module_enabled: bool) -> str:
    """A config that starts Audacity 3.2.4 without the welcome or crash-recovery dialogs."""
    mtime = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(MODULE.stat().st_mtime))
    return (
        "[GUI]\nShowSplashScreen=0\n"
        "[Version]\nMajor=3\nMinor=2\nMicro=4\n"
        f"[Directories]\nTempDir={temp_dir}\n"
        f"[Module]\nmod-script-pipe={1 if module_enabled else 0}\n"
        f"[ModulePath]\nmod-script-pipe={MODULE}\n"
        f"[ModuleDateTime]\nmod-script-pipe={mtime}\n"
    )


def remove_pipes() -> None:
    for path in vars(default_pipe_paths()).values():
        path.unlink(missing_ok=True)


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL: Audacity asks about unsaved changes on SIGTERM."""
    if process.poll() is None:
        process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)


def has_children(pid: int) -> bool:
    """Whether any thread of process ``pid`` has started a process that still runs."""
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            if children.read_text().strip():
                return True
        except OSError:
            continue  # the thread ended while we looked
    return False


@pytest.fixture(scope="module")
def display() -> Iterator[str]:
    """A private X server; Xvfb picks a free display number and reports it."""
    xvfb = required_program("Xvfb", package="xvfb", purpose="Audacity needs an X display")
    required_program("audacity", package="audacity", purpose="the Audacity integration")
    read, write = os.pipe()
    server = subprocess.Popen(
        [xvfb, "-displayfd", str(write), "-nolisten", "tcp"],
        pass_fds=(write,),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.close(write)
    try:
        ready, _, _ = select.select([read], [], [], 30)
        assert ready, "Xvfb did not report its display within 30 s"
        number = os.read(read, 64).decode().strip()
        assert number.isdigit(), f"Xvfb reported {number!r}"
        yield f":{number}"
    finally:
        os.close(read)
        server.terminate()
        server.wait(timeout=30)


@pytest.fixture(scope="module")
def audacity_profile(display: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``.audacity-data`` with the plug-in registry of a finished first run."""
    if audacity_running():
        pytest.fail("another Audacity is running; close it (its script pipes are per user)")
    home = tmp_path_factory.mktemp("audacity-first-run")
    data = home / ".audacity-data"
    data.mkdir()
    (data / "audacity.cfg").write_text(audacity_cfg(home / "temp", module_enabled=False))
    started = time.monotonic()
    process = subprocess.Popen(
        ["audacity"],
        env={**os.environ, "HOME": str(home), "DISPLAY": display},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    registry = data / "pluginregistry.cfg"
    seen_scanner = []

    def scanned() -> bool:
        # The scan runs in a child process (the registry file exists, empty, before it
        # starts); the registry is complete once that child has come and gone.
        if has_children(process.pid):
            seen_scanner.append(True)
            return False
        return bool(seen_scanner) and registry.stat().st_size > 0

    try:
        wait_for(scanned, timeout=120, what="Audacity's first-run plug-in scan")
    finally:
        stop(process)
        remove_pipes()
    wait_for(lambda: not audacity_running(), timeout=30, what="the first-run Audacity to end")
    print(f"Audacity first run (plug-in scan) took {time.monotonic() - started:.1f} s")
    return data


@dataclass
class RunningAudacity:
    process: subprocess.Popen[bytes]
    start_seconds: float

    def connect(self) -> ScriptPipe:
        return ScriptPipe(connect_timeout_seconds=60)


def start_audacity(
    tmp_path: Path, display: str, profile: Path, *, module_enabled: bool
) -> subprocess.Popen[bytes]:
    """Audacity in a fresh home with the prepared plug-in registry."""
    if audacity_running():
        pytest.fail("another Audacity is running; close it (its script pipes are per user)")
    home = tmp_path / "audacity-home"
    data = home / ".audacity-data"
    data.mkdir(parents=True)
    for name in ("pluginregistry.cfg", "pluginsettings.cfg"):
        shutil.copy(profile / name, data / name)
    # A fresh temp folder: a killed instance's autosave there brings up crash recovery.
    (data / "audacity.cfg").write_text(audacity_cfg(home / "temp", module_enabled=module_enabled))
    remove_pipes()
    return subprocess.Popen(
        ["audacity"],
        env={**os.environ, "HOME": str(home), "DISPLAY": display},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


@pytest.fixture
def audacity(tmp_path: Path, display: str, audacity_profile: Path) -> Iterator[RunningAudacity]:
    """A running Audacity with mod-script-pipe answering; killed and cleaned up afterwards."""
    started = time.monotonic()
    process = start_audacity(tmp_path, display, audacity_profile, module_enabled=True)
    try:
        pipe = default_pipe_paths().to_server
        wait_for(pipe.exists, timeout=60, what=f"Audacity to create {pipe}")
        with ScriptPipe(connect_timeout_seconds=60):
            pass
        yield RunningAudacity(process, time.monotonic() - started)
    finally:
        stop(process)
        remove_pipes()


def load_and_select(pipe: ScriptPipe, path: Path, start: float, end: float) -> None:
    pipe.command(f"Import2: Filename={quoted(path)}")
    pipe.command(f"Select: Start={start} End={end} Track=0 TrackCount=1 Mode=Set")


@pytest.mark.parametrize(
    ("rate", "channels", "start", "end"),
    [
        (44100, 2, 0.75, 2.0),
        # Not on the sample grid: Audacity exports from the nearest sample, and the stem
        # aligned to the selection's start plays from that same sample.
        (48000, 1, 0.7500113, 2.00002),
    ],
)
def test_stems_become_named_tracks_at_the_selection(
    audacity: RunningAudacity,
    model_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    rate: int,
    channels: int,
    start: float,
    end: float,
) -> None:
    print(f"Audacity answered {audacity.start_seconds:.1f} s after start")
    # Given a file in Audacity (the project takes its rate) and a selection not at 0
    mix = write_audio(tmp_path / "mix.wav", music(3 * rate, channels, rate=rate), rate, "FLOAT")
    with audacity.connect() as pipe:
        load_and_select(pipe, mix, start, end)
    # When the selection is separated
    out = tmp_path / "stems & exports"  # Audacity gets the paths in quotes
    code = main(["audacity", "separate", "-o", str(out), "--device", "cpu"])
    # Then each stem is a new track named after it, spanning exactly the selection
    assert code == EXIT_OK, capsys.readouterr().err
    with audacity.connect() as pipe:
        listed = tracks(pipe)
        assert [t.name for t in listed] == ["mix", *STEMS]
        assert {t.channels for t in listed} == {channels}
        clips = pipe.command("GetInfo: Type=Clips Format=JSON")
        by_track = {clip["track"]: clip for clip in json.loads(clips)}
        for track in listed[1:]:
            for span in (
                (track.start_seconds, track.end_seconds),
                (by_track[track.index]["start"], by_track[track.index]["end"]),
            ):
                assert span[0] == pytest.approx(start, abs=1 / rate)
                assert span[1] == pytest.approx(end, abs=1 / rate)
        # And the selection is as it was: the same track, the same time range
        assert [t.selected for t in listed] == [True, False, False, False, False]
        pipe.command("AddLabel:")
        labels = json.loads(pipe.command("GetInfo: Type=Labels Format=JSON"))
        assert labels[0][1][0][:2] == pytest.approx([start, end], abs=1e-5)
        # And a stem exported back from Audacity equals the stem file
        folder = next(p for p in out.iterdir() if p.is_dir())
        vocals = listed[STEMS.index("vocals") + 1]
        pipe.command(f"Select: Start={start} End={end} Track={vocals.index} TrackCount=1 Mode=Set")
        export_float_wav(pipe, tmp_path / "back.wav", channels=channels)
        # And the user's WAV encoding preference is back to Audacity's default (16-bit)
        assert (
            pipe.command("GetPreference: Name=/FileFormats/ExportFormat_SF1_Type/WAV_10000").strip()
            == "2"
        )
    back, back_rate = sf.read(tmp_path / "back.wav", dtype="float32", always_2d=True)
    stem, stem_rate = sf.read(folder / "vocals.wav", dtype="float32", always_2d=True)
    exported, _ = sf.read(folder.with_suffix(".wav"), dtype="float32", always_2d=True)
    assert back_rate == stem_rate == rate
    assert back.shape == stem.shape == exported.shape
    np.testing.assert_allclose(back, stem, rtol=0, atol=1e-6)
    # And what went in is the selection from its nearest sample, sample for sample
    original, _ = sf.read(mix, dtype="float32", always_2d=True)
    first = int(np.floor(start * rate + 0.5))
    assert len(exported) == pytest.approx((end - start) * rate, abs=1)
    np.testing.assert_array_equal(exported, original[first : first + len(exported)])


@pytest.mark.parametrize(
    ("select", "said"),
    [
        ("SelectNone:", "no audio track is selected"),
        (
            "Select: Start=1 End=1 Track=0 TrackCount=1 Mode=Set",
            "time selection is empty",
        ),
    ],
)
def test_nothing_selected_is_refused(
    audacity: RunningAudacity,
    model_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    select: str,
    said: str,
) -> None:
    # Given audio in Audacity but no track or no time selected
    mix = write_audio(tmp_path / "mix.wav", music(2 * RATE, 2), RATE, "FLOAT")
    with audacity.connect() as pipe:
        pipe.command(f"Import2: Filename={quoted(mix)}")
        pipe.command(select)
    # When separating
    code = main(["audacity", "separate", "-o", str(tmp_path / "out"), "--device", "cpu"])
    # Then it is refused with what to do, and nothing is left behind or added
    err = capsys.readouterr().err
    assert code == EXIT_HOST
    assert said in err and "select" in err
    assert list((tmp_path / "out").glob("*")) == []
    with audacity.connect() as pipe:
        assert [t.name for t in tracks(pipe)] == ["mix"]


def test_closing_audacity_mid_session_is_an_error_not_a_hang(audacity: RunningAudacity) -> None:
    # Given a connection to Audacity
    with audacity.connect() as pipe:
        # When Audacity goes away
        stop(audacity.process)
        began = time.monotonic()
        # Then the next command fails at once
        with pytest.raises(AudacityNotAnswering, match="closed its end"):
            pipe.command("GetInfo: Type=Tracks Format=JSON", timeout_seconds=60)
        assert time.monotonic() - began < 5


def test_module_disabled_says_how_to_enable_it(
    display: str, audacity_profile: Path, tmp_path: Path
) -> None:
    # Given Audacity running without mod-script-pipe
    process = start_audacity(tmp_path, display, audacity_profile, module_enabled=False)
    try:
        wait_for(audacity_running, timeout=30, what="Audacity to start")
        # When connecting
        # Then the error says how to enable the module
        with pytest.raises(ScriptingDisabled, match=r"Preferences > Modules.*mod-script-pipe=1"):
            ScriptPipe(connect_timeout_seconds=5)
    finally:
        stop(process)
        remove_pipes()


def test_audacity_not_running_says_to_start_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given no Audacity and no pipes
    if audacity_running():
        pytest.fail("another Audacity is running; close it (its script pipes are per user)")
    remove_pipes()
    # When separating
    code = main(["audacity", "separate", "-o", str(tmp_path / "out")])
    # Then the error says to start Audacity
    assert code == EXIT_HOST
    assert "Audacity is not running" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_pipes_nobody_reads_time_out(tmp_path: Path) -> None:
    # Given pipes left behind by an Audacity that is gone
    paths = PipePaths(tmp_path / "to", tmp_path / "from")
    os.mkfifo(paths.to_server)
    os.mkfifo(paths.from_server)
    began = time.monotonic()
    # When connecting
    # Then it gives up after the timeout instead of blocking forever
    with pytest.raises(AudacityNotAnswering, match="nobody reads"):
        ScriptPipe(paths, connect_timeout_seconds=1)
    assert 1 <= time.monotonic() - began < 5


def test_pipe_that_takes_commands_but_never_answers_times_out(tmp_path: Path) -> None:
    # Given a pipe whose reader never replies
    paths = PipePaths(tmp_path / "to", tmp_path / "from")
    os.mkfifo(paths.to_server)
    os.mkfifo(paths.from_server)
    reader = os.open(paths.to_server, os.O_RDONLY | os.O_NONBLOCK)
    try:
        began = time.monotonic()
        # When connecting (the first command waits for a reply)
        # Then it gives up after the timeout
        with pytest.raises(AudacityNotAnswering, match="no reply"):
            ScriptPipe(paths, connect_timeout_seconds=1)
        assert time.monotonic() - began < 5
    finally:
        os.close(reader)


def answer_the_first_command(reader: int, paths: PipePaths) -> None:
    """As Audacity would: reply to the first command read from ``reader`` (the client's
    synchronising echo) on the reply pipe, once the client has opened its end."""
    writer = os.open(paths.from_server, os.O_WRONLY)  # waits for the client's end
    with os.fdopen(reader, "rb") as commands, os.fdopen(writer, "wb", buffering=0) as out:
        while (line := commands.readline()) == b"":
            time.sleep(0.05)
        marker = line.split(b'"')[1]
        out.write(marker + b"\nBatchCommand finished: OK\n\n")


def connect_while(serve: Callable[[], None], paths: PipePaths) -> None:
    """Connect to ``paths`` (Audacity reported running) while ``serve`` runs on a thread."""
    server = threading.Thread(target=serve)
    server.start()
    try:
        with ScriptPipe(paths, connect_timeout_seconds=10, running=lambda: True):
            pass
    finally:
        server.join(timeout=10)


def test_reply_pipe_made_after_the_command_pipe_is_waited_for(tmp_path: Path) -> None:
    # Given a server that, as Audacity starting up, reads commands before its reply pipe exists
    paths = PipePaths(tmp_path / "to", tmp_path / "from")
    os.mkfifo(paths.to_server)
    reader = os.open(paths.to_server, os.O_RDONLY | os.O_NONBLOCK)

    def serve() -> None:
        time.sleep(0.5)
        os.mkfifo(paths.from_server)
        answer_the_first_command(reader, paths)

    # When connecting
    # Then the connection waits for the reply pipe instead of calling scripting disabled
    connect_while(serve, paths)


@pytest.mark.parametrize(
    ("running", "error", "said"),
    [
        (False, AudacityNotRunning, "Audacity is not running"),
        (True, ScriptingDisabled, "Preferences > Modules"),
        (None, AudacityNotRunning, "start Audacity; if it is running"),
    ],
)
def test_missing_pipes_explained_by_whether_audacity_runs(
    tmp_path: Path, running: bool | None, error: type[Exception], said: str
) -> None:
    paths = PipePaths(tmp_path / "to", tmp_path / "from")
    with pytest.raises(error, match=said):
        ScriptPipe(paths, running=lambda: running)


def test_a_command_pipe_missing_for_a_moment_while_audacity_runs_is_waited_for(
    tmp_path: Path,
) -> None:
    # Given Audacity running, its command pipe missing for 1 s (as between two clients
    # under load), then both pipes there and answered
    paths = PipePaths(tmp_path / "to", tmp_path / "from")

    def serve() -> None:
        time.sleep(1.0)
        os.mkfifo(paths.to_server)
        os.mkfifo(paths.from_server)
        answer_the_first_command(os.open(paths.to_server, os.O_RDONLY | os.O_NONBLOCK), paths)

    # When connecting, Then it connects instead of calling scripting disabled
    connect_while(serve, paths)
