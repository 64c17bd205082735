"""StemBridge's output equals demucs.apply.apply_model's on the same weights and audio."""

from __future__ import annotations

import random
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from bridge.manifest import read_manifest
from bridge.models.catalog import MODELS
from bridge.models.loaded import LoadedModel
from bridge.pipeline.run import NoResults, run_job
from bridge.pipeline.spec import JobSpec
from bridge.settings import EffectsSettings, OutputSettings, SeparationSettings, TimeRange

from modelfiles import make_networks, write_hf_form
from reference import demucs_bag, separate_reference, separate_shifted_reference
from signals import SAMPLE_RATE, music, write_audio

TOLERANCE = 1e-4
FLOAT_WAV = OutputSettings(format="wav", bit_depth=32)


def run_stembridge(
    source: Path,
    out: Path,
    model_folder: Path,
    settings: SeparationSettings,
    time_range: TimeRange | None = None,
) -> dict[str, np.ndarray]:
    """Separate ``source`` through the whole job path; stems as ``(channels, frames)``."""
    model = LoadedModel.load(settings, folders=[model_folder], offline=True)
    spec = JobSpec(
        input=str(source),
        folder=str(out / source.stem),
        separation=settings,
        output=FLOAT_WAV,
        time_range=time_range or TimeRange(),
        # The raw model output: no residual added, so it must equal apply_model's.
        effects=EffectsSettings(exact_sum=False),
    )
    result = run_job("0123456789ab", spec, results=NoResults(), model_for=model.with_settings)
    return {
        stem["name"]: sf.read(str(result.folder / stem["path"]), dtype="float32", always_2d=True)[
            0
        ].T
        for stem in read_manifest(result.manifest)["stems"]
    }


@pytest.mark.parametrize("batch_size", [1, 3])
@pytest.mark.parametrize(
    "frames",
    [int(1.3 * SAMPLE_RATE), 2 * SAMPLE_RATE, 5 * SAMPLE_RATE + 17],
    ids=["shorter-than-a-segment", "exactly-one-segment", "not-a-multiple-of-the-block"],
)
def test_tiny_model_matches_apply_model(
    tiny_models: Path, tmp_path: Path, frames: int, batch_size: int
) -> None:
    # Given a float WAV and the tiny htdemucs in the Hugging Face form
    audio = music(frames)
    source = write_audio(tmp_path / "mix.wav", audio, subtype="FLOAT")
    spec = MODELS["htdemucs"]
    # When StemBridge and demucs separate it
    stems = run_stembridge(
        source, tmp_path / "out", tiny_models, SeparationSettings(batch_size=batch_size)
    )
    expected = separate_reference(demucs_bag(tiny_models, spec), audio)
    # Then every stem matches within 1e-4 and has the exact length
    for k, name in enumerate(spec.sources):
        assert stems[name].shape == (2, frames)
        np.testing.assert_allclose(stems[name], expected[k], atol=TOLERANCE, rtol=0)


def test_overlap_and_segment_match_apply_model(tiny_models: Path, tmp_path: Path) -> None:
    # Given a larger overlap and a shorter segment than the model's
    audio = music(4 * SAMPLE_RATE + 999, seed=4)
    source = write_audio(tmp_path / "mix.wav", audio, subtype="FLOAT")
    settings = SeparationSettings(overlap=0.5, segment_seconds=1.5, batch_size=2)
    # When both separate
    stems = run_stembridge(source, tmp_path / "out", tiny_models, settings)
    expected = separate_reference(
        demucs_bag(tiny_models, MODELS["htdemucs"]), audio, overlap=0.5, segment=1.5
    )
    # Then they agree
    for k, name in enumerate(MODELS["htdemucs"].sources):
        np.testing.assert_allclose(stems[name], expected[k], atol=TOLERANCE, rtol=0)


def test_shifts_apply_demucs_shift_trick(tiny_models: Path, tmp_path: Path) -> None:
    # Given two shifts; StemBridge draws offsets like apply_model, from random.Random(0)
    audio = music(3 * SAMPLE_RATE + 321, seed=9)
    source = write_audio(tmp_path / "mix.wav", audio, subtype="FLOAT")
    max_shift = SAMPLE_RATE // 2
    draws = random.Random(0)
    offsets = [draws.randint(0, max_shift) for _ in range(2)]
    # When both separate with those offsets
    stems = run_stembridge(
        source, tmp_path / "out", tiny_models, SeparationSettings(shifts=2, batch_size=2)
    )
    expected = separate_shifted_reference(
        demucs_bag(tiny_models, MODELS["htdemucs"]), audio, offsets=offsets, max_shift=max_shift
    )
    # Then the averaged shifted separations agree
    for k, name in enumerate(MODELS["htdemucs"].sources):
        np.testing.assert_allclose(stems[name], expected[k], atol=TOLERANCE, rtol=0)


def test_bag_runs_only_needed_specialists_and_matches(tiny_models: Path, tmp_path: Path) -> None:
    # Given htdemucs_ft (four specialists, demucs form) and only vocals + instrumental wanted
    audio = music(3 * SAMPLE_RATE, seed=5)
    source = write_audio(tmp_path / "mix.wav", audio, subtype="FLOAT")
    settings = SeparationSettings(model="htdemucs_ft", stems=("vocals", "instrumental"))
    # When both separate
    stems = run_stembridge(source, tmp_path / "out", tiny_models, settings)
    expected = separate_reference(demucs_bag(tiny_models, MODELS["htdemucs_ft"]), audio)
    # Then vocals match, and instrumental is the sum of the other three
    np.testing.assert_allclose(stems["vocals"], expected[3], atol=TOLERANCE, rtol=0)
    np.testing.assert_allclose(
        stems["instrumental"], expected[0] + expected[1] + expected[2], atol=TOLERANCE, rtol=0
    )


