"""Service definitions: right content per platform, installed once, never clobbered."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from bridge.cli import EXIT_OK, EXIT_OUTPUT, main
from bridge.errors import SettingsError
from bridge.hosts.service import service_file


def test_systemd_unit_runs_serve_with_the_config(tmp_path: Path) -> None:
    unit = service_file(platform="linux", home=tmp_path, config=tmp_path / "c.toml")
    assert unit.path == tmp_path / ".config/systemd/user/stembridge.service"
    assert f"ExecStart={sys.executable} -m bridge serve --config {tmp_path / 'c.toml'}" in unit.text
    assert "KillSignal=SIGTERM" in unit.text and "systemctl --user enable" in unit.enable


def test_launchd_agent_for_macos(tmp_path: Path) -> None:
    agent = service_file(platform="darwin", home=tmp_path)
    assert agent.path.name == "io.stembridge.daemon.plist"
    assert "<string>serve</string>" in agent.text and "launchctl load" in agent.enable


def test_windows_is_refused_with_what_to_do() -> None:
    with pytest.raises(SettingsError, match="startup script"):
        service_file(platform="win32")


def test_install_is_idempotent_and_does_not_clobber(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    if not sys.platform.startswith("linux"):
        pytest.skip("the CLI installs the unit of the running platform")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert main(["service", "install"]) == EXIT_OK
    unit = tmp_path / ".config/systemd/user/stembridge.service"
    first = unit.read_text()
    assert main(["service", "install"]) == EXIT_OK
    assert "already installed" in capsys.readouterr().out
    unit.write_text(first + "# my edit\n")
    assert main(["service", "install"]) == EXIT_OUTPUT
    assert unit.read_text().endswith("# my edit\n")
    assert main(["service", "install", "--print"]) == EXIT_OK
    assert main(["service", "install", "--force"]) == EXIT_OK
    assert unit.read_text() == first
