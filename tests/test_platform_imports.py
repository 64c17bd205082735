"""Without the POSIX-only modules, as on Windows: the host commands and a separation work.

Every command runs in a child process where ``fcntl``, ``termios``, ``pwd``, ``grp``
and ``resource`` cannot be imported: a meta-path finder raises ImportError for each, as
for a missing module, so any of them imported outside a POSIX-only branch fails these
tests. psutil and filelock are imported before it is installed: they choose their
Windows backends there (``_pswindows``, ``msvcrt``), and their Linux ones need these
modules here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from bridge.cli import EXIT_OK

from processes import write_config
from signals import music, write_audio

#: What Windows' Python lacks and Linux's has.
POSIX_ONLY = ("fcntl", "termios", "pwd", "grp", "resource")

PREAMBLE = f"""\
import sys

import filelock, psutil  # their own platform backends: Windows' there

BLOCKED = {POSIX_ONLY!r}


class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name in BLOCKED:
            raise ImportError(f"No module named {{name!r}} (blocked: as on Windows)", name=name)
        return None


sys.meta_path.insert(0, Blocker())
for name in BLOCKED:
    sys.modules.pop(name, None)
from bridge.cli import main

raise SystemExit(main(sys.argv[1:]))
"""


def run_blocked(folder: Path, args: Sequence[str]) -> subprocess.CompletedProcess[str]:
    """``stembridge ARGS`` in a child where the POSIX-only modules cannot be imported."""
    return subprocess.run(
        [sys.executable, "-c", PREAMBLE, *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=folder,
    )


def test_the_blocker_blocks(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", PREAMBLE.replace("from bridge.cli import main", "import fcntl")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert "blocked: as on Windows" in result.stderr


@pytest.mark.parametrize("command", ["submit", "status", "jobs", "serve", "watch", "service"])
def test_host_commands_start_without_posix_modules(tmp_path: Path, command: str) -> None:
    result = run_blocked(tmp_path, [command, "--help"])
    assert result.returncode == EXIT_OK, result.stderr
    assert "usage:" in result.stdout


def test_submit_status_and_jobs_answer_without_posix_modules(tmp_path: Path) -> None:
    # Given a config with its own state folder and a file to separate
    config = write_config(tmp_path / "config.toml", tmp_path / "state")
    source = write_audio(tmp_path / "mix.wav", music(20000))
    # When a host script submits it, then asks about it and the queue
    submitted = run_blocked(tmp_path, ["submit", str(source), "--json", "--config", str(config)])
    assert submitted.returncode == EXIT_OK, submitted.stderr
    job = json.loads(submitted.stdout)
    status = run_blocked(tmp_path, ["status", job["id"], "--json", "--config", str(config)])
    jobs = run_blocked(tmp_path, ["jobs", "--config", str(config)])
    # Then each answers, and no daemon is taken to be running
    assert job["daemon_running"] is False
    assert status.returncode == EXIT_OK, status.stderr
    assert json.loads(status.stdout)["state"] == "queued"
    assert jobs.returncode == EXIT_OK, jobs.stderr


def test_separate_works_without_posix_modules(model_dir: Path, tmp_path: Path) -> None:
    source = write_audio(tmp_path / "mix.wav", music(20000))
    result = run_blocked(tmp_path, ["separate", str(source), "-o", str(tmp_path), "--no-pictures"])
    assert result.returncode == EXIT_OK, result.stderr
    manifest = json.loads((tmp_path / "mix" / "manifest.json").read_text())
    assert {stem["name"] for stem in manifest["stems"]} == {"bass", "drums", "other", "vocals"}
    assert manifest["settings"]["device"] == "cpu"  # the device used, not "auto"
