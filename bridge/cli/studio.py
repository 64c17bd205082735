"""Studio commands: ``worker`` (a GPU worker taking jobs from Redis) and ``workers``."""

from __future__ import annotations

import argparse
import json
import logging
import os
import threading
import time
from collections.abc import Mapping
from pathlib import Path
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
    from bridge.models.batching import BatchingOptions

log = logging.getLogger(__name__)

#: The environment variable a broker password can come from (a command line is seen by
#: every user of the machine; a process's environment only by its user and root).
PASSWORD_VARIABLE = "STEMBRIDGE_BROKER_PASSWORD"


def register(commands: argparse._SubParsersAction) -> None:
    """Add ``worker`` and ``workers`` to the command line."""
    worker = commands.add_parser(
        "worker",
        help="run a studio GPU worker: take separation jobs from the broker until stopped",
        description="Load the model once and run the jobs the daemon sends through Redis. "
        "Run one per GPU (--device cuda:N).",
    )
    add_broker_option(worker)
    worker.add_argument(
        "--device",
        default="auto",
        help="auto (CUDA, then MPS, then the CPU), cpu, cuda, cuda:N or mps",
    )
    worker.add_argument(
        "--concurrency",
        type=int,
        default=1,
        help="jobs at once, all on one copy of the model (see --cross-job-batch)",
    )
    worker.add_argument(
        "--cross-job-batch",
        type=int,
        metavar="SEGMENTS",
        help="most segments one forward pass carries from the jobs running at once (1: each "
        "job its own passes); default: 1 on a CPU, about one per 4 GiB of a GPU, up to 16",
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
    """``--broker URL`` (else the config's ``[daemon] broker``), ``--broker-password-file``
    and ``--insecure``."""
    parser.add_argument(
        "--broker",
        metavar="URL",
        help="studio broker: redis://host:port/db or rediss:// (TLS); default: [daemon] "
        f"broker; the password from --broker-password-file or ${PASSWORD_VARIABLE} (one "
        "in this URL is visible to every user of the machine)",
    )
    parser.add_argument(
        "--broker-password-file",
        type=Path,
        metavar="FILE",
        help="read the broker's password from FILE (the password alone, readable by you only)",
    )
    parser.add_argument(
        "--insecure",
        action="store_true",
        help="allow a broker beyond this machine that takes no password",
    )


def apply_broker(
    config: Config, args: argparse.Namespace, *, environ: Mapping[str, str] = os.environ
) -> Config:
    """``config`` with ``--broker`` (if given) as its broker, its password added, checked
    for exposure.

    The password is the first of: ``--broker-password-file``, the URL's own (flag or
    config), ``$STEMBRIDGE_BROKER_PASSWORD``. A file and a URL that both hold one are
    refused: which one logs in would be a guess.

    Raises:
        SettingsError: A bad URL or password file, a file given with no broker or with a
            URL holding a password, or a password-less Redis beyond loopback without
            ``--insecure``.
    """
    import dataclasses

    from bridge.broker.url import check_exposure, parse_broker_url, read_password_file

    if args.broker:
        given = parse_broker_url(args.broker)
        if given.password is not None:
            log.warning(
                "the broker password given with --broker is visible to every user of this "
                "machine (ps); put it in a file for --broker-password-file, or in $%s",
                PASSWORD_VARIABLE,
            )
        config = dataclasses.replace(
            config, daemon=dataclasses.replace(config.daemon, broker=given)
        )
    elif _password_readable_in_config(config):
        log.warning(
            "%s holds the broker password and other users may read it; run: chmod 600 '%s'",
            config.path,
            config.path,
        )
    url = config.daemon.broker
    file = args.broker_password_file
    if url is None:
        if file is not None:
            raise SettingsError(
                f"--broker-password-file {file} is given but no broker; pass --broker "
                "redis://host:6379/0 or set [daemon] broker in the config",
                key="broker_password_file",
                value=str(file),
            )
        return config
    if file is not None:
        if url.password is not None:
            raise SettingsError(
                f"the broker URL {url.redacted} holds a password and --broker-password-file "
                f"{file} gives one too; take the password out of the URL",
                key="broker_password_file",
                value=str(file),
            )
        url = url.with_password(read_password_file(file))
    elif url.password is None and environ.get(PASSWORD_VARIABLE):
        url = url.with_password(environ[PASSWORD_VARIABLE])
    check_exposure(url, insecure=args.insecure)
    return dataclasses.replace(config, daemon=dataclasses.replace(config.daemon, broker=url))


def _password_readable_in_config(config: Config) -> bool:
    from bridge.permissions import readable_by_others

    broker = config.daemon.broker
    return (
        broker is not None
        and broker.password is not None
        and config.path is not None
        and readable_by_others(config.path)
    )


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
            f"concurrency {args.concurrency} is not allowed; use 1 or more (the jobs share "
            "one copy of the model; each needs room for its passes)",
            key="concurrency",
            value=args.concurrency,
        )
    from bridge.jobs.worker import ModelCache
    from bridge.models.runner import keep_freed_memory_for

    batching = _batching(args)
    config, url = broker_config(args)
    redis = connect_checked(url)
    keep_freed_memory_for(args.device)  # before the worker's threads start, CPU work only
    from bridge.daemon import stop_signals

    stop = threading.Event()
    worker = StudioWorker(
        redis,
        device=args.device,
        concurrency=args.concurrency,
        paths=config.paths,
        models=ModelCache(batching=batching),
        heartbeat_timeout_seconds=args.heartbeat_timeout,
    )
    # The daemon's stops: SIGTERM, Ctrl-C, and on Windows Ctrl-Break and closing the
    # console; each lets the running jobs go back to the broker's queue.
    with stop_signals(stop):
        worker.run(stop)
    return EXIT_OK


def _batching(args: argparse.Namespace) -> BatchingOptions:
    """``--cross-job-batch``, else the device's own batch size (one job's passes already
    run that many segments, so a shared pass fits where one job's does).

    Raises:
        SettingsError: A cross-job batch below 1.
    """
    from bridge.errors import DeviceUnavailable
    from bridge.models.batching import BatchingOptions
    from bridge.models.runner import default_batch_size, resolve_device

    if args.cross_job_batch is not None:
        return BatchingOptions(max_segments=args.cross_job_batch)
    try:
        device = resolve_device(args.device)
    except DeviceUnavailable:
        return BatchingOptions(max_segments=1)  # each job fails with the device's message
    return BatchingOptions(max_segments=default_batch_size(device))


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
