"""What is evaluated: a lineup of models (one model, an ensemble, routed stems) that is
separated here, or a folder of estimates made elsewhere.

A lineup separates each track through :func:`bridge.pipeline.run.run_job`, exactly as
``stembridge separate`` would with the same flags, into
``REPORT_DIR/estimates/<key>/<track>/``: the pipeline publishes the stems and then the
manifest atomically, so a folder with its manifest is a finished separation and an
interrupted run resumes after it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from bridge.atomic import write_bytes
from bridge.manifest import MANIFEST_NAME
from bridge.names import folder_name
from bridge.pipeline.progress import OnProgress
from bridge.pipeline.spec import JobSpec
from bridge.settings import EffectsSettings, OutputSettings, SeparationSettings

if TYPE_CHECKING:
    from bridge.pipeline.run import ModelFor

#: Separates ``mixture`` with ``settings`` into the stem folder ``folder``.
Separator = Callable[[Path, Path, SeparationSettings], None]
#: Engine settings that change how fast a model runs, not what it gives.
_RUN_ONLY = ("device", "batch_size")
#: Float stems at the input's rate and length: nothing rounded before it is scored.
ESTIMATE_OUTPUT = OutputSettings(format="wav", bit_depth=32, pictures=False, overwrite=True)


@dataclass(frozen=True)
class Candidate:
    """One column of the results.

    Attributes:
        name: As the report shows it (the lineup's name, or the estimates folder's).
        key: Its folder name under ``REPORT_DIR/estimates`` and ``scores``.
        settings: The lineup's settings; ``None`` for a folder of estimates.
        estimates: The folder of ``<track>/<stem>.<ext>`` estimates; ``None`` for a lineup.
    """

    name: str
    key: str
    settings: SeparationSettings | None = None
    estimates: Path | None = None

    def folder(self, report_dir: Path, track: str) -> Path:
        """Where this candidate's stems of ``track`` are."""
        if self.estimates is not None:
            return self.estimates / track
        return report_dir / "estimates" / self.key / folder_name(track)

    def separated(self, report_dir: Path, track: str, source: str) -> bool:
        """Whether ``track`` needs no separation: estimates made elsewhere, or a finished
        one in the cache, made from the track's files as they are now (``source``, their
        :meth:`~bridge.evaluate.dataset.Track.fingerprint`)."""
        if self.settings is None:
            return True
        folder = self.folder(report_dir, track)
        try:
            made_from = _source_record(folder).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return False
        return (folder / MANIFEST_NAME).is_file() and made_from == source

    def separating(self, report_dir: Path, track: str, source: str) -> None:
        """Record which files of ``track`` (``source``) the separation about to start is
        made from (before it starts: its manifest then says it finished)."""
        folder = self.folder(report_dir, track)
        folder.parent.mkdir(parents=True, exist_ok=True)
        write_bytes(_source_record(folder), source.encode("utf-8"))


def _source_record(folder: Path) -> Path:
    """Beside a cached separation: the fingerprint of the track files it was made from."""
    return folder.with_name(f"{folder.name}.source")


def lineup_candidate(settings: SeparationSettings) -> Candidate:
    """A lineup, keyed by its name and a digest of every setting that shapes its stems
    (two runs with other ``--overlap`` values do not share a cache)."""
    shaping = {k: v for k, v in dataclasses.asdict(settings).items() if k not in _RUN_ONLY}
    digest = hashlib.sha256(json.dumps(shaping, sort_keys=True).encode()).hexdigest()[:10]
    name = settings.lineup.name
    slug = re.sub(r"[^A-Za-z0-9._+@-]+", "_", Path(name).name if "/" in name else name)
    return Candidate(name=name, key=f"{slug[:60]}-{digest}", settings=settings)


def estimates_candidate(folder: Path) -> Candidate:
    """A folder of estimates, named after it."""
    folder = Path(folder).expanduser().absolute()
    return Candidate(
        name=folder.name, key=f"estimates-{folder_name(folder.name)}", estimates=folder
    )


def pipeline_separator(model_for: ModelFor, *, on_progress: OnProgress | None = None) -> Separator:
    """Separation as ``stembridge separate`` runs it: one job per track through
    :func:`~bridge.pipeline.run.run_job`, float WAV stems, no effects, no pictures."""
    from bridge.pipeline.run import NoResults, run_job

    def separate(mixture: Path, folder: Path, settings: SeparationSettings) -> None:
        spec = JobSpec(
            input=str(mixture),
            folder=str(folder),
            separation=settings,
            output=ESTIMATE_OUTPUT,
            effects=EffectsSettings(),
            source="evaluate",
        )
        folder.parent.mkdir(parents=True, exist_ok=True)
        run_job(
            secrets.token_hex(6),
            spec,
            results=NoResults(),
            model_for=model_for,
            on_progress=on_progress,
        )

    return separate
