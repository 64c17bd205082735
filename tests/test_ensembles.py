"""Ensembles and per-stem routing end to end: ``stembridge separate`` with several
``--model`` and with ``--stems <stem>@<model>``, held to the models run alone.

The wave algorithms are held to python-audio-separator's own ``Ensembler`` on the
members' stems; the spectral ones to a whole-file computation with librosa's STFT
(the magnitude chosen bin by bin, the phase of the weighted mean). Routed stems are
the named models' stems, and with exact-sum the stems add back to the input.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from bridge.cli import EXIT_OK, EXIT_USAGE, main
from bridge.errors import SettingsError
from bridge.models.combined import CombinedModel
from bridge.models.ensemble import HOP, N_FFT, Blend
from bridge.models.groups import channel_groups
from bridge.pipeline.spec import JobSpec
from bridge.settings import SeparationSettings

from separator_reference import import_reference, missing
from signals import music, write_audio
from test_families import bs_roformer, mdx23c, write_msst

RATE = 44100
FRAMES = 2 * RATE + 777  # not a whole number of segments, chunks or STFT hops
DEMUCS = ("htdemucs", "htdemucs_ft", "hdemucs_mmi")
ENSEMBLE_FLAGS = ("--model", "htdemucs", "--model", "htdemucs_ft")


def separate(tmp_path: Path, source: Path, *flags: str) -> dict[str, np.ndarray]:
    """``stembridge separate`` to float WAV; the stems by name, ``(channels, frames)``."""
    out = tmp_path / "out"
    args = ["separate", str(source), "-o", str(out), "--overwrite", "--bit-depth", "32"]
    assert main([*args, "--no-pictures", *flags]) == EXIT_OK
    manifest = json.loads((out / source.stem / "manifest.json").read_text())
    return {
        stem["name"]: sf.read(str(out / source.stem / stem["path"]), dtype="float32")[0].T
        for stem in manifest["stems"]
    }


def manifest_of(tmp_path: Path, source: Path) -> dict[str, Any]:
    return json.loads((tmp_path / "out" / source.stem / "manifest.json").read_text())


@pytest.fixture
def mix(tmp_path: Path) -> Path:
    return write_audio(tmp_path / "mix.wav", music(FRAMES), RATE, "FLOAT")


@pytest.fixture(scope="module")
def ensembler() -> Any:
    return import_reference("separator.ensembler").Ensembler


@pytest.fixture(scope="module")
def librosa() -> Any:
    try:
        import librosa
    except ImportError as exc:
        missing(exc, "librosa (tests/references/roformer.txt)")
    return librosa


@pytest.fixture(scope="module")
def alone(tmp_path_factory: pytest.TempPathFactory, tiny_models: Path) -> dict[str, Any]:
    """Each demucs model alone on the same mix, raw (no exact-sum)."""
    tmp = tmp_path_factory.mktemp("alone")
    source = write_audio(tmp / "mix.wav", music(FRAMES), RATE, "FLOAT")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("STEMBRIDGE_MODEL_DIR", str(tiny_models))
        return {
            name: separate(tmp / name, source, "--model", name, "--no-exact-sum") for name in DEMUCS
        }


@pytest.mark.parametrize(
    ("algorithm", "weights"),
    [
        ("avg_wave", None),
        ("avg_wave", (3.0, 1.0, 0.5)),
        ("median_wave", None),
        ("min_wave", None),
        ("max_wave", None),
    ],
)
def test_wave_ensembles_are_audio_separators_on_the_models_stems(
    model_dir: Path,
    mix: Path,
    tmp_path: Path,
    alone: dict[str, Any],
    ensembler: Any,
    algorithm: str,
    weights: tuple[float, ...] | None,
) -> None:
    # Given three models and their stems alone
    models = [flag for name in DEMUCS for flag in ("--model", name)]
    extra = ["--ensemble-weights", ",".join(map(str, weights))] if weights else []
    # When they separate as one ensemble
    got = separate(tmp_path, mix, *models, "--ensemble", algorithm, *extra, "--no-exact-sum")
    # Then each stem is what audio-separator's Ensembler makes of the three
    reference = ensembler(logging.getLogger("reference"), algorithm, list(weights or ()) or None)
    assert sorted(got) == sorted(alone["htdemucs"])
    for stem, wave in got.items():
        expected = reference.ensemble([alone[name][stem] for name in DEMUCS])
        np.testing.assert_allclose(wave, expected, atol=1e-6, rtol=0)
    # And the manifest says which models gave each stem, and how
    entry = manifest_of(tmp_path, mix)["model"]
    assert entry["name"] == " + ".join(DEMUCS)
    assert entry["stems_from"]["vocals"] == {
        "models": list(DEMUCS),
        "ensemble": algorithm,
        "weights": list(weights) if weights else None,
    }


@pytest.fixture(scope="module")
def two_families(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A BS-RoFormer and an MDX23C (chunked differently), each alone on the mix, raw."""
    tmp = tmp_path_factory.mktemp("families")
    source = write_audio(tmp / "mix.wav", music(FRAMES), RATE, "FLOAT")
    files = {"roformer": bs_roformer(tmp / "models"), "mdx23c": mdx23c(tmp / "models")}
    return {
        "files": files,
        **{
            name: separate(tmp / name, source, "--model", str(path), "--no-exact-sum")
            for name, path in files.items()
        },
    }


