"""Host-facing commands: fast, torch-free, and submit works with or without a daemon."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.cli import EXIT_INPUT, EXIT_OK, EXIT_USAGE, main
from bridge.jobs.status_file import read_status
from bridge.jobs.store import JobStore

from processes import DaemonProcess, child_json, wait_for, write_config
from signals import music, write_audio


@pytest.fixture
def config(tmp_path: Path, model_dir: Path) -> Path:
    return write_config(tmp_path / "config.toml", tmp_path / "state")


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_host_commands_never_import_torch(config: Path, tmp_path: Path) -> None:
    source = write_audio(tmp_path / "a.wav", music(4410))
    script = (
        "import json, sys\n"
        "from bridge.cli import main\n"
        f"cfg = {str(config)!r}\n"
        f"main(['submit', {str(source)!r}, '--config', cfg, '--json'])\n"
        "main(['status', '--config', cfg, '--json'])\n"
        "main(['jobs', '--config', cfg, '--json'])\n"
        "heavy = [m for m in ('torch', 'numpy', 'soundfile') if m in sys.modules]\n"
        "print(json.dumps({'heavy': heavy}))\n"
    )
    assert child_json(script, timeout=60) == {"heavy": []}


def test_submit_wait_without_daemon_separates_here(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given no daemon, and a host passing its own data along
    source = write_audio(tmp_path / "verse.wav", music(44100))
    origin = {"project": "song.rpp", "track": 3, "position": 12.5}
    # When it submits and waits
    code, out, err = cli(
        capsys,
        "submit",
        str(source),
        "--config",
        str(config),
        "--wait",
        "--json",
        "--stems",
        "vocals",
        "--origin",
        json.dumps(origin),
        "-o",
        str(tmp_path / "stems"),
    )
    # Then the job ran here, and its result and status file carry everything back
    assert code == EXIT_OK, err
    job = json.loads(out)
    assert job["state"] == "done" and job["origin"] == origin
    status = read_status(Path(job["status_file"]))
    assert status["state"] == "done" and json.loads(status["origin"]) == origin
    assert status["stem.vocals"] == str(tmp_path / "stems" / "verse" / "vocals.wav")
    assert Path(status["stem.vocals"]).is_file()


def test_submit_without_wait_queues_and_warns_without_daemon(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = write_audio(tmp_path / "a.wav", music(4410))
    code, out, err = cli(capsys, "submit", str(source), "--config", str(config))
    assert code == EXIT_OK and "no StemBridge daemon is running" in err
    job_id = out.strip()
    status = read_status(JobStore(tmp_path / "state").get(job_id).status_file)
    assert status["state"] == "queued" and status["job"] == job_id
    # And cancelling it ends it at once
    code, out, _ = cli(capsys, "cancel", job_id[:6], "--config", str(config))
    assert code == EXIT_OK and "cancelled" in out
    code, out, _ = cli(capsys, "status", job_id, "--config", str(config), "--json")
    assert json.loads(out)["state"] == "cancelled"


@pytest.fixture
def daemon(config: Path, tmp_path: Path) -> Iterator[DaemonProcess]:
    process = DaemonProcess(["serve", "--config", str(config)], tmp_path / "daemon.log")
    wait_for(lambda: "daemon ready" in process.output(), what="the daemon")
    yield process
    if process.process.poll() is None:
        process.kill()


def test_submit_wait_with_daemon_follows_its_progress(
    daemon: DaemonProcess, config: Path, tmp_path: Path
) -> None:
    # Given a running daemon
    source = write_audio(tmp_path / "chorus.wav", music(3 * 44100))
    # When a host submits and waits
    result = subprocess.run(
        [sys.executable, "-m", "bridge", "submit", str(source), "--config", str(config), "--wait"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    # Then the daemon (not the submitting process) ran it, and the manifest is printed
    assert result.returncode == EXIT_OK, result.stderr
    manifest = Path(result.stdout.strip())
    assert manifest == tmp_path / "chorus" / "manifest.json" and manifest.is_file()
    (job,) = JobStore(tmp_path / "state").list()
    assert f"job {job.id}: done" in daemon.output()


def test_cancel_a_running_job_through_the_daemon(
    daemon: DaemonProcess, config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = write_audio(tmp_path / "long.wav", music(90 * 44100))
    code, out, _ = cli(capsys, "submit", str(source), "--config", str(config))
    job_id = out.strip()
    store = JobStore(tmp_path / "state")
    wait_for(lambda: store.get(job_id).stage == "separating", what="separating")
    code, out, _ = cli(capsys, "cancel", job_id, "--config", str(config))
    assert code == EXIT_OK and "cancelling" in out
    job = wait_for(lambda: (j := store.get(job_id)).state == "cancelled" and j, what="cancelled")
    wait_for(lambda: read_status(job.status_file)["state"] == "cancelled", what="status file")
    assert not (tmp_path / "long").exists() or not any((tmp_path / "long").iterdir())
    code, _, _ = cli(capsys, "submit", str(source), "--config", str(config), "--wait")
    assert code == EXIT_OK


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["submit", "/no/such.wav"], EXIT_INPUT, "no such file"),
        (["submit", "{source}", "--origin", "[1]"], EXIT_USAGE, "--origin must be a JSON object"),
        (["submit", "{source}", "--stems", "kazoo"], EXIT_USAGE, "unknown stem 'kazoo'"),
        (["status", "abcdef"], EXIT_USAGE, "no job has the id 'abcdef'"),
        (["cancel", "nothex!"], EXIT_USAGE, "no job has the id"),
    ],
)
def test_bad_job_commands_say_what_to_do(
    config: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    code: int,
    message: str,
) -> None:
    source = write_audio(tmp_path / "a.wav", music(4410))
    filled = [arg.replace("{source}", str(source)) for arg in args]
    got, _, err = cli(capsys, *filled, "--config", str(config))
    assert got == code
    assert message in " ".join(err.split())


def test_failed_job_exit_code_matches_its_error(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"not audio at all")
    code, _, err = cli(capsys, "submit", str(broken), "--config", str(config), "--wait")
    assert code == EXIT_INPUT and "not audio" in err


def test_submit_with_a_preset_runs_it_and_a_bad_one_is_refused_at_once(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = write_audio(tmp_path / "verse.wav", music(2 * 44100))
    # Given a preset that does not exist: refused before anything is queued
    code, _, err = cli(capsys, "submit", str(source), "--config", str(config), "--preset", "nope")
    assert code == EXIT_USAGE and "no preset named 'nope'" in err
    assert JobStore(tmp_path / "state").list() == []
    # When a real one is submitted and waited for
    code, out, err = cli(
        capsys,
        "submit",
        str(source),
        "--config",
        str(config),
        "--wait",
        "--json",
        "--preset",
        "broadcast",
    )
    # Then the job ran with it: stems at -23 LUFS, recorded in the manifest
    assert code == EXIT_OK, err
    manifest = json.loads(Path(json.loads(out)["manifest"]).read_text(encoding="utf-8"))
    assert manifest["effects"]["preset"] == "broadcast"
    assert all(
        stem["limited_by_true_peak"] or abs(stem["loudness_lufs"] + 23) <= 0.05
        for stem in manifest["stems"]
    )
