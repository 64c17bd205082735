"""An evaluation run: each track separated once per candidate, then scored, in order.

Per track: its references are checked against the mixture (a bad track is skipped
before any model runs), each lineup that has no finished separation of it in the cache
separates it (:mod:`bridge.evaluate.candidates`), and every candidate's stems are read
and scored (:mod:`bridge.evaluate.scoring`), here or, with ``scorers``, in processes
of their own while the next tracks separate. A lineup's scores are cached beside its
stems (``REPORT_DIR/scores/<key>/<track>.json``, written atomically), so a run that was
stopped resumes where it was without separating or scoring a track twice. Only one
track's audio is in memory at a time per scoring process.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import multiprocessing
import os
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bridge.atomic import write_bytes
from bridge.errors import AudioError, DatasetError
from bridge.evaluate import scorer_process
from bridge.evaluate.candidates import Candidate, Separator
from bridge.evaluate.dataset import (
    Dataset,
    Skipped,
    Track,
    check_references,
    decoded_mixture,
    estimate_files,
    read_estimates,
    read_references,
)
from bridge.evaluate.scoring import LeftOut, Score, score_track
from bridge.names import folder_name

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrackProgress:
    """Where a run is: ``done`` of ``total`` tracks, and what happens to ``track`` now
    (``checking``, ``separating <model>``, ``scoring``, ``done``, ``skipped``)."""

    done: int
    total: int
    track: str
    stage: str


@dataclass(frozen=True)
class Unscored:
    """A candidate's stems of one track that could not be scored, and why."""

    track: str
    model: str
    reason: str


@dataclass(frozen=True)
class ModelLeftOut:
    """A stem left out of a candidate's scores (see :class:`~bridge.evaluate.scoring.LeftOut`)."""

    model: str
    stem: str
    reason: str


@dataclass
class Evaluation:
    """What a run found.

    Attributes:
        dataset: What was scored.
        candidates: In the order given.
        scores: Every value: track x model x stem x metric.
        skipped: Tracks not scored at all (no mixture, a stem missing, a bad reference).
        unscored: A candidate's track that could not be scored (its estimate missing
            or not matching the references).
        left_out: Stems a candidate or the dataset has that the other cannot make.
        separated: Separations run now, per candidate key (cached ones not counted).
        separation_seconds: Time spent separating (this run).
        scoring_seconds: Time spent reading stems and scoring (this run).
    """

    dataset: Dataset
    candidates: tuple[Candidate, ...]
    scores: list[Score] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    unscored: list[Unscored] = field(default_factory=list)
    left_out: list[ModelLeftOut] = field(default_factory=list)
    separated: dict[str, int] = field(default_factory=dict)
    separation_seconds: float = 0.0
    scoring_seconds: float = 0.0

    @property
    def tracks(self) -> list[str]:
        """The tracks with at least one score, in dataset order."""
        scored = {score.track for score in self.scores}
        return [track.name for track in self.dataset.tracks if track.name in scored]


def evaluate(
    dataset: Dataset,
    candidates: tuple[Candidate, ...],
    report_dir: Path,
    *,
    separate: Separator,
    on_progress: Callable[[TrackProgress], None] | None = None,
    scorers: int = 1,
) -> Evaluation:
    """Separate and score every track of ``dataset`` for every candidate.

    Args:
        dataset: The tracks.
        candidates: Lineups to separate, folders of estimates to score.
        report_dir: Holds the cache (``estimates/``, ``scores/``, ``decoded/``).
        separate: Runs one separation (:func:`~bridge.evaluate.candidates.pipeline_separator`).
        on_progress: Told as each track advances.
        scorers: Processes that score tracks while the next ones separate (BSSEval takes
            about a second per second of audio on one core, more than a GPU separation);
            1 scores each track here, after its separations. At most this many tracks
            wait to be scored, so memory stays bounded.

    Raises:
        StemBridgeError: A separation failed for another reason than its track's audio
            (a model that cannot load, a device): every track would fail the same way.
    """
    result = Evaluation(dataset, candidates, skipped=list(dataset.skipped))
    result.separated = {candidate.key: 0 for candidate in candidates}
    report = on_progress or (lambda progress: None)
    left_out: dict[tuple[str, str], str] = {}
    total = len(dataset.tracks)
    waiting: deque[tuple[str, Future[TrackScores]]] = deque()
    finished = 0

    def collect(track: str, scored: TrackScores) -> None:
        nonlocal finished
        finished += 1
        result.scoring_seconds += scored.seconds
        if scored.skipped is not None:
            log.info("%s: skipped: %s", track, scored.skipped)
            result.skipped.append(Skipped(track, scored.skipped))
            report(TrackProgress(finished, total, track, "skipped"))
            return
        result.scores.extend(scored.scores)
        result.unscored.extend(scored.unscored)
        for item in scored.left_out:
            left_out.setdefault((item.model, item.stem), item.reason)
        report(TrackProgress(finished, total, track, "done"))

    with _scoring_pool(scorers) as pool:
        for track in dataset.tracks:
            report(TrackProgress(finished, total, track.name, "checking"))
            try:
                check_references(track)
                source = track.fingerprint()
                for candidate in candidates:
                    settings = candidate.settings
                    if settings is not None and not candidate.separated(
                        report_dir, track.name, source
                    ):
                        stage = f"separating {candidate.name}"
                        report(TrackProgress(finished, total, track.name, stage))
                        started = time.monotonic()
                        candidate.separating(report_dir, track.name, source)
                        mixture = decoded_mixture(track, report_dir / "decoded")
                        separate(mixture, candidate.folder(report_dir, track.name), settings)
                        result.separation_seconds += time.monotonic() - started
                        result.separated[candidate.key] += 1
            except AudioError as exc:  # this track's files (a DatasetError, or its mixture)
                collect(track.name, TrackScores(skipped=str(exc)))
                continue
            if track.packed:
                # The decoded mixture was only the separations' input; the .stem.mp4 stays.
                (report_dir / "decoded" / f"{track.name}.wav").unlink(missing_ok=True)
            if pool is None:
                report(TrackProgress(finished, total, track.name, "scoring"))
                collect(track.name, score_track_of(track, source, candidates, report_dir))
                continue
            while len(waiting) >= scorers:
                name, future = waiting.popleft()
                collect(name, future.result())
            scoring = pool.submit(score_track_of, track, source, candidates, report_dir)
            waiting.append((track.name, scoring))
        for name, future in waiting:
            collect(name, future.result())
    result.left_out = [ModelLeftOut(m, s, reason) for (m, s), reason in left_out.items()]
    return result


