"""What StemBridge keeps about jobs is readable by its user only, and a config that other
users could have changed is refused (it decides which plug-ins run).

Model files that carry code are covered by test_models.py (never unpickled), and a Redis
URL without a password beyond loopback by test_broker_url.py and test_studio.py.
"""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

from bridge.jobs.status_file import read_status

from processes import write_config
from signals import music, write_audio


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
