"""Host-facing job commands: ``submit``, ``status``, ``jobs``, ``cancel``.

Host scripts call these, so they answer fast: none imports torch or numpy. Only
``submit --wait`` without a running daemon separates in this process (and then
imports the engine).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import threading
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from bridge.cli.common import (
    EXIT_CANCELLED,
    EXIT_OK,
    add_config_option,
    config_from,
    exit_code_for_kind,
    print_error,
)
from bridge.cli.separate import (
    add_effects_options,
    add_model_options,
    add_output_options,
    add_range_options,
    effects_settings,
    output_settings,
    separation_settings,
)
from bridge.documents import parse_json
from bridge.effects.plan import plan_effects
from bridge.errors import SettingsError, UnreadableAudio
from bridge.jobs.job import FINAL, STATES, Job
from bridge.jobs.status_file import update_status
from bridge.jobs.store import JobStore
from bridge.names import check_path_text, stem_folder
from bridge.owners import owner_id
from bridge.pipeline.spec import PRIORITY_INTERACTIVE, JobSpec
from bridge.settings import TimeRange

#: How often ``--wait`` looks at the job.
FOLLOW_INTERVAL_SECONDS = 0.2


def register(commands: argparse._SubParsersAction) -> None:
    """Add ``submit``, ``status``, ``jobs`` and ``cancel`` to the command line."""
    submit = commands.add_parser(
        "submit",
        help="queue a file for separation (for host scripts; answers at once)",
        description="Queue FILE for the daemon and print the job id. Flags override the "
        "config's [separation], [output] and [effects]. With --wait, show progress and exit "
        "with the job's result; without a running daemon, --wait separates in this process.",
    )
    submit.add_argument("input", type=Path, metavar="FILE")
    submit.add_argument(
        "-o", "--output", type=Path, help="output folder; stems go to OUTDIR/<file name>/"
    )
    add_model_options(submit, defaults=False)
    add_range_options(submit)
    add_output_options(submit)
    add_effects_options(submit)
    submit.add_argument("--origin", help="JSON object handed back untouched (host data)")
    submit.add_argument("--wait", action="store_true", help="wait for the result")
    submit.add_argument("--json", action="store_true", help="print JSON")
    add_config_option(submit)
    submit.set_defaults(command=run_submit)

    status = commands.add_parser("status", help="one job's state, or the queue's")
    status.add_argument("job", nargs="?", help="job id (or a unique start of it)")
    status.add_argument("--json", action="store_true", help="print JSON")
    add_config_option(status)
    status.set_defaults(command=run_status)

    listing = commands.add_parser("jobs", help="recent jobs as a table")
    listing.add_argument("--limit", type=int, default=30, help="how many (default 30)")
    listing.add_argument("--state", choices=STATES, action="append", help="only these states")
    listing.add_argument("--json", action="store_true", help="print JSON")
    add_config_option(listing)
    listing.set_defaults(command=run_jobs)

    cancel = commands.add_parser("cancel", help="cancel a queued or running job")
    cancel.add_argument("job", help="job id (or a unique start of it)")
    add_config_option(cancel)
    cancel.set_defaults(command=run_cancel)


def run_submit(args: argparse.Namespace, err: Console) -> int:
    """Queue the file; with ``--wait``, follow it (or run it here) to its end."""
    from bridge.jobs.lock import daemon_running

    config = config_from(args)
    path = args.input.expanduser().resolve()
    check_path_text(path)
    if not path.is_file():
        raise UnreadableAudio(f"{path}: no such file; check the path", path=path)
    spec = JobSpec(
        input=str(path),
        folder=str(
            stem_folder(args.output.expanduser().resolve() if args.output else path.parent, path)
        ),
        separation=separation_settings(args, base=config.separation),
        output=output_settings(args, base=config.output),
        effects=effects_settings(args, base=config.effects),
        time_range=TimeRange(start_seconds=args.start, length_seconds=args.length),
        origin=_origin(args.origin),
        priority=PRIORITY_INTERACTIVE,
        source="submit",
    )
    # A bad preset is refused now, not when the daemon gets to the job.
    plan_effects(
        spec.effects,
        stems=spec.separation.stem_plans,
        model_sources=spec.separation.sources,
    )
    store = JobStore(config.daemon.state_dir)
    stat = path.stat()
    settings_key = hashlib.sha256(spec.to_json().encode()).hexdigest()[:16]
    job, created = store.submit(
        spec, dedupe_key=f"{path}|{stat.st_size}|{stat.st_mtime_ns}|{settings_key}"
    )
    if created:
        update_status(job)
    served = daemon_running(config.daemon.state_dir)
    if not args.wait:
        if args.json:
            print(json.dumps({**job.to_dict(), "daemon_running": served}, indent=2))
        else:
            print(job.id)
        if not served:
            err.print(
                "[yellow]no StemBridge daemon is running: the job waits until "
                "`stembridge serve` starts (or submit with --wait)[/yellow]"
            )
        return EXIT_OK
    job = _follow(store, job, err, quiet=args.json) if served else _run_here(store, job, err, args)
    return _report(job, err, as_json=args.json)


def _run_here(store: JobStore, job: Job, err: Console, args: argparse.Namespace) -> Job:
    """Run the job in this process (no daemon) to its end, retries included, following
    it like a daemon's."""
    from bridge.jobs.worker import ModelCache, Worker
    from bridge.models.runner import keep_freed_memory_for

    # Before the worker thread starts (see its docstring), and only for CPU work.
    keep_freed_memory_for(job.spec.separation.device)
    worker = Worker(store, models=ModelCache(), owner=owner_id())
    stop = threading.Event()
    thread = threading.Thread(target=worker.run_to_end, args=(job.id, stop), name="submit-worker")
    thread.start()
    try:
        return _follow(store, job, err, quiet=args.json)
    finally:
        stop.set()
        thread.join()