@dataclass(frozen=True)
class TrackScores:
    """One track's scores for every candidate, or why it was skipped."""

    scores: list[Score] = field(default_factory=list)
    unscored: list[Unscored] = field(default_factory=list)
    left_out: list[ModelLeftOut] = field(default_factory=list)
    seconds: float = 0.0
    skipped: str | None = None


@contextlib.contextmanager
def _scoring_pool(scorers: int) -> Iterator[ProcessPoolExecutor | None]:
    """Processes to score in (started fresh: they need neither torch nor the models)."""
    if scorers <= 1:
        yield None
        return
    threads = max(1, (os.cpu_count() or 1) // (scorers + 1))  # a share left to separate
    with ProcessPoolExecutor(
        scorers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=scorer_process.start,
        initargs=(threads,),
    ) as pool:
        yield pool


def score_track_of(
    track: Track, source: str, candidates: tuple[Candidate, ...], report_dir: Path
) -> TrackScores:
    """Score ``track`` for every candidate from the stems on disk (the references are read
    once, and only when some candidate's scores are not cached for its files as they
    are, ``source``). Runs in a scoring process or in the caller's."""
    started = time.monotonic()
    scored = TrackScores()
    references = None
    try:
        for candidate in candidates:
            cache = report_dir / "scores" / candidate.key / f"{folder_name(track.name)}.json"
            cached = _read_cache(cache, source) if candidate.settings is not None else None
            if cached is None:
                folder = candidate.folder(report_dir, track.name)
                files = estimate_files(folder)
                if not files:
                    reason = f"{folder}: no estimates of this track; put <stem>.wav files there"
                    scored.unscored.append(Unscored(track.name, candidate.name, reason))
                    continue
                references = references or read_references(track)
                try:
                    estimates = read_estimates(files, references, track=track.name)
                except DatasetError as exc:
                    log.info("%s: %s not scored: %s", track.name, candidate.name, exc)
                    scored.unscored.append(Unscored(track.name, candidate.name, str(exc)))
                    continue
                scores, missing = score_track(
                    track.name,
                    candidate.name,
                    references.audio,
                    estimates,
                    sample_rate=references.sample_rate,
                )
                if candidate.settings is not None:
                    _write_cache(cache, source, scores, missing)
            else:
                scores, missing = cached
            scored.scores.extend(scores)
            scored.left_out.extend(ModelLeftOut(candidate.name, m.stem, m.reason) for m in missing)
    except AudioError as exc:  # the references cannot be read
        return TrackScores(seconds=time.monotonic() - started, skipped=str(exc))
    return dataclasses.replace(scored, seconds=time.monotonic() - started)


def _write_cache(
    path: Path, source: str, scores: list[Score], left_out: tuple[LeftOut, ...]
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "source": source,
        "scores": [asdict(score) for score in scores],
        "left_out": [asdict(item) for item in left_out],
    }
    write_bytes(path, json.dumps(document).encode())


def _read_cache(path: Path, source: str) -> tuple[list[Score], tuple[LeftOut, ...]] | None:
    """Scores an earlier run wrote for the track's files as they are now (``source``);
    ``None`` when there are none, they were for other files, or they cannot be read:
    then the track is scored again."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        if document.get("source") != source:
            log.info("%s: scored for other files of the track; scoring again", path)
            return None
        scores = [Score(**entry) for entry in document["scores"]]
        return scores, tuple(LeftOut(**entry) for entry in document["left_out"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        log.warning("%s: cached scores unreadable (%s); scoring again", path, exc)
        return None
