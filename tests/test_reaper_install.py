"""REAPER installer: scripts copied once, config that Lua reads back, users' files untouched."""

from __future__ import annotations

import json
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path
from urllib.parse import unquote

import pytest

from bridge.cli import EXIT_HOST, EXIT_OK, main
from bridge.errors import HostError
from bridge.hosts import reaper
from bridge.hosts.reaper import (
    CONFIG_NAME,
    RECORD_NAME,
    config_chunk,
    default_resource_path,
    find_command,
    install,
    uninstall,
)
from bridge.hosts.script_install import SHARED_MODULE

from programs import required_program

REPO = Path(__file__).resolve().parent.parent
INDEX = REPO / "integrations" / "reaper" / "index.xml"
LIB = "stembridge_lib.lua"
SHARED = REPO / "integrations" / "common" / SHARED_MODULE
MAIN_SCRIPTS = {
    "StemBridge - Separate selected items.lua",
    "StemBridge - Separate selected items (vocals + instrumental).lua",
    "StemBridge - Separate selected items (4 stems).lua",
    "StemBridge - Separate selected items (6 stems).lua",
    "StemBridge - Auto-import finished renders.lua",
    "StemBridge - Register actions.lua",
}
COMMAND = ["/opt/stem bridge/bin/stembridge"]


@pytest.fixture
def source(tmp_path: Path) -> Path:
    """A small stand-in for integrations/reaper/StemBridge."""
    folder = tmp_path / "source"
    folder.mkdir()
    (folder / LIB).write_text("local M = {}\nreturn M\n")
    (folder / "StemBridge - Separate selected items.lua").write_text("-- separate\n")
    (folder / "StemBridge - Register actions.lua").write_text("-- register\n")
    (folder / "notes.txt").write_text("not a script\n")
    return folder


@pytest.fixture
def resource(tmp_path: Path) -> Path:
    """A resource folder as REAPER leaves it after its first start."""
    folder = tmp_path / "REAPER"
    folder.mkdir()
    return folder


