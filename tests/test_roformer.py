"""BS-RoFormer and Mel-Band RoFormer against python-audio-separator's own modules.

Each reference network is randomly initialised, saved as an MSST ``.ckpt`` beside a
``.yaml`` in the official form (``yaml.dump`` of the model section, tuples as
``!!python/tuple``, as MSST writes them), loaded through ``msst_config`` and our module
with ``strict=True``, and run on the same audio. The references are imported from the
installed ``audio_separator`` without its package ``__init__`` (which imports the whole
separator: onnxruntime, requests...); ``tests/references/roformer.txt`` installs them.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

from bridge.errors import ModelCorrupt
from bridge.models.families import roformer
from bridge.models.families.msst_config import DEFAULT_FREQS_PER_BANDS, read_config

from separator_reference import import_reference

TOLERANCE = 1e-4

# The model section of model_bs_roformer_ep_317_sdr_12.9755.yaml (viperx; the default
# model of python-audio-separator), its audio and inference sections.
EP_317 = {
    "dim": 512,
    "depth": 12,
    "stereo": True,
    "num_stems": 1,
    "time_transformer_depth": 1,
    "freq_transformer_depth": 1,
    "linear_transformer_depth": 0,
    "freqs_per_bands": DEFAULT_FREQS_PER_BANDS,
    "dim_head": 64,
    "heads": 8,
    "attn_dropout": 0.1,
    "ff_dropout": 0.1,
    "flash_attn": True,
    "dim_freqs_in": 1025,
    "stft_n_fft": 2048,
    "stft_hop_length": 441,
    "stft_win_length": 2048,
    "stft_normalized": False,
    "mask_estimator_depth": 2,
    "multi_stft_resolution_loss_weight": 1.0,
    "multi_stft_resolutions_window_sizes": (4096, 2048, 1024, 512, 256),
    "multi_stft_hop_size": 147,
    "multi_stft_normalized": False,
}
EP_317_AUDIO = {
    "chunk_size": 352800,
    "dim_f": 1024,
    "dim_t": 801,
    "hop_length": 441,
    "n_fft": 2048,
    "num_channels": 2,
    "sample_rate": 44100,
    "min_mean_abs": 0.0,
}
# config_vocals_mel_band_roformer_kj.yaml (KimberleyJensen's vocals Mel-Band RoFormer).
KJ_VOCALS = {
    "dim": 384,
    "depth": 6,
    "stereo": True,
    "num_stems": 1,
    "time_transformer_depth": 1,
    "freq_transformer_depth": 1,
    "num_bands": 60,
    "dim_head": 64,
    "heads": 8,
    "attn_dropout": 0,
    "ff_dropout": 0,
    "flash_attn": True,
    "dim_freqs_in": 1025,
    "sample_rate": 44100,
    "stft_n_fft": 2048,
    "stft_hop_length": 441,
    "stft_win_length": 2048,
    "stft_normalized": False,
    "mask_estimator_depth": 2,
    "multi_stft_resolution_loss_weight": 1.0,
    "multi_stft_resolutions_window_sizes": (4096, 2048, 1024, 512, 256),
    "multi_stft_hop_size": 147,
    "multi_stft_normalized": False,
}
KJ_AUDIO = {**EP_317_AUDIO, "dim_t": 256}

SMALL_AUDIO = {"chunk_size": 8192, "num_channels": 2, "sample_rate": 44100}
# 513 bins of a 1024-point STFT in 37 bands of unequal widths
SMALL_BANDS = (2,) * 8 + (4,) * 8 + (8,) * 8 + (16,) * 8 + (48,) * 4 + (81,)
SMALL = {
    "dim": 32,
    "depth": 2,
    "stereo": True,
    "time_transformer_depth": 1,
    "freq_transformer_depth": 1,
    "dim_head": 16,
    "heads": 2,
    "stft_n_fft": 1024,
    "stft_hop_length": 256,
    "stft_win_length": 1024,
}
SMALL_BS = {**SMALL, "freqs_per_bands": SMALL_BANDS}
SMALL_MEL = {**SMALL, "num_bands": 24, "sample_rate": 44100}

VOCALS = {"instruments": ["vocals", "other"], "target_instrument": "vocals"}
FOUR = {"instruments": ["bass", "drums", "other", "vocals"], "target_instrument": None}
INFERENCE = {"batch_size": 1, "num_overlap": 2}


def _reference_modules() -> dict[str, Any]:
    """python-audio-separator's two network classes."""
    bs = import_reference("separator.uvr_lib_v5.roformer.bs_roformer")
    mel = import_reference("separator.uvr_lib_v5.roformer.mel_band_roformer")
    return {"bs_roformer": bs.BSRoformer, "mel_band_roformer": mel.MelBandRoformer}


