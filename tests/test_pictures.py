"""Stem pictures: drawn from the file in blocks, right, beside the stem, and never fatal."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from bridge import pictures
from bridge.cli import EXIT_OK, main
from bridge.pictures import SPECTROGRAM_SIZE, WAVEFORM_SIZE, draw_stem_pictures

from signals import music, write_audio

RATE = 44100


def wave_rows(png: Path) -> list[tuple[int, int]]:
    """Per column, the first and last row drawn in the waveform's colour."""
    image = np.asarray(Image.open(png).convert("RGB"))
    drawn = np.all(image == pictures._WAVE, axis=2)
    return [
        (int(np.argmax(column)), len(column) - 1 - int(np.argmax(column[::-1])))
        for column in drawn.T
    ]


def test_waveform_matches_the_whole_file_read_at_once(tmp_path: Path) -> None:
    # Given a stem longer than many blocks, quiet in its first half and loud in its second
    frames = 5 * pictures.BLOCK_FRAMES + 123
    audio = music(frames, seed=3) * 0.5
    audio[: frames // 2] *= 0.05
    stem = write_audio(tmp_path / "vocals.wav", audio, subtype="FLOAT")
    # When its pictures are drawn
    names = draw_stem_pictures({"vocals": stem})
    # Then both PNGs lie beside the stem, at their sizes
    assert names == {
        "vocals": {"waveform": "vocals.waveform.png", "spectrogram": "vocals.spectrogram.png"}
    }
    assert Image.open(tmp_path / "vocals.waveform.png").size == WAVEFORM_SIZE
    assert Image.open(tmp_path / "vocals.spectrogram.png").size == SPECTROGRAM_SIZE
    # And each waveform column spans the lowest to the highest sample of its frames
    width, height = WAVEFORM_SIZE
    middle = (height - 1) / 2
    columns = (np.arange(frames) * width) // frames
    for column, (top, bottom) in enumerate(wave_rows(tmp_path / "vocals.waveform.png")):
        part = audio[columns == column]
        assert top == round(middle - min(part.max(), 1.0) * middle)
        assert bottom == round(middle - max(part.min(), -1.0) * middle)


def test_spectrogram_shows_a_tone_at_its_height(tmp_path: Path) -> None:
    # Given a 1 kHz tone
    t = np.arange(3 * RATE) / RATE
    tone = np.stack([0.5 * np.sin(2 * np.pi * 1000 * t)] * 2, axis=1).astype(np.float32)
    stem = write_audio(tmp_path / "bass.wav", tone)
    # When its spectrogram is drawn
    draw_stem_pictures({"bass": stem})
    image = np.asarray(Image.open(tmp_path / "bass.spectrogram.png").convert("L"), dtype=float)
    # Then the brightest row is where 1 kHz sits on the log axis, in every column
    rows = np.geomspace(RATE / 2, pictures.LOWEST_HZ, SPECTROGRAM_SIZE[1])
    expected = int(np.argmin(np.abs(rows - 1000)))
    assert np.all(np.abs(image.argmax(axis=0) - expected) <= 1)


def test_a_stem_that_cannot_be_read_gets_no_pictures_and_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a stem that is not audio, and a good one
    broken = tmp_path / "drums.wav"
    broken.write_bytes(b"not audio at all")
    good = write_audio(tmp_path / "other.wav", music(RATE))
    # When the pictures are drawn
    with caplog.at_level(logging.WARNING):
        names = draw_stem_pictures({"drums": broken, "other": good})
    # Then the broken stem has none (and no file), the good one has both, and it was logged
    assert names["drums"] == {} and set(names["other"]) == {"waveform", "spectrogram"}
    assert sorted(p.name for p in tmp_path.glob("*.png")) == [
        "other.spectrogram.png",
        "other.waveform.png",
    ]
    assert f"could not draw the pictures of {broken}" in caplog.text


@pytest.mark.parametrize("flags", [[], ["--no-pictures"]])
def test_separate_lists_the_pictures_in_the_manifest(
    model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str]
) -> None:
    # Given a mix, when it is separated (with or without pictures)
    mix = write_audio(tmp_path / "song.wav", music(2 * RATE))
    assert main(["separate", str(mix), "-o", str(tmp_path / "out"), *flags]) == EXIT_OK
    capsys.readouterr()
    folder = tmp_path / "out" / "song"
    manifest = json.loads((folder / "manifest.json").read_text())
    # Then every stem lists its pictures, which are PNGs beside it, or none at all
    for stem in manifest["stems"]:
        if flags:
            assert stem["pictures"] == {}
        else:
            assert stem["pictures"] == {
                "waveform": f"{stem['name']}.waveform.png",
                "spectrogram": f"{stem['name']}.spectrogram.png",
            }
            for name in stem["pictures"].values():
                assert Image.open(folder / name).format == "PNG"
    assert bool(list(folder.glob("*.png"))) != bool(flags)
    assert sf.info(str(folder / "vocals.wav")).frames == 2 * RATE
