"""Daemon commands: ``serve``, ``watch`` and ``service install``.

``serve`` and ``watch`` say what they do without ``-v``: which model on which device,
then, as the daemon logs them, where the dashboard is, each folder watched and each
job queued, started and finished, one short line each (:class:`ProgressLines`).
``-v`` gives the full log instead.
"""

from __future__ import annotations

import argparse
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from bridge.cli.common import EXIT_OK, add_config_option, config_from
from bridge.cli.dashboard import add_dashboard_options, apply_dashboard
from bridge.cli.separate import (
    add_effects_options,
    add_model_options,
    effects_settings,
    separation_settings,
)
from bridge.cli.studio import add_broker_option, apply_broker
from bridge.config import Config
from bridge.errors import ConfigError


def register(commands: argparse._SubParsersAction) -> None:
    """Add ``serve``, ``watch`` and ``service`` to the command line."""
    serve = commands.add_parser(
        "serve",
        help="run the daemon on the config's watched folders (and submitted jobs), with its "
        "web dashboard",
    )
    add_broker_option(serve)
    add_dashboard_options(serve)
    add_config_option(serve)
    serve.set_defaults(command=run_serve)

    watch = commands.add_parser(
        "watch",
        help="run the daemon on these folders",
        description="Run the daemon watching DIR...: stems of DIR/x.wav go to OUT/x/ (or "
        "DIR/x/ without -o), as with `separate`.",
    )
    watch.add_argument("folders", nargs="+", type=Path, metavar="DIR")
    watch.add_argument("-o", "--output", type=Path, help="output folder")
    watch.add_argument("--recursive", action="store_true", help="also watch subfolders")
    watch.add_argument(
        "--polling", action="store_true", help="poll instead of OS events (SMB/NFS shares)"
    )
    add_model_options(watch, defaults=False)
    add_effects_options(watch)
    add_broker_option(watch)
    add_dashboard_options(watch)
    add_config_option(watch)
    watch.set_defaults(command=run_watch)

    service = commands.add_parser("service", help="run the daemon at login")
    actions = service.add_subparsers(title="service commands", required=True, metavar="ACTION")
    install = actions.add_parser(
        "install",
        help="install and start a systemd user unit (Linux), launchd agent (macOS) or "
        "Task Scheduler log-on task (Windows)",
    )
    install.add_argument("--print", action="store_true", help="show it, install nothing")
    install.add_argument("--force", action="store_true", help="replace a different one")
    add_config_option(install)
    install.set_defaults(command=run_service_install)
    uninstall = actions.add_parser(
        "uninstall", help="stop the service (its running job is queued again) and remove it"
    )
    uninstall.add_argument("--print", action="store_true", help="show what it runs, do nothing")
    add_config_option(uninstall)
    uninstall.set_defaults(command=run_service_uninstall)
    state = actions.add_parser("status", help="whether the service is installed and running")
    state.add_argument("--print", action="store_true", help="show the query, run nothing")
    add_config_option(state)
    state.set_defaults(command=run_service_status)


def run_serve(args: argparse.Namespace, err: Console) -> int:
    """Serve the config's folders (sending jobs to studio workers with a broker) until
    SIGTERM or Ctrl-C."""
    return _serve(apply_dashboard(apply_broker(config_from(args), args), args), args, err)


def run_watch(args: argparse.Namespace, err: Console) -> int:
    """Serve ad-hoc folders with the config's defaults and the flags given."""
    import dataclasses

    config = apply_dashboard(apply_broker(config_from(args), args), args)
    config = dataclasses.replace(
        config,
        separation=separation_settings(args, base=config.separation),
        effects=effects_settings(args, base=config.effects),
    )
    if args.output is None:
        template = "{dir}/{name}"
    else:
        # A literal folder in a template: its braces must not read as fields.
        out = str(args.output.expanduser().resolve()).replace("{", "{{").replace("}", "}}")
        template = out + "/{name}"
    rules = []
    for folder in args.folders:
        folder = folder.expanduser().resolve()
        if not folder.is_dir():
            raise ConfigError(f"{folder}: not a folder; give folders to watch")
        rule = config.rule(folder, output=template)
        rules.append(dataclasses.replace(rule, recursive=args.recursive, polling=args.polling))
    return _serve(config.with_rules(tuple(rules)), args, err)


