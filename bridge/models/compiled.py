"""The networks' STFT-free cores, compiled once per model and machine and kept on disk.

Each network's forward is split where its spectrogram becomes real tensors and where they
become a spectrogram again: the STFT and inverse STFT (complex tensors, which the
compilers handle badly or not at all) stay eager, and the core between them (every
convolution, linear layer and attention) is exported and compiled. The artefact goes to
the cache folder (:func:`cache_folder`) under a name made of the model's weights and the
input shape, with a sidecar saying which torch and CPU built it, so the next process (a
later ``separate``, every daemon job) loads it instead of compiling again; an artefact
that does not load, or that another torch or CPU built, is compiled again, and compiling
one deletes the builds another torch made on this kind of machine.

Cores: HT Demucs (``cac=True``, as every released one) and MDX23C. Other networks, or a
core the backend refuses, run eagerly, and the log says why.

Backend: the core exported to ONNX and run by ONNX Runtime (the ``[onnx]`` extra), which
was the fastest here of ONNX Runtime, AOTInductor and ``torch.compile`` against torch's
own kernels; the eager networks on oneDNN's kernels (:mod:`bridge.models.onednn`) are
faster still on a quiet machine, so ``compiled_core`` is off by default (README: the CPU
path). Without it installed, cores run eagerly. "Compiled" is the word the settings and the log
use for "exported and optimised for this CPU".
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
import os
import platform
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import platformdirs
import torch
from torch import Tensor, nn

from bridge.atomic import commit, write_bytes
from bridge.documents import parse_json
from bridge.errors import StemBridgeError
from bridge.models.weights import file_sha256
from bridge.settings import SeparationSettings

log = logging.getLogger(__name__)

#: Bumped when what an artefact holds changes meaning (its sidecar says which it is).
ARTEFACT_FORMAT = 1
#: ``compiled_core = "auto"`` compiles networks of at least this many parameters: a
#: smaller one's compilation (a minute) takes longer than it would ever save.
AUTO_MIN_PARAMETERS = 1_000_000
#: Largest difference from the eager core a new artefact may show on its first input
#: (relative to the output's largest magnitude, at least 1); above it the core runs eagerly.
PARITY_TOLERANCE = 2e-4

#: A network's forward around its core: ``pre(input) -> (core inputs, context)``, then
#: ``post(core outputs, context) -> output``.
Pre = Callable[[Tensor], tuple[tuple[Tensor, ...], Any]]
Post = Callable[[tuple[Tensor, ...], Any], Tensor]


class HTDemucsCore(nn.Module):
    """``HTDemucs.forward`` between the spectrogram and the masking, on real tensors.

    demucs 4's forward, line for line, from the magnitude (``cac``: real and imaginary
    parts as channels) and the time-domain mix, to the denormalised frequency-branch
    output and time-branch output; :func:`split` puts the STFT before it and the inverse
    STFT after.
    """

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, mag: Tensor, mix: Tensor) -> tuple[Tensor, Tensor]:
        net: Any = self.network
        x = mag
        batch, _, bins, frames = x.shape
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        std = x.std(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) / (1e-5 + std)
        xt = mix
        meant = xt.mean(dim=(1, 2), keepdim=True)
        stdt = xt.std(dim=(1, 2), keepdim=True)
        xt = (xt - meant) / (1e-5 + stdt)
        saved, saved_t, lengths, lengths_t = [], [], [], []
        for idx, encode in enumerate(net.encoder):
            lengths.append(x.shape[-1])
            inject = None
            if idx < len(net.tencoder):
                lengths_t.append(xt.shape[-1])
                tenc = net.tencoder[idx]
                xt = tenc(xt)
                if not tenc.empty:
                    saved_t.append(xt)
                else:
                    inject = xt
            x = encode(x, inject)
            if idx == 0 and net.freq_emb is not None:
                frs = torch.arange(x.shape[-2], device=x.device)
                emb = net.freq_emb(frs).t()[None, :, :, None].expand_as(x)
                x = x + net.freq_emb_scale * emb
            saved.append(x)
        if net.crosstransformer:
            if net.bottom_channels:
                b, c, f, t = x.shape
                x = net.channel_upsampler(x.reshape(b, c, f * t)).reshape(b, -1, f, t)
                xt = net.channel_upsampler_t(xt)
            x, xt = net.crosstransformer(x, xt)
            if net.bottom_channels:
                b, c, f, t = x.shape
                x = net.channel_downsampler(x.reshape(b, c, f * t)).reshape(b, -1, f, t)
                xt = net.channel_downsampler_t(xt)
        for idx, decode in enumerate(net.decoder):
            x, pre = decode(x, saved.pop(-1), lengths.pop(-1))
            offset = net.depth - len(net.tdecoder)
            if idx >= offset:
                tdec = net.tdecoder[idx - offset]
                length_t = lengths_t.pop(-1)
                if tdec.empty:
                    xt, _ = tdec(pre[:, :, 0], None, length_t)
                else:
                    xt, _ = tdec(xt, saved_t.pop(-1), length_t)
        sources = len(net.sources)
        x = x.view(batch, sources, -1, bins, frames) * std[:, None] + mean[:, None]
        xt = xt.view(batch, sources, -1, mix.shape[-1]) * stdt[:, None] + meant[:, None]
        return x, xt


class Mdx23cCore(nn.Module):
    """``Mdx23c.unet``: between ``_spectrum`` and ``_waves``, on real tensors."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, spectrum: Tensor) -> tuple[Tensor]:
        net: Any = self.network
        return (net.unet(spectrum),)


