"""``stembridge evaluate`` end to end: tiny datasets in each layout, a random-init model,
estimates from the true and from swapped sources, the report, resuming, bad input."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bridge.cli import EXIT_INPUT, EXIT_OK, EXIT_USAGE, main
from bridge.evaluate.candidates import estimates_candidate, lineup_candidate, pipeline_separator
from bridge.evaluate.dataset import find_dataset
from bridge.evaluate.metrics import METRICS
from bridge.evaluate.run import evaluate
from bridge.jobs.worker import ModelCache
from bridge.settings import SeparationSettings

from evaluation_data import SOURCES, estimates, folders_dataset, musdb18hq, sources, write_track
from lean import ALL_EXTRAS, run_without
from processes import wait_for
from programs import required_program
from signals import write_audio

DUO = ("vocals", "instrumental")


def results(report: Path) -> dict:
    return json.loads((report / "results.json").read_text())


def values(document: dict, model: str, metric: str = "SDR") -> dict[str, float]:
    return {
        row["stem"]: row["value"]
        for row in document["summary"]
        if row["model"] == model and row["metric"] == metric
    }


def test_musdb18hq_scored_with_a_model_and_true_and_swapped_estimates(
    model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a MUSDB18-HQ folder of two test tracks, the true sources and swapped ones
    root = musdb18hq(tmp_path / "musdb18hq", 2)
    true = estimates(tmp_path / "true", root / "test")
    swapped = estimates(tmp_path / "swapped", root / "test", swap=True)
    report = tmp_path / "report"
    # When a random-init model and both folders are evaluated
    argv = ["evaluate", str(root), "--model", "htdemucs", "-o", str(report)]
    code = main([*argv, "--estimates", str(true), "--estimates", str(swapped)])
    # Then everything is scored: the true sources very high, swapped ones low
    assert code == EXIT_OK
    document = results(report)
    assert document["dataset"]["layout"] == "musdb18hq"
    assert document["tracks"] == ["Song 1", "Song 2"]
    assert [m["name"] for m in document["models"]] == ["htdemucs", "true", "swapped"]
    assert document["models"][0]["separated_now"] == 2
    assert all(v > 60 for v in values(document, "true").values()), values(document, "true")
    assert all(v > 60 for v in values(document, "true", "uSDR").values())
    assert all(v < 0 for v in values(document, "swapped").values()), values(document, "swapped")
    assert set(values(document, "htdemucs")) == set(SOURCES)
    # And the CSV has a row per track x stem x metric x model
    with (report / "results.csv").open() as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == 2 * len(SOURCES) * len(METRICS) * 3
    assert {r["track"] for r in rows} == {"Song 1", "Song 2"}
    assert {r["model"] for r in rows} == {"htdemucs", "true", "swapped"}
    # And the terminal shows the table, the split of the time and the plots exist
    out = capsys.readouterr()
    assert "SI-SDR" in out.out and "htdemucs" in out.out
    assert "separated 2 track(s)" in out.err
    html = (report / "report.html").read_text()
    for name in ("Song 1", "Song 2", "htdemucs", "swapped"):
        assert name in html
    assert (report / "plots" / "sdr_by_stem.png").stat().st_size > 0
    assert len(list((report / "plots").glob("track-*.png"))) == 2
    # When the model alone is evaluated again into the same folder
    assert main([*argv, "--json"]) == EXIT_OK
    # Then nothing is separated again, and the scores are the same
    again = json.loads(capsys.readouterr().out)
    assert again["models"][0]["separated_now"] == 0
    assert values(again, "htdemucs") == values(document, "htdemucs")


def test_musdb18_stem_mp4_through_musdb_and_stempeg(model_dir: Path, tmp_path: Path) -> None:
    required_program("ffmpeg", package="ffmpeg", purpose="MUSDB18's .stem.mp4 is not tested")
    import stempeg

    # Given MUSDB18's layout: a test track as one .stem.mp4 (mixture, drums, bass, other,
    # vocals as AAC streams, as the dataset has them)
    root = tmp_path / "musdb18"
    (root / "train").mkdir(parents=True)
    (root / "test").mkdir()
    stems = sources(1)
    order = ("drums", "bass", "other", "vocals")
    data = np.stack([np.sum(list(stems.values()), axis=0), *(stems[s] for s in order)])
    stempeg.write_stems(
        str(root / "test" / "Song 1.stem.mp4"),
        data,
        sample_rate=44100,
        writer=stempeg.StreamsWriter(codec="aac", bitrate=256000),
    )
    # And the true sources as the dataset decodes them, and swapped ones
    decoded, rate = stempeg.read_stems(str(root / "test" / "Song 1.stem.mp4"), dtype=np.float32)
    for index, stem in enumerate(order, start=1):
        write_audio(tmp_path / "true" / "Song 1" / f"{stem}.wav", decoded[index], rate, "PCM_24")
        other = order[index % 4]
        write_audio(tmp_path / "swapped" / "Song 1" / f"{other}.wav", decoded[index], rate, "FLOAT")
    report = tmp_path / "report"
    # When the model and both are evaluated
    code = main(
        [
            "evaluate",
            str(root),
            "--model",
            "htdemucs",
            "--estimates",
            str(tmp_path / "true"),
            "--estimates",
            str(tmp_path / "swapped"),
            "-o",
            str(report),
        ]
    )
    # Then the track is separated from its decoded mixture and scored
    assert code == EXIT_OK
    text = (report / "results.json").read_text()
    assert "Infinity" not in text and "NaN" not in text  # JSON has neither
    document = json.loads(text)
    assert document["dataset"]["layout"] == "musdb18"
    assert document["tracks"] == ["Song 1"]
    assert set(values(document, "htdemucs")) == set(SOURCES)
    assert all(v > 60 for v in values(document, "true").values())
    assert all(v < 0 for v in values(document, "swapped").values())
    # And the decoded mixture, only the separation's input, is gone again
    assert not list((report / "decoded").glob("*.wav"))


def test_folders_sum_the_models_stems_and_say_what_is_left_out(
    model_dir: Path, tmp_path: Path
) -> None:
    # Given a folder of tracks with vocals and instrumental references only
    root = folders_dataset(tmp_path / "songs", 2, DUO)
    report = tmp_path / "report"
    # When a four-source model with a routed stem is evaluated
    code = main(
        [
            "evaluate",
            str(root),
            "--model",
            "htdemucs",
            "--stems",
            "vocals@hdemucs_mmi,drums,bass,other",
            "-o",
            str(report),
        ]
    )
    # Then instrumental is scored as the sum of the model's other stems
    assert code == EXIT_OK
    document = results(report)
    assert document["dataset"]["layout"] == "folders"
    names = [m["name"] for m in document["models"]]
    assert names == ["htdemucs, vocals@hdemucs_mmi"]
    assert document["models"][0]["lineup"]["vocals"] == {"models": ["hdemucs_mmi"]}
    for name in names:
        assert set(values(document, name)) == set(DUO)
    # And the model's own sources, which the dataset cannot make, are left out, said once
    left = {(item["model"], item["stem"]) for item in document["left_out"]}
    assert left == {(n, s) for n in names for s in ("drums", "bass", "other")}
    assert "left out" in (report / "report.html").read_text().lower()


class Interrupted(Exception):
    """Stands for the process being stopped part way."""


def test_an_interrupted_run_resumes_without_separating_a_track_twice(
    model_dir: Path, tmp_path: Path
) -> None:
    # Given three tracks and two lineups separating through the real pipeline
    dataset = find_dataset(folders_dataset(tmp_path / "songs", 3, DUO))
    candidates = (
        lineup_candidate(SeparationSettings(model="htdemucs")),
        lineup_candidate(SeparationSettings(model="htdemucs_ft")),
    )
    report = tmp_path / "report"
    real = pipeline_separator(ModelCache().model)
    separated: list[tuple[str, str]] = []

    def counting(limit: int | None):
        def separate(mixture: Path, folder: Path, settings: SeparationSettings) -> None:
            if limit is not None and len(separated) == limit:
                raise Interrupted
            real(mixture, folder, settings)
            separated.append((folder.parent.name, folder.name))

        return separate

    # When the run is stopped after three separations (mid-track: one lineup done)
    with pytest.raises(Interrupted):
        evaluate(dataset, candidates, report, separate=counting(3))
    # And run again to its end
    result = evaluate(dataset, candidates, report, separate=counting(None))
    # Then each track was separated once per lineup, never twice
    assert sorted(separated) == sorted((c.key, f"Song {i}") for c in candidates for i in (1, 2, 3))
    assert result.separated == {candidates[0].key: 1, candidates[1].key: 2}
    assert result.tracks == ["Song 1", "Song 2", "Song 3"]
    assert {s.model for s in result.scores} == {"htdemucs", "htdemucs_ft"}


def test_scoring_processes_give_what_scoring_in_line_gives(model_dir: Path, tmp_path: Path) -> None:
    # Given three tracks, one lineup and a folder of estimates, one track without a stem
    songs = folders_dataset(tmp_path / "songs", 3, DUO)
    true = estimates(tmp_path / "true", songs)
    (songs / "Song 2" / "vocals.wav").unlink()
    dataset = find_dataset(songs)
    candidates = (
        lineup_candidate(SeparationSettings(model="htdemucs")),
        estimates_candidate(true),
    )
    real = pipeline_separator(ModelCache().model)
    # When the tracks are scored in line, and by two scoring processes as they separate
    inline = evaluate(dataset, candidates, tmp_path / "inline", separate=real)
    pooled = evaluate(dataset, candidates, tmp_path / "pooled", separate=real, scorers=2)
    # Then both give the same scores (up to BLAS rounding: a scoring process has fewer
    # threads), skip the same track and say the same
    keys = [(s.track, s.model, s.stem, s.metric) for s in inline.scores]
    assert [(s.track, s.model, s.stem, s.metric) for s in pooled.scores] == keys and keys
    assert [s.value for s in pooled.scores] == pytest.approx(
        [s.value for s in inline.scores], rel=1e-6, abs=1e-6, nan_ok=True
    )
    assert [s.track for s in pooled.skipped] == [s.track for s in inline.skipped] == ["Song 2"]
    assert (pooled.unscored, pooled.left_out) == (inline.unscored, inline.left_out)
    assert pooled.separated == inline.separated == {candidates[0].key: 2, candidates[1].key: 0}
    assert pooled.scoring_seconds > 0


def test_scorers_must_be_a_whole_number_from_one(tmp_path: Path) -> None:
    songs = folders_dataset(tmp_path / "songs", 1, DUO)
    with pytest.raises(SystemExit) as stopped:
        main(["evaluate", str(songs), "--scorers", "0", "-o", str(tmp_path / "report")])
    assert stopped.value.code == EXIT_USAGE
    assert not (tmp_path / "report").exists()


def test_a_track_whose_files_changed_is_separated_and_scored_again(
    model_dir: Path, tmp_path: Path
) -> None:
    # Given an evaluation of two tracks, done
    songs = folders_dataset(tmp_path / "songs", 2, DUO)
    report = tmp_path / "report"
    argv = ["evaluate", str(songs), "--model", "htdemucs", "-o", str(report), "--json"]
    assert main(argv) == EXIT_OK
    first = results(report)
    # When one track's files are replaced by another song's and the evaluation runs again
    write_track(songs / "Song 1", sources(7, DUO))
    assert main(argv) == EXIT_OK
    # Then that track alone is separated again, and its new scores replace the old
    document = results(report)
    assert document["models"][0]["separated_now"] == 1
    assert values_of(document, "Song 1") != values_of(first, "Song 1")
    assert values_of(document, "Song 2") == values_of(first, "Song 2")


def values_of(document: dict, track: str) -> dict[tuple[str, str], float]:
    return {
        (row["stem"], row["metric"]): row["value"]
        for row in document["scores"]
        if row["track"] == track
    }


def test_a_killed_run_resumes_without_separating_a_track_twice(
    model_dir: Path, tmp_path: Path
) -> None:
    # Given an evaluation of three tracks running in a process of its own
    songs = folders_dataset(tmp_path / "songs", 3, DUO)
    report = tmp_path / "report"
    argv = ["evaluate", str(songs), "--model", "htdemucs", "-o", str(report), "--json"]
    child = subprocess.Popen(
        [sys.executable, "-m", "bridge", *argv],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    # When it is killed (SIGKILL) once its first track is separated
    try:
        wait_for(
            lambda: any(report.glob("estimates/*/*/manifest.json")) or child.poll() is not None,
            timeout=120,
            what="the first separation",
        )
    finally:
        child.kill()
        child.wait(timeout=30)
    finished = {p.parent.name for p in report.glob("estimates/*/*/manifest.json")}
    assert finished and len(finished) < 3, "the run must be killed part way"
    # And run again to its end
    assert main(argv) == EXIT_OK
    # Then only the tracks it had not finished were separated, each into its own folder
    document = results(report)
    assert document["models"][0]["separated_now"] == 3 - len(finished)
    assert document["tracks"] == ["Song 1", "Song 2", "Song 3"]
    (cache,) = (report / "estimates").iterdir()
    assert sorted(p.name for p in cache.iterdir() if p.is_dir()) == ["Song 1", "Song 2", "Song 3"]
    assert not [p for p in report.rglob("*") if ".stembridge-" in p.name and p.is_file()]


def test_bad_tracks_are_skipped_and_named_and_the_rest_is_scored(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a good track, one without its mixture, one without a stem, one whose reference
    # is shorter than the mixture and one whose reference has another rate
    root = tmp_path / "songs"
    write_track(root / "Good", sources(1, DUO))
    write_track(root / "No mixture", sources(2, DUO), mixture=False)
    write_track(root / "No vocals", {"instrumental": sources(3, DUO)["instrumental"]})
    write_track(root / "Short", sources(4, DUO))
    write_audio(root / "Short" / "vocals.wav", sources(4, DUO)["vocals"][:-100], subtype="FLOAT")
    write_track(root / "Rate", sources(5, DUO))
    write_audio(root / "Rate" / "vocals.wav", sources(5, DUO)["vocals"], 48000, "FLOAT")
    true = estimates(tmp_path / "true", root)
    report = tmp_path / "report"
    # When evaluated
    code = main(["evaluate", str(root), "--estimates", str(true), "-o", str(report)])
    # Then the good track is scored, and each other one is listed with why
    assert code == EXIT_OK
    document = results(report)
    assert document["tracks"] == ["Good"]
    reasons = {item["track"]: item["reason"] for item in document["skipped"]}
    assert set(reasons) == {"No mixture", "No vocals", "Short", "Rate"}
    assert "no mixture file" in reasons["No mixture"]
    assert "no reference for vocals" in reasons["No vocals"]
    assert str(root / "Short" / "vocals.wav") in reasons["Short"]
    assert "length 88100 frames" in reasons["Short"] and "88200" in reasons["Short"]
    assert str(root / "Rate" / "vocals.wav") in reasons["Rate"]
    assert "48000 Hz" in reasons["Rate"]
    assert "skipped" in capsys.readouterr().err
    html = (report / "report.html").read_text()
    assert all(track in html for track in reasons)


def test_nothing_scored_exits_non_zero_with_the_report_written(tmp_path: Path) -> None:
    root = tmp_path / "songs"
    write_track(root / "No mixture", sources(2, DUO), mixture=False)
    report = tmp_path / "report"
    code = main(["evaluate", str(root), "--estimates", str(tmp_path), "-o", str(report)])
    assert code == EXIT_INPUT
    assert results(report)["skipped"][0]["track"] == "No mixture"


def test_a_folder_without_tracks_is_refused_by_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "empty").mkdir()
    assert main(["evaluate", str(tmp_path / "empty"), "-o", str(tmp_path / "r")]) == EXIT_INPUT
    err = capsys.readouterr().err
    assert str(tmp_path / "empty") in err and "holds no tracks" in err
    assert not (tmp_path / "r").exists()
    # And an unknown --tracks name or a missing subset, likewise
    root = musdb18hq(tmp_path / "hq", 1)
    assert main(["evaluate", str(root), "--tracks", "Nope", "-o", str(tmp_path / "r")]) == 4
    assert "no track named 'Nope'; its tracks are Song 1" in capsys.readouterr().err
    (tmp_path / "subsetless").mkdir()
    write_track(tmp_path / "subsetless" / "A", sources(1, DUO))
    code = main(["evaluate", str(tmp_path / "subsetless"), "--subset", "train"])
    assert code == EXIT_INPUT
    assert "leave --subset out" in capsys.readouterr().err


def test_estimates_that_do_not_match_the_references_are_named_and_others_scored(
    tmp_path: Path,
) -> None:
    # Given two tracks, good estimates, and estimates one of which is too short
    root = folders_dataset(tmp_path / "songs", 2, DUO)
    good = estimates(tmp_path / "good", root)
    bad = estimates(tmp_path / "bad", root)
    short = bad / "Song 2" / "vocals.wav"
    write_audio(short, sources(2, DUO)["vocals"][:1000], subtype="FLOAT")
    report = tmp_path / "report"
    # When both are scored
    argv = ["evaluate", str(root), "--estimates", str(good), "--estimates", str(bad)]
    assert main([*argv, "-o", str(report)]) == EXIT_OK
    # Then the short one is named, its other track and the good folder scored
    document = results(report)
    (unscored,) = document["unscored"]
    assert unscored["track"] == "Song 2" and unscored["model"] == "bad"
    assert str(short) in unscored["reason"] and "length 1000" in unscored["reason"]
    assert {(s["track"], s["model"]) for s in document["scores"]} == {
        ("Song 1", "good"),
        ("Song 2", "good"),
        ("Song 1", "bad"),
    }


def test_without_the_extra_evaluate_names_it(tmp_path: Path) -> None:
    root = folders_dataset(tmp_path / "songs", 1, DUO)
    result = run_without(tmp_path, ALL_EXTRAS, ["evaluate", str(root), "-o", str(tmp_path / "r")])
    assert result.returncode == EXIT_USAGE, result.stderr
    assert "pip install 'stembridge[evaluate]'" in result.stderr
    assert "torch" not in result.stderr


def test_ensemble_flags_follow_separate(model_dir: Path, tmp_path: Path) -> None:
    from bridge.cli import _parser
    from bridge.cli.evaluate import lineups

    def names(*flags: str) -> list[str]:
        args = _parser().parse_args(["evaluate", str(tmp_path), *flags])
        return [s.lineup.name for s in lineups(args)]

    # Several --model are compared; --ensemble makes them one, as in separate; a+b is one
    assert names("--model", "htdemucs", "--model", "htdemucs_ft") == ["htdemucs", "htdemucs_ft"]
    assert names("--model", "htdemucs", "--model", "htdemucs_ft", "--ensemble", "avg_wave") == [
        "htdemucs + htdemucs_ft"
    ]
    assert names("--model", "htdemucs", "--model", "htdemucs+htdemucs_ft") == [
        "htdemucs",
        "htdemucs + htdemucs_ft",
    ]