def _serve(config: Config, args: argparse.Namespace, err: Console) -> int:
    from bridge.daemon import Daemon, stop_signals

    daemon = Daemon(config)  # refuses a missing extra before anything is said or started
    if config.daemon.broker is None:  # with one, the daemon says where jobs go
        err.print(escape(f"separating with {_models_and_devices(config)}"), highlight=False)
    stop = threading.Event()
    with stop_signals(stop), progress_lines(err, enabled=not args.verbose):
        daemon.run(stop)
    return EXIT_OK


def _models_and_devices(config: Config) -> str:
    """``htdemucs on cpu (auto)``: each model and device the daemon's jobs ask for.

    Raises:
        DeviceUnavailable: A device that is not on this machine (refused before the
            daemon starts rather than in every job).
    """
    from bridge.models.runner import resolve_device

    asked = (config.separation, *(rule.separation for rule in config.rules))
    described = []
    pairs = ((settings.lineup.name, settings.device) for settings in asked)
    for model, device in dict.fromkeys(pairs):
        resolved = str(resolve_device(device))
        described.append(f"{model} on {resolved}" + (f" ({device})" if resolved != device else ""))
    return ", ".join(described)


class ProgressLines(logging.Handler):
    """StemBridge's own info records as one short timestamped line each on ``console``.

    Warnings and errors are left to the log's own handler, so nothing is shown twice.
    """

    def __init__(self, console: Console) -> None:
        super().__init__(logging.INFO)
        self._console = console
        self.setFormatter(logging.Formatter("%(asctime)s %(message)s", datefmt="%H:%M:%S"))

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < logging.WARNING

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._console.print(escape(self.format(record)), highlight=False)
        except Exception:  # logging's rule: a handler that fails reports it, never raises
            self.handleError(record)


@contextmanager
def progress_lines(console: Console, *, enabled: bool = True) -> Iterator[None]:
    """Show :class:`ProgressLines` while the block runs, then put logging back as it was.

    It raises the ``bridge`` loggers to INFO; the root handler that ``main`` installs
    keeps its own WARNING level, so those records reach only this handler.
    """
    if not enabled:
        yield
        return
    logger = logging.getLogger("bridge")
    handler = ProgressLines(console)
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def run_service_install(args: argparse.Namespace, err: Console) -> int:
    """Install (or print) the service definition for this platform."""
    from bridge.hosts.service import install, service_file

    if args.config is not None:
        config_from(args)  # refuse a broken config now, not at the next login
    service = service_file(config=args.config)
    if args.print:
        print(service.text, end="")
        err.print(f"# would be installed as {escape(str(service.path))}", highlight=False)
        return EXIT_OK
    changed = install(service, force=args.force)
    state = "installed" if changed else "already installed"
    print(f"{state} and started ({service.manager}): {service.path}")
    return EXIT_OK


def run_service_uninstall(args: argparse.Namespace, err: Console) -> int:
    """Stop and remove the service; on Windows the daemon is first asked to stop."""
    import shlex

    from bridge.daemon import request_stop
    from bridge.hosts.service import service_file, uninstall
    from bridge.jobs.lock import daemon_running

    config = config_from(args)
    service = service_file(config=args.config)
    if args.print:
        for command in service.stop:
            print(shlex.join(command))
        print(f"rm {shlex.quote(str(service.path))}")
        return EXIT_OK
    state_dir = config.daemon.state_dir

    def stop_daemon() -> None:
        import time

        from bridge.hosts.service import STOP_SECONDS

        if not daemon_running(state_dir):
            return
        request_stop(state_dir)
        deadline = time.monotonic() + STOP_SECONDS
        while daemon_running(state_dir) and time.monotonic() < deadline:
            time.sleep(0.5)

    if uninstall(service, stop_daemon=stop_daemon):
        print(f"stopped and removed ({service.manager}): {service.path}")
    else:
        print(f"not installed: {service.path}")
    return EXIT_OK


def run_service_status(args: argparse.Namespace, err: Console) -> int:
    """Say whether the service is installed, what its manager says, and whether a daemon
    serves the config's state folder."""
    import shlex

    from bridge.hosts.service import service_file, status
    from bridge.jobs.lock import daemon_running

    config = config_from(args)
    service = service_file(config=args.config)
    if args.print:
        print(shlex.join(service.query))
        return EXIT_OK
    found = status(service)
    print(
        f"{service.manager}: {'installed' if found.installed else 'not installed'} ({service.path})"
    )
    print(
        f"manager: {'loaded' if found.loaded else 'not loaded'}"
        + (f" ({found.manager_says})" if found.manager_says else "")
    )
    running = daemon_running(config.daemon.state_dir)
    print(f"daemon: {'running' if running else 'not running'} on {config.daemon.state_dir}")
    return EXIT_OK
