"""The reference: demucs' own loaders and ``apply_model``, normalised as ``demucs.api`` does."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch
from demucs.apply import BagOfModels, apply_model
from demucs.hf import load_safetensors_model
from demucs.pretrained import get_model

from bridge.models.catalog import ModelSpec


def demucs_bag(folder: Path, spec: ModelSpec) -> BagOfModels:
    """Load a model folder with demucs' own loaders (trusted test files)."""
    if (folder / f"{spec.signatures[0]}.safetensors").exists():
        networks = [load_safetensors_model(folder / f"{s}.safetensors") for s in spec.signatures]
        return BagOfModels(networks)
    model = get_model(spec.name, repo=folder)
    return model if isinstance(model, BagOfModels) else BagOfModels([model])


def separate_reference(
    bag: BagOfModels,
    audio: np.ndarray,
    *,
    shifts: int = 0,
    overlap: float = 0.25,
    segment: float | None = None,
    seed: int = 0,
) -> np.ndarray:
    """Stems of ``(frames, channels)`` audio as ``(sources, channels, frames)``."""
    wav = torch.from_numpy(np.ascontiguousarray(audio.T))
    if wav.shape[0] == 1:
        wav = wav.expand(2, -1)
    ref = wav.mean(0)
    mean = ref.mean()
    std = ref.std() + 1e-8
    random.seed(seed)
    out = apply_model(
        bag, ((wav - mean) / std)[None], shifts=shifts, overlap=overlap, segment=segment
    )
    return (out * std + mean)[0].numpy()


def separate_shifted_reference(
    bag: BagOfModels, audio: np.ndarray, *, offsets: list[int], max_shift: int, **options: float
) -> np.ndarray:
    """demucs' shift trick with given offsets: ``apply_model`` on each shifted copy, averaged.

    ``apply_model(shifts=N)`` draws its offsets from the global ``random`` interleaved
    with draws made inside the network's forward pass, so it cannot be replayed from a
    seed; this applies the same trick (pad by ``max_shift``, start ``offset`` samples in,
    cut ``max_shift - offset`` samples from the result) with known offsets.
    """
    wav = torch.from_numpy(np.ascontiguousarray(audio.T))
    ref = wav.mean(0)
    mean, std = ref.mean(), ref.std() + 1e-8
    # Normalise first: the shift padding is silence in the normalised signal.
    padded = torch.nn.functional.pad((wav - mean) / std, (max_shift, max_shift))
    frames = audio.shape[0]
    total = None
    for offset in offsets:
        shifted = padded[:, offset : frames + max_shift]
        out = apply_model(bag, shifted[None], shifts=0, **options)[0]
        cut = out[..., max_shift - offset :]
        total = cut if total is None else total + cut
    return ((total / len(offsets)) * std + mean).numpy()
