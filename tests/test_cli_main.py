"""The ``stembridge`` entry point: ``-v`` before or after the command."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.cli import EXIT_OK, main


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
