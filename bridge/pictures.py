"""Pictures of stems: a waveform and a small spectrogram per stem, as PNG files beside it.

They are drawn once per job, after the stems are published and before the
manifest (which lists them) is written, so the dashboard, hosts and file browsers
can show them without decoding audio. Each stem file is read back in blocks:
memory stays bounded by the block and picture sizes whatever the stem's length.
A picture that cannot be drawn never fails the stems: it is logged and the
manifest lists no pictures for that stem. Without Pillow (the ``pictures`` extra)
no pictures are drawn, and one log line per job says how to get them.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import soundfile as sf

from bridge import atomic
from bridge.extras import EXTRAS, missing_module

log = logging.getLogger(__name__)

WAVEFORM_SIZE = (800, 120)
SPECTROGRAM_SIZE = (400, 128)
#: Frames read from a stem at a time.
BLOCK_FRAMES = 1 << 16
#: Frames per FFT of the spectrogram (non-overlapping Hann windows, averaged per column).
FFT_FRAMES = 1024
#: Lowest frequency on the spectrogram's logarithmic axis.
LOWEST_HZ = 30.0
#: Dynamic range shown by the spectrogram below its loudest cell.
RANGE_DB = 80.0

_BACKGROUND = (24, 24, 30)
_WAVE = (94, 196, 255)
# A dark-to-light ramp (close to matplotlib's "magma") without needing matplotlib.
_RAMP = np.array(
    [
        (0, 0, 4),
        (40, 11, 84),
        (101, 21, 110),
        (159, 42, 99),
        (212, 72, 66),
        (245, 125, 21),
        (250, 193, 39),
        (252, 255, 164),
    ],
    dtype=np.float64,
)


def stem_pictures(stems: Mapping[str, Path]) -> dict[str, dict[str, tuple[Path, bytes]]]:
    """Draw the pictures of every stem, to be written beside it.

    Args:
        stems: Stem name to its published file.

    Returns:
        Stem name to ``{kind: (picture file, PNG bytes)}`` (both pictures of a stem, or
        none: ``{}`` for a stem whose pictures failed, and for every stem without Pillow).
    """
    module = missing_module("pictures")
    if module is not None:
        # A lean install is a choice, not a failure: the stems stand without pictures.
        log.warning(
            "no stem pictures: they need the 'pictures' extra (%s cannot be imported); "
            "install it with: %s, or turn them off ([output] pictures = false, "
            "separate --no-pictures)",
            module,
            EXTRAS["pictures"].install_command,
        )
        return {name: {} for name in stems}
    return {name: _draw_or_log(path) for name, path in stems.items()}


def draw_stem_pictures(stems: Mapping[str, Path]) -> dict[str, dict[str, str]]:
    """Draw the pictures of every stem and write them beside it (each atomically).

    Returns:
        Stem name to ``{"waveform": file name, "spectrogram": file name}`` (names
        relative to the stem's folder), ``{}`` where :func:`stem_pictures` gave none.
    """
    listed = {}
    for name, images in stem_pictures(stems).items():
        for target, data in images.values():
            atomic.write_bytes(target, data)
        listed[name] = {kind: target.name for kind, (target, _) in images.items()}
    return listed


def picture_paths(path: Path) -> dict[str, Path]:
    """Where the pictures of the stem file ``path`` go."""
    return {kind: path.with_name(f"{path.stem}.{kind}.png") for kind in ("waveform", "spectrogram")}


def _draw_or_log(path: Path) -> dict[str, tuple[Path, bytes]]:
    try:
        images = draw_pictures(path)
    except Exception:  # a picture is a convenience: the stems stand without it
        log.warning(
            "could not draw the pictures of %s; the manifest lists none", path, exc_info=True
        )
        return {}
    return {kind: (target, images[kind]) for kind, target in picture_paths(path).items()}


def draw_pictures(path: Path) -> dict[str, bytes]:
    """The waveform and spectrogram PNGs of one audio file, read in blocks.

    Raises:
        soundfile.LibsndfileError: The file cannot be decoded.
    """
    with sf.SoundFile(str(path)) as file:
        total = max(file.frames, 1)
        waveform = _Waveform(WAVEFORM_SIZE[0], total)
        spectrogram = _Spectrogram(SPECTROGRAM_SIZE[0], total, file.samplerate)
        offset = 0
        for block in file.blocks(blocksize=BLOCK_FRAMES, dtype="float32", always_2d=True):
            waveform.push(block, offset)
            spectrogram.push(block @ np.full(block.shape[1], 1 / block.shape[1], np.float32))
            offset += len(block)
    return {
        "waveform": _png(waveform.image(WAVEFORM_SIZE[1])),
        "spectrogram": _png(spectrogram.image(SPECTROGRAM_SIZE[1])),
    }


class _Waveform:
    """Lowest and highest sample (over all channels) per picture column."""

    def __init__(self, width: int, total: int) -> None:
        self._width = width
        self._total = total
        self._low = np.zeros(width, dtype=np.float32)
        self._high = np.zeros(width, dtype=np.float32)

    def push(self, block: np.ndarray, offset: int) -> None:
        # Column c starts at frame ceil(c * total / width): only the block's few column
        # starts are computed, not a column per frame.
        first = min(offset * self._width // self._total, self._width - 1)
        last = min((offset + len(block) - 1) * self._width // self._total, self._width - 1)
        where = np.arange(first, last + 1)
        starts = -((-where * self._total) // self._width) - offset
        starts[0] = 0
        # Over frames first, then channels: reducing the short channel axis first is slow.
        low = np.minimum.reduceat(block, starts, axis=0).min(axis=1)
        high = np.maximum.reduceat(block, starts, axis=0).max(axis=1)
        self._low[where] = np.minimum(self._low[where], low)
        self._high[where] = np.maximum(self._high[where], high)

    def image(self, height: int) -> np.ndarray:
        middle = (height - 1) / 2
        top = np.round(middle - np.clip(self._high, -1, 1) * middle)
        bottom = np.round(middle - np.clip(self._low, -1, 1) * middle)
        rows = np.arange(height)[:, None]
        inside = (rows >= top[None, :]) & (rows <= bottom[None, :])
        picture = np.empty((height, self._width, 3), dtype=np.uint8)
        picture[:] = _BACKGROUND
        picture[inside] = _WAVE
        picture[int(middle)] = np.maximum(picture[int(middle)], 60)  # the zero line
        return picture


class _Spectrogram:
    """Mean power spectrum per picture column, from non-overlapping windows."""

    def __init__(self, width: int, total: int, sample_rate: int) -> None:
        self._width = width
        self._total = total
        self._sample_rate = sample_rate
        self._window = np.hanning(FFT_FRAMES).astype(np.float32)
        self._power = np.zeros((width, FFT_FRAMES // 2 + 1))
        self._count = np.zeros(width)
        self._rest = np.zeros(0, dtype=np.float32)
        self._frames = 0  # frames already taken into windows

    def push(self, mono: np.ndarray) -> None:
        samples = np.concatenate([self._rest, mono])
        windows = len(samples) // FFT_FRAMES
        self._rest = samples[windows * FFT_FRAMES :]
        if windows:
            self._add(samples[: windows * FFT_FRAMES].reshape(windows, FFT_FRAMES))

    def _add(self, frames: np.ndarray) -> None:
        spectra = np.abs(np.fft.rfft(frames * self._window, axis=1)) ** 2
        starts = self._frames + FFT_FRAMES * np.arange(len(frames))
        columns = np.minimum((starts * self._width) // self._total, self._width - 1)
        starts = np.flatnonzero(np.diff(columns, prepend=-1))
        self._power[columns[starts]] += np.add.reduceat(spectra, starts, axis=0)
        self._count[columns[starts]] += np.diff(np.append(starts, len(columns)))
        self._frames += FFT_FRAMES * len(frames)

    def image(self, height: int) -> np.ndarray:
        if len(self._rest) or not self._count.any():
            padded = np.zeros(FFT_FRAMES, dtype=np.float32)
            padded[: len(self._rest)] = self._rest
            self._rest = np.zeros(0, dtype=np.float32)
            self._add(padded[None, :])
        filled = np.flatnonzero(self._count)
        # Columns no window started in (stems shorter than the picture is wide) show
        # their nearest neighbour.
        nearest = filled[np.abs(np.arange(self._width)[:, None] - filled[None, :]).argmin(axis=1)]
        power = self._power[nearest] / self._count[nearest][:, None]
        bins = np.fft.rfftfreq(FFT_FRAMES, 1 / self._sample_rate)
        nyquist = self._sample_rate / 2
        rows = np.geomspace(nyquist, min(LOWEST_HZ, nyquist / 2), height)
        on_rows = np.stack([np.interp(rows, bins, column) for column in power], axis=1)
        level = 10 * np.log10(on_rows + 1e-20)
        shade = np.clip(1 + (level - level.max()) / RANGE_DB, 0, 1)
        if not np.any(power > 1e-20):  # a silent stem is all dark, not all bright
            shade[:] = 0
        return _colour(shade)


def _colour(shade: np.ndarray) -> np.ndarray:
    """Map 0..1 onto the colour ramp."""
    position = shade * (len(_RAMP) - 1)
    low = np.floor(position).astype(int).clip(0, len(_RAMP) - 2)
    weight = (position - low)[..., None]
    return np.round(_RAMP[low] * (1 - weight) + _RAMP[low + 1] * weight).astype(np.uint8)


def _png(picture: np.ndarray) -> bytes:
    from PIL import Image  # the optional 'pictures' extra: checked by draw_stem_pictures

    buffer = io.BytesIO()
    # zlib's fastest level: a spectrogram took 3.6 ms instead of 11 ms at the default,
    # for a file 6 % larger (70 KB), on every job's way to its manifest.
    Image.fromarray(picture).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()
