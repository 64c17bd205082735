"""Peak memory does not grow with the file's length, for the chunked families and their
ensembles: ``stembridge separate`` of a 1-minute and a 10-minute file, each in its own
process, a BS-RoFormer, an MDX-Net model and an ensemble of the two; the 10-minute peak
RSS is within 15% of the 1-minute one (a 10-minute stereo mix held whole in float32 would
add some 210 MB to a peak near 400 MB)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from test_families import bs_roformer
from test_mdx_net import write_model

RATE = 44100
# 257 bins of a 512-point FFT in 45 bands: a RoFormer small enough to run 10 minutes fast
BANDS = (2,) * 24 + (4,) * 12 + (8,) * 8 + (97,)
HOP = 256


def small_bs_roformer(folder: Path) -> Path:
    return bs_roformer(folder, "small_bs_roformer", n_fft=512, hop=HOP, bands=BANDS, dim_t=101)


def write_clip(path: Path, minutes: int, rate: int = RATE) -> Path:
    """``minutes`` of 16-bit stereo noise and tones at ``rate``, written a second at a time."""
    rng = np.random.default_rng(minutes)
    t = np.arange(rate) / rate
    with sf.SoundFile(str(path), "w", rate, 2, "PCM_16") as out:
        for second in range(minutes * 60):
            tone = 0.2 * np.sin(2 * np.pi * (110 + second % 50) * t)
            out.write((tone[:, None] + 0.05 * rng.standard_normal((rate, 2))).astype(np.float32))
    return path


def peak_rss(source: Path, out: Path, *flags: str, env: dict[str, str] | None = None) -> int:
    """Bytes at the peak of a ``stembridge separate SOURCE -o OUT FLAGS...`` process."""
    args = [sys.executable, "-m", "bridge", "separate", str(source), "-o", str(out)]
    child = subprocess.Popen(
        [*args, *flags, "--no-pictures", "--overwrite"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
    )
    _, status, usage = os.wait4(child.pid, 0)
    assert child.stderr is not None
    error = child.stderr.read().decode(errors="replace")
    child.stderr.close()
    assert os.waitstatus_to_exitcode(status) == 0, error
    return usage.ru_maxrss * 1024


def model_flags(*models: Path) -> list[str]:
    """``--model`` for each of ``models``."""
    return [flag for model in models for flag in ("--model", str(model))]


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    folder = tmp_path_factory.mktemp("clips")
    return {minutes: write_clip(folder / f"{minutes}min.wav", minutes) for minutes in (1, 10)}


@pytest.mark.parametrize("which", ["bs_roformer", "mdx_net", "ensemble"])
def test_ten_minutes_peak_within_15_percent_of_one(
    tmp_path: Path, clips: dict[int, Path], which: str
) -> None:
    # Given a RoFormer, an MDX-Net model, or both as an ensemble
    models = {
        "bs_roformer": [small_bs_roformer(tmp_path / "models")],
        "mdx_net": [write_model(tmp_path / "models", "tiny_mdx_net")],
    }
    models["ensemble"] = [*models["bs_roformer"], *models["mdx_net"]]
    # When each separates 1 and 10 minutes in a process of its own
    flags = [*model_flags(*models[which]), "--overlap", "0"]
    short, long = (peak_rss(clips[m], tmp_path / f"out{m}", *flags) for m in (1, 10))
    # Then the longer file's peak is within 15% of the shorter one's
    assert long <= short * 1.15, (short / 2**20, long / 2**20)