def split(network: nn.Module) -> tuple[Pre, nn.Module, Post] | str:
    """The network's forward as eager ``pre``, compilable ``core`` and eager ``post``.

    Returns:
        The three parts, or why this network has no core to compile.
    """
    from demucs.htdemucs import HTDemucs

    from bridge.models.families.mdx23c import Mdx23c

    if isinstance(network, HTDemucs):
        return _split_htdemucs(network)
    if isinstance(network, Mdx23c):
        return _split_mdx23c(network)
    return f"{type(network).__name__} networks have no compiled core"


def _split_htdemucs(net: Any) -> tuple[Pre, nn.Module, Post] | str:
    if not net.cac:
        return "an HT Demucs without cac (Wiener filtering) has no compiled core"
    if not net.use_train_segment:
        return "an HT Demucs without a training segment has no fixed input length"
    training_length = int(net.segment * net.samplerate)

    def pre(mix: Tensor) -> tuple[tuple[Tensor, ...], Any]:
        length = mix.shape[-1]
        if length > training_length:
            raise ValueError(
                f"HT Demucs takes at most {training_length} samples, not {length}; "
                "cut segments of its training length"
            )
        padded = nn.functional.pad(mix, (0, training_length - length))
        z = net._spec(padded)
        return (net._magnitude(z), padded), (z, length)

    def post(outputs: tuple[Tensor, ...], context: Any) -> Tensor:
        x, xt = outputs
        z, length = context
        wave = net._ispec(net._mask(z, x), training_length)
        return (xt + wave)[..., :length]

    return pre, HTDemucsCore(net), post


def _split_mdx23c(net: Any) -> tuple[Pre, nn.Module, Post]:
    config = net.config

    def pre(audio: Tensor) -> tuple[tuple[Tensor, ...], Any]:
        if audio.dim() != 3 or not config.accepts(audio.shape[-1]):
            net(audio)  # the network's own check says what is wrong with the shape
        window = torch.hann_window(config.n_fft, periodic=True, device=audio.device)
        return (net._spectrum(audio, window),), (window, audio.shape[0])

    def post(outputs: tuple[Tensor, ...], context: Any) -> Tensor:
        window, batch = context
        return net._waves(outputs[0], window, batch=batch)

    return pre, Mdx23cCore(net), post


#: A loaded core: the core's inputs to its outputs.
Core = Callable[..., "tuple[Tensor, ...] | list[Tensor]"]


@dataclass(frozen=True)
class Backend:
    """How a core becomes an artefact on disk, and an artefact a callable again.

    Attributes:
        name: Recorded beside each artefact: one built by another backend is rebuilt.
        suffix: The artefact's file suffix.
        build: ``build(core, example inputs, artefact path)`` writes the artefact.
        load: ``load(artefact path)`` gives the core's callable (raises when it cannot).
    """

    name: str
    suffix: str
    build: Callable[[nn.Module, tuple[Tensor, ...], Path], None]
    load: Callable[[Path], Core]