@pytest.mark.parametrize("algorithm", ["avg_spec", "max_spec", "min_spec"])
def test_spectral_ensembles_take_the_chosen_magnitude_and_the_mean_phase(
    mix: Path, tmp_path: Path, librosa: Any, two_families: dict[str, Any], algorithm: str
) -> None:
    # Given two models of different families and their stems alone
    roformer, mdx = (str(path) for path in two_families["files"].values())
    weights = (2.0, 1.0) if algorithm == "avg_spec" else None
    extra = ["--ensemble-weights", "2,1"] if weights else []
    # When they separate as one ensemble
    flags = ("--model", roformer, "--model", mdx, "--ensemble", algorithm, *extra)
    got = separate(tmp_path, mix, *flags, "--no-exact-sum")
    # Then each stem is the whole-file STFT computation on the two
    share = np.array(weights or (1.0, 1.0)) / sum(weights or (1.0, 1.0))
    one, two = two_families["roformer"], two_families["mdx23c"]
    for stem, wave in got.items():
        expected = np.stack(
            [
                spectral_reference(librosa, algorithm, share, [one[stem][c], two[stem][c]])
                for c in range(wave.shape[0])
            ]
        )
        np.testing.assert_allclose(wave, expected, atol=1e-5, rtol=0)


def spectral_reference(
    librosa: Any, algorithm: str, share: np.ndarray, waves: list[np.ndarray]
) -> np.ndarray:
    """The whole-file computation, framed over the waves and HOP zeros after them (so
    that the last samples lie under two frames)."""
    with warnings.catch_warnings():  # a wave shorter than one FFT: padded, as wanted
        warnings.simplefilter("ignore", UserWarning)
        spectra = np.stack(
            [
                librosa.stft(np.pad(w.astype(np.float64), (0, HOP)), n_fft=N_FFT, hop_length=HOP)
                for w in waves
            ]
        )
    magnitudes = np.abs(spectra)
    magnitude = {
        "avg_spec": np.tensordot(share, magnitudes, axes=1),
        "max_spec": magnitudes.max(axis=0),
        "min_spec": magnitudes.min(axis=0),
    }[algorithm]
    phase = np.angle(np.tensordot(share, spectra, axes=1))
    spectrum = magnitude * np.exp(1j * phase)
    return librosa.istft(spectrum, hop_length=HOP, length=waves[0].size + HOP)[: waves[0].size]


