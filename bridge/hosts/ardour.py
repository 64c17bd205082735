"""Install StemBridge's Lua scripts into Ardour's user scripts folder, and remove them again.

Ardour 7 loads scripts from ``<user config>/scripts`` (and ``ARDOUR_LUA_PATH``). That
folder is the user's own, so :mod:`bridge.hosts.script_install` does the copying: our
files are recorded with their SHA-256 and only ever replaced or deleted while unchanged.
Besides the scripts and the shared ``stembridge_core.lua`` they load, it writes
``stembridge_config.lua``, the absolute command the action runs (Ardour started from a
desktop has a minimal ``PATH``).
"""

from __future__ import annotations

import os
import platform
from collections.abc import Mapping, Sequence
from pathlib import Path

from bridge.hosts.script_install import (
    CONFIG_NAME,
    InstallReport,
    config_chunk,
    install_files,
    read_scripts,
    shipped_scripts,
    uninstall_files,
)

ARDOUR_MAJOR = 7
ACTION_NAME = "StemBridge: separate selected regions"
INSTALLER = "stembridge ardour install"
_FIX = "pass --scripts-path DIR with a folder you can write (then add it to ARDOUR_LUA_PATH)"

INSTALL_INSTRUCTIONS = (
    "In Ardour (restart it if it is running): Edit > Lua Scripts > Script Manager, select "
    f'an empty Action slot, press "Add/Set" and pick "{ACTION_NAME}". It then has a button '
    "in the editor toolbar and can get a keyboard shortcut. Select audio regions and run it."
)
UNINSTALL_INSTRUCTIONS = (
    "Ardour keeps the action in its Script Manager until you remove it there: Edit > Lua "
    'Scripts > Script Manager, select "StemBridge: separate selected regions", press Remove.'
)


def default_scripts_path(
    *,
    system: str | None = None,
    env: Mapping[str, str] | None = None,
    home: Path | None = None,
) -> Path:
    """Ardour 7's user scripts folder on this (or the given) system.

    Args:
        system: ``platform.system()`` style name (``Windows``, ``Darwin``, ``Linux``);
            ``sys.platform`` names (``win32``, ``darwin``) are accepted too.
        env: The environment to read ``LOCALAPPDATA``/``XDG_CONFIG_HOME`` from (default:
            ``os.environ``).
        home: The home folder (default: ``Path.home()``).

    Returns:
        ``%LOCALAPPDATA%\\Ardour7\\scripts`` on Windows,
        ``~/Library/Preferences/Ardour7/scripts`` on macOS,
        ``$XDG_CONFIG_HOME/ardour7/scripts`` (``~/.config/ardour7/scripts``) elsewhere.
    """
    name = (system or platform.system()).lower()
    env = os.environ if env is None else env
    home = Path.home() if home is None else home
    if name.startswith("win"):
        local = env.get("LOCALAPPDATA")
        base = Path(local) if local else home / "AppData" / "Local"
        return base / f"Ardour{ARDOUR_MAJOR}" / "scripts"
    if name in ("darwin", "macos"):
        return home / "Library" / "Preferences" / f"Ardour{ARDOUR_MAJOR}" / "scripts"
    xdg = env.get("XDG_CONFIG_HOME")
    return (Path(xdg) if xdg else home / ".config") / f"ardour{ARDOUR_MAJOR}" / "scripts"


def scripts_source() -> Path:
    """The folder holding the Ardour scripts that ship with this StemBridge (see
    :func:`~bridge.hosts.script_install.shipped_scripts`)."""
    return shipped_scripts("Ardour", ("integrations", "ardour", "scripts"), "ardour_scripts")


def install(
    scripts_path: Path,
    *,
    command: Sequence[str],
    source: Path | None = None,
    dry_run: bool = False,
) -> InstallReport:
    """Copy the Ardour scripts and the shared module, and write their config, into
    ``scripts_path``.

    The folder is created when missing (Ardour creates its config folder on first start,
    not always the ``scripts`` folder in it). Idempotent, and safe for files the user
    changed or added (see :func:`bridge.hosts.script_install.install_files`).

    Args:
        scripts_path: Ardour's user scripts folder (see :func:`default_scripts_path`).
        command: What the scripts run to reach StemBridge
            (see :func:`bridge.hosts.script_install.find_command`).
        source: Folder of ``*.lua`` scripts (default: :func:`scripts_source`).
        dry_run: Work out what would happen, write nothing.

    Returns:
        What was (or would be) written, updated, left unchanged, removed or kept.

    Raises:
        HostError: The scripts are missing, the record of an earlier install is damaged,
            or the folder cannot be written.
    """
    source = scripts_source() if source is None else source
    wanted = read_scripts(source, host="Ardour")
    wanted[CONFIG_NAME] = config_chunk(command, installer=INSTALLER).encode("utf-8")
    return install_files(
        scripts_path,
        wanted,
        dry_run=dry_run,
        fix=_FIX,
        report_type=InstallReport,
        instructions=INSTALL_INSTRUCTIONS,
        command=command,
    )


def uninstall(scripts_path: Path, *, dry_run: bool = False) -> InstallReport:
    """Remove what :func:`install` wrote into ``scripts_path``, and nothing else.

    Raises:
        HostError: The record is damaged, or a file cannot be deleted.
    """
    return uninstall_files(
        scripts_path,
        dry_run=dry_run,
        fix=_FIX,
        report_type=InstallReport,
        instructions=UNINSTALL_INSTRUCTIONS,
    )