def test_hybrid_demucs_v3_matches_apply_model(tiny_models: Path, tmp_path: Path) -> None:
    # Given hdemucs_mmi (HDemucs: no fixed training length, segment from its bag file)
    audio = music(9 * SAMPLE_RATE + 77, seed=10)
    source = write_audio(tmp_path / "mix.wav", audio, subtype="FLOAT")
    spec = MODELS["hdemucs_mmi"]
    # When both separate, two segments per forward pass for StemBridge
    stems = run_stembridge(
        source, tmp_path / "out", tiny_models, SeparationSettings(model=spec.name, batch_size=2)
    )
    expected = separate_reference(demucs_bag(tiny_models, spec), audio)
    # Then they agree
    for k, name in enumerate(spec.sources):
        np.testing.assert_allclose(stems[name], expected[k], atol=TOLERANCE, rtol=0)


def test_mono_and_multichannel_match_per_channel_group(tiny_models: Path, tmp_path: Path) -> None:
    # Given a 3-channel file: channels 1-2 are a stereo pair, channel 3 a mono group
    audio = music(3 * SAMPLE_RATE, channels=3, seed=6)
    source = write_audio(tmp_path / "mix.wav", audio, subtype="FLOAT")
    bag = demucs_bag(tiny_models, MODELS["htdemucs"])
    # When separated
    stems = run_stembridge(source, tmp_path / "out", tiny_models, SeparationSettings())
    pair = separate_reference(bag, audio[:, :2])
    mono = separate_reference(bag, audio[:, 2:]).mean(axis=1)
    # Then stems keep 3 channels: the pair as demucs separates it, the mono channel as
    # demucs separates it doubled, averaged back to one channel
    for k, name in enumerate(MODELS["htdemucs"].sources):
        assert stems[name].shape == (3, audio.shape[0])
        np.testing.assert_allclose(stems[name][:2], pair[k], atol=TOLERANCE, rtol=0)
        np.testing.assert_allclose(stems[name][2], mono[k], atol=TOLERANCE, rtol=0)


def test_range_matches_apply_model_on_that_range(tiny_models: Path, tmp_path: Path) -> None:
    # Given a 6 s file and the range 1.5 s + 2.25 s
    audio = music(6 * SAMPLE_RATE, seed=7)
    source = write_audio(tmp_path / "mix.wav", audio, subtype="FLOAT")
    start, length = int(1.5 * SAMPLE_RATE), int(2.25 * SAMPLE_RATE)
    # When separated
    stems = run_stembridge(
        source,
        tmp_path / "out",
        tiny_models,
        SeparationSettings(stems=("vocals",)),
        TimeRange(start_seconds=1.5, length_seconds=2.25),
    )
    expected = separate_reference(
        demucs_bag(tiny_models, MODELS["htdemucs"]), audio[start : start + length]
    )
    # Then the stem is exactly that range, separated as demucs would
    assert stems["vocals"].shape == (2, length)
    np.testing.assert_allclose(stems["vocals"], expected[3], atol=TOLERANCE, rtol=0)


def test_official_htdemucs_configuration_matches(tmp_path: Path) -> None:
    # Given a randomly initialised network in the released htdemucs configuration
    spec = MODELS["htdemucs"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        write_hf_form(tmp_path / "models", spec, make_networks(spec, seed=11, official=True))
    frames = 9 * SAMPLE_RATE + 5
    audio = music(frames, seed=8)
    source = write_audio(tmp_path / "mix.wav", audio, subtype="FLOAT")
    # When separated eagerly with two segments per forward pass (compiling this size takes
    # minutes: benchmarks/cpu_speed.py measures the compiled core's difference from demucs)
    settings = SeparationSettings(batch_size=2, compiled_core="off")
    stems = run_stembridge(source, tmp_path / "out", tmp_path / "models", settings)
    expected = separate_reference(demucs_bag(tmp_path / "models", spec), audio)
    # Then it matches demucs within 1e-4
    for k, name in enumerate(spec.sources):
        np.testing.assert_allclose(stems[name], expected[k], atol=TOLERANCE, rtol=0)


def test_cancel_leaves_nothing_behind(tiny_models: Path, tmp_path: Path) -> None:
    # Given a job whose cancel event is set after the first forward pass
    source = write_audio(tmp_path / "mix.wav", music(6 * SAMPLE_RATE))
    settings = SeparationSettings()
    model = LoadedModel.load(settings, folders=[tiny_models], offline=True)
    spec = JobSpec(input=str(source), folder=str(tmp_path / "out" / source.stem))
    cancel = threading.Event()

    def on_progress(progress: object) -> None:
        if getattr(progress, "stage", "") == "separating":
            cancel.set()

    # When it runs
    from bridge.errors import JobCancelled

    with pytest.raises(JobCancelled):
        run_job(
            "0123456789ab",
            spec,
            results=NoResults(),
            model_for=model.with_settings,
            on_progress=on_progress,
            cancel=cancel,
        )
    # Then no stem, temporary file, manifest or folder created for them is left
    assert not (tmp_path / "out").exists()
