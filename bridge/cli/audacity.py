"""``stembridge audacity separate``: the selection in a running Audacity, split into stem tracks."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape

from bridge.cli.common import EXIT_OK
from bridge.cli.separate import (
    add_effects_options,
    add_model_options,
    add_output_options,
    effects_settings,
    output_settings,
    separation_settings,
)
from bridge.pipeline.spec import JobSpec

if TYPE_CHECKING:
    from bridge.jobs.worker import ModelCache


def register(commands: argparse._SubParsersAction) -> None:
    """Add ``audacity`` and its actions to the command line."""
    audacity = commands.add_parser("audacity", help="separate the selection in Audacity")
    actions = audacity.add_subparsers(title="audacity commands", required=True, metavar="ACTION")
    parser = actions.add_parser(
        "separate",
        help="separate the selected audio in a running Audacity into new tracks",
        description="Export the selection of a running Audacity (mod-script-pipe enabled) "
        "as 32-bit float WAV, separate it into stems, and import each stem as a new track "
        "named after it, starting at the selection's start. The selection is left as it "
        "was. Files: OUTDIR/selection-<time>.wav and OUTDIR/selection-<time>/<stem>.wav "
        "plus manifest.json.",
    )
    parser.add_argument(
        "-o",
        "--output",
        type=Path,
        help="folder for the export and the stems (default: stembridge's data folder, audacity/)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        dest="timeout_seconds",
        metavar="SECONDS",
        help="how long to wait for Audacity to answer a command (default 30; exports and "
        "imports get 600)",
    )
    add_model_options(parser, defaults=True)
    add_output_options(parser)
    add_effects_options(parser)
    parser.set_defaults(command=run)


def default_output() -> Path:
    """``<user data dir>/stembridge/audacity``: Audacity does not tell where its project is."""
    import platformdirs

    return Path(platformdirs.user_data_dir("stembridge")) / "audacity"


def run(args: argparse.Namespace, err: Console) -> int:
    """Connect, separate the selection, place the stems, print what was done."""
    from bridge.effects.plan import plan_effects
    from bridge.hosts.audacity import separate_selection
    from bridge.hosts.audacity_pipe import ScriptPipe
    from bridge.jobs.worker import ModelCache

    settings = separation_settings(args)
    output = output_settings(args)
    effects = effects_settings(args)
    plan_effects(effects, stems=settings.stem_plans, model_sources=settings.sources)
    folder = (args.output or default_output()).expanduser().resolve()

    with err.status("connecting to Audacity"):
        pipe = ScriptPipe(
            connect_timeout_seconds=args.timeout_seconds,
            command_timeout_seconds=args.timeout_seconds,
        )
    with pipe:
        models = ModelCache()
        with err.status(f"loading {settings.lineup.name}"):
            models.model(settings)
        folder.mkdir(parents=True, exist_ok=True)
        export_path = _new_export_path(folder)

        def separate(path: Path) -> Mapping[str, Path]:
            spec = JobSpec(
                input=str(path),
                folder=str(path.with_suffix("")),
                separation=settings,
                output=output,
                effects=effects,
                source="audacity",
            )
            return _separate_with_progress(spec, models, err)

        placed = separate_selection(pipe, export_path=export_path, separate=separate)
    for stem in placed:
        track = stem.track
        err.print(
            f"[green]✓[/green] track {track.index + 1} {escape(track.name)}: "
            f"{track.start_seconds} s to {track.end_seconds} s ({escape(str(stem.path))})",
            highlight=False,
        )
    return EXIT_OK


def _new_export_path(folder: Path) -> Path:
    """``selection-<local time>.wav``, numbered when that name is taken."""
    base = f"selection-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    path, number = folder / f"{base}.wav", 1
    while path.exists() or path.with_suffix("").exists():
        number += 1
        path = folder / f"{base}-{number}.wav"
    return path


def _separate_with_progress(spec: JobSpec, models: ModelCache, err: Console) -> Mapping[str, Path]:
    """The exported selection through the job path, with a progress bar."""
    import secrets

    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn

    from bridge.manifest import read_manifest
    from bridge.pipeline.progress import Progress as JobProgress
    from bridge.pipeline.run import NoResults, run_job

    bars = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[stage]}"),
        console=err,
    )
    with bars:
        task = bars.add_task("separating the selection", total=1.0, stage="analysing")

        def update(progress: JobProgress) -> None:
            bars.update(task, completed=progress.fraction, stage=progress.stage)

        result = run_job(
            secrets.token_hex(6),
            spec,
            results=NoResults(),
            model_for=models.model,
            on_progress=update,
        )
    stems = read_manifest(result.manifest)["stems"]
    return {stem["name"]: result.folder / stem["path"] for stem in stems}
