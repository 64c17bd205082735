"""GPU throughput, parity and memory: StemBridge vs demucs' apply_model, one process.

    python benchmarks/gpu.py [--smoke] [--models htdemucs htdemucs_ft]
        [--batch-sizes 1 2 4 8 16 32] [--precisions fp32 fp16 bf16]
        [--seconds S] [--song-seconds 180] [--device cuda] [--budget-seconds N]

For each model (random init in the released configuration; ``--smoke``: tiny networks
on the CPU, short clips, fp32 only, for CI): demucs' ``apply_model`` fp32 on the device
as demucs' CLI runs it (the track on the CPU, each segment on the device; its stems the
reference), then StemBridge's engine on the same clip for every precision and batch
size: x realtime, ratio to demucs, the largest difference from demucs' fp32 stems and
peak GPU memory. Each figure is the best of two runs (the first pays cuDNN's and
cuBLAS's set-up). The clip is, unless ``--seconds`` says, exactly as many segments as
the largest batch size (32 segments of 7.8 s at demucs' 0.25 overlap: 187.2 s), so that
every batch size runs full forward passes. After htdemucs: file to file, a song of
``--song-seconds`` through ``sides.py`` (process start and model load included, as a
user runs it) for each side. Last, for htdemucs at the fastest batch size the sweep
found per precision, the variants of :data:`_KINDS`: the network with its constants on
the device (:class:`_DeviceConstants`), then that replayed as CUDA graphs, compiled by
``torch.compile``, and compiled in its reduce-overhead mode; the first run (capture or
compilation) is reported apart. On the CPU only the first runs; the others, and any that
less of ``--budget-seconds`` is left for than they need, print a ``skipped`` line.

Time on an H200 (an estimate; nothing here has run on a GPU): an htdemucs segment is 224
GFLOP (``torch.utils.flop_counter`` on the released configuration), a 187 s clip 32 of
them, 7.2 TFLOP: about 0.1-0.5 s of GPU work per run even at 15-70 TFLOP/s achieved, so
each run is bound by the engine's CPU side (overlap-add, copies; under 1 s). htdemucs:
18 configurations x 2 runs plus demucs' 2, about 40 s; htdemucs_ft four times that, about
160 s; file to file four processes of about 10 s (start, CUDA, load, 3 minutes of audio);
writing the released-size weights and loading them, about 30 s; about 4.5 minutes before
the variants, which then get what is left of the 420 s (a compile is guessed at 150 s).

One JSON line per measurement as it is made (so a run cut short keeps what it measured),
then a summary. Run by ``benchmarks/gpu_check.sh``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from common import machine, max_difference, read_stems, separate_with, write_clip
from demucs.apply import BagOfModels, apply_model

from bridge.models.catalog import DEMUCS_OVERLAP, MODELS
from bridge.models.groups import GroupStats, channel_groups
from bridge.models.loaded import LoadedModel
from bridge.models.loading import load_bag
from bridge.models.weights import locate
from bridge.settings import SeparationSettings

from modelfiles import bag_definition, make_networks, write_hf_form  # tests/ is on the path
from reference import demucs_bag

#: What a variant needs of the budget beyond three runs of its eager configuration, in
#: seconds: inductor compiling htdemucs is a guess until a GPU run measures it (each row's
#: first_run_seconds is the real figure), a CUDA graph capture is one forward pass.
_SET_UP_SECONDS = {
    "device constants": 0.0,
    "cuda graphs": 10.0,
    "torch.compile": 150.0,
    "torch.compile reduce-overhead": 150.0,
}


@dataclasses.dataclass(frozen=True)
class _Budget:
    """Seconds the whole run may take (None: no limit), counted from ``started``."""

    seconds: float | None
    started: float = dataclasses.field(default_factory=time.perf_counter)

    def allows(self, step: str, needs_seconds: float) -> bool:
        """Whether ``step`` fits in what is left; if not, a line says it was skipped."""
        if self.seconds is None:
            return True
        left = self.seconds - (time.perf_counter() - self.started)
        if left >= needs_seconds:
            return True
        _emit(
            {
                "skipped": step,
                "reason": f"{left:.0f} s of the {self.seconds:.0f} s budget left, it needs "
                f"about {needs_seconds:.0f} s",
            }
        )
        return False


@dataclasses.dataclass
class _Clip:
    """One model's clip, its demucs reference and its eager StemBridge figures."""

    folder: Path
    mix: np.ndarray
    seconds: float
    reference: np.ndarray
    demucs_speed: float
    rows: list[dict]