def _follow(store: JobStore, job: Job, err: Console, *, quiet: bool) -> Job:
    """Show the job's progress until it ends; Ctrl-C cancels it."""
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[stage]}"),
        TimeElapsedColumn(),
        console=err,
        disable=quiet,
    )
    try:
        with bar:
            task = bar.add_task(escape(Path(job.spec.input).name), total=1.0, stage=job.stage)
            while job.state not in FINAL:
                time.sleep(FOLLOW_INTERVAL_SECONDS)
                job = store.get(job.id)
                bar.update(task, completed=job.progress, stage=job.stage)
    except KeyboardInterrupt:
        job = store.cancel(job.id)
        err.print(f"[yellow]cancelling job {job.id}…[/yellow]")
        while job.state not in FINAL:
            time.sleep(FOLLOW_INTERVAL_SECONDS)
            job = store.get(job.id)
    return job


def _report(job: Job, err: Console, *, as_json: bool) -> int:
    if as_json:
        print(json.dumps(job.to_dict(), indent=2))
    if job.state == "done":
        if not as_json:
            print(job.manifest)
        return EXIT_OK
    if job.state == "cancelled":
        if not as_json:
            err.print(f"[yellow]job {job.id} was cancelled[/yellow]")
        return EXIT_CANCELLED
    if not as_json:
        print_error(err, f"job {job.id} failed:", job.error or "unknown error")
    return exit_code_for_kind(job.error_kind)


def run_status(args: argparse.Namespace, err: Console) -> int:
    """One job (``status JOB``) or a summary of the queue (``status``)."""
    from bridge.jobs.lock import daemon_running

    config = config_from(args)
    store = JobStore(config.daemon.state_dir)
    if args.job:
        job = store.get(args.job)
        if args.json:
            print(json.dumps(job.to_dict(), indent=2))
        else:
            line = f"{job.id} {job.state} {job.progress:.0%} {job.stage} {job.spec.input}"
            print(line + (f" — {job.error}" if job.error and job.state != "done" else ""))
        return EXIT_OK
    counts = {state: 0 for state in STATES}
    recent = store.list(limit=1000)
    for job in recent:
        counts[job.state] += 1
    summary: dict[str, Any] = {
        "daemon_running": daemon_running(config.daemon.state_dir),
        "store": str(store.path),
        "counts": counts,
        "running": [job.to_dict() for job in recent if job.state == "running"],
    }
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        state = "running" if summary["daemon_running"] else "not running"
        print(f"daemon {state}; " + ", ".join(f"{n} {state}" for state, n in counts.items()))
    return EXIT_OK


def run_jobs(args: argparse.Namespace, err: Console) -> int:
    """The most recent jobs."""
    config = config_from(args)
    store = JobStore(config.daemon.state_dir)
    jobs = store.list(limit=args.limit, states=tuple(args.state or STATES))
    if args.json:
        print(json.dumps([job.to_dict() for job in jobs], indent=2))
        return EXIT_OK
    table = Table(title=f"StemBridge jobs ({store.path})")
    for column in ("job", "state", "progress", "stage", "input", "age", "note"):
        table.add_column(column)
    now = time.time()
    for job in jobs:
        note = job.error or "" if job.state != "done" else (job.reused_from and "reused") or ""
        table.add_row(
            job.id,
            job.state,
            f"{job.progress:.0%}",
            job.stage,
            escape(Path(job.spec.input).name),
            _age(now - job.created),
            escape(note[:60]),
        )
    Console().print(table)
    return EXIT_OK


def run_cancel(args: argparse.Namespace, err: Console) -> int:
    """Cancel a job: at once if queued, at the worker's next step if running."""
    config = config_from(args)
    store = JobStore(config.daemon.state_dir)
    job = store.cancel(args.job)
    if job.state == "cancelled":
        update_status(job)
        print(f"{job.id} cancelled")
    elif job.state == "running":
        print(f"{job.id} cancelling: the worker stops it at its next step")
    else:
        print(f"{job.id} is already {job.state}; nothing to cancel")
    return EXIT_OK


def _origin(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    try:
        origin = parse_json(text)
    except ValueError as exc:
        raise SettingsError(
            f"--origin is not JSON ({exc}); pass an object like '{{\"track\": 3}}'",
            key="origin",
            value=text,
        ) from exc
    if not isinstance(origin, dict):
        raise SettingsError(
            "--origin must be a JSON object like '{\"track\": 3}'", key="origin", value=text
        )
    return origin


def _age(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
