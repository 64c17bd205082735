"""What StemBridge keeps about jobs is readable by its user only (an existing state or
status folder included), and a config, preset or plug-in that other users could have
changed is refused (each decides which code runs). "Another user" is a real other uid
(``trust.give_to_another_user``): the tests run as root, who may read anything, so the
rule is about ownership and write bits, not readability.

Model files that carry code are covered by test_models.py (never unpickled), and a Redis
URL without a password beyond loopback by test_broker_url.py and test_studio.py.
"""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from bridge.cli import EXIT_USAGE
from bridge.jobs.status_file import read_status

from processes import write_config
from signals import music, write_audio
from trust import OTHER_UID, give_to_another_user, plugin_bundle


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def bridge(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bridge", *args], capture_output=True, text=True, timeout=300
    )


def test_job_store_and_status_files_are_user_only(model_dir: Path, tmp_path: Path) -> None:
    config = write_config(tmp_path / "config.toml", tmp_path / "state")
    source = write_audio(tmp_path / "renders" / "take.wav", music(22050))
    done = bridge("submit", str(source), "--config", str(config), "--wait", "--stems", "vocals")
    assert done.returncode == 0, done.stderr
    state = tmp_path / "state"
    assert mode(state) == 0o700
    stored = [p for p in state.iterdir() if p.name.startswith("jobs.sqlite3")]
    assert stored and all(mode(p) == 0o600 for p in stored), {p.name: oct(mode(p)) for p in stored}
    status_dir = tmp_path / "renders" / ".stembridge"
    (status,) = status_dir.glob("*.status")
    assert read_status(status)["state"] == "done"
    assert mode(status_dir) == 0o700 and mode(status) == 0o600


def test_a_config_others_can_write_is_refused_with_the_fix(tmp_path: Path) -> None:
    config = write_config(tmp_path / "config.toml", tmp_path / "state")
    config.chmod(0o666)
    refused = bridge("jobs", "--config", str(config))
    assert refused.returncode != 0
    assert f"{config}: other users may write to it (mode 666)" in refused.stderr
    assert f"chmod go-w '{config}'" in refused.stderr
    assert not (tmp_path / "state").exists()
    # Writable by the user's own group, which nobody else is in (umask 002), is fine
    config.chmod(0o664)
    assert bridge("jobs", "--config", str(config)).returncode == 0


def exits_soon(*args: str) -> subprocess.CompletedProcess[str]:
    """A command that must stop by itself (``serve`` refusing to start): one that would
    serve instead fails the test after a minute rather than hanging it."""
    try:
        return subprocess.run(
            [sys.executable, "-m", "bridge", *args], capture_output=True, text=True, timeout=60
        )
    except subprocess.TimeoutExpired:
        raise AssertionError(
            f"stembridge {' '.join(args)} kept running instead of refusing"
        ) from None


@pytest.mark.parametrize("exposed", ["preset", "plugin"])
def test_the_daemon_refuses_a_preset_or_plugin_another_user_could_change(
    tmp_path: Path, exposed: str
) -> None:
    # Given a config whose preset names a plug-in, and either the preset is writable by
    # everyone or the plug-in's library is owned by another user
    bundle, library = plugin_bundle(tmp_path / "vst3", "DeEss")
    preset = tmp_path / "presets" / "studio.toml"
    preset.parent.mkdir()
    preset.write_text(f'[stems.vocals]\nchain = [{{ plugin = "{bundle}" }}]\n', encoding="utf-8")
    if exposed == "preset":
        preset.chmod(0o666)
        expected = f"{preset}: other users may write to it (mode 666)"
    else:
        give_to_another_user(library)
        expected = f"{library}: owned by another user (uid {OTHER_UID})"
    config = write_config(
        tmp_path / "config.toml", tmp_path / "state", f'[effects]\npreset = "{preset}"\n'
    )
    # When the daemon is started on it
    refused = exits_soon("serve", "--config", str(config))
    # Then it does not start: one line names the file, why, and the fix
    assert refused.returncode == EXIT_USAGE, refused.stderr
    assert expected in refused.stderr
    assert "Traceback" not in refused.stderr
    assert not (tmp_path / "state").exists()


