"""``stembridge ardour install``: Ardour 7's scripts folder per OS, a safe install, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bridge.cli import EXIT_OK, main
from bridge.hosts.ardour import default_scripts_path, install, scripts_source, uninstall
from bridge.hosts.script_install import CONFIG_NAME, RECORD_NAME, SHARED_MODULE

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = {"stembridge_ardour_lib.lua", "stembridge_separate.lua"}
INSTALLED = SCRIPTS | {SHARED_MODULE, CONFIG_NAME}
COMMAND = ["/opt/stem bridge/bin/stembridge"]


@pytest.mark.parametrize(
    ("system", "env", "expected"),
    [
        ("Linux", {}, "/home/u/.config/ardour7/scripts"),
        ("Linux", {"XDG_CONFIG_HOME": "/cfg"}, "/cfg/ardour7/scripts"),
        ("Darwin", {}, "/home/u/Library/Preferences/Ardour7/scripts"),
        (
            "Windows",
            {"LOCALAPPDATA": "C:/Users/u/AppData/Local"},
            "C:/Users/u/AppData/Local/Ardour7/scripts",
        ),
        ("win32", {}, "/home/u/AppData/Local/Ardour7/scripts"),
    ],
)
def test_default_scripts_path_per_os(system: str, env: dict[str, str], expected: str) -> None:
    assert default_scripts_path(system=system, env=env, home=Path("/home/u")) == Path(expected)


def test_the_source_is_the_scripts_in_the_tree() -> None:
    assert scripts_source() == REPO / "integrations" / "ardour" / "scripts"
    assert {path.name for path in scripts_source().glob("*.lua")} == SCRIPTS


def test_install_creates_the_folder_and_writes_scripts_config_and_record(tmp_path: Path) -> None:
    # Given an Ardour config folder without a scripts folder yet
    folder = tmp_path / "ardour7" / "scripts"

    # When the scripts are installed
    report = install(folder, command=COMMAND)

    # Then the scripts, the shared module they load, the config with the absolute command
    # and the record are there
    assert set(report.written) == INSTALLED
    assert {path.name for path in folder.iterdir()} == INSTALLED | {RECORD_NAME}
    for name in SCRIPTS:
        assert (folder / name).read_bytes() == (scripts_source() / name).read_bytes()
    config = (folder / CONFIG_NAME).read_text("utf-8")
    assert config.startswith("-- Written by `stembridge ardour install`")
    assert config.endswith('return { command = { "/opt/stem bridge/bin/stembridge" } }\n')
    assert "Script Manager" in report.instructions


def test_reinstall_and_uninstall_leave_the_users_files_alone(tmp_path: Path) -> None:
    # Given an install, a script of the user's beside ours and one of ours they edited
    folder = tmp_path / "scripts"
    install(folder, command=COMMAND)
    (folder / "my_own.lua").write_text("-- mine\n")
    (folder / "stembridge_separate.lua").write_text("-- edited\n")

    # When it is installed again
    again = install(folder, command=COMMAND)

    # Then nothing of ours changes, and the edited script is kept
    assert not again.changed
    assert again.kept == ("stembridge_separate.lua",)
    # And uninstalling removes only our unchanged files, never the folder with theirs
    removed = uninstall(folder)
    assert set(removed.removed) == {"stembridge_ardour_lib.lua", SHARED_MODULE, CONFIG_NAME}
    assert removed.kept == ("stembridge_separate.lua",)
    assert {path.name for path in folder.iterdir()} == {"my_own.lua", "stembridge_separate.lua"}


def test_cli_install_print_json_and_uninstall(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "ardour7" / "scripts"
    base = ["ardour", "install", "--scripts-path", str(folder)]

    # --print says what would be written and writes nothing
    assert main([*base, "--print", "--json"]) == EXIT_OK
    planned = json.loads(capsys.readouterr().out)
    assert planned["dry_run"] and set(planned["written"]) == INSTALLED
    assert not folder.exists()

    # install writes it, with an absolute command
    assert main([*base, "--json"]) == EXIT_OK
    done = json.loads(capsys.readouterr().out)
    assert done["scripts_folder"] == str(folder.resolve())
    assert Path(done["command"][0]).is_absolute()
    assert (folder / CONFIG_NAME).is_file()

    # the summary names the folder and each file
    assert main(base) == EXIT_OK
    summary = capsys.readouterr().out
    assert "Ardour scripts folder" in summary and "unchanged  stembridge_separate.lua" in summary

    # --uninstall takes everything out again, the folder too
    assert main([*base, "--uninstall", "--json"]) == EXIT_OK
    gone = json.loads(capsys.readouterr().out)
    assert set(gone["removed"]) == INSTALLED
    assert not folder.exists()
    assert main([*base, "--uninstall", "--json"]) == EXIT_OK
    assert json.loads(capsys.readouterr().out)["nothing_installed"]
