"""Separate several files from Python with one warm model, showing progress.

    python examples/keep_model_warm.py OUTDIR FILE...

The same calls the CLI makes: settings once, ``LoadedModel.load`` once (weights
looked up offline first), then ``prepare`` + ``separate_file`` per input.
"""

from __future__ import annotations

import sys
from pathlib import Path

from bridge.effects.plan import plan_effects
from bridge.errors import StemBridgeError
from bridge.models.catalog import get_spec
from bridge.models.loaded import LoadedModel
from bridge.separate import Progress, prepare, separate_file
from bridge.settings import EffectsSettings, OutputSettings, SeparationSettings, TimeRange


def show(progress: Progress) -> None:
    print(f"\r{progress.stage:>10} {progress.fraction:6.1%}", end="", file=sys.stderr)


def main(out_dir: Path, inputs: list[Path]) -> int:
    settings = SeparationSettings(stems=("vocals", "no_vocals"))
    separator = LoadedModel.load(settings)
    # The vocals get the bundled polish; the preset is checked once, before any audio.
    effects = plan_effects(
        EffectsSettings(preset="vocal-polish"),
        stems=settings.stem_plans,
        model_sources=get_spec(settings.model).sources,
    )
    failures = 0
    for path in inputs:
        try:
            prepared = prepare(
                path,
                folder=out_dir / path.stem,
                stems=settings.stem_plans,
                output=OutputSettings(),
                time_range=TimeRange(),
                effects=effects,
            )
            manifest = separate_file(prepared, separator=separator, on_progress=show)
        except StemBridgeError as exc:
            print(f"\n{exc}", file=sys.stderr)
            failures += 1
            continue
        print(f"\n{path.name}: {[stem.path for stem in manifest.stems]} in {prepared.folder}")
    return 1 if failures else 0


if __name__ == "__main__":
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    raise SystemExit(main(Path(sys.argv[1]), [Path(arg) for arg in sys.argv[2:]]))