def test_an_existing_loose_state_folder_is_made_user_only(tmp_path: Path) -> None:
    # Given a state folder someone made world-writable, with a file in it
    state = tmp_path / "state"
    state.mkdir()
    (state / "notes.txt").write_text("kept", encoding="utf-8")
    state.chmod(0o777)
    config = write_config(tmp_path / "config.toml", state)
    # When a command opens the job store there, or stores the dashboard token there
    for command in (("jobs",), ("dashboard", "token")):
        state.chmod(0o777)
        assert bridge(*command, "--config", str(config)).returncode == 0
        # Then the folder is user-only, and what was in it is still there
        assert mode(state) == 0o700
        assert (state / "notes.txt").read_text(encoding="utf-8") == "kept"


def test_a_state_folder_owned_by_another_user_is_refused(tmp_path: Path) -> None:
    # Given a state folder that belongs to another user
    state = tmp_path / "state"
    state.mkdir(mode=0o755)
    (state / "notes.txt").write_text("theirs", encoding="utf-8")
    give_to_another_user(state)
    config = write_config(tmp_path / "config.toml", state)
    # When the job commands or the daemon would use it
    for command in (("jobs",), ("serve",), ("dashboard", "token")):
        refused = exits_soon(*command, "--config", str(config))
        # Then they refuse, naming the folder, its owner and what to do
        assert refused.returncode == EXIT_USAGE, refused.stderr
        assert f"owned by another user (uid {OTHER_UID})" in refused.stderr
        assert str(state) in refused.stderr and "use a folder of your own" in refused.stderr
        assert "Traceback" not in refused.stderr
    # and nothing in it was created, changed or taken
    assert sorted(p.name for p in state.iterdir()) == ["notes.txt"]
    assert mode(state) == 0o755 and state.stat().st_uid == OTHER_UID


def test_an_existing_loose_status_folder_is_made_user_only(tmp_path: Path) -> None:
    # Given a render folder whose .stembridge folder is world-writable
    source = write_audio(tmp_path / "renders" / "take.wav", music(22050))
    status_dir = source.parent / ".stembridge"
    status_dir.mkdir()
    status_dir.chmod(0o777)
    config = write_config(tmp_path / "config.toml", tmp_path / "state")
    # When a job is submitted (its status file is written at once)
    submitted = bridge("submit", str(source), "--config", str(config))
    assert submitted.returncode == 0, submitted.stderr
    # Then the folder is user-only, and so is the status file in it
    (status,) = status_dir.glob("*.status")
    assert read_status(status)["state"] == "queued"
    assert mode(status_dir) == 0o700 and mode(status) == 0o600


def test_a_status_folder_owned_by_another_user_is_not_written_to(tmp_path: Path) -> None:
    # Given a render folder whose .stembridge folder belongs to another user
    source = write_audio(tmp_path / "renders" / "take.wav", music(22050))
    status_dir = source.parent / ".stembridge"
    status_dir.mkdir(mode=0o777)
    status_dir.chmod(0o777)
    (status_dir / "planted.status").write_text("state=done\n", encoding="utf-8")
    give_to_another_user(status_dir)
    config = write_config(tmp_path / "config.toml", tmp_path / "state")
    # When a job is submitted
    submitted = bridge("submit", str(source), "--config", str(config))
    # Then the job is queued, but no status file goes into the other user's folder: the
    # message says whose it is and what to do; what was there is untouched
    assert submitted.returncode == 0, submitted.stderr
    assert f"owned by another user (uid {OTHER_UID})" in submitted.stderr
    assert str(status_dir) in submitted.stderr and "remove it" in submitted.stderr
    assert sorted(p.name for p in status_dir.iterdir()) == ["planted.status"]
    assert mode(status_dir) == 0o777
    job_id = submitted.stdout.strip()
    listed = bridge("status", job_id, "--json", "--config", str(config))
    assert json.loads(listed.stdout)["state"] == "queued"
