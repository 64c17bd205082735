"""Studio commands: ``worker`` (a GPU worker taking jobs from Redis) and ``workers``."""

from __future__ import annotations

import argparse
import json
import signal
import threading
import time
from types import FrameType
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bridge.cli.common import EXIT_OK, add_config_option, config_from
from bridge.config import Config
from bridge.errors import BrokerError, SettingsError
from bridge.extras import require

if TYPE_CHECKING:
    from redis import Redis

    from bridge.broker.url import BrokerUrl


def register(commands: argparse._SubParsersAction) -> None:
    """Add ``worker`` and ``workers`` to the command line."""
    worker = commands.add_parser(
        "worker",
        help="run a studio GPU worker: take separation jobs from the broker until stopped",
        description="Load the model once and run the jobs the daemon sends through Redis. "
        "Run one per GPU (--device cuda:N).",
    )
    add_broker_option(worker)
    worker.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    worker.add_argument(
        "--concurrency", type=int, default=1, help="jobs at once, each with its own model"
    )
    worker.add_argument(
        "--heartbeat-timeout",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="silence after which a worker's jobs go to another one (default 60)",
    )
    add_config_option(worker)
    worker.set_defaults(command=run_worker)

    listing = commands.add_parser("workers", help="the live studio workers")
    add_broker_option(listing)
    listing.add_argument("--json", action="store_true", help="print JSON")
    add_config_option(listing)
    listing.set_defaults(command=run_workers)


def add_broker_option(parser: argparse.ArgumentParser) -> None:
    """``--broker URL`` (else the config's ``[daemon] broker``) and ``--insecure``."""
    parser.add_argument(
        "--broker",
        metavar="URL",
        help="studio broker: redis://[:password@]host:port/db or rediss:// (TLS); "
        "default: [daemon] broker",
    )
    parser.add_argument(
        "--insecure",
        action="store_true",
        help="allow a broker beyond this machine that takes no password",
    )


def apply_broker(config: Config, args: argparse.Namespace) -> Config:
    """``config`` with ``--broker`` (if given) as its broker, checked for exposure.

    Raises:
        SettingsError: A bad URL, or a password-less Redis beyond loopback without
            ``--insecure``.
    """
    import dataclasses

    from bridge.broker.url import check_exposure, parse_broker_url

    if args.broker:
        daemon = dataclasses.replace(config.daemon, broker=parse_broker_url(args.broker))
        config = dataclasses.replace(config, daemon=daemon)
    if config.daemon.broker is not None:
        check_exposure(config.daemon.broker, insecure=args.insecure)
    return config


def broker_config(args: argparse.Namespace) -> tuple[Config, BrokerUrl]:
    """The config with its broker applied (see :func:`apply_broker`), and that broker.

    Raises:
        SettingsError: No broker in the flags or the config, or a refused URL.
    """
    config = apply_broker(config_from(args), args)
    if config.daemon.broker is None:
        raise SettingsError(
            "no broker given; pass --broker redis://host:6379/0 or set [daemon] broker "
            "in the config",
            key="broker",
        )
    return config, config.daemon.broker


def connect_checked(url: BrokerUrl) -> Redis:
    """A Redis client that answered a ping.

    Raises:
        BrokerError: Redis is down, unreachable, or refuses the password.
    """
    from redis.exceptions import RedisError

    from bridge.broker.dispatcher import connect

    try:
        redis = connect(url)
        redis.ping()
    except RedisError as exc:
        raise BrokerError(
            f"cannot use the broker at {url.redacted} ({exc}); check that Redis runs there "
            "and that the URL, password and TLS (rediss://) are right"
        ) from exc
    return redis


def run_worker(args: argparse.Namespace, err: Console) -> int:
    """Take jobs until SIGTERM or Ctrl-C; the running job goes back to the queue."""
    require("studio", needed_by="stembridge worker")
    from bridge.broker.remote import StudioWorker

    if args.concurrency < 1:
        raise SettingsError(
            f"concurrency {args.concurrency} is not allowed; use 1 or more (one per model "
            "copy that fits in the GPU's memory)",
            key="concurrency",
            value=args.concurrency,
        )
    from bridge.models.runner import keep_freed_memory

    config, url = broker_config(args)
    redis = connect_checked(url)
    keep_freed_memory()  # before the worker's threads start: see its docstring
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    worker = StudioWorker(
        redis,
        device=args.device,
        concurrency=args.concurrency,
        paths=config.paths,
        heartbeat_timeout_seconds=args.heartbeat_timeout,
    )
    worker.run(stop)
    return EXIT_OK


def run_workers(args: argparse.Namespace, err: Console) -> int:
    """Print the live workers: device, current jobs, jobs done, last seen."""
    require("studio", needed_by="stembridge workers")
    from bridge.broker.channel import live_workers

    redis = connect_checked(broker_config(args)[1])
    workers = live_workers(redis)
    if args.json:
        print(json.dumps([worker.__dict__ for worker in workers], indent=2, default=list))
        return EXIT_OK
    table = Table(title=f"StemBridge workers ({len(workers)} live)")
    for column in ("worker", "device", "at once", "running", "done", "last seen"):
        table.add_column(column)
    now = time.time()
    for worker in workers:
        table.add_row(
            escape(worker.id),
            escape(worker.device),
            str(worker.concurrency),
            escape(", ".join(worker.current_jobs) or "-"),
            str(worker.jobs_done),
            f"{now - worker.last_seen:.0f} s ago",
        )
    Console(soft_wrap=True).print(table)
    return EXIT_OK
