"""``stembridge separate``: files in, stem files out, with progress bars."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape

from bridge.cli.common import EXIT_OK, error_entry, print_error
from bridge.errors import StemBridgeError
from bridge.models.catalog import DEFAULT_MODEL, MODELS
from bridge.pipeline.spec import JobSpec
from bridge.settings import (
    BIT_DEPTHS,
    DITHER_MODES,
    FORMATS,
    PRECISIONS,
    EffectsSettings,
    OutputSettings,
    SeparationSettings,
    TimeRange,
)

if TYPE_CHECKING:
    from bridge.models.loaded import LoadedModel
    from bridge.pipeline.run import Result

log = logging.getLogger(__name__)


def add_model_options(parser: argparse.ArgumentParser, *, defaults: bool) -> None:
    """``--model``, ``--stems`` and the engine options (``defaults``: fill in the defaults;
    otherwise unset options are ``None`` and the config decides)."""

    def default(value: object) -> object:
        return value if defaults else None

    parser.add_argument(
        "--model",
        default=default(DEFAULT_MODEL),
        help=f"one of {', '.join(MODELS)} (default {DEFAULT_MODEL})",
    )
    parser.add_argument(
        "--stems",
        help="comma-separated stems: sources (vocals,drums...), instrumental, no_<stem>, "
        "or <name>=<stem>+<stem> (default: every source)",
    )
    parser.add_argument(
        "--device", default=default("auto"), help="auto, cpu, cuda or cuda:N (default auto)"
    )
    parser.add_argument(
        "--shifts", type=int, default=default(0), help="random shifts to average, 0 = deterministic"
    )
    parser.add_argument(
        "--overlap", type=float, default=default(0.25), help="segment overlap, 0 to 0.99 (0.25)"
    )
    parser.add_argument("--segment", type=float, help="segment length in seconds")
    parser.add_argument(
        "--batch-size", type=int, help="segments per forward pass (default: 1 on CPU, more on GPU)"
    )
    parser.add_argument(
        "--precision", default=default("fp32"), choices=PRECISIONS, help="fp16/bf16 need CUDA"
    )


def add_output_options(parser: argparse.ArgumentParser) -> None:
    """``--format``, ``--bit-depth``, ``--sample-rate``, lossy quality, dither, ``--overwrite``,
    ``--no-pictures``."""
    parser.add_argument("--format", choices=FORMATS, help="output format (default: the input's)")
    parser.add_argument(
        "--bit-depth", type=int, choices=BIT_DEPTHS, help="16, 24 or 32 (float); default: input's"
    )
    parser.add_argument("--sample-rate", type=int, help="output Hz (default: the input's)")
    parser.add_argument(
        "--bitrate", type=int, dest="bitrate_kbps", metavar="KBPS", help="constant MP3 bitrate"
    )
    parser.add_argument(
        "--quality", type=float, help="MP3 VBR / OGG quality, 0 (smallest) to 10 (best)"
    )
    parser.add_argument(
        "--dither",
        choices=DITHER_MODES,
        help="TPDF dither when rounding to PCM (auto: when writing fewer bits than the input)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace existing stems")
    parser.add_argument(
        "--no-pictures",
        dest="pictures",
        action="store_false",
        default=None,
        help="draw no waveform/spectrogram PNGs beside the stems",
    )


def add_effects_options(parser: argparse.ArgumentParser) -> None:
    """``--preset``, exact-sum and loudness options (unset ones leave it to the preset)."""
    parser.add_argument(
        "--preset",
        help="effects preset name or .toml path (stembridge presets list; default clean)",
    )
    parser.add_argument(
        "--exact-sum",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="put the model's residual into one stem so the stems add back to the input "
        "(default: on when no effects are applied)",
    )
    parser.add_argument(
        "--residual-to", dest="residual_stem", metavar="STEM", help="stem taking the residual"
    )
    parser.add_argument(
        "--loudness", type=float, dest="loudness_lufs", metavar="LUFS", help="normalise each stem"
    )
    parser.add_argument(
        "--match-mix", action="store_true", help="normalise each stem to the mix's loudness"
    )
    parser.add_argument(
        "--true-peak",
        type=float,
        dest="true_peak_dbtp",
        metavar="DBTP",
        help="true-peak ceiling for normalisation (default -1)",
    )


def add_range_options(parser: argparse.ArgumentParser) -> None:
    """``--start`` and ``--length`` in seconds."""
    parser.add_argument("--start", type=float, default=0.0, help="range start in seconds")
    parser.add_argument("--length", type=float, help="range length in seconds (default: to end)")


def register(commands: argparse._SubParsersAction) -> None:
    """Add ``separate`` to the command line."""
    parser = commands.add_parser(
        "separate",
        help="separate audio files into stems",
        description="Separate audio files into stems: OUTDIR/<file name>/<stem>.<ext> plus "
        "manifest.json. Stems keep the input's sample rate, channels, bit depth and "
        "exact length unless told otherwise.",
    )
    parser.add_argument("inputs", nargs="+", type=Path, metavar="INPUT", help="audio files")
    parser.add_argument(
        "-o", "--output", type=Path, help="output folder (default: each input's own folder)"
    )
    add_model_options(parser, defaults=True)
    add_range_options(parser)
    add_output_options(parser)
    add_effects_options(parser)
    parser.add_argument(
        "--json", action="store_true", help="print one JSON result on stdout, no progress bars"
    )
    parser.set_defaults(command=run)


def separation_settings(
    args: argparse.Namespace, *, base: SeparationSettings | None = None
) -> SeparationSettings:
    """``base`` (default: the built-in defaults) with the flags that were given."""
    from bridge.stems import parse_stem_list

    given = {
        "model": args.model,
        "stems": parse_stem_list(args.stems) if args.stems else None,
        "device": args.device,
        "shifts": args.shifts,
        "overlap": args.overlap,
        "segment_seconds": args.segment,
        "batch_size": args.batch_size,
        "precision": args.precision,
    }
    changes = {key: value for key, value in given.items() if value is not None}
    return dataclasses.replace(base or SeparationSettings(), **changes)


def output_settings(
    args: argparse.Namespace, *, base: OutputSettings | None = None
) -> OutputSettings:
    """``base`` (default: the built-in defaults) with the output flags that were given."""
    given = {
        "format": args.format,
        "bit_depth": args.bit_depth,
        "sample_rate": args.sample_rate,
        "bitrate_kbps": args.bitrate_kbps,
        "quality": args.quality,
        "dither": args.dither,
        "pictures": args.pictures,
    }
    changes: dict[str, Any] = {key: value for key, value in given.items() if value is not None}
    if args.overwrite:
        changes["overwrite"] = True
    return dataclasses.replace(base or OutputSettings(), **changes)


def effects_settings(
    args: argparse.Namespace, *, base: EffectsSettings | None = None
) -> EffectsSettings:
    """``base`` (default: the built-in defaults) with the effects flags that were given."""
    given = {
        "preset": args.preset,
        "exact_sum": args.exact_sum,
        "residual_stem": args.residual_stem,
        "loudness_lufs": args.loudness_lufs,
        "true_peak_dbtp": args.true_peak_dbtp,
    }
    changes: dict[str, Any] = {key: value for key, value in given.items() if value is not None}
    if args.match_mix:
        changes.update(match_mix=True, loudness_lufs=None)
    elif args.loudness_lufs is not None:
        changes["match_mix"] = False
    return dataclasses.replace(base or EffectsSettings(), **changes)


def run(args: argparse.Namespace, err: Console) -> int:
    """Separate every input through the job path; the exit code is that of the first failure.

    Each input is one job (:func:`bridge.pipeline.run.run_job`), as a daemon would run
    it: its folder is reserved (``name (2)`` when another job's stems are there), an
    identical result already in it is kept, running out of memory retries smaller.
    """
    from bridge.effects.plan import plan_effects
    from bridge.models.catalog import get_spec

    settings = separation_settings(args)
    output = output_settings(args)
    effects = effects_settings(args)
    time_range = TimeRange(start_seconds=args.start, length_seconds=args.length)
    # A bad preset or stem list is refused once, before any input is looked at.
    plan_effects(effects, stems=settings.stem_plans, model_sources=get_spec(settings.model).sources)

    results: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    specs = []
    for path in args.inputs:
        try:
            specs.append(_spec(path, args.output, settings, output, effects, time_range))
        except StemBridgeError as exc:
            errors.append(error_entry(path, exc))
            if not args.json:
                print_error(err, "✗", exc)
    if specs:
        _run_jobs(specs, args, err, results, errors)
    if args.json:
        print(json.dumps({"ok": not errors, "results": results, "errors": errors}, indent=2))
    return errors[0]["exit_code"] if errors else EXIT_OK


def _spec(
    path: Path,
    output_dir: Path | None,
    settings: SeparationSettings,
    output: OutputSettings,
    effects: EffectsSettings,
    time_range: TimeRange,
) -> JobSpec:
    from bridge.names import check_path_text, stem_folder

    source = path.expanduser().absolute()
    check_path_text(source)
    root = (output_dir or source.parent).expanduser().absolute()
    return JobSpec(
        input=str(source),
        folder=str(stem_folder(root, source)),
        separation=settings,
        output=output,
        effects=effects,
        time_range=time_range,
        source="separate",
    )


def _run_jobs(
    specs: list[JobSpec],
    args: argparse.Namespace,
    err: Console,
    results: list[dict[str, Any]],
    errors: list[dict[str, Any]],
) -> None:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from bridge.errors import ModelError, SettingsError
    from bridge.jobs.worker import ModelCache
    from bridge.manifest import read_manifest
    from bridge.models.runner import keep_freed_memory_for
    from bridge.pipeline.progress import Progress as JobProgress

    # Before any thread starts (see its docstring), and only for CPU work.
    keep_freed_memory_for(specs[0].separation.device)
    models = ModelCache()
    try:
        models.model(specs[0].separation)  # once, before any progress bar
    except (ModelError, SettingsError) as exc:
        # Every input would fail the same way: said once.
        errors.extend(error_entry(Path(spec.input), exc) for spec in specs)
        if not args.json:
            print_error(err, "stembridge: error:", exc)
        return

    bars = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[stage]}"),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err,
        disable=args.json,
    )
    with bars:
        for spec in specs:
            name = Path(spec.input).name
            task = bars.add_task(escape(name), total=None, stage="analysing")

            def update(progress: JobProgress, task: Any = task) -> None:
                bars.update(
                    task, completed=progress.done, total=progress.total, stage=progress.stage
                )

            try:
                result = _run_one(spec, models.model, update)
            except StemBridgeError as exc:
                errors.append(error_entry(Path(spec.input), exc))
                bars.update(task, stage="failed")
                if not args.json:
                    print_error(err, "✗", exc)
                continue
            entry = read_manifest(result.manifest)
            entry["folder"] = str(result.folder)
            results.append(entry)
            if not args.json:
                stems = escape(", ".join(stem["path"] for stem in entry["stems"]))
                timings = entry.get("timings", {})
                done = (
                    f"in {timings['total_seconds']:.1f} s "
                    f"({timings['realtime_factor']:.2f}x realtime)"
                    if not (result.kept or result.reused_from)
                    else "(already there)"
                )
                err.print(
                    f"[green]✓[/green] {escape(name)} → {escape(str(result.folder))} ({stems}) "
                    + done,
                    highlight=False,
                )


def _run_one(
    spec: JobSpec, model_for: Callable[[SeparationSettings], LoadedModel], on_progress: Any
) -> Result:
    """One input as one job; running out of memory tries again with less (see
    :mod:`bridge.jobs.retry`), as the daemon's worker would."""
    import secrets

    from bridge.jobs.retry import out_of_memory, smaller
    from bridge.pipeline.run import NoResults, run_job

    job_id, attempt = secrets.token_hex(6), 1
    while True:
        try:
            return run_job(
                job_id,
                spec,
                attempt=attempt,
                results=NoResults(),
                model_for=model_for,
                on_progress=on_progress,
            )
        except StemBridgeError:
            raise
        except Exception as exc:
            less = smaller(spec) if out_of_memory(exc) else None
            if less is None:
                raise
            log.warning("%s: out of memory; trying again with %s", spec.input, less.separation)
            spec, attempt = less, attempt + 1
