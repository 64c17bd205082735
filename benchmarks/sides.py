"""The two sides of every benchmark, each run as its own child process.

    python benchmarks/sides.py demucs|stembridge|pure MODELS INPUT OUTDIR [--device D]
        [--batch-size B] [--precision P] [--preset NAME] [--exact-sum] [--no-compiled-core]
        [--cpu-kernels onednn|torch]

``demucs``: demucs' loader and ``apply_model(shifts=0, overlap=0.25)`` as its API runs
them (whole file in memory, normalised like ``demucs.api.Separator``).
``stembridge``: the ``stembridge separate`` command itself (``bridge.cli.process_main``,
what the console script runs), ``file_seconds`` being its manifest's job time from the
model loaded to the last stem written; by default the raw model output (no exact-sum
residual, no effects) so it can be compared with demucs, or with ``--exact-sum`` /
``--preset`` the post-processing users get.
Both write float WAV stems and print one JSON line of timings last.
``pure``: the network alone, warm, times the number of segments the clip needs.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def run_demucs(args: argparse.Namespace) -> dict:
    import soundfile as sf
    import torch
    from demucs.apply import BagOfModels, apply_model
    from demucs.hf import load_safetensors_model

    def sync() -> None:
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()

    started = time.perf_counter()
    bag = BagOfModels([load_safetensors_model(args.models / "955717e8.safetensors")])
    bag.to(args.device).eval()
    loaded = time.perf_counter()
    data, rate = sf.read(str(args.input), dtype="float32", always_2d=True)
    wav = torch.from_numpy(data.T.copy())
    ref = wav.mean(0)
    mean, std = ref.mean(), ref.std() + 1e-8
    sync()
    separating = time.perf_counter()
    out = apply_model(bag, ((wav - mean) / std)[None], shifts=0, overlap=0.25, device=args.device)
    out = out * std + mean
    sync()
    separated = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    for name, stem in zip(bag.sources, out[0], strict=True):
        sf.write(str(args.out / f"{name}.wav"), stem.numpy().T, rate, subtype="FLOAT")
    finished = time.perf_counter()
    return {
        "load_seconds": loaded - started,
        "apply_model_seconds": separated - separating,
        "file_seconds": finished - loaded,
        "audio_seconds": data.shape[0] / rate,
        "folder": str(args.out),
    }


def run_stembridge(args: argparse.Namespace) -> dict:
    import contextlib
    import io
    import os

    # The model folder and no network, as a user's environment would say them.
    os.environ["STEMBRIDGE_MODEL_DIR"] = str(args.models)
    os.environ["STEMBRIDGE_OFFLINE"] = "1"
    from bridge.cli import process_main

    argv = [
        "separate",
        str(args.input.absolute()),
        "-o",
        str(args.out.absolute()),
        "--json",
        "--overwrite",
        "--format=wav",
        "--bit-depth=32",
        f"--device={args.device}",
        f"--precision={args.precision}",
        f"--compiled-core={'off' if args.no_compiled_core else 'auto'}",
        f"--cpu-kernels={args.cpu_kernels}",
        f"--preset={args.preset}",
        "--exact-sum" if args.exact_sum else "--no-exact-sum",
        *([f"--batch-size={args.batch_size}"] if args.batch_size else []),
    ]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = process_main(argv)
    report = json.loads(printed.getvalue())
    if code != 0:
        raise SystemExit(f"stembridge separate failed ({code}): {report['errors']}")
    manifest = report["results"][0]
    return {
        "file_seconds": manifest["timings"]["total_seconds"],
        "audio_seconds": manifest["range"]["length_seconds"],
        "folder": manifest["folder"],
    }


def run_pure(args: argparse.Namespace) -> dict:
    """The network alone: warm forward passes times the segments the clip needs."""
    import math
    import statistics

    import soundfile as sf
    import torch
    from demucs.hf import load_safetensors_model

    from bridge.models.runner import keep_freed_memory

    if args.device == "cpu":
        keep_freed_memory()  # the same allocator setting the daemon runs with
    network = load_safetensors_model(args.models / "955717e8.safetensors").to(args.device).eval()
    segment = int(network.samplerate * network.segment)
    stride = int(0.75 * segment)
    frames = sf.info(str(args.input)).frames
    batch = torch.randn(1, 2, segment, device=args.device)
    times = []
    with torch.inference_mode():
        for _ in range(4):
            started = time.perf_counter()
            network(batch)
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            times.append(time.perf_counter() - started)
    forward = statistics.median(times[1:])
    segments = math.ceil(frames / stride)
    return {"forward_seconds": forward, "segments": segments, "compute_seconds": forward * segments}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("side", choices=["demucs", "stembridge", "pure"])
    parser.add_argument("models", type=Path)
    parser.add_argument("input", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--preset", default="clean")
    parser.add_argument("--exact-sum", action="store_true")
    parser.add_argument("--no-compiled-core", action="store_true", help="eager networks")
    parser.add_argument("--cpu-kernels", default="onednn", choices=["onednn", "torch"])
    args = parser.parse_args()
    sides = {"demucs": run_demucs, "stembridge": run_stembridge, "pure": run_pure}
    print(json.dumps(sides[args.side](args)))


if __name__ == "__main__":
    main()