@pytest.mark.parametrize("algorithm", ["avg_spec", "max_spec", "min_spec", "max_wave"])
@pytest.mark.parametrize("frames", [0, 1, HOP - 1, HOP, N_FFT + 1, 20 * HOP + 5])
def test_a_blend_streamed_in_any_blocks_is_the_blend_of_the_whole(
    librosa: Any, algorithm: str, frames: int
) -> None:
    rng = np.random.default_rng(frames)
    stacked = rng.standard_normal((3, 2, 2, frames)).astype(np.float32)
    whole = Blend(algorithm, weights=None, members=3, shape=(2, 2))  # type: ignore[arg-type]
    at_once = np.concatenate([whole.push(stacked), whole.finish()], axis=-1)
    streamed = Blend(algorithm, weights=None, members=3, shape=(2, 2))  # type: ignore[arg-type]
    pieces, start = [], 0
    for size in rng.integers(1, 3000, size=frames + 1):
        pieces.append(streamed.push(stacked[..., start : start + size]))
        start += size
        if start >= frames:
            break
    pieces.append(streamed.finish())
    joined = np.concatenate(pieces, axis=-1)
    assert joined.shape == at_once.shape == (2, 2, frames)
    np.testing.assert_allclose(joined, at_once, atol=1e-6, rtol=0)
    if algorithm.endswith("_spec") and frames:
        share = np.full(3, 1 / 3)
        expected = spectral_reference(librosa, algorithm, share, list(stacked[:, 1, 0]))
        np.testing.assert_allclose(at_once[1, 0], expected, atol=1e-5, rtol=0)
        # And no sample is more than a few times the loudest input (no click at the end)
        assert np.abs(at_once).max() < 4 * np.abs(stacked).max()


def test_routed_stems_come_from_the_named_models_and_add_back_to_the_input(
    model_dir: Path, mix: Path, tmp_path: Path, alone: dict[str, Any]
) -> None:
    # Given vocals from htdemucs_ft, drums from hdemucs_mmi and the rest from htdemucs
    stems = "vocals@htdemucs_ft,drums@hdemucs_mmi,bass,other"
    # When it separates with exact-sum (the default)
    got = separate(tmp_path, mix, "--model", "htdemucs", "--stems", stems)
    # Then each routed stem is its model's, and bass is htdemucs'
    np.testing.assert_allclose(got["vocals"], alone["htdemucs_ft"]["vocals"], atol=1e-6)
    np.testing.assert_allclose(got["drums"], alone["hdemucs_mmi"]["drums"], atol=1e-6)
    np.testing.assert_allclose(got["bass"], alone["htdemucs"]["bass"], atol=1e-6)
    # And the residual went into other, so the stems add back to the input
    total = sum(got[name].astype(np.float64) for name in got)
    np.testing.assert_allclose(total, sf.read(str(mix), dtype="float64")[0].T, atol=1e-6)
    manifest = manifest_of(tmp_path, mix)
    assert manifest["effects"]["stems_add_up"] is True
    assert manifest["model"]["name"] == "htdemucs, vocals@htdemucs_ft, drums@hdemucs_mmi"
    assert manifest["model"]["stems_from"]["drums"] == {"models": ["hdemucs_mmi"]}
    assert manifest["model"]["stems_from"]["other"] == {"models": ["htdemucs"]}


def test_a_stem_routed_to_a_roformer_file_beside_demucs_stems(
    model_dir: Path,
    mix: Path,
    tmp_path: Path,
    alone: dict[str, Any],
    two_families: dict[str, Any],
) -> None:
    # Given vocals from a BS-RoFormer file (chunks of 2 s) and the rest from htdemucs
    roformer = two_families["files"]["roformer"]
    # When it separates with instrumental (every other source) beside
    got = separate(tmp_path, mix, "--stems", f"vocals@{roformer},instrumental", "--no-exact-sum")
    # Then vocals are the RoFormer's and the instrumental htdemucs' other three
    np.testing.assert_allclose(got["vocals"], two_families["roformer"]["vocals"], atol=1e-6)
    demucs = alone["htdemucs"]
    np.testing.assert_allclose(
        got["instrumental"], demucs["drums"] + demucs["bass"] + demucs["other"], atol=1e-5
    )


