"""Separate several files from Python with one warm model, showing progress.

    python examples/keep_model_warm.py OUTDIR FILE...

The same calls the CLI makes: settings once, a :class:`~bridge.jobs.worker.ModelCache`
that loads the model once (weights looked up offline first), then one
:func:`~bridge.pipeline.run.run_job` per input, which reserves its stem folder,
separates and publishes the stems.
"""

from __future__ import annotations

import secrets
import sys
from pathlib import Path

from bridge.errors import StemBridgeError
from bridge.jobs.worker import ModelCache
from bridge.manifest import read_manifest
from bridge.names import stem_folder
from bridge.pipeline.progress import Progress
from bridge.pipeline.run import NoResults, run_job
from bridge.pipeline.spec import JobSpec
from bridge.settings import EffectsSettings, SeparationSettings


def show(progress: Progress) -> None:
    print(f"\r{progress.stage:>10} {progress.fraction:6.1%}", end="", file=sys.stderr)


def main(out_dir: Path, inputs: list[Path]) -> int:
    settings = SeparationSettings(stems=("vocals", "no_vocals"))
    models = ModelCache()
    failures = 0
    for path in inputs:
        source = path.absolute()
        # The vocals get the bundled polish.
        spec = JobSpec(
            input=str(source),
            folder=str(stem_folder(out_dir.absolute(), source)),
            separation=settings,
            effects=EffectsSettings(preset="vocal-polish"),
        )
        try:
            result = run_job(
                secrets.token_hex(6),
                spec,
                results=NoResults(),
                model_for=models.model,
                on_progress=show,
            )
        except StemBridgeError as exc:
            print(f"\n{exc}", file=sys.stderr)
            failures += 1
            continue
        stems = [stem["path"] for stem in read_manifest(result.manifest)["stems"]]
        print(f"\n{path.name}: {stems} in {result.folder}")
    return 1 if failures else 0


if __name__ == "__main__":
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    raise SystemExit(main(Path(sys.argv[1]), [Path(arg) for arg in sys.argv[2:]]))