def _export_onnx(core: nn.Module, inputs: tuple[Tensor, ...], artefact: Path) -> None:
    """Export ``core`` for these input shapes to the ONNX file ``artefact`` (written beside
    it first, then renamed into place)."""
    import onnx  # noqa: F401 (torch's exporter needs it: fail here with its name)

    temp = artefact.with_name(f".building-{os.getpid()}-{artefact.name}")
    # Without autograd, nn.MultiheadAttention takes its fused kernel, which ONNX has no
    # operator for; torch's switch for that path is process-wide, so it is put back after.
    # Tracing under no_grad keeps no activations: the released htdemucs exported at a
    # 1.7 GB peak instead of 5.1 GB with autograd on.
    fastpath = torch.backends.mha.get_fastpath_enabled()
    try:
        torch.backends.mha.set_fastpath_enabled(False)
        # Inference tensors (the engine runs in inference mode) cannot be traced.
        with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the tracer's notes on shapes it treats as fixed
            examples = tuple(t.clone() for t in inputs)
            torch.onnx.export(
                core,
                examples,
                str(temp),
                dynamo=False,
                opset_version=17,
                input_names=[f"input{i}" for i in range(len(examples))],
            )
        commit(temp, artefact)
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
        temp.unlink(missing_ok=True)


def _onnx_session(artefact: Path) -> Core:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # As for the eager networks (bridge.models.runner): subnormals cost tens of cycles each.
    options.add_session_config_entry("session.set_denormal_as_zero", "1")
    session = ort.InferenceSession(str(artefact), options, providers=["CPUExecutionProvider"])
    names = [node.name for node in session.get_inputs()]
    # Each run hands its arena back to the allocator (which keeps it for the next run:
    # bridge.models.runner.keep_freed_memory), so a bag of four networks does not hold four
    # arenas of a segment's intermediates: two released htdemucs sessions peaked at 6.0 GB
    # so instead of 9.8 GB, and ran no slower.
    shrink = ort.RunOptions()
    shrink.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")

    def run(*inputs: Tensor) -> list[Tensor]:
        feeds = {
            name: np.ascontiguousarray(t.numpy()) for name, t in zip(names, inputs, strict=True)
        }
        return [torch.from_numpy(out) for out in session.run(None, feeds, shrink)]

    return run


#: The backend cores are compiled with: against torch's own kernels ONNX Runtime ran the
#: released htdemucs core 1.46x faster on a loaded machine (1.06x quiet), AOTInductor 1.02x
#: and torch.compile 1.13x (README: the CPU path). It is not PyTorch, so its parity bound
#: is 2e-4: its fused kernels (layer norm, attention, GELU) sum in other orders.
ONNX_RUNTIME = Backend("onnxruntime", ".onnx", _export_onnx, _onnx_session)


def compiled_networks(
    networks: Iterable[nn.Module], settings: SeparationSettings
) -> list[nn.Module]:
    """The networks as ``settings`` run them on the CPU: those with a core that
    ``compiled_core`` selects in a :class:`CompiledNetwork` (its cores load or compile at
    their first call), the others, where ``cpu_kernels`` says so, with their layers on
    oneDNN's kernels (:mod:`bridge.models.onednn`, x86-64) and their transformer group
    norms as layer norms (:mod:`bridge.models.token_norm`); on other devices as they are."""
    from bridge.models.onednn import unavailable, use_onednn
    from bridge.models.runner import resolve_device
    from bridge.models.token_norm import use_token_norms

    if resolve_device(settings.device).type != "cpu":
        return list(networks)
    folder = cache_folder()

    def selected(network: nn.Module) -> bool:
        if settings.compiled_core == "off" or isinstance(split(network), str):
            return False
        size = sum(parameter.numel() for parameter in network.parameters())
        return settings.compiled_core == "on" or size >= AUTO_MIN_PARAMETERS

    chosen = [
        CompiledNetwork(network, folder=folder) if selected(network) else network
        for network in networks
    ]
    if settings.cpu_kernels == "onednn":
        reason = unavailable()
        if reason is None:
            swapped = sum(use_onednn(network, skip=(CompiledNetwork,)) for network in chosen)
            log.debug("%d layers run on oneDNN's kernels", swapped)
        else:
            log.info("the networks run on torch's CPU kernels: %s", reason)
        normed = sum(use_token_norms(network, skip=(CompiledNetwork,)) for network in chosen)
        log.debug("%d transformer group norms run as layer norms", normed)
    return chosen


