"""``stembridge evaluate``: score models on a dataset, with progress bars and a table.

Each ``--model`` is one lineup to compare; ``a+b`` is an ensemble of a and b (combined
by ``--ensemble``), as in the host scripts' model field. Without ``+``, ``--ensemble``
makes all the ``--model`` one ensemble, exactly as ``stembridge separate`` does.
``--stems`` (with its ``<stem>@<model>`` routes) applies to every lineup.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape

from bridge.cli.common import EXIT_INPUT, EXIT_OK, print_error
from bridge.cli.separate import add_model_options, separation_settings
from bridge.errors import SettingsError

if TYPE_CHECKING:
    from bridge.evaluate.candidates import Candidate
    from bridge.settings import SeparationSettings


def register(commands: argparse._SubParsersAction) -> None:
    """Add ``evaluate`` to the command line."""
    parser = commands.add_parser(
        "evaluate",
        help="measure separation quality on a dataset (SDR, SIR, ISR, SAR, uSDR, SI-SDR)",
        description="Separate every track of DATASET with each model (or score existing "
        "estimates) and compare them with the references: BSSEval v4 as SiSEC reports it, "
        "the MDX challenges' whole-track SDR (uSDR) and SI-SDR. Writes results.json, "
        "results.csv and report.html into REPORT_DIR; separations are cached there, so a "
        "run that was stopped resumes.",
    )
    parser.add_argument(
        "dataset",
        type=Path,
        metavar="DATASET",
        help="MUSDB18-HQ or MUSDB18 (.stem.mp4) folder, or a folder of "
        "<track>/mixture.<ext> + <track>/<stem>.<ext>",
    )
    parser.add_argument(
        "--subset", choices=("test", "train"), help="MUSDB18's subset (default test)"
    )
    parser.add_argument(
        "--tracks", nargs="+", default=(), metavar="TRACK", help="only these tracks (by name)"
    )
    parser.add_argument(
        "--estimates",
        type=Path,
        action="append",
        default=[],
        metavar="DIR",
        help="score DIR/<track>/<stem>.<ext> made elsewhere (may be given several times)",
    )
    parser.add_argument(
        "-o",
        "--output",
        type=Path,
        default=Path("evaluation"),
        metavar="REPORT_DIR",
        help="report and cache folder (default ./evaluation)",
    )
    add_model_options(parser, defaults=False)
    parser.add_argument(
        "--scorers",
        type=_positive,
        default=max(1, min(4, (os.cpu_count() or 1) - 1)),
        metavar="N",
        help="processes scoring tracks while the next ones separate (default: the cores "
        "but one, at most 4; each holds one track; 1 scores after each track)",
    )
    parser.add_argument(
        "--json", action="store_true", help="print results.json on stdout, no progress bars"
    )
    parser.set_defaults(command=run)


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not allowed; use a whole number from 1")
    return int(text)


def lineups(args: argparse.Namespace) -> list[SeparationSettings]:
    """The settings of each lineup to compare (see the module docstring); each is built
    and checked on its own, so models with different stems can be compared."""
    models = list(args.model or [])
    if not models:
        return [] if args.estimates else [separation_settings(args)]
    if args.ensemble is not None and not any("+" in model for model in models):
        return [separation_settings(args)]  # the flags of `separate`: one ensemble
    found = []
    for model in models:
        names = [name.strip() for name in model.split("+")]
        one = argparse.Namespace(**{**vars(args), "model": names})
        if len(names) == 1:  # the ensemble flags are for the a+b lineups
            one.ensemble = one.ensemble_weights = None
        found.append(separation_settings(one))
    return found


def run(args: argparse.Namespace, err: Console) -> int:
    """Evaluate and report; exit 0 when anything was scored, 4 when nothing was."""
    from bridge.extras import require

    require("evaluate", needed_by="stembridge evaluate")
    from bridge.evaluate.candidates import estimates_candidate, lineup_candidate
    from bridge.evaluate.dataset import find_dataset
    from bridge.evaluate.report import write_report

    settings = lineups(args)
    dataset = find_dataset(args.dataset, subset=args.subset, tracks=args.tracks)
    candidates = tuple(
        [lineup_candidate(s) for s in settings] + [estimates_candidate(d) for d in args.estimates]
    )
    names = [candidate.name for candidate in candidates]
    if len(set(names)) != len(names):
        raise SettingsError(
            f"two models would be reported as the same name ({', '.join(names)}); "
            "give each --model and --estimates once",
            key="model",
            value=names,
        )
    report_dir = args.output.expanduser().absolute()
    evaluation = _evaluate(dataset, candidates, report_dir, settings, args, err)
    files = write_report(evaluation, report_dir)
    if args.json:
        print(files["json"].read_text(encoding="utf-8"))
    else:
        _print_summary(evaluation, files, err)
    if not evaluation.scores:
        print_error(
            err,
            "stembridge: error:",
            f"{dataset.root}: nothing could be scored; see the skipped tracks in {files['json']}",
        )
        return EXIT_INPUT
    return EXIT_OK


def _evaluate(
    dataset: Any,
    candidates: tuple[Candidate, ...],
    report_dir: Path,
    settings: list[SeparationSettings],
    args: argparse.Namespace,
    err: Console,
) -> Any:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from bridge.evaluate.candidates import pipeline_separator
    from bridge.evaluate.run import TrackProgress, evaluate
    from bridge.jobs.worker import ModelCache
    from bridge.pipeline.progress import Progress as JobProgress

    if settings:
        from bridge.models.runner import keep_freed_memory_for

        keep_freed_memory_for(settings[0].device)  # before any thread starts
    bars = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[stage]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err,
        disable=args.json,
    )
    tracks = bars.add_task("tracks", total=len(dataset.tracks), stage="")
    step = bars.add_task("", total=None, stage="", visible=False)

    def on_track(progress: TrackProgress) -> None:
        bars.update(tracks, completed=progress.done, stage=escape(progress.track))
        bars.update(step, description=escape(progress.stage), completed=0, total=None)
        if progress.stage == "skipped":
            bars.console.print(f"[yellow]skipped[/yellow] {escape(progress.track)}")

    def on_job(progress: JobProgress) -> None:
        bars.update(step, completed=progress.done, total=progress.total, visible=True)

    separate = pipeline_separator(ModelCache().model, on_progress=on_job)
    with bars:
        return evaluate(
            dataset,
            candidates,
            report_dir,
            separate=separate,
            on_progress=on_track,
            scorers=args.scorers,
        )


def _print_summary(evaluation: Any, files: dict[str, Path], err: Console) -> None:
    from rich.table import Table

    from bridge.evaluate.report import table_rows

    out = Console(soft_wrap=True)
    header, rows = table_rows(evaluation)
    table = Table(title=f"{len(evaluation.tracks)} tracks (median; uSDR: mean)")
    for index, name in enumerate(header):
        table.add_column(name, justify="right" if index > 1 else "left")
    for row in rows:
        table.add_row(*map(escape, row))
    out.print(table)
    for item in evaluation.skipped:
        err.print(f"[yellow]skipped[/yellow] {escape(item.track)}: {escape(item.reason)}")
    for item in evaluation.unscored:
        err.print(
            f"[yellow]not scored[/yellow] {escape(item.model)} on {escape(item.track)}: "
            f"{escape(item.reason)}"
        )
    for item in evaluation.left_out:
        err.print(
            f"[dim]left out[/dim] {escape(item.model)} {escape(item.stem)}: {escape(item.reason)}"
        )
    separated = sum(evaluation.separated.values())
    err.print(
        f"separated {separated} track(s) in {evaluation.separation_seconds:.1f} s, scored in "
        f"{evaluation.scoring_seconds:.1f} s; report: {escape(str(files['html']))}",
        highlight=False,
    )
