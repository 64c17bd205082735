"""Float stems to the output's sample format: rounding, TPDF dither, counted clipping.

Stems come out of the model (and the effects) as float. Written to PCM they are
rounded here rather than by libsndfile, for three reasons: clipping is explicit
and counted (libsndfile's float-to-int conversion does not clip by default), TPDF
dither can be added when the output has fewer bits than the input, and the dither
noise is seeded so that the same job always writes the same bytes.
"""

from __future__ import annotations

import numpy as np

_PCM_BITS = {"PCM_S8": 8, "PCM_U8": 8, "PCM_16": 16, "PCM_24": 24, "PCM_32": 32}


def pcm_bits(subtype: str) -> int | None:
    """Bits of a PCM sample format; ``None`` for float and lossy formats."""
    return _PCM_BITS.get(subtype)


def wants_dither(*, input_subtype: str, output_subtype: str, mode: str) -> bool:
    """Whether to dither stems written as ``output_subtype`` from an ``input_subtype`` file.

    ``auto`` dithers when the output is PCM with fewer bits than the input (a float
    or lossy input counts as more bits than any PCM): 24-bit in and 16-bit out, or
    float in and 24-bit out. ``on`` dithers any PCM output, ``off`` never.
    """
    out_bits = pcm_bits(output_subtype)
    if out_bits is None or mode == "off":
        return False
    if mode == "on":
        return True
    in_bits = pcm_bits(input_subtype)
    return in_bits is None or out_bits < in_bits


class Quantizer:
    """Turn ``(channels, n)`` float blocks into what ``SoundFile.write`` should get.

    Args:
        subtype: The output's libsndfile sample format.
        dither: Add TPDF dither (±1 LSB triangular noise) before rounding.
        seed: Seed of the dither noise (one per stem, so reruns are byte-identical).
    """

    def __init__(self, subtype: str, *, dither: bool, seed: int) -> None:
        bits = pcm_bits(subtype)
        # 8-bit outputs are written as 16-bit (see formats), so 16 is the smallest here.
        self._bits = bits if bits is None else max(bits, 16)
        self._dither = dither and bits is not None
        self._rng = np.random.default_rng(seed)
        self.clipped_samples = 0

    def __call__(self, block: np.ndarray) -> np.ndarray:
        """Return ``(n, channels)`` samples: int16/int32 for PCM, float32 otherwise."""
        if self._bits is None:
            return np.ascontiguousarray(block.T, dtype=np.float32)
        scale = float(2 ** (self._bits - 1))
        scaled = block.astype(np.float64) * scale
        if self._dither:
            shape = scaled.shape
            scaled += self._rng.random(shape) - self._rng.random(shape)
        rounded = np.floor(scaled + 0.5)
        over = (rounded < -scale) | (rounded > scale - 1)
        self.clipped_samples += int(np.count_nonzero(over))
        ints = np.clip(rounded, -scale, scale - 1)
        if self._bits == 16:
            return np.ascontiguousarray(ints.T.astype(np.int16))
        # libsndfile takes 24-bit samples from the top bits of an int32.
        return np.ascontiguousarray((ints.T.astype(np.int64) << (32 - self._bits)).astype(np.int32))