@pytest.fixture
def cli_source(source: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The CLI installs the small source folder instead of the real scripts."""
    monkeypatch.setattr(reaper, "scripts_source", lambda: source)
    return source


def scripts(resource: Path) -> Path:
    return resource / "Scripts" / "StemBridge"


def snapshot(folder: Path) -> dict[str, int]:
    """Every file under ``folder`` with its modification time in nanoseconds."""
    return {
        str(path.relative_to(folder)): path.stat().st_mtime_ns
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def test_install_copies_scripts_config_and_record(source: Path, resource: Path) -> None:
    # When the scripts are installed into a fresh resource folder
    report = install(resource, command=COMMAND, source=source)

    # Then every Lua script, the shared module, the config and the record are there, and
    # nothing else
    folder = scripts(resource)
    lua = {LIB, "StemBridge - Separate selected items.lua", "StemBridge - Register actions.lua"}
    lua |= {SHARED_MODULE}
    assert set(report.written) == lua | {CONFIG_NAME}
    assert {path.name for path in folder.iterdir()} == lua | {CONFIG_NAME, RECORD_NAME}
    assert (folder / LIB).read_bytes() == (source / LIB).read_bytes()
    assert (folder / SHARED_MODULE).read_bytes() == SHARED.read_bytes()
    assert (
        (folder / CONFIG_NAME)
        .read_text()
        .endswith('return { command = { "/opt/stem bridge/bin/stembridge" } }\n')
    )
    record = json.loads((folder / RECORD_NAME).read_text())
    assert record["version"] == "0.1.0"
    assert {entry["name"] for entry in record["files"]} == lua | {CONFIG_NAME}
    assert report.register_script == folder / "StemBridge - Register actions.lua"
    assert "Load ReaScript" in report.instructions and "ReaPack" in report.instructions


def test_config_reads_back_in_lua_byte_for_byte(tmp_path: Path) -> None:
    lua = required_program(
        "lua5.4", package="lua5.4", purpose="the Lua quoting of the config is not checked"
    )
    # Given a command whose arguments need every kind of escaping
    command = [
        'C:\\Program Files\\Stem "Bridge"\\stembridge.exe',
        "/home/zoë/my stems/ünïcødé 音楽",
        "ends with a backslash\\",
        "tab\tnew\nline\r1\x012",
        "]]==]",
    ]
    chunk = tmp_path / "config.lua"
    chunk.write_bytes(config_chunk(command).encode("utf-8"))

    # When Lua loads the chunk and writes each argument back, NUL-separated
    driver = tmp_path / "driver.lua"
    driver.write_text(
        "local config = dofile(arg[1])\n"
        "for _, part in ipairs(config.command) do io.write(part, '\\0') end\n"
    )
    result = subprocess.run([lua, str(driver), str(chunk)], capture_output=True)
    assert result.returncode == 0, result.stderr.decode(errors="replace")

    # Then it gets exactly what was written
    assert result.stdout.split(b"\0")[:-1] == [part.encode("utf-8") for part in command]


def test_second_install_changes_nothing(source: Path, resource: Path) -> None:
    install(resource, command=COMMAND, source=source)
    before = snapshot(resource)

    report = install(resource, command=COMMAND, source=source)

    assert not report.changed and not report.kept
    assert set(report.unchanged) == {
        LIB,
        SHARED_MODULE,
        "StemBridge - Separate selected items.lua",
        "StemBridge - Register actions.lua",
        CONFIG_NAME,
    }
    assert snapshot(resource) == before


def test_install_updates_what_changed_only(source: Path, resource: Path) -> None:
    install(resource, command=COMMAND, source=source)
    before = snapshot(resource)

    # Given a new version of one script and a new command
    (source / LIB).write_text("local M = {version = 2}\nreturn M\n")
    report = install(resource, command=["/usr/bin/python3", "-m", "bridge"], source=source)

    assert set(report.updated) == {LIB, CONFIG_NAME}
    assert (scripts(resource) / LIB).read_text() == (source / LIB).read_text()
    assert '"-m", "bridge"' in (scripts(resource) / CONFIG_NAME).read_text()
    after = snapshot(resource)
    separate = "Scripts/StemBridge/StemBridge - Separate selected items.lua"
    assert after[separate] == before[separate]


def test_scripts_no_longer_shipped_are_removed(source: Path, resource: Path) -> None:
    install(resource, command=COMMAND, source=source)
    (source / "StemBridge - Separate selected items.lua").unlink()

    report = install(resource, command=COMMAND, source=source)

    assert report.removed == ("StemBridge - Separate selected items.lua",)
    assert not (scripts(resource) / "StemBridge - Separate selected items.lua").exists()


def test_users_files_survive_install_and_uninstall(source: Path, resource: Path) -> None:
    # Given the user's own script in the folder, and one outside it
    folder = scripts(resource)
    folder.mkdir(parents=True)
    (folder / "my own script.lua").write_text("-- mine\n")
    (resource / "Scripts" / "other.lua").write_text("-- other\n")

    install(resource, command=COMMAND, source=source)
    assert (folder / "my own script.lua").read_text() == "-- mine\n"
    report = uninstall(resource)

    assert set(report.removed) == {
        LIB,
        SHARED_MODULE,
        "StemBridge - Separate selected items.lua",
        "StemBridge - Register actions.lua",
        CONFIG_NAME,
    }
    assert {path.name for path in folder.iterdir()} == {"my own script.lua"}
    assert (resource / "Scripts" / "other.lua").read_text() == "-- other\n"


def test_a_file_of_the_same_name_that_is_not_ours_is_kept(source: Path, resource: Path) -> None:
    # Given a script of ours that someone copied by hand and changed
    folder = scripts(resource)
    folder.mkdir(parents=True)
    (folder / LIB).write_text("-- hand-copied and edited\n")

    report = install(resource, command=COMMAND, source=source)

    assert report.kept == (LIB,)
    assert (folder / LIB).read_text() == "-- hand-copied and edited\n"
    # It is not recorded as ours, so uninstall leaves it too
    assert LIB not in uninstall(resource).removed
    assert (folder / LIB).exists()


def test_edited_file_is_kept_on_uninstall_and_reported(
    source: Path, resource: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    install(resource, command=COMMAND, source=source)
    edited = scripts(resource) / "StemBridge - Separate selected items.lua"
    edited.write_text("-- my tweak\n")

    # A reinstall does not overwrite the edit either
    assert install(resource, command=COMMAND, source=source).kept == (edited.name,)
    assert edited.read_text() == "-- my tweak\n"

    assert main(["reaper", "install", "--uninstall", "--resource-path", str(resource)]) == 0
    out = capsys.readouterr().out
    assert "kept" in out and edited.name in out
    assert edited.read_text() == "-- my tweak\n"
    assert {path.name for path in scripts(resource).iterdir()} == {edited.name}


def test_uninstall_twice_and_without_install_is_fine(source: Path, resource: Path) -> None:
    assert uninstall(resource).nothing_installed
    install(resource, command=COMMAND, source=source)

    first = uninstall(resource)
    second = uninstall(resource)

    assert first.removed and not first.nothing_installed
    assert second.nothing_installed and not second.removed
    assert not scripts(resource).exists()
    assert (resource / "Scripts").is_dir()


def test_damaged_record_is_refused_by_name(source: Path, resource: Path) -> None:
    install(resource, command=COMMAND, source=source)
    record = scripts(resource) / RECORD_NAME
    record.write_text('{"files": [{"name": "../../escape.lua", "sha256": "00"}]}')

    with pytest.raises(HostError, match=r"escape\.lua"):
        uninstall(resource)
    record.write_text("not json")
    with pytest.raises(HostError, match=RECORD_NAME):
        install(resource, command=COMMAND, source=source)


def test_missing_resource_folder_exits_8_naming_it(
    tmp_path: Path, cli_source: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "no REAPER here"

    assert main(["reaper", "install", "--resource-path", str(missing)]) == EXIT_HOST

    err = capsys.readouterr().err
    assert str(missing) in " ".join(err.split()) and "start REAPER once" in err
    assert not missing.exists()


def test_print_writes_nothing(
    cli_source: Path, resource: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["reaper", "install", "--print", "--resource-path", str(resource)]) == EXIT_OK

    out = capsys.readouterr().out
    assert "would write" in out and "dry run" in out
    assert list(resource.iterdir()) == []

    main(["reaper", "install", "--resource-path", str(resource)])
    before = snapshot(resource)
    argv = ["reaper", "install", "--uninstall", "--print", "--resource-path", str(resource)]
    assert main(argv) == EXIT_OK
    assert "would remove" in capsys.readouterr().out
    assert snapshot(resource) == before


def test_json_output(cli_source: Path, resource: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["reaper", "install", "--json", "--resource-path", str(resource)]) == EXIT_OK

    report = json.loads(capsys.readouterr().out)
    assert report["action"] == "install" and report["dry_run"] is False
    assert report["scripts_folder"] == str(scripts(resource))
    assert CONFIG_NAME in report["written"] and report["kept"] == []
    assert report["command"] and Path(report["command"][0]).is_absolute()
    assert report["register_script"].endswith("StemBridge - Register actions.lua")
    config = (scripts(resource) / CONFIG_NAME).read_text()
    assert config.endswith(config_chunk(report["command"]).splitlines()[-1] + "\n")

    main(["reaper", "install", "--json", "--resource-path", str(resource)])
    again = json.loads(capsys.readouterr().out)
    assert again["written"] == [] and again["updated"] == [] and len(again["unchanged"]) == 5


@pytest.mark.parametrize(
    ("system", "expected"),
    [
        ("Windows", Path("C:/Users/zoe/AppData/Roaming/REAPER")),
        ("Darwin", Path("/home/zoe/Library/Application Support/REAPER")),
        ("Linux", Path("/home/zoe/.config/REAPER")),
        ("FreeBSD", Path("/home/zoe/.config/REAPER")),
    ],
)
def test_default_resource_path(system: str, expected: Path) -> None:
    env = {"APPDATA": "C:/Users/zoe/AppData/Roaming"}
    found = default_resource_path(system=system, env=env, home=Path("/home/zoe"))
    assert found == expected


def test_windows_without_appdata_uses_the_roaming_folder() -> None:
    found = default_resource_path(system="Windows", env={}, home=Path("/home/zoe"))
    assert found == Path("/home/zoe/AppData/Roaming/REAPER")


def test_find_command_prefers_the_running_console_script(tmp_path: Path) -> None:
    script = tmp_path / "bin" / "stembridge"
    script.parent.mkdir()
    script.write_text("#!/bin/sh\n")

    def nowhere(name: str, path: str | None = None) -> str | None:
        return None

    assert find_command(which=nowhere, argv0=str(script)) == [str(script.resolve())]
    assert find_command(which=nowhere, python="/venv/bin/python", argv0="/x/pytest") == [
        "/venv/bin/python",
        "-m",
        "bridge",
    ]


def test_find_command_looks_beside_python_before_path(tmp_path: Path) -> None:
    calls: list[str | None] = []

    def which(name: str, path: str | None = None) -> str | None:
        calls.append(path)
        return str(tmp_path / "venv" / "bin" / name) if path else "/usr/bin/stembridge"

    found = find_command(which=which, python=str(tmp_path / "venv" / "bin" / "python"))

    assert found == [str((tmp_path / "venv" / "bin" / "stembridge").resolve())]
    assert calls[0] is not None and str(tmp_path / "venv" / "bin") in calls[0]


def test_index_lists_the_eight_scripts_with_main_flags() -> None:
    index = ET.parse(INDEX).getroot()
    assert index.tag == "index" and index.get("version") == "1"
    assert index.get("name") == "StemBridge"
    (category,) = index.findall("category")
    (package,) = category.findall("reapack")
    assert package.get("type") == "script" and package.get("name") == "StemBridge.lua"
    (version,) = package.findall("version")
    assert version.get("name") == "0.1.0"

    sources = version.findall("source")
    mains = {s.get("file") for s in sources if s.get("main") == "main"}
    plain = {s.get("file") for s in sources if s.get("main") is None}
    assert len(sources) == 8
    assert mains == MAIN_SCRIPTS and plain == {LIB, SHARED_MODULE}
    base = "https://raw.githubusercontent.com/stembridge/stembridge/v0.1.0/"
    for source in sources:
        url = source.text or ""
        # ReaPack puts every file in one folder, the shared module too (from integrations/common)
        folder = "common" if source.get("file") == SHARED_MODULE else "reaper/StemBridge"
        assert url.startswith(f"{base}integrations/{folder}/") and " " not in url
        assert unquote(url).rsplit("/", 1)[1] == source.get("file")


def test_index_matches_the_scripts_in_the_tree() -> None:
    folder = REPO / "integrations" / "reaper" / "StemBridge"
    assert {path.name for path in folder.glob("*.lua")} == MAIN_SCRIPTS | {LIB}
    assert SHARED.is_file()
    # and the header reapack-index builds the index from provides the same files
    header = (folder / "StemBridge - Separate selected items.lua").read_text(encoding="utf-8")
    assert "[nomain] ../../common/stembridge_core.lua > stembridge_core.lua" in header


def test_installs_the_real_scripts(resource: Path) -> None:
    try:
        source = reaper.scripts_source()
    except HostError as exc:
        pytest.skip(str(exc))

    report = install(resource, command=COMMAND)

    shipped = {path.name for path in source.glob("*.lua")}
    assert set(report.written) == shipped | {SHARED_MODULE, CONFIG_NAME}


def test_a_wheel_carries_the_scripts_and_presets(tmp_path: Path) -> None:
    # Given the package built as a wheel (what `pip install .` installs), from a copy of
    # the source tree so the build leaves nothing in the checkout
    import shutil
    import sys
    import zipfile

    source = tmp_path / "source"
    skip = shutil.ignore_patterns(".git", "build", "dist", "*.egg-info", ".*_cache", "__pycache__")
    shutil.copytree(REPO, source, symlinks=True, ignore=skip)
    pip = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
    subprocess.run(
        [*pip, "-w", str(tmp_path), str(source)], check=True, capture_output=True, timeout=300
    )
    (wheel,) = tmp_path.glob("stembridge-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    # Then `reaper install` finds every ReaScript in it, and the bundled presets are there
    for script in (REPO / "integrations" / "reaper" / "StemBridge").glob("*.lua"):
        assert f"bridge/hosts/reaper_scripts/{script.name}" in names
    # and so does `ardour install`, and both find the shared module
    for script in (REPO / "integrations" / "ardour" / "scripts").glob("*.lua"):
        assert f"bridge/hosts/ardour_scripts/{script.name}" in names
    assert f"bridge/hosts/common_scripts/{SHARED_MODULE}" in names
    assert "bridge/effects/presets/broadcast.toml" in names