def main() -> None:
    args = _parser().parse_args()
    if args.smoke:
        args.device, args.precisions = "cpu", ["fp32"]
        args.batch_sizes, args.seconds, args.song_seconds = [1, 2], 3.0, 3.0
    budget = _Budget(args.budget_seconds)
    rows: list[dict] = []
    files: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        clips = {}
        for name in args.models:
            clips[name] = _measure_model(name, work, args)
            rows.extend(clips[name].rows)
            if name == args.models[0]:
                song = write_clip(work / "song.wav", args.song_seconds, seed=3)
                files = _file_to_file(work, song, args)
        if "htdemucs" in clips:
            rows.extend(_measure_variants("htdemucs", clips["htdemucs"], args, budget))
    summary = {
        "machine": machine(),
        "smoke": args.smoke,
        "elapsed_seconds": round(time.perf_counter() - budget.started, 1),
        "clip_seconds": {name: clip.seconds for name, clip in clips.items()},
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
    parser.add_argument(
        "--seconds", type=float, help="throughput clip (default: one full largest batch)"
    )
    parser.add_argument("--song-seconds", type=float, default=180.0, help="file-to-file song")
    parser.add_argument("--device", default="cuda")
    parser.add_argument(
        "--budget-seconds", type=float, help="skip the optional variants past this (default: none)"
    )
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


def _timed_runs(run: Callable[[], np.ndarray], device: str, runs: int) -> tuple[list, np.ndarray]:
    """Each of ``runs`` calls' seconds, and the last call's result."""
    times, result = [], None
    for _ in range(runs):
        _sync(device)
        started = time.perf_counter()
        result = run()
        _sync(device)
        times.append(time.perf_counter() - started)
    assert result is not None
    return times, result


def _demucs_apply(bag: BagOfModels, data: np.ndarray, device: str) -> np.ndarray:
    """tests/reference.py's ``separate_reference`` with demucs' CLI's ``device=``: without
    it apply_model runs where the track is, the CPU, and moves the bag there."""
    wav = torch.from_numpy(np.ascontiguousarray(data.T))
    ref = wav.mean(0)
    mean, std = ref.mean(), ref.std() + 1e-8
    with torch.inference_mode():
        out = apply_model(
            bag, ((wav - mean) / std)[None], shifts=0, overlap=DEMUCS_OVERLAP, device=device
        )
    return (out * std + mean)[0].numpy()


def _full_batches_seconds(bag: BagOfModels, batch: int) -> float:
    """A clip of exactly ``batch`` segments (demucs' stride), so every batch size that
    divides it runs full forward passes."""
    segment_length = int(bag.samplerate * bag.models[0].segment)
    stride = int((1 - DEMUCS_OVERLAP) * segment_length)
    return batch * stride / bag.samplerate


def _measure_model(name: str, work: Path, args: argparse.Namespace) -> _Clip:
    spec = MODELS[name]
    folder = _models_folder(work, name, smoke=args.smoke)
    bag = demucs_bag(folder, spec)
    weights = bag_definition(spec).get("weights")  # htdemucs_ft: each network one stem
    bag = BagOfModels(list(bag.models), weights=weights).to(args.device).eval()
    seconds = args.seconds or _full_batches_seconds(bag, max(args.batch_sizes))
    audio = write_clip(work / f"clip-{name}.wav", seconds, seed=1)
    data, _ = sf.read(str(audio), dtype="float32", always_2d=True)

    _reset_peak(args.device)
    times, reference = _timed_runs(partial(_demucs_apply, bag, data, args.device), args.device, 2)
    demucs_speed = seconds / min(times)
    rows = [
        _emit(
            {
                "model": name,
                "side": "demucs apply_model fp32",
                "clip_seconds": round(seconds, 2),
                "x_realtime": round(demucs_speed, 1),
                "peak_gpu_mb": _peak_mb(args.device),
            }
        )
    ]
    del bag
    clip = _Clip(folder, np.ascontiguousarray(data.T), seconds, reference, demucs_speed, rows)

    settings = SeparationSettings(model=name, device=args.device, compiled_core="off")
    loaded = LoadedModel.load(settings, folders=[folder], offline=True)
    for precision in args.precisions:
        for batch in args.batch_sizes:
            try:
                model = loaded.with_settings(
                    dataclasses.replace(settings, precision=precision, batch_size=batch)
                )
                row = _engine_row(model, clip, args, precision, batch)
            except Exception as error:  # the one GPU run goes on to what still runs
                rows.append(_failed(f"{name} {precision} batch {batch}", error, args.device))
                continue
            rows.append(_emit({"model": name, **row}))
    return clip


def _failed(step: str, error: BaseException, device: str) -> dict:
    """A line for a configuration that raised (its figures are absent, the run goes on)."""
    if device.startswith("cuda"):
        torch.cuda.empty_cache()  # an out-of-memory batch leaves its blocks cached
    reason = f"{type(error).__name__}: {error}"[:600]  # inductor's errors run to pages
    return _emit({"failed": step, "reason": reason})


def _engine_row(
    model: LoadedModel,
    clip: _Clip,
    args: argparse.Namespace,
    precision: str,
    batch: int,
    *,
    cold: bool = False,
) -> dict:
    """One configuration's figures, the best of two runs; ``cold``: after a first run,
    reported apart (a CUDA graph capture or a compilation)."""
    groups = channel_groups(clip.mix.shape[0])
    stats = GroupStats(groups, 2)
    stats.update(clip.mix, source="clip")

    def run() -> np.ndarray:
        blocks = model.separate(
            [clip.mix],
            length=clip.mix.shape[1],
            groups=groups,
            stats=stats.result(),
            wanted=list(model.sources),
        )
        return np.concatenate(list(blocks), axis=-1)

    _reset_peak(args.device)
    times, stems = _timed_runs(run, args.device, 3 if cold else 2)
    best = min(times[-2:])
    speed = clip.seconds / best
    return {
        **({"first_run_seconds": round(times[0], 2)} if cold else {}),
        "side": "stembridge engine",
        "precision": precision,
        "batch_size": batch,
        "seconds": round(best, 3),
        "x_realtime": round(speed, 1),
        "ratio_vs_demucs": round(speed / clip.demucs_speed, 2),
        "max_abs_difference_vs_apply_model_fp32": float(np.abs(stems - clip.reference).max()),
        "peak_gpu_mb": _peak_mb(args.device),
    }


class _DeviceConstants:
    """HT Demucs' input-independent tensors made once on the device.

    At every forward pass demucs builds its 2-D position embedding
    (``demucs.transformer.create_2d_sin_embedding``) and the Hann windows of its STFT and
    inverse STFT (``demucs.spec``) on the CPU and copies them to the device: copies that
    wait for the host, which a CUDA graph cannot capture and which dynamo traces into CPU
    kernels. While a measured variant runs, those three functions are swapped for ones
    that make each tensor once (on the CPU, as demucs does, so the values are the same)
    and keep it on the device; the "device constants" variant measures that change alone.
    """

    def __init__(self) -> None:
        import demucs.htdemucs
        import demucs.transformer

        self._swaps = [
            (demucs.transformer, "create_2d_sin_embedding", self._embedding),
            (demucs.htdemucs, "spectro", self._spectro),
            (demucs.htdemucs, "ispectro", self._ispectro),
        ]
        self._original_embedding = demucs.transformer.create_2d_sin_embedding
        self._made: dict[tuple, torch.Tensor] = {}

    @property
    def made(self) -> bool:
        """Whether the tensors have been made (dynamo must find them made, see _Variant)."""
        return bool(self._made)

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        originals = [(module, name, getattr(module, name)) for module, name, _ in self._swaps]
        for module, name, swapped in self._swaps:
            setattr(module, name, swapped)
        try:
            yield
        finally:
            for module, name, original in originals:
                setattr(module, name, original)

    def _embedding(
        self, d_model: int, height: int, width: int, device: object = "cpu", max_period: int = 10000
    ) -> torch.Tensor:
        key = ("embedding", d_model, height, width, str(device), max_period)
        if key not in self._made:
            made = self._original_embedding(d_model, height, width, device, max_period)
            self._made[key] = made
        return self._made[key]

    def _window(self, length: int, like: torch.Tensor) -> torch.Tensor:
        key = ("window", length, str(like.device), like.dtype)
        if key not in self._made:
            self._made[key] = torch.hann_window(length).to(like)
        return self._made[key]

    # demucs.spec's spectro and ispectro (demucs 4.1.0) with the window kept; their MPS
    # branch left out (these variants run on CUDA, and on the CPU in the smoke run).
    def _spectro(
        self, x: torch.Tensor, n_fft: int = 512, hop_length: int | None = None, pad: int = 0
    ) -> torch.Tensor:
        *other, length = x.shape
        x = x.reshape(-1, length)
        z = torch.stft(
            x,
            n_fft * (1 + pad),
            hop_length or n_fft // 4,
            window=self._window(n_fft, x),
            win_length=n_fft,
            normalized=True,
            center=True,
            return_complex=True,
            pad_mode="reflect",
        )
        _, freqs, frame = z.shape
        return z.view(*other, freqs, frame)

    def _ispectro(
        self,
        z: torch.Tensor,
        hop_length: int | None = None,
        length: int | None = None,
        pad: int = 0,
    ) -> torch.Tensor:
        *other, freqs, frames = z.shape
        n_fft = 2 * freqs - 2
        z = z.view(-1, freqs, frames)
        win_length = n_fft // (1 + pad)
        x = torch.istft(
            z,
            n_fft,
            hop_length,
            window=self._window(win_length, z.real),
            win_length=win_length,
            normalized=True,
            length=length,
            center=True,
        )
        _, length = x.shape
        return x.view(*other, length)


#: The measured variants of a network's forward pass (see _Variant); the last two are
#: inductor's default mode and its "reduce-overhead" mode (CUDA graphs of its kernels).
_KINDS = ("device constants", "cuda graphs", "torch.compile", "torch.compile reduce-overhead")


class _Variant(torch.nn.Module):
    """A network run with its constants on the device (:class:`_DeviceConstants`) and,
    for the graph and compiled kinds, always at one batch size (a short batch
    zero-padded; each item is separated on its own) so that one graph per precision
    serves every call: replayed as CUDA graphs, or compiled by inductor. The network's
    attributes (segment, sources, valid_length...) read through, so a bag and the engine
    take it for the network.
    """

    def __init__(self, network: torch.nn.Module, *, batch: int, kind: str) -> None:
        super().__init__()
        self.network = network
        self.batch = batch
        self.kind = kind
        self._constants = _DeviceConstants()
        self._compiled = None
        if kind.startswith("torch.compile"):
            mode = "reduce-overhead" if kind.endswith("reduce-overhead") else "default"
            self._compiled = torch.compile(network, dynamic=False, mode=mode)
        self._graphs: dict[tuple, tuple] = {}

    def __getattr__(self, name: str) -> object:
        try:
            return super().__getattr__(name)
        except AttributeError:
            if "network" not in self.__dict__.get("_modules", {}):
                raise
            return getattr(self._modules["network"], name)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with self._constants.active():
            if self.kind == "device constants":
                return self.network(x)
            n = x.shape[0]
            if n < self.batch:
                x = torch.cat([x, x.new_zeros((self.batch - n, *x.shape[1:]))])
            if self._compiled is not None:
                # An eager pass first: dynamo tracing missing constants would compile their
                # CPU code, then compile the whole network again once they are made.
                if not self._constants.made:
                    self.network(x)
                if self.kind.endswith("reduce-overhead"):
                    # Each call's output is copied out before the next call replaces it.
                    torch.compiler.cudagraph_mark_step_begin()
                return self._compiled(x)[:n]
            return self._replay(x)[:n]

    def _replay(self, x: torch.Tensor) -> torch.Tensor:
        dtype = torch.get_autocast_dtype("cuda") if torch.is_autocast_enabled("cuda") else None
        key = (tuple(x.shape), dtype)
        if key not in self._graphs:
            self._graphs[key] = self._capture(x, dtype)
        graph, static_in, static_out = self._graphs[key]
        static_in.copy_(x)
        graph.replay()
        return static_out.clone()

    def _capture(self, x: torch.Tensor, dtype: torch.dtype | None) -> tuple:
        # autocast's weight cache must be off while capturing: the graph would keep
        # pointing at cast weights that the cache frees when the runner's autocast exits.
        def cast() -> contextlib.AbstractContextManager:
            if dtype is None:
                return contextlib.nullcontext()
            return torch.autocast("cuda", dtype=dtype, cache_enabled=False)

        static_in = x.clone()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        # Outside the capture: cuDNN and cuBLAS choose and allocate, the embedding is made.
        with torch.cuda.stream(side), cast():
            self.network(static_in)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph), cast():
            static_out = self.network(static_in)
        return graph, static_in, static_out


