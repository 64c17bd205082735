"""What comes out is ready for a session: exact sums, formats kept, dither, loudness, effects."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pedalboard
import pyloudnorm  # type: ignore[import-untyped]
import pytest
import soundfile as sf

from bridge.cli import EXIT_OK, main
from bridge.effects.chain import build_board
from bridge.effects.presets import load_preset

from signals import music, write_audio


def separate(
    tmp_path: Path, source: Path, *flags: str, out_name: str = "out"
) -> tuple[Path, dict[str, Any]]:
    """Run ``stembridge separate`` into ``tmp_path/out_name``; return the stem folder and
    its manifest."""
    out = tmp_path / out_name
    code = main(["separate", str(source), "-o", str(out), "--overwrite", *flags])
    assert code == EXIT_OK
    folder = out / source.stem
    return folder, json.loads((folder / "manifest.json").read_text(encoding="utf-8"))


def read(path: Path) -> np.ndarray:
    return sf.read(str(path), dtype="float64", always_2d=True)[0]


def stems_of(folder: Path, manifest: dict[str, Any]) -> dict[str, np.ndarray]:
    return {stem["name"]: read(folder / stem["path"]) for stem in manifest["stems"]}


def peak_dbfs(signal: np.ndarray) -> float:
    return float(20 * np.log10(max(np.abs(signal).max(), 1e-300)))


@pytest.mark.parametrize(
    "stems",
    ["", "vocals,instrumental", "drums,no_drums", "rhythm=drums+bass,vocals,other"],
    ids=["four-sources", "vocals+instrumental", "drums+no_drums", "named-sum"],
)
def test_exact_sum_float_stems_null_against_the_input(
    model_dir: Path, tmp_path: Path, stems: str
) -> None:
    # Given a float WAV
    source = write_audio(tmp_path / "mix.wav", music(3 * 44100 + 11), subtype="FLOAT")
    # When separated with defaults (no effects: exact-sum is on)
    flags = ["--stems", stems] if stems else []
    folder, manifest = separate(tmp_path, source, *flags)
    # Then the stems add back to the input to better than -90 dBFS peak
    total = sum(stems_of(folder, manifest).values())
    assert isinstance(total, np.ndarray)
    assert peak_dbfs(total - read(source)) <= -90
    assert manifest["effects"]["exact_sum"] is True
    assert manifest["effects"]["stems_add_up"] is True
    assert manifest["effects"]["residual_stem"] == "other"


def test_exact_sum_24_bit_stems_are_within_rounding(model_dir: Path, tmp_path: Path) -> None:
    source = write_audio(tmp_path / "mix.wav", music(2 * 48000, rate=48000), 48000, "PCM_24")
    folder, manifest = separate(tmp_path, source)
    total = sum(stems_of(folder, manifest).values())
    lsb = 2.0**-23
    # Four stems, each rounded by at most half a step
    assert np.abs(total - read(source)).max() <= 4 * 0.5 * lsb + 1e-12
    assert manifest["output"]["dither"] is False


@pytest.mark.parametrize(
    ("subtype", "flags", "why"),
    [
        ("PCM_24", ["--bit-depth", "16"], "dithered"),
        ("PCM_24", ["--bit-depth", "16", "--dither", "off"], "rounded"),
        ("FLOAT", ["--format", "mp3"], "lossy"),
        ("FLOAT", ["--stems", "vocals"], "not every source"),
    ],
)
def test_stems_add_up_is_measured_on_the_written_files(
    model_dir: Path, tmp_path: Path, subtype: str, flags: list[str], why: str
) -> None:
    # Given exact-sum (the default) and an output that can or cannot hold the sum
    source = write_audio(tmp_path / "mix.wav", music(2 * 44100), subtype=subtype)
    folder, manifest = separate(tmp_path, source, *flags)
    effects = manifest["effects"]
    if why == "rounded":
        # 16-bit stems rounded without dither: each within half a step, and the manifest
        # says so after adding the files up
        assert effects["stems_add_up"] is True, effects
        total = sum(stems_of(folder, manifest).values())
        assert isinstance(total, np.ndarray)
        allowed = 4 * (0.5 * 2.0**-15 + 2.0**-24)
        assert np.abs(total - read(source)).max() <= allowed
        assert effects["sum_error_dbfs"] <= 20 * np.log10(allowed)
    else:
        # Dither noise, a lossy codec, or a missing source: the claim is not made
        assert effects["stems_add_up"] is False, (why, effects)
        assert effects["sum_error_dbfs"] is None


def test_clipped_stems_do_not_claim_to_add_up(model_dir: Path, tmp_path: Path) -> None:
    # Given a mix at full scale written to 16-bit: the residual pushes a stem past full scale
    loud = np.clip(music(2 * 44100) * 40, -1, 1)
    source = write_audio(tmp_path / "mix.wav", loud, subtype="FLOAT")
    _, manifest = separate(tmp_path, source, "--bit-depth", "16", "--dither", "off")
    clipped = sum(stem["clipped_samples"] for stem in manifest["stems"])
    assert clipped > 0
    assert manifest["effects"]["stems_add_up"] is False
    assert manifest["effects"]["sum_error_dbfs"] is None


def test_residual_can_go_to_a_named_stem_and_can_be_turned_off(
    model_dir: Path, tmp_path: Path
) -> None:
    source = write_audio(tmp_path / "mix.wav", music(2 * 44100), subtype="FLOAT")
    exact, manifest = separate(tmp_path, source, "--residual-to", "vocals")
    assert manifest["effects"]["residual_stem"] == "vocals"
    exact_stems = stems_of(exact, manifest)
    assert peak_dbfs(sum(exact_stems.values()) - read(source)) <= -90
    raw, raw_manifest = separate(tmp_path, source, "--no-exact-sum", out_name="raw")
    raw_stems = stems_of(raw, raw_manifest)
    assert raw_manifest["effects"]["exact_sum"] is False
    # Only vocals changed: it took the residual
    np.testing.assert_array_equal(exact_stems["drums"], raw_stems["drums"])
    assert np.abs(exact_stems["vocals"] - raw_stems["vocals"]).max() > 1e-4


@pytest.mark.parametrize("rate", [44100, 48000, 96000])
@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("subtype", ["PCM_16", "PCM_24", "FLOAT"])
def test_round_trip_keeps_rate_channels_format_and_length(
    model_dir: Path, tmp_path: Path, rate: int, channels: int, subtype: str
) -> None:
    frames = rate + 7
    source = write_audio(tmp_path / "in.wav", music(frames, channels, rate=rate), rate, subtype)
    folder, manifest = separate(tmp_path, source, "--stems", "vocals,instrumental")
    for name in ("vocals", "instrumental"):
        info = sf.info(str(folder / f"{name}.wav"))
        assert (info.samplerate, info.channels, info.subtype, info.frames) == (
            rate,
            channels,
            subtype,
            frames,
        )
    assert manifest["output"]["dither"] is False


def test_fewer_bits_than_the_input_are_dithered_deterministically(
    model_dir: Path, tmp_path: Path
) -> None:
    source = write_audio(tmp_path / "mix.wav", music(44100), subtype="PCM_24")
    dithered, manifest = separate(tmp_path, source, "--bit-depth", "16", "--stems", "vocals")
    assert manifest["output"]["dither"] is True
    first = (dithered / "vocals.wav").read_bytes()
    again, _ = separate(
        tmp_path, source, "--bit-depth", "16", "--stems", "vocals", out_name="again"
    )
    assert (again / "vocals.wav").read_bytes() == first, "dither must be seeded"
    plain, plain_manifest = separate(
        tmp_path,
        source,
        "--bit-depth",
        "16",
        "--stems",
        "vocals",
        "--dither",
        "off",
        out_name="plain",
    )
    assert plain_manifest["output"]["dither"] is False
    assert sf.info(str(plain / "vocals.wav")).subtype == "PCM_16"
    # TPDF noise moves samples at most 1 LSB from plain rounding, and is really there
    with_dither = sf.read(str(dithered / "vocals.wav"), dtype="int16")[0].astype(int)
    without = sf.read(str(plain / "vocals.wav"), dtype="int16")[0].astype(int)
    deviation = np.abs(with_dither - without)
    assert deviation.max() <= 1 and deviation.mean() > 0.2


def test_mp3_bitrate_and_ogg_quality(model_dir: Path, tmp_path: Path) -> None:
    source = write_audio(tmp_path / "mix.wav", music(5 * 44100), subtype="PCM_16")
    low, _ = separate(tmp_path, source, "--stems", "vocals", "--format", "mp3", "--bitrate", "64")
    low_size = (low / "vocals.mp3").stat().st_size
    assert sf.info(str(low / "vocals.mp3")).frames == 5 * 44100
    assert abs(low_size * 8 / 5 / 1000 - 64) < 8
    high, _ = separate(tmp_path, source, "--stems", "vocals", "--format", "mp3", "--bitrate", "256")
    assert abs((high / "vocals.mp3").stat().st_size * 8 / 5 / 1000 - 256) < 16
    small, _ = separate(tmp_path, source, "--stems", "vocals", "--format", "ogg", "--quality", "1")
    small_size = (small / "vocals.ogg").stat().st_size
    best, _ = separate(tmp_path, source, "--stems", "vocals", "--format", "ogg", "--quality", "10")
    assert (best / "vocals.ogg").stat().st_size > 2 * small_size
    assert sf.info(str(best / "vocals.ogg")).frames == 5 * 44100


def test_lossy_options_are_refused_for_lossless_stems(
    model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = write_audio(tmp_path / "mix.wav", music(44100))
    code = main(["separate", str(source), "-o", str(tmp_path / "out"), "--bitrate", "128"])
    assert code == 2
    assert "a bitrate applies to MP3 only and the stems are wav" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_loudness_target_is_hit_within_half_a_lu(model_dir: Path, tmp_path: Path) -> None:
    # Given a test signal, and a target with room under the true-peak ceiling
    source = write_audio(tmp_path / "mix.wav", music(6 * 48000, rate=48000), 48000, "FLOAT")
    folder, manifest = separate(tmp_path, source, "--loudness", "-30", "--true-peak", "0")
    meter = pyloudnorm.Meter(48000, filter_class="DeMan")
    for entry in manifest["stems"]:
        audio = read(folder / entry["path"])
        # Then each stem measures -30 LUFS (by pyloudnorm) within 0.5 LU
        assert not entry["limited_by_true_peak"]
        assert abs(meter.integrated_loudness(audio) + 30) <= 0.5, entry["name"]
        assert abs(entry["loudness_lufs"] + 30) <= 0.05
    assert manifest["effects"]["exact_sum"] is False
    assert manifest["effects"]["loudness"]["target_lufs"] == -30


def test_true_peak_ceiling_wins_over_the_target(model_dir: Path, tmp_path: Path) -> None:
    source = write_audio(tmp_path / "mix.wav", music(4 * 44100), subtype="FLOAT")
    folder, manifest = separate(tmp_path, source, "--loudness", "-5", "--true-peak", "-6")
    for entry in manifest["stems"]:
        assert entry["limited_by_true_peak"], entry["name"]
        assert entry["true_peak_dbtp"] <= -6 + 0.05
        assert peak_dbfs(read(folder / entry["path"])) <= -6 + 0.05


def test_match_mix_brings_each_stem_to_the_mix_loudness(model_dir: Path, tmp_path: Path) -> None:
    source = write_audio(tmp_path / "mix.wav", music(6 * 44100), subtype="FLOAT")
    folder, manifest = separate(tmp_path, source, "--preset", "match-mix", "--true-peak", "0")
    meter = pyloudnorm.Meter(44100, filter_class="DeMan")
    mix_lufs = meter.integrated_loudness(read(source))
    assert abs(manifest["effects"]["mix_loudness_lufs"] - mix_lufs) <= 0.1
    for entry in manifest["stems"]:
        if not entry["limited_by_true_peak"]:
            assert abs(meter.integrated_loudness(read(folder / entry["path"])) - mix_lufs) <= 0.5


def test_silent_input_gives_silent_flagged_stems_not_nan(model_dir: Path, tmp_path: Path) -> None:
    # Given digital silence, normalised for broadcast
    source = write_audio(
        tmp_path / "quiet.wav", np.zeros((2 * 44100, 2), np.float32), subtype="FLOAT"
    )
    folder, manifest = separate(tmp_path, source, "--preset", "broadcast")
    text = (folder / "manifest.json").read_text(encoding="utf-8")
    # Then every stem is flagged silent, nothing is NaN or infinite, and no gain was applied
    assert "NaN" not in text and "Infinity" not in text
    for entry in manifest["stems"]:
        assert entry["silent"] is True
        assert entry["loudness_lufs"] is None
        assert entry["gain_db"] == 0.0
        assert np.isfinite(read(folder / entry["path"])).all()


def test_effects_preset_streamed_equals_one_shot_on_the_clean_stem(
    model_dir: Path, tmp_path: Path
) -> None:
    # Given a take long enough for many effect blocks
    source = write_audio(tmp_path / "mix.wav", music(5 * 44100 + 3), subtype="FLOAT")
    clean, clean_manifest = separate(tmp_path, source, "--no-exact-sum", "--stems", "vocals,drums")
    vocals = read(clean / "vocals.wav")
    drums = read(clean / "drums.wav")
    # When separated with vocal-polish
    polished, manifest = separate(
        tmp_path, source, "--preset", "vocal-polish", "--stems", "vocals,drums"
    )
    # Then vocals equal the chain run in one shot over the clean vocals; drums are untouched
    chain = load_preset("vocal-polish").for_stem("vocals").chain
    expected = build_board(chain).process(vocals.T.astype(np.float32), 44100).T
    np.testing.assert_allclose(read(polished / "vocals.wav"), expected, atol=1e-5)
    np.testing.assert_array_equal(read(polished / "drums.wav"), drums)
    entry = manifest["stems"][0]
    assert entry["effects"][0] == "HighpassFilter(cutoff_frequency_hz=90.0)"
    assert entry["length_samples"] == 5 * 44100 + 3 and entry["tail_samples"] == 0
    assert clean_manifest["stems"][0]["effects"] == []


def test_a_kept_tail_is_written_and_recorded(model_dir: Path, tmp_path: Path) -> None:
    preset = tmp_path / "hall.toml"
    preset.write_text(
        '[stems.vocals]\ntail_seconds = 1.5\nchain = [{ effect = "Reverb", room_size = 0.9 }]\n',
        encoding="utf-8",
    )
    source = write_audio(tmp_path / "mix.wav", music(2 * 44100))
    folder, manifest = separate(
        tmp_path, source, "--preset", str(preset), "--stems", "vocals,instrumental"
    )
    vocals, instrumental = manifest["stems"]
    assert (vocals["length_samples"], vocals["tail_samples"]) == (2 * 44100 + 66150, 66150)
    assert sf.info(str(folder / "vocals.wav")).frames == 2 * 44100 + 66150
    assert (instrumental["tail_samples"], sf.info(str(folder / "instrumental.wav")).frames) == (
        0,
        2 * 44100,
    )
    assert manifest["output"]["length_samples"] == 2 * 44100


def test_pedalboard_reverb_really_rings_past_the_end() -> None:
    # The tail test above means something only if the reverb rings after the input stops
    burst = np.zeros((2, 44100), np.float32)
    burst[:, :100] = 0.5
    out = pedalboard.Reverb(room_size=0.9).process(burst, 44100)
    assert np.abs(out[:, 30000:]).max() > 1e-4
