"""GPU throughput, parity and memory: StemBridge vs demucs' apply_model, one process.

    python benchmarks/gpu.py [--smoke] [--models htdemucs htdemucs_ft]
        [--batch-sizes 1 2 4 8 16 32] [--precisions fp32 fp16 bf16]
        [--seconds 30] [--song-seconds 180] [--device cuda]

For each model (random init in the released configuration; ``--smoke``: tiny networks
on the CPU, short clips, fp32 only, for CI): demucs' ``apply_model`` fp32 on the clip
(its x realtime; its stems the reference), then StemBridge's engine on the same clip
for every precision and batch size: x realtime, ratio to demucs, the largest difference
from demucs' fp32 stems and peak GPU memory. Last, file to file: a song of
``--song-seconds`` through ``sides.py`` (process start and model load included, as a
user runs it) for each side. One JSON line per measurement as it is made (so a run cut
short keeps what it measured), then a summary. Run by ``benchmarks/gpu_check.sh``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from common import machine, max_difference, read_stems, separate_with, write_clip
from demucs.apply import BagOfModels

from bridge.models.catalog import MODELS
from bridge.models.groups import GroupStats, channel_groups
from bridge.models.loaded import LoadedModel
from bridge.settings import SeparationSettings

from modelfiles import bag_definition, make_networks, write_hf_form  # tests/ is on the path
from reference import demucs_bag, separate_reference


def main() -> None:
    args = _parser().parse_args()
    if args.smoke:
        args.device, args.precisions = "cpu", ["fp32"]
        args.batch_sizes, args.seconds, args.song_seconds = [1, 2], 3.0, 3.0
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name in args.models:
            rows.extend(_measure_model(name, work, args))
        song = write_clip(work / "song.wav", args.song_seconds, seed=3)
        files = _file_to_file(work, song, args)
    summary = {
        "machine": machine(),
        "smoke": args.smoke,
        "clip_seconds": args.seconds,
        "engine": rows,
        "file_to_file": files,
    }
    print(json.dumps(summary, indent=2))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny networks on the CPU (CI)")
    parser.add_argument("--models", nargs="+", default=["htdemucs", "htdemucs_ft"])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32])
    parser.add_argument("--precisions", nargs="+", default=["fp32", "fp16", "bf16"])
    parser.add_argument("--seconds", type=float, default=30.0, help="throughput clip")
    parser.add_argument("--song-seconds", type=float, default=180.0, help="file-to-file song")
    parser.add_argument("--device", default="cuda")
    return parser


def _models_folder(work: Path, name: str, *, smoke: bool) -> Path:
    folder = work / "models" / name
    if not folder.exists():
        spec = MODELS[name]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            write_hf_form(folder, spec, make_networks(spec, seed=5, official=not smoke))
    return folder


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _reset_peak(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _peak_mb(device: str) -> float | None:
    if device.startswith("cuda"):
        return round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return None


def _emit(row: dict) -> dict:
    print(json.dumps(row), flush=True)
    return row


def _measure_model(name: str, work: Path, args: argparse.Namespace) -> list[dict]:
    spec = MODELS[name]
    folder = _models_folder(work, name, smoke=args.smoke)
    audio = write_clip(work / f"clip-{name}.wav", args.seconds, seed=1)
    data, _ = sf.read(str(audio), dtype="float32", always_2d=True)

    # demucs: whole clip on the device's side as its API runs it; the second run is timed.
    bag = demucs_bag(folder, spec)
    weights = bag_definition(spec).get("weights")  # htdemucs_ft: each network one stem
    bag = BagOfModels(list(bag.models), weights=weights).to(args.device).eval()
    for _ in range(2):
        _reset_peak(args.device)
        _sync(args.device)
        started = time.perf_counter()
        with torch.inference_mode():
            reference = separate_reference(bag, data)
        _sync(args.device)
        demucs_seconds = time.perf_counter() - started
    demucs_speed = args.seconds / demucs_seconds
    rows = [
        _emit(
            {
                "model": name,
                "side": "demucs apply_model fp32",
                "x_realtime": round(demucs_speed, 1),
                "peak_gpu_mb": _peak_mb(args.device),
            }
        )
    ]
    del bag

    mix = np.ascontiguousarray(data.T)
    groups = channel_groups(mix.shape[0])
    stats = GroupStats(groups, 2)
    stats.update(mix, source=str(audio))
    for precision in args.precisions:
        settings = SeparationSettings(
            model=name, device=args.device, precision=precision, compiled_core="off"
        )
        loaded = LoadedModel.load(settings, folders=[folder], offline=True)
        for batch in args.batch_sizes:
            model = loaded.with_settings(dataclasses.replace(settings, batch_size=batch))
            best, stems = float("inf"), None
            _reset_peak(args.device)
            for _ in range(2):  # the first run pays cuDNN's algorithm search
                _sync(args.device)
                started = time.perf_counter()
                blocks = model.separate(
                    [mix],
                    length=mix.shape[1],
                    groups=groups,
                    stats=stats.result(),
                    wanted=list(spec.sources),
                )
                stems = np.concatenate(list(blocks), axis=-1)
                _sync(args.device)
                best = min(best, time.perf_counter() - started)
            assert stems is not None
            speed = args.seconds / best
            rows.append(
                _emit(
                    {
                        "model": name,
                        "side": "stembridge engine",
                        "precision": precision,
                        "batch_size": batch,
                        "x_realtime": round(speed, 1),
                        "ratio_vs_demucs": round(speed / demucs_speed, 2),
                        "max_abs_difference_vs_apply_model_fp32": float(
                            np.abs(stems - reference).max()
                        ),
                        "peak_gpu_mb": _peak_mb(args.device),
                    }
                )
            )
        del loaded
    return rows


def _file_to_file(work: Path, song: Path, args: argparse.Namespace) -> list[dict]:
    """A song through each side's child process: start, load, decode, separate, write."""
    folder = _models_folder(work, "htdemucs", smoke=args.smoke)
    theirs = separate_with("demucs", folder, song, work / "f2f-demucs", device=args.device)
    rows = [
        _emit(
            {
                "file_to_file": "demucs apply_model fp32",
                "song_seconds": args.song_seconds,
                "wall_seconds": round(theirs.wall_seconds, 2),
                "after_load_seconds": round(theirs.result["file_seconds"], 2),
            }
        )
    ]
    reference = read_stems(theirs)
    for precision in args.precisions:
        batch = max(args.batch_sizes) if args.device.startswith("cuda") else 1
        ours = separate_with(
            "stembridge",
            folder,
            song,
            work / f"f2f-{precision}",
            device=args.device,
            precision=precision,
            batch_size=batch,
            no_compiled_core=True,
        )
        rows.append(
            _emit(
                {
                    "file_to_file": f"stembridge {precision} batch {batch}",
                    "song_seconds": args.song_seconds,
                    "wall_seconds": round(ours.wall_seconds, 2),
                    "after_load_seconds": round(ours.result["file_seconds"], 2),
                    "max_abs_difference_vs_demucs_fp32": max_difference(
                        reference, read_stems(ours)
                    ),
                }
            )
        )
    return rows


if __name__ == "__main__":
    main()
