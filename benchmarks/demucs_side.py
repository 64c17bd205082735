"""The reference side of every benchmark: demucs' loader and ``apply_model``, as its API runs it.

Run as a child process: ``python benchmarks/demucs_side.py MODELS INPUT OUTDIR [--device D]``.
It reads the whole file, normalises it like ``demucs.api.Separator``, separates it with
``apply_model(shifts=0, overlap=0.25)`` and writes float WAV stems; it prints one JSON
line with its timings.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import soundfile as sf
import torch
from demucs.apply import BagOfModels, apply_model
from demucs.hf import load_safetensors_model


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("models", type=Path)
    parser.add_argument("input", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    started = time.perf_counter()
    bag = BagOfModels([load_safetensors_model(args.models / "955717e8.safetensors")])
    bag.to(args.device).eval()
    loaded = time.perf_counter()
    data, rate = sf.read(str(args.input), dtype="float32", always_2d=True)
    wav = torch.from_numpy(data.T.copy())
    ref = wav.mean(0)
    mean, std = ref.mean(), ref.std() + 1e-8
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    separating = time.perf_counter()
    out = apply_model(bag, ((wav - mean) / std)[None], shifts=0, overlap=0.25, device=args.device)
    out = out * std + mean
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    separated = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    for name, stem in zip(bag.sources, out[0], strict=True):
        sf.write(str(args.out / f"{name}.wav"), stem.numpy().T, rate, subtype="FLOAT")
    finished = time.perf_counter()
    print(
        json.dumps(
            {
                "load_seconds": loaded - started,
                "separate_seconds": separated - separating,
                "total_seconds": finished - started,
                "audio_seconds": data.shape[0] / rate,
            }
        )
    )


if __name__ == "__main__":
    main()
