"""The demo song the README's first command separates: ours, small, and separable."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

from bridge.cli import EXIT_OK, main

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "examples" / "demo.flac"


def test_the_shipped_demo_is_what_the_script_synthesises(tmp_path: Path) -> None:
    # When the generator runs again
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "make_demo_audio.py"), str(tmp_path / "demo.flac")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    # Then it makes the committed samples (to the last bit, allowing one step of rounding
    # where another platform's sin differs in the last digit)
    shipped, rate = sf.read(str(DEMO), dtype="int16")
    again, _ = sf.read(str(tmp_path / "demo.flac"), dtype="int16")
    assert rate == 44100 and shipped.shape == again.shape == (6 * 44100, 2)
    assert np.max(np.abs(shipped.astype(np.int32) - again)) <= 1
    # And it is a few seconds of 16-bit stereo FLAC, small enough to ship
    info = sf.info(str(DEMO))
    assert (info.format, info.subtype) == ("FLAC", "PCM_16")
    assert DEMO.stat().st_size < 400_000
    assert 0.5 < np.max(np.abs(shipped)) / 32768 < 1  # loud, never clipped


def test_the_readme_first_command_separates_the_demo(model_dir: Path, tmp_path: Path) -> None:
    # When the demo is separated, as the README's first command does
    assert main(["separate", str(DEMO), "-o", str(tmp_path)]) == EXIT_OK
    # Then every stem is there, exactly as long as the demo
    for stem in ("drums", "bass", "other", "vocals"):
        info = sf.info(str(tmp_path / "demo" / f"{stem}.flac"))
        assert (info.frames, info.samplerate, info.channels) == (6 * 44100, 44100, 2)