def _measure_variants(
    name: str, clip: _Clip, args: argparse.Namespace, budget: _Budget
) -> list[dict]:
    """Each of :data:`_KINDS` for ``name``'s networks, each precision at the batch size
    that was fastest eagerly; ratio to that eager figure. On the CPU (the smoke run) only
    "device constants", which checks the variants' plumbing and parity."""
    eager = [row for row in clip.rows if row.get("side") == "stembridge engine"]
    spec = MODELS[name]
    rows = []
    compiled_last = sorted(
        ((kind, precision) for kind in _KINDS for precision in args.precisions),
        # Compiling costs minutes: after the cheap kinds, the half precisions first (what
        # a GPU user runs), both ways of compiling for each in turn.
        key=lambda step: (
            step[0].startswith("torch.compile"),
            step[0].startswith("torch.compile") and step[1] == "fp32",
            step[0].startswith("torch.compile") and args.precisions.index(step[1]),
        ),
    )
    for kind, precision in compiled_last:
        if kind != "device constants" and not args.device.startswith("cuda"):
            if precision == args.precisions[0]:
                rows.append(_emit({"skipped": kind, "reason": "no CUDA device (CPU smoke run)"}))
            continue
        swept = [row for row in eager if row["precision"] == precision]
        if not swept:
            continue  # its sweep failed; the failed lines say why
        best = max(swept, key=lambda row: row["x_realtime"])
        batch = best["batch_size"]
        step = f"{name} {kind} {precision} batch {batch}"
        if not budget.allows(step, 3 * best["seconds"] + _SET_UP_SECONDS[kind]):
            continue
        bag = load_bag(locate(spec, folders=[clip.folder], offline=True))
        wrapped = BagOfModels(
            [_Variant(network, batch=batch, kind=kind) for network in bag.models],
            weights=bag.weights,
        )
        settings = SeparationSettings(
            model=name,
            device=args.device,
            compiled_core="off",
            precision=precision,
            batch_size=batch,
        )
        try:
            model = LoadedModel(settings, wrapped, spec)
            measured = _engine_row(model, clip, args, precision, batch, cold=True)
        except Exception as error:  # a capture or compile the network refuses
            rows.append(_failed(step, error, args.device))
            continue
        row = {
            "model": name,
            **measured,
            "side": f"stembridge engine + {kind}",
            "ratio_vs_eager": round(best["seconds"] / measured["seconds"], 2),
        }
        rows.append(_emit(row))
        del model, wrapped, bag
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
        try:
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
        except SystemExit as error:  # run_child's "child failed"; its stderr is above
            rows.append(_failed(f"file to file {precision}", error, args.device))
            continue
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
