"""Lean installs: what works without the extras, and what stops, naming the extra to add."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import pytest

from bridge.cli import EXIT_OK, EXIT_USAGE
from bridge.extras import EXTRAS

from lean import ALL_EXTRAS, run_without
from processes import write_config
from signals import music, write_audio

ROOT = Path(__file__).resolve().parent.parent
#: Never reached: the commands stop before they connect.
BROKER = "redis://127.0.0.1:1/0"


def requirement_name(requirement: str) -> str:
    """``dramatiq[redis]>=1.17`` -> ``dramatiq``."""
    match = re.match(r"[A-Za-z0-9._-]+", requirement)
    assert match, requirement
    return match.group(0).lower()


def test_pyproject_extras_are_the_ones_the_code_names() -> None:
    # Given the packaging metadata
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    core = {requirement_name(r) for r in project["dependencies"]}
    # Then every extra of bridge/extras.py is there with the packages it names, none of
    # which a plain install brings
    for name, extra in EXTRAS.items():
        names = {requirement_name(r) for r in extras[name]}
        assert {package.lower() for package in extra.packages} <= names, name
        assert not names & core, name
    # And [all] holds every extra, and [dev] (CI's and the README's test install) all
    assert extras["all"] == [f"stembridge[{','.join(EXTRAS)}]"]
    assert "stembridge[all]" in extras["dev"]


def test_separate_without_pillow_writes_the_stems_and_says_why_there_are_no_pictures(
    model_dir: Path, tmp_path: Path
) -> None:
    # Given a plain install: no extra at all
    source = write_audio(tmp_path / "mix.wav", music(30000))
    # When a file is separated (pictures are on by default)
    result = run_without(tmp_path, ALL_EXTRAS, ["separate", str(source), "-o", str(tmp_path)])
    # Then the stems are written, without pictures and not failing for them
    assert result.returncode == EXIT_OK, result.stderr
    folder = tmp_path / "mix"
    assert sorted(p.name for p in folder.iterdir()) == [
        "bass.wav",
        "drums.wav",
        "manifest.json",
        "other.wav",
        "vocals.wav",
    ]
    manifest = json.loads((folder / "manifest.json").read_text())
    assert all(stem["pictures"] == {} for stem in manifest["stems"])
    # And one line says which extra draws them and how to add it, or to turn them off
    lines = [line for line in result.stderr.splitlines() if "pictures" in line]
    assert len(lines) == 1, result.stderr
    assert "'pictures' extra" in lines[0]
    assert "pip install 'stembridge[pictures]'" in lines[0]
    assert "--no-pictures" in lines[0]


@pytest.mark.parametrize(
    ("blocked", "args", "extra", "otherwise"),
    [
        # serve's dashboard is on by default
        (("starlette",), ["serve"], "dashboard", "--no-dashboard"),
        (("uvicorn",), ["serve"], "dashboard", "--no-dashboard"),
        (("dramatiq",), ["serve", "--no-dashboard", "--broker", BROKER], "studio", ""),
        (("dramatiq",), ["watch", ".", "--no-dashboard", "--broker", BROKER], "studio", ""),
        (("dramatiq",), ["worker", "--broker", BROKER], "studio", ""),
        (("redis",), ["workers", "--broker", BROKER], "studio", ""),
    ],
)
def test_a_command_needing_a_missing_extra_names_it_and_the_pip_command(
    tmp_path: Path, blocked: tuple[str, ...], args: list[str], extra: str, otherwise: str
) -> None:
    # Given a config whose dashboard is on, and an install without the extra's packages
    config = write_config(tmp_path / "config.toml", tmp_path / "state", dashboard_port=8737)
    # When the command runs
    result = run_without(tmp_path, blocked, [*args, "--config", str(config)], timeout=60)
    # Then it stops before starting anything, with one line naming the extra and the fix
    assert result.returncode == EXIT_USAGE, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("stembridge: error:")
    assert f"'{extra}' extra" in line
    assert f"{blocked[0]} cannot be imported" in line
    assert f"pip install 'stembridge[{extra}]'" in line
    assert otherwise in line
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "state").exists()
