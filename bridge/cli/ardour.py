"""``stembridge ardour install``: put the Lua scripts where Ardour finds them (or take them out)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rich.console import Console

from bridge.cli.common import EXIT_OK
from bridge.cli.script_install import add_install_flags, print_install_report
from bridge.hosts.ardour import default_scripts_path, install, uninstall
from bridge.hosts.script_install import find_command


def register(commands: argparse._SubParsersAction) -> None:
    """Add ``ardour`` and its actions to the command line."""
    ardour = commands.add_parser("ardour", help="install the Ardour scripts")
    actions = ardour.add_subparsers(title="ardour commands", required=True, metavar="ACTION")
    parser = actions.add_parser(
        "install",
        help="copy the StemBridge Lua scripts into Ardour's scripts folder",
        description="Copy the StemBridge Lua scripts into Ardour 7's user scripts folder and "
        "write the command they run. Files you changed or added there are never replaced "
        "or deleted.",
    )
    parser.add_argument(
        "--scripts-path",
        type=Path,
        metavar="DIR",
        help="Ardour's scripts folder (default: the platform's, e.g. ~/.config/ardour7/scripts)",
    )
    add_install_flags(parser)
    parser.set_defaults(command=run_install)


def run_install(args: argparse.Namespace, err: Console) -> int:
    """Install (or uninstall) the scripts and print what changed."""
    folder = (args.scripts_path or default_scripts_path()).expanduser().resolve()
    if args.uninstall:
        report = uninstall(folder, dry_run=args.print)
    else:
        report = install(folder, command=find_command(argv0=sys.argv[0]), dry_run=args.print)
    if args.json:
        print(json.dumps(report.as_dict(), indent=2, ensure_ascii=False))
        return EXIT_OK
    print_install_report(report, folder_label="Ardour scripts folder")
    return EXIT_OK