@pytest.fixture(scope="module")
def reference() -> dict[str, Any]:
    return _reference_modules()


def write_official(
    folder: Path,
    name: str,
    *,
    model: dict[str, Any],
    audio: dict[str, Any],
    training: dict[str, Any],
    inference: dict[str, Any] = INFERENCE,
) -> Path:
    """An MSST ``.yaml`` as MSST writes one (tuples tagged ``!!python/tuple``)."""
    path = folder / f"{name}.yaml"
    document = {"audio": audio, "model": model, "training": training, "inference": inference}
    path.write_text(yaml.dump(document, Dumper=yaml.Dumper, sort_keys=False), encoding="utf-8")
    return path


def reference_pair(
    reference: dict[str, Any],
    folder: Path,
    architecture: str,
    *,
    model: dict[str, Any],
    audio: dict[str, Any] = SMALL_AUDIO,
    training: dict[str, Any] = VOCALS,
    seed: int = 0,
) -> tuple[torch.nn.Module, roformer.RoformerNetwork]:
    """A randomly initialised reference network and ours, loaded from its files."""
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        # The reference counts its STFT bins with an STFT that has no window
        warnings.simplefilter("ignore", UserWarning)
        theirs = reference[architecture](**model).eval()
    config = write_official(folder, architecture, model=model, audio=audio, training=training)
    checkpoint = folder / f"{architecture}.ckpt"
    torch.save(theirs.state_dict(), checkpoint)
    ours = roformer.load(read_config(config), checkpoint)
    checkpoint.unlink()  # the full-size ones are hundreds of MB
    return theirs, ours


def mix(samples: int, *, channels: int = 2, batch: int = 2, seed: int = 1) -> torch.Tensor:
    """Noise as loud as a mix (-10 dBFS RMS); the last item of a stereo batch is mono
    copied to both sides."""
    generator = torch.Generator().manual_seed(seed)
    audio = 0.3 * torch.randn(batch, channels, samples, generator=generator)
    if channels == 2:
        audio[-1, 1] = audio[-1, 0]
    return audio