def test_an_ensemble_or_a_route_is_the_same_job_written_either_way(model_dir: Path) -> None:
    def identity(**settings: Any) -> str:
        document = {"input": "/in/a.wav", "folder": "/out/a", "separation": settings}
        return JobSpec.from_json(json.dumps(document)).identity("0" * 64)

    models = ["htdemucs", "htdemucs_ft"]
    assert identity(model=models) == identity(model=models, ensemble="avg_wave")
    assert identity(model=models) != identity(model=models, ensemble="max_wave")
    assert identity(model=models) != identity(model=models[::-1])
    assert identity(model="htdemucs") != identity(model="htdemucs", stems=["vocals@htdemucs_ft"])


def test_members_run_in_lockstep_and_read_the_stream_once() -> None:
    # Given two models that give their output in different block sizes
    class Model:
        def __init__(self, block: int, gain: float) -> None:
            self.block, self.gain = block, gain
            self.samplerate, self.audio_channels = RATE, 2

        def separate(self, blocks: Any, *, length: int, wanted: Any, **_: Any) -> Iterator[Any]:
            held = np.zeros((2, 0), dtype=np.float32)
            for block in blocks:
                held = np.concatenate([held, block], axis=-1)
                while held.shape[-1] >= self.block:
                    out, held = held[:, : self.block], held[:, self.block :]
                    yield np.stack([out * self.gain * (k + 1) for k in range(len(wanted))])
            yield np.stack([held * self.gain * (k + 1) for k in range(len(wanted))])

    members = {"htdemucs": Model(5000, 1.0), "htdemucs_ft": Model(33000, 3.0)}
    settings = SeparationSettings(model=("htdemucs", "htdemucs_ft"))
    combined = CombinedModel(settings, load=lambda spec: members[spec.name])  # type: ignore[arg-type,return-value]
    read, lead = [0], [0]
    mix = np.random.default_rng(0).standard_normal((2, 400_000)).astype(np.float32)

    def blocks() -> Iterator[np.ndarray]:
        for start in range(0, mix.shape[-1], 4096):
            read[0] += 1
            yield mix[:, start : start + 4096]

    # When they separate a long stream as one ensemble
    given = 0
    out = []
    for block in combined.separate(
        blocks(),
        length=mix.shape[-1],
        groups=channel_groups(2, 2),
        stats=[],
        wanted=["drums", "vocals"],
    ):
        out.append(block)
        given += block.shape[-1]
        lead[0] = max(lead[0], read[0] * 4096 - given)
    # Then the output is the mean of the two, the stream was read once, and no model
    # ran more than a block or two ahead of the other
    joined = np.concatenate(out, axis=-1)
    np.testing.assert_allclose(joined[0], mix * 2.0, rtol=1e-6)
    np.testing.assert_allclose(joined[1], mix * 4.0, rtol=1e-6)
    assert read[0] == -(-mix.shape[-1] // 4096)
    assert lead[0] <= 33000 + 2 * 4096


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        (["--model", "htdemucs", "--model", "TINY"], "htdemucs gives drums, bass, other, vocals"),
        (["--model", "htdemucs", "--ensemble", "max_spec"], "htdemucs is one"),
        (
            [*ENSEMBLE_FLAGS, "--ensemble-weights", "1,2,3"],
            "gives 3 weights for the 2 models",
        ),
        (
            [*ENSEMBLE_FLAGS, "--ensemble", "median_wave", "--ensemble-weights", "2,1"],
            "median_wave picks samples",
        ),
        (
            [*ENSEMBLE_FLAGS, "--ensemble-weights", "1,x"],
            "ensemble_weights = ",
        ),
        (["--model", "htdemucs", "--model", "htdemucs"], "listed twice"),
        (["--model", "vocals-best", "--model", "htdemucs"], "is an ensemble itself"),
        (["--stems", "guitar@htdemucs_6s"], "has no guitar to take from htdemucs_6s"),
        (
            ["--stems", "piano@htdemucs_ft"],
            "htdemucs_ft gives drums, bass, other, vocals, not piano",
        ),
        (["--stems", "vocals@nonesuch"], "unknown model 'nonesuch'"),
        (
            ["--stems", "instrumental@htdemucs_ft"],
            "gives drums, bass, other, vocals, not instrumental",
        ),
        (["--model", "TINY", "--model", "RATE48"], "runs at 44100 Hz with 2 channels and"),
    ],
)
def test_bad_ensembles_and_routes_are_refused_naming_them_and_nothing_is_written(
    model_dir: Path,
    mix: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    flags: list[str],
    words: str,
) -> None:
    tiny = bs_roformer(tmp_path / "models")
    rate48 = write_msst(
        tmp_path / "models",
        "rate48",
        tiny.with_suffix(".yaml").read_text().replace("sample_rate: 44100", "sample_rate: 48000"),
        lambda config: __import__("torch").nn.Linear(1, 1),
        seed=0,
    )
    flags = [str(tiny) if f == "TINY" else str(rate48) if f == "RATE48" else f for f in flags]
    capsys.readouterr()
    code = main(["separate", str(mix), "-o", str(tmp_path / "out"), *flags])
    err = capsys.readouterr().err
    assert code == EXIT_USAGE, err
    assert words in " ".join(err.split()), err
    assert not (tmp_path / "out").exists()


