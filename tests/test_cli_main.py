"""The ``stembridge`` entry point: ``-v`` before or after the command."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.cli import EXIT_OK, main

from processes import child_json


@pytest.mark.parametrize(
    "where",
    [
        ["-v", "models", "install"],  # before the command, as always
        ["models", "-v", "install"],  # between a group and its action
        ["models", "install", "-v"],  # after the command (it was refused there)
    ],
)
def test_verbose_is_taken_before_and_after_the_command(
    tiny_models: Path, capsys: pytest.CaptureFixture[str], where: list[str]
) -> None:
    # When models are installed with -v somewhere on the line
    assert main([*where, "--from", str(tiny_models), "htdemucs"]) == EXIT_OK
    # Then the info log is on
    assert "installed htdemucs into" in capsys.readouterr().err


def test_without_verbose_info_is_not_logged(
    tiny_models: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["models", "install", "--from", str(tiny_models), "htdemucs"]) == EXIT_OK
    assert "installed htdemucs into" not in capsys.readouterr().err


def test_the_console_script_and_python_m_bridge_run_the_process_entry_point() -> None:
    import tomllib

    root = Path(__file__).resolve().parent.parent
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    assert project["scripts"]["stembridge"] == "bridge.cli:process_main"
    assert "raise SystemExit(process_main())" in (root / "bridge" / "__main__.py").read_text()


def test_a_command_process_tunes_and_freezes_the_collector_and_main_leaves_it() -> None:
    # Given a child process that runs one command through main, then through process_main
    script = (
        "import gc, json, os\n"
        "from bridge.cli import main, process_main\n"
        "before = (gc.get_threshold(), gc.get_freeze_count())\n"
        "main(['models', 'path'])\n"
        "after_main = (gc.get_threshold(), gc.get_freeze_count())\n"
        "code = process_main(['models', 'path'])\n"
        "print(json.dumps({'before': before, 'after_main': after_main, 'code': code,\n"
        "                  'after': (gc.get_threshold(), gc.get_freeze_count())}))\n"
    )
    seen = child_json(script, timeout=60)
    # Then main changed nothing, and process_main answered as main does, with the first
    # generation's threshold raised and everything alive frozen for the exit
    assert seen["after_main"] == seen["before"]
    assert seen["code"] == EXIT_OK
    threshold, frozen = seen["after"]
    assert threshold == [50_000, *seen["before"][0][1:]]
    assert frozen > 10_000
