"""The shipped examples run as documented."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from signals import music, write_audio

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_keep_model_warm_separates_each_file(model_dir: Path, tmp_path: Path) -> None:
    inputs = [write_audio(tmp_path / f"{name}.wav", music(30000)) for name in ("a", "b")]
    result = subprocess.run(
        [
            sys.executable,
            str(EXAMPLES / "keep_model_warm.py"),
            str(tmp_path / "out"),
            *map(str, inputs),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    for name in ("a", "b"):
        assert sorted(p.name for p in (tmp_path / "out" / name).iterdir()) == [
            "manifest.json",
            "no_vocals.spectrogram.png",
            "no_vocals.wav",
            "no_vocals.waveform.png",
            "vocals.spectrogram.png",
            "vocals.wav",
            "vocals.waveform.png",
        ]


def test_separate_folder_script(model_dir: Path, tmp_path: Path) -> None:
    write_audio(tmp_path / "take.flac", music(30000), subtype="PCM_24")
    result = subprocess.run(
        ["bash", str(EXAMPLES / "separate_folder.sh"), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "take" / "vocals.flac").exists()
    assert (tmp_path / "take" / "instrumental.flac").exists()
