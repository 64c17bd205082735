"""The Lua module every host's scripts share, installed beside them by each host's install."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from bridge.errors import HostError
from bridge.hosts import ardour, reaper, script_install
from bridge.hosts.script_install import (
    CONFIG_NAME,
    RECORD_NAME,
    SHARED_MODULE,
    InstallReport,
    shared_module_source,
)

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO / "integrations" / "common" / SHARED_MODULE
COMMAND = ["/opt/stem bridge/bin/stembridge"]


@dataclass(frozen=True)
class Host:
    """One host's installer, driven the same way for each."""

    install: Callable[..., InstallReport]
    uninstall: Callable[[Path], InstallReport]
    root: str  # what the installer is given, under tmp_path
    folder: str  # where the scripts go, under tmp_path

    def prepare(self, tmp_path: Path) -> tuple[Path, Path]:
        """The installer's argument (made as the host leaves it) and the scripts folder."""
        root = tmp_path / self.root
        root.mkdir(parents=True)
        return root, tmp_path / self.folder


HOSTS = {
    "reaper": Host(reaper.install, reaper.uninstall, "REAPER", "REAPER/Scripts/StemBridge"),
    "ardour": Host(ardour.install, ardour.uninstall, "ardour7/scripts", "ardour7/scripts"),
}


@pytest.fixture(params=sorted(HOSTS))
def host(request: pytest.FixtureRequest) -> Host:
    return HOSTS[request.param]


def test_the_shared_module_ships_in_one_place() -> None:
    assert shared_module_source() == SHARED.parent
    # the hosts' own folders hold no copy of it
    for source in (reaper.scripts_source(), ardour.scripts_source()):
        assert not (source / SHARED_MODULE).exists()


def test_each_install_puts_the_shared_module_beside_the_scripts(host: Host, tmp_path: Path) -> None:
    root, folder = host.prepare(tmp_path)

    report = host.install(root, command=COMMAND)

    # The module is written with the scripts, as shipped, and recorded as ours
    assert SHARED_MODULE in report.written
    assert (folder / SHARED_MODULE).read_bytes() == SHARED.read_bytes()
    record = json.loads((folder / RECORD_NAME).read_text("utf-8"))
    digests = {entry["name"]: entry["sha256"] for entry in record["files"]}
    assert digests[SHARED_MODULE] == hashlib.sha256(SHARED.read_bytes()).hexdigest()


def test_uninstall_removes_the_shared_module(host: Host, tmp_path: Path) -> None:
    root, folder = host.prepare(tmp_path)
    host.install(root, command=COMMAND)

    report = host.uninstall(root)

    assert SHARED_MODULE in report.removed and not report.kept
    assert not folder.exists()


def test_a_changed_shared_module_is_kept_on_reinstall_and_uninstall(
    host: Host, tmp_path: Path
) -> None:
    # Given an install whose shared module the user then changed
    root, folder = host.prepare(tmp_path)
    host.install(root, command=COMMAND)
    (folder / SHARED_MODULE).write_text("-- my tweak\n")

    # When it is installed again, Then the change is refused, kept and reported
    again = host.install(root, command=COMMAND)
    assert again.kept == (SHARED_MODULE,) and not again.changed
    assert (folder / SHARED_MODULE).read_text() == "-- my tweak\n"
    # and uninstall takes everything else and leaves it
    gone = host.uninstall(root)
    assert gone.kept == (SHARED_MODULE,)
    assert {path.name for path in folder.iterdir()} == {SHARED_MODULE}


def test_a_new_shared_module_replaces_the_unchanged_copy(
    host: Host, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given an install of an earlier shared module
    earlier = tmp_path / "earlier"
    earlier.mkdir()
    (earlier / SHARED_MODULE).write_text("-- version 0\nreturn {}\n")
    monkeypatch.setattr(script_install, "shared_module_source", lambda: earlier)
    root, folder = host.prepare(tmp_path)
    host.install(root, command=COMMAND)
    monkeypatch.undo()

    # When this StemBridge installs over it
    report = host.install(root, command=COMMAND)

    # Then the copy, still as written, is brought up to date, and nothing else changes
    assert report.updated == (SHARED_MODULE,) and not report.written
    assert (folder / SHARED_MODULE).read_bytes() == SHARED.read_bytes()


def test_a_stray_copy_beside_a_hosts_scripts_is_not_installed(tmp_path: Path) -> None:
    # Given a scripts folder holding an old copy of the module
    source = tmp_path / "source"
    source.mkdir()
    (source / "stembridge_lib.lua").write_text("return {}\n")
    (source / SHARED_MODULE).write_text("-- stale copy\n")
    root = tmp_path / "REAPER"
    root.mkdir()

    reaper.install(root, command=COMMAND, source=source)

    # Then the one that ships is installed
    folder = root / "Scripts" / "StemBridge"
    assert (folder / SHARED_MODULE).read_bytes() == SHARED.read_bytes()
    assert {path.name for path in folder.iterdir()} == {
        "stembridge_lib.lua",
        SHARED_MODULE,
        CONFIG_NAME,
        RECORD_NAME,
    }


def test_a_missing_shared_module_is_named_and_nothing_is_written(
    host: Host, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setattr(script_install, "shared_module_source", lambda: empty)
    root, folder = host.prepare(tmp_path)

    with pytest.raises(HostError, match=SHARED_MODULE) as caught:
        host.install(root, command=COMMAND)

    assert caught.value.path == empty / SHARED_MODULE
    assert not folder.exists() or not any(folder.iterdir())
