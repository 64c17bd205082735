"""Dashboard commands and flags: ``dashboard token``, and ``serve``/``watch``'s options."""

from __future__ import annotations

import argparse
import dataclasses

from rich.console import Console
from rich.markup import escape

from bridge.cli.common import EXIT_OK, add_config_option, config_from
from bridge.config import Config


def register(commands: argparse._SubParsersAction) -> None:
    """Add ``dashboard token`` to the command line."""
    dashboard = commands.add_parser("dashboard", help="the daemon's web dashboard")
    actions = dashboard.add_subparsers(title="dashboard commands", required=True, metavar="ACTION")
    token = actions.add_parser(
        "token",
        help="make (or replace) the dashboard's sign-in token and show it once",
        description="Make a new dashboard token, replacing any earlier one (signed-in "
        "browsers must sign in again). Only its hash is kept, readable by you alone; the "
        "token is shown once. A dashboard bound beyond 127.0.0.1 needs one. The sign-in "
        "address printed is the dashboard's as configured ([dashboard] host and port, or the "
        "flags below, as for serve).",
    )
    add_config_option(token)
    _add_address_options(token)
    token.set_defaults(command=run_token, dashboard=None)


def add_dashboard_options(parser: argparse.ArgumentParser) -> None:
    """``--no-dashboard``, ``--dashboard-host``, ``--dashboard-port`` (else ``[dashboard]``)."""
    parser.add_argument(
        "--no-dashboard",
        dest="dashboard",
        action="store_false",
        default=None,
        help="serve no web dashboard",
    )
    _add_address_options(parser)


def _add_address_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dashboard-host",
        metavar="ADDRESS",
        help="dashboard address (default: [dashboard] host, 127.0.0.1); beyond loopback "
        "it needs `stembridge dashboard token` first",
    )
    parser.add_argument(
        "--dashboard-port", type=int, metavar="PORT", help="default: [dashboard] port, 8737"
    )


def apply_dashboard(config: Config, args: argparse.Namespace) -> Config:
    """``config`` with the dashboard flags that were given.

    Raises:
        SettingsError: A port out of range or an empty host.
    """
    given = {"enabled": args.dashboard, "host": args.dashboard_host, "port": args.dashboard_port}
    changes = {key: value for key, value in given.items() if value is not None}
    return dataclasses.replace(config, dashboard=dataclasses.replace(config.dashboard, **changes))


def run_token(args: argparse.Namespace, err: Console) -> int:
    """Make a new token, print it once (stdout), say where its hash is (stderr)."""
    from bridge.dashboard.auth import create_token, dashboard_url, token_path

    config = apply_dashboard(config_from(args), args)
    token = create_token(config.daemon.state_dir)
    print(token)
    settings = config.dashboard
    off = "" if settings.enabled else " (once it is on: [dashboard] enabled = true)"
    err.print(
        f"dashboard token made; only its hash is kept in "
        f"{escape(str(token_path(config.daemon.state_dir)))}. Copy it now: it is not shown "
        f"again. Sign in at {escape(dashboard_url(settings.host, settings.port))}{off} with it.",
        highlight=False,
    )
    return EXIT_OK
