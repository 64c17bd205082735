"""``stembridge reaper install``: put the ReaScripts where REAPER finds them (or take them out)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rich.console import Console

from bridge.cli.common import EXIT_OK
from bridge.cli.script_install import add_install_flags, print_install_report
from bridge.hosts.reaper import (
    default_resource_path,
    find_command,
    install,
    uninstall,
)


def register(commands: argparse._SubParsersAction) -> None:
    """Add ``reaper`` and its actions to the command line."""
    reaper = commands.add_parser("reaper", help="install the REAPER scripts")
    actions = reaper.add_subparsers(title="reaper commands", required=True, metavar="ACTION")
    parser = actions.add_parser(
        "install",
        help="copy the StemBridge ReaScripts into REAPER's resource folder",
        description="Copy the StemBridge ReaScripts into <resource>/Scripts/StemBridge and "
        "write the command they run. Files you changed or added there are never replaced "
        "or deleted.",
    )
    parser.add_argument(
        "--resource-path",
        type=Path,
        metavar="DIR",
        help="REAPER's resource folder (default: the platform's; REAPER shows it under "
        "Options > Show REAPER resource path)",
    )
    add_install_flags(parser)
    parser.set_defaults(command=run_install)


def run_install(args: argparse.Namespace, err: Console) -> int:
    """Install (or uninstall) the scripts and print what changed."""
    resource = (args.resource_path or default_resource_path()).expanduser().resolve()
    if args.uninstall:
        report = uninstall(resource, dry_run=args.print)
    else:
        command = find_command(argv0=sys.argv[0])
        report = install(resource, command=command, dry_run=args.print)
    if args.json:
        print(json.dumps(report.as_dict(), indent=2, ensure_ascii=False))
        return EXIT_OK
    print_install_report(
        report,
        folder_label="REAPER scripts folder",
        extra={"register script": str(report.register_script)},
    )
    return EXIT_OK