def test_a_config_gives_an_ensemble_and_routes_and_flags_replace_them(tmp_path: Path) -> None:
    from bridge.cli.separate import add_model_options, separation_settings
    from bridge.config import load_config

    config = tmp_path / "config.toml"
    config.write_text(
        '[separation]\nmodel = ["htdemucs", "htdemucs_ft"]\nensemble = "avg_spec"\n'
        "ensemble_weights = [2, 1]\n"
        f'[[rule]]\nname = "vox"\nfolder = "{tmp_path / "in"}"\n'
        'stems = "vocals@vocals-best,instrumental"\n',
        encoding="utf-8",
    )
    loaded = load_config(config)
    assert loaded.separation.lineup.primary.weights == (2.0, 1.0)
    assert loaded.rules[0].separation.lineup.provider("vocals").name == "vocals-best"
    # A --model given alone leaves the config's ensemble behind
    import argparse

    parser = argparse.ArgumentParser()
    add_model_options(parser, defaults=False)
    alone = separation_settings(parser.parse_args(["--model", "htdemucs"]), base=loaded.separation)
    assert (alone.model, alone.ensemble, alone.ensemble_weights) == ("htdemucs", None, None)
    both = separation_settings(
        parser.parse_args(["--model", "htdemucs", "--model", "hdemucs_mmi"]),
        base=loaded.separation,
    )
    assert both.lineup.name == "htdemucs + hdemucs_mmi"
    with pytest.raises(SettingsError, match="2 weights for the 3 models"):
        SeparationSettings(
            model=("htdemucs", "htdemucs_ft", "hdemucs_mmi"), ensemble_weights=(1, 2)
        )


def test_named_ensembles_are_of_catalogued_models_with_the_same_stems() -> None:
    from bridge.models.catalog import ENSEMBLES

    for name in ENSEMBLES:
        lineup = SeparationSettings(model=name).lineup
        assert len(lineup.primary.members) >= 2
        assert all(member.family != "ensemble" for member in lineup.primary.members)