def cache_folder() -> Path:
    """Where compiled cores are kept: the user cache folder's ``compiled`` (platformdirs
    reads the environment at each call, so ``XDG_CACHE_HOME`` moves it)."""
    return Path(platformdirs.user_cache_dir("stembridge")) / "compiled"


class CompiledNetwork(nn.Module):
    """A network whose core runs from a compiled artefact, on the CPU.

    The first call with a new input shape loads the artefact of this network and shape
    from ``folder``, or compiles it there (saying so in the log, at warning level so the
    CLI shows it: it takes minutes for a released model); later calls run it. Calls on
    another device, shapes whose core would not compile, and networks without a core
    (:func:`split`) run the network eagerly. A smaller batch than the one compiled runs
    padded with silent segments, so the last batch of a job does not compile again.

    Args:
        network: The network (kept as a submodule: ``.to()`` and ``.eval()`` reach it).
        folder: Where artefacts are kept (:func:`cache_folder`).
        backend: How cores are compiled and loaded.
    """

    def __init__(
        self, network: nn.Module, *, folder: Path, backend: Backend = ONNX_RUNTIME
    ) -> None:
        super().__init__()
        self.network = network
        self.folder = folder
        self.backend = backend
        self._split = split(network)
        self._cores: dict[tuple[int, ...], Core | None] = {}
        self._batches: dict[tuple[int, ...], int] = {}
        self._digest: str | None = None
        self.compiled = 0
        self.loaded = 0

    def forward(self, x: Tensor) -> Tensor:
        if isinstance(self._split, str) or x.device.type != "cpu" or x.dtype != torch.float32:
            return self.network(x)
        rest = tuple(x.shape[1:])
        batch = self._batches.setdefault(rest, x.shape[0])
        count = x.shape[0]
        if count < batch:
            x = torch.cat([x, x.new_zeros((batch - count, *rest))])
        pre, core, post = self._split
        inputs, context = pre(x)
        key = tuple(x.shape)
        if key not in self._cores:
            self._cores[key] = self._prepare(core, inputs)
        run = self._cores[key]
        outputs = core(*inputs) if run is None else run(*inputs)
        return post(tuple(outputs), context)[:count]

    def _prepare(self, core: nn.Module, inputs: tuple[Tensor, ...]) -> Core | None:
        shapes = "_".join("x".join(str(n) for n in t.shape) for t in inputs)
        name = f"{type(self.network).__name__}-{self._weights_digest()}-{shapes}"
        artefact = self.folder / f"{name}{self.backend.suffix}"
        sidecar = self.folder / f"{name}.json"
        environment = _environment(self.backend)
        problem = _check(artefact, sidecar, environment)
        if problem is None:
            try:
                loaded = self.backend.load(artefact)
            except Exception as exc:  # a damaged artefact fails in many ways, all alike here
                problem = f"it does not load ({type(exc).__name__}: {exc})"
            else:
                self.loaded += 1
                log.info("compiled core loaded from %s", artefact)
                return loaded
        if problem != _MISSING:
            log.warning("compiled core %s: %s; compiling it again", artefact, problem)
        log.warning(
            "compiling the %s network's core for this CPU: once per model and machine, "
            "then loaded from %s (a released model takes a minute or two; "
            "--compiled-core off skips this)",
            type(self.network).__name__,
            self.folder,
        )
        started = time.perf_counter()
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            self.backend.build(core, inputs, artefact)
            loaded = self.backend.load(artefact)
            error = _difference(core, loaded, inputs)
        except Exception as exc:  # the backend refuses this network: run it eagerly
            fix = " (pip install 'stembridge[onnx]')" if isinstance(exc, ImportError) else ""
            log.warning(
                "the %s network's core did not compile (%s: %s); it runs eagerly%s",
                type(self.network).__name__,
                type(exc).__name__,
                exc,
                fix,
            )
            return None
        if error > PARITY_TOLERANCE:
            log.warning(
                "the compiled %s core differs from the eager one by %.3g (more than %g); "
                "it runs eagerly",
                type(self.network).__name__,
                error,
                PARITY_TOLERANCE,
            )
            artefact.unlink(missing_ok=True)
            return None
        record = {**environment, "sha256": file_sha256(artefact), "max_difference": error}
        try:
            write_bytes(sidecar, json.dumps(record, indent=1).encode())
        except (OSError, StemBridgeError) as exc:  # this process still has the core
            log.warning("%s: not recorded (%s); the next run compiles it again", sidecar, exc)
        self.compiled += 1
        _prune_other_builds(self.folder, environment)
        log.warning(
            "compiled core ready in %.0f s (%s; differs from eager by %.2g)",
            time.perf_counter() - started,
            artefact,
            error,
        )
        return loaded

    def _weights_digest(self) -> str:
        """The network's structure and weights, so another model's artefact is never used."""
        if self._digest is None:
            digest = hashlib.sha256(repr(self.network).encode())
            for key, value in self.network.state_dict().items():
                digest.update(key.encode())
                digest.update(value.detach().cpu().contiguous().numpy().tobytes())
            self._digest = digest.hexdigest()[:20]
        return self._digest