def compare(theirs: torch.nn.Module, ours: torch.nn.Module, audio: torch.Tensor) -> float:
    """Max abs difference, after checking our (batch, stems, channels, samples) shape."""
    with torch.inference_mode():
        expected = theirs(audio)
        got = ours(audio)
    stems = ours.num_stems
    if expected.ndim == 3:  # the references drop the stems axis for one stem
        expected = expected[:, None]
    assert got.shape == (audio.shape[0], stems, audio.shape[1], audio.shape[2])
    # Their inverse STFT stops at the last whole hop unless told the length (Mel-Band's
    # match_input_audio_length): then the whole of ours is compared.
    hop = ours.args.stft_hop_length
    assert expected.shape[-1] in (audio.shape[-1], audio.shape[-1] // hop * hop)
    difference = (got[..., : expected.shape[-1]] - expected).abs().max().item()
    assert (
        expected.abs().max().item() > 1e-2
    )  # stems loud enough for the tolerance to mean something
    return difference


# A whole number of hops, one sample more, a ragged length, and the shortest allowed.
SMALL_LENGTHS = [16 * 256, 16 * 256 + 1, 5000, 513]


@pytest.mark.parametrize(
    ("architecture", "model", "training"),
    [
        pytest.param("bs_roformer", SMALL_BS, VOCALS, id="bs-stereo"),
        pytest.param(
            "bs_roformer",
            {
                **SMALL_BS,
                "stereo": False,
                "num_stems": 4,
                "linear_transformer_depth": 1,
                "mask_estimator_depth": 3,
                "mlp_expansion_factor": 2,
                "flash_attn": False,
                "dim_head": 15,  # odd: the last feature of each head is not rotated
            },
            FOUR,
            id="bs-mono-4-stems-linear-attention",
        ),
        pytest.param("mel_band_roformer", SMALL_MEL, VOCALS, id="mel-stereo"),
        pytest.param(
            "mel_band_roformer",
            {**SMALL_MEL, "match_input_audio_length": True, "mask_estimator_depth": 2},
            VOCALS,
            id="mel-stereo-input-length",
        ),
        pytest.param(
            "mel_band_roformer",
            {**SMALL_MEL, "stereo": False, "num_stems": 4, "num_bands": 16, "heads": 3},
            FOUR,
            id="mel-mono-4-stems",
        ),
    ],
)
def test_small_networks_match_the_reference(
    reference: dict[str, Any],
    tmp_path: Path,
    architecture: str,
    model: dict[str, Any],
    training: dict[str, Any],
) -> None:
    # Given a reference network saved in MSST's form and ours loaded from it
    audio_section = {**SMALL_AUDIO, "num_channels": 2 if model["stereo"] else 1}
    theirs, ours = reference_pair(
        reference, tmp_path, architecture, model=model, audio=audio_section, training=training
    )
    channels = 2 if model["stereo"] else 1
    # When both separate the same audio at several lengths, Then they agree
    for samples in SMALL_LENGTHS:
        difference = compare(theirs, ours, mix(samples, channels=channels))
        assert difference < TOLERANCE, f"{samples} samples: {difference}"


@pytest.mark.parametrize(
    ("architecture", "model", "audio"),
    [
        pytest.param("bs_roformer", EP_317, EP_317_AUDIO, id="bs_roformer_ep_317_sdr_12.9755"),
        pytest.param("mel_band_roformer", KJ_VOCALS, KJ_AUDIO, id="vocals_mel_band_roformer_kj"),
    ],
)
def test_released_configurations_match_the_reference(
    reference: dict[str, Any],
    tmp_path: Path,
    architecture: str,
    model: dict[str, Any],
    audio: dict[str, Any],
) -> None:
    # Given a released model's architecture, randomly initialised (weights are not
    # downloadable here), in its official files
    theirs, ours = reference_pair(reference, tmp_path, architecture, model=model, audio=audio)
    # When a short stereo item and a mono-as-stereo one, not a whole number of hops, go
    # through both, Then they agree
    difference = compare(theirs, ours, mix(441 * 8 + 123))
    assert difference < TOLERANCE, difference


def pass_through(network: roformer.RoformerNetwork) -> roformer.RoformerNetwork:
    """Set every mask to 1: each band's last layer outputs only its bias, (1, 0) per bin."""
    with torch.no_grad():
        for estimator in network.mask_estimators:
            for band in estimator.to_freqs:
                last = band[0][-1]
                last.weight.zero_()
                last.bias.zero_()
                # The GLU's value half holds (real, imaginary) per bin; its gates are at
                # sigmoid(0) = 1/2.
                last.bias[: last.out_features // 2 : 2] = 2.0
    return network


@pytest.mark.parametrize("zero_dc", [False, True])
@pytest.mark.parametrize("model", [SMALL_BS, SMALL_MEL], ids=["bs", "mel"])
def test_a_mask_of_one_gives_the_input_back_without_dc_when_asked(
    tmp_path: Path, model: dict[str, Any], zero_dc: bool
) -> None:
    # Given a network whose masks are all 1, with zero_dc off (the references' behaviour)
    # or on (MSST's: the DC bin of every stem zeroed before the inverse STFT)
    config = write_official(
        tmp_path, "one", model={**model, "zero_dc": zero_dc}, audio=SMALL_AUDIO, training=VOCALS
    )
    network = pass_through(roformer.build(read_config(config)))
    audio = mix(16 * 256 + 77)
    # When it separates a mix
    with torch.inference_mode():
        stems = network(audio)
    # Then the stem is the mix, through an STFT round trip with the DC bin zeroed if asked
    window = torch.hann_window(1024)
    spectrum = torch.stft(audio.reshape(4, -1), 1024, 256, window=window, return_complex=True)
    if zero_dc:
        spectrum[:, 0] = 0
    expected = torch.istft(spectrum, 1024, 256, window=window, length=audio.shape[-1])
    torch.testing.assert_close(stems[:, 0], expected.view_as(audio), rtol=0, atol=1e-6)
    if not zero_dc:
        torch.testing.assert_close(stems[:, 0], audio, rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    ("sample_rate", "n_fft", "num_bands"),
    [(44100, 2048, 60), (44100, 1024, 24), (48000, 2048, 60), (44100, 2048, 8), (32000, 4096, 128)],
)
def test_mel_bands_are_librosas(
    reference: dict[str, Any], sample_rate: int, n_fft: int, num_bands: int
) -> None:
    from librosa import filters

    # Given librosa's mel filters, first and last bin forced in as the references do
    expected = filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=num_bands)
    expected[0, 0] = expected[-1, -1] = 1.0
    # Then our bands hold exactly the bins under them
    held = roformer.mel_bands(sample_rate=sample_rate, n_fft=n_fft, num_bands=num_bands)
    np.testing.assert_array_equal(held, expected > 0)


def test_state_dict_keys_are_the_references(reference: dict[str, Any], tmp_path: Path) -> None:
    # Given a BS-RoFormer with every optional part (linear attention, several stems)
    model = {**SMALL_BS, "linear_transformer_depth": 1, "num_stems": 2}
    training = {"instruments": ["vocals", "other"], "target_instrument": None}
    theirs, ours = reference_pair(
        reference, tmp_path, "bs_roformer", model=model, training=training
    )
    # Then the names and shapes are the reference's, rotary frequencies included
    assert {k: v.shape for k, v in ours.state_dict().items()} == {
        k: v.shape for k, v in theirs.state_dict().items()
    }
    assert "layers.1.1.layers.0.0.rotary_embed.freqs" in ours.state_dict()


@pytest.fixture
def small_bs_files(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """A small BS-RoFormer of ours, written as MSST files."""
    config = write_official(tmp_path, "small", model=SMALL_BS, audio=SMALL_AUDIO, training=VOCALS)
    torch.manual_seed(0)
    checkpoint = tmp_path / "small.ckpt"
    torch.save(roformer.build(read_config(config)).state_dict(), checkpoint)
    yield config, checkpoint


def test_a_checkpoint_of_another_config_is_refused_by_key(
    small_bs_files: tuple[Path, Path], tmp_path: Path
) -> None:
    _, checkpoint = small_bs_files
    # Given the same weights and a config with one more block and more stems
    other = write_official(
        tmp_path,
        "other",
        model={**SMALL_BS, "depth": 3, "dim_head": 8},
        audio=SMALL_AUDIO,
        training=VOCALS,
    )
    # Then loading names the file, the first missing key and a shape
    with pytest.raises(ModelCorrupt) as error:
        roformer.load(read_config(other), checkpoint)
    message = str(error.value)
    assert str(checkpoint) in message and str(other) in message
    assert "missing, the first layers.2.0.layers.0.0.norm.gamma" in message
    assert "layers.0.0.layers.0.0.to_qkv.weight: (96, 32) in the file, (48, 32)" in message


def test_a_mel_config_refuses_a_bs_checkpoint(
    small_bs_files: tuple[Path, Path], tmp_path: Path
) -> None:
    _, checkpoint = small_bs_files
    mel = write_official(tmp_path, "mel", model=SMALL_MEL, audio=SMALL_AUDIO, training=VOCALS)
    with pytest.raises(ModelCorrupt, match=r"4 key\(s\) missing, the first layers.0.0.norm.gamma"):
        roformer.load(read_config(mel), checkpoint)


@pytest.mark.parametrize("key", ["skip_connection", "use_pope"])
def test_unsupported_options_are_refused(tmp_path: Path, key: str) -> None:
    config = write_official(
        tmp_path, "x", model={**SMALL_BS, key: True}, audio=SMALL_AUDIO, training=VOCALS
    )
    with pytest.raises(ModelCorrupt, match=f"model.{key} = true is not supported"):
        roformer.build(read_config(config))


def test_an_mdx23c_config_is_not_a_roformer(tmp_path: Path) -> None:
    model = {
        "act": "gelu",
        "bottleneck_factor": 4,
        "growth": 128,
        "norm": "InstanceNorm",
        "num_blocks_per_scale": 2,
        "num_channels": 128,
        "num_scales": 5,
        "num_subbands": 4,
        "scale": [2, 2],
    }
    audio = {**SMALL_AUDIO, "n_fft": 8192, "hop_length": 1024, "dim_f": 4096}
    config = write_official(tmp_path, "mdx", model=model, audio=audio, training=VOCALS)
    with pytest.raises(ModelCorrupt, match="describes mdx23c, not a band-split RoFormer"):
        roformer.build(read_config(config))


def test_wrong_channels_and_too_short_audio_are_refused(small_bs_files: tuple[Path, Path]) -> None:
    config, checkpoint = small_bs_files
    network = roformer.load(read_config(config), checkpoint)
    with torch.inference_mode():
        with pytest.raises(ValueError, match=r"shape \(batch, 2, samples\), not \(1, 1, 4096\)"):
            network(torch.zeros(1, 1, 4096))
        with pytest.raises(ValueError, match="more than 512 samples"):
            network(torch.zeros(1, 2, 512))


def test_rotary_positions_match_the_reference_on_every_path() -> None:
    from rotary_embedding_torch import RotaryEmbedding as Reference

    from bridge.models.families.roformer import _pairs_as_complex

    torch.manual_seed(5)
    reference = Reference(dim=32)
    ours = roformer.RotaryEmbedding(32)
    assert torch.equal(ours.freqs, reference.freqs)
    # Keys as the attention cuts them from its projection: permuted, at an offset.
    keys = torch.randn(2, 50, 3 * 4 * 32).unflatten(-1, (3, 4, 32)).permute(2, 0, 3, 1, 4)[1]
    # Pairs that are not adjacent in memory (an odd offset), and features past the turned
    # ones, which stay as they are.
    odd = torch.randn(2, 4, 50, 33)[..., 1:]
    wider = torch.randn(2, 4, 50, 40)
    with torch.inference_mode():
        for x, complex_pairs in ((keys, True), (odd, False), (wider, True)):
            assert _pairs_as_complex(x[..., :32]) is complex_pairs
            want = reference.rotate_queries_or_keys(x)
            got = ours(x)
            assert got.shape == want.shape
            assert float((got - want).abs().max()) < 1e-5
        # bf16 (the GPU's autocast) has no complex type: the pairs are turned one by one.
        half = keys.to(torch.bfloat16)
        assert not _pairs_as_complex(half)
        got = ours(half)
        assert got.dtype == torch.bfloat16
        assert float((got.float() - reference.rotate_queries_or_keys(keys)).abs().max()) < 5e-2