_MISSING = "missing"


def _check(artefact: Path, sidecar: Path, environment: dict[str, object]) -> str | None:
    """Why ``artefact`` cannot be used (``_MISSING`` when it was never built), or None."""
    if not artefact.is_file() or not sidecar.is_file():
        return _MISSING
    try:
        record = parse_json(sidecar.read_bytes())
    except (OSError, ValueError) as exc:
        return f"its record {sidecar.name} is unreadable ({exc})"
    if not isinstance(record, dict):
        return f"its record {sidecar.name} is not a JSON object"
    changed = [key for key, value in environment.items() if record.get(key) != value]
    if changed:
        return "it was built by " + ", ".join(f"{key} {record.get(key)}" for key in changed)
    if record.get("sha256") != file_sha256(artefact):
        return "its content changed since it was built (damaged)"
    return None


def _prune_other_builds(folder: Path, environment: dict[str, object]) -> None:
    """Delete the artefacts this backend built on this kind of machine under another torch
    or artefact format.

    None of them can be used here again (each would be compiled anew first), and a released
    model's takes hundreds of MB. Run when a core has just been compiled, so that a torch
    upgrade clears the old builds as the new ones are made. Builds for other CPUs are
    kept: a cache folder in a shared home serves several machines, which must not delete
    each other's. So are records that cannot be read, another backend's, and artefacts
    without a record (one may be being built).
    """
    same = ("backend", "machine", "cpu", "capability")
    for sidecar in folder.glob("*.json"):
        try:
            record = parse_json(sidecar.read_bytes())
        except (OSError, ValueError):
            continue
        if not isinstance(record, dict) or any(record.get(k) != environment[k] for k in same):
            continue
        if all(record.get(key) == value for key, value in environment.items()):
            continue
        for path in list(folder.glob(f"{glob.escape(sidecar.stem)}.*")):
            if path != sidecar:
                path.unlink(missing_ok=True)
        sidecar.unlink(missing_ok=True)  # last: a record never outlives what it describes
        log.info("deleted %s: built by torch %s", sidecar.with_suffix(""), record.get("torch"))


def _environment(backend: Backend) -> dict[str, object]:
    """What an artefact depends on besides the network: format, backend, torch, CPU."""
    return {
        "format": ARTEFACT_FORMAT,
        "backend": backend.name,
        "torch": torch.__version__,
        "machine": platform.machine(),
        "cpu": _cpu_name(),
        "capability": torch.backends.cpu.get_cpu_capability(),
    }


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _difference(core: nn.Module, loaded: Core, inputs: tuple[Tensor, ...]) -> float:
    """The compiled core's largest difference from the eager one, relative to the output's
    largest magnitude when that is above 1."""
    with torch.inference_mode():
        expected = core(*inputs)
        got = loaded(*inputs)
    worst = 0.0
    for a, b in zip(expected, got, strict=True):
        scale = max(1.0, float(a.abs().max()))
        worst = max(worst, float((a - b).abs().max()) / scale)
    return worst
