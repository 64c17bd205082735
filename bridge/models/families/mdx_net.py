"""UVR's MDX-Net models: an ONNX network on the spectrum, run with onnxruntime.

A model is one ``.onnx`` file; what it was trained on comes from
:mod:`bridge.models.families.uvr_params` (UVR's table keyed by the file's hash, a
sidecar, or the caller). It runs the way python-audio-separator's MDX separator runs it
(``mdx_separator.py``, the ONNX path), in chunks that
:func:`bridge.models.chunks.separate_chunks` streams::

    chunk (batch, 2, hop * (segment - 1)) at 44.1 kHz, hop = 1024
      -> STFT: Hann window of n_fft (periodic), hop, centred (reflect padding)
      -> the lowest dim_f bins, real and imaginary parts as channels
         (left real, left imaginary, right real, right imaginary), the 3 lowest bins zeroed
      -> the network: (batch, 4, dim_f, segment) -> the same, the primary stem's spectrum
      -> zeros for the bins above dim_f, inverse STFT (same window, hop, centred)
    primary (batch, 2, hop * (segment - 1))

The chunks follow the reference's schedule (:func:`mdx_plan`): ``n_fft // 2`` zeros
before the mix and enough after it, a chunk every ``(1 - overlap) * chunk`` samples,
each weighted by a Hann window (``np.hanning``, shorter for the last chunks, which the
padded mix cuts short), and the sum divided by the summed windows.

The other stem is the mix minus the primary times the model's ``compensate``, as the
reference makes it; the primary itself is not scaled (UVR scales both by ``compensate``;
python-audio-separator, the reference here, only the one it subtracts). The runner gives
both stems of each chunk, the second as its input minus ``compensate`` times the
first: blended by the same windows, that is exactly the mix minus ``compensate`` times
the blended primary.

Not reproduced: python-audio-separator's ``separate`` also scales the whole mix to a peak
before ``demix`` (and the result by the old peak), which needs the whole file first;
``enable_denoise`` (the network run on the negated spectrum too); and its onnx2torch path
for a segment other than the model's frame count (here such a segment is refused).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bridge.errors import DeviceUnavailable, ModelCorrupt, ModelNotFound, SettingsError
from bridge.extras import require
from bridge.models.chunks import ChunkPlan
from bridge.models.families.uvr_params import MdxParams, params_for

log = logging.getLogger(__name__)

#: The STFT hop of every MDX-Net model (UVR's fixed value, python-audio-separator's default).
HOP = 1024
#: The rate every MDX-Net model of UVR's was trained at.
SAMPLE_RATE = 44100
#: python-audio-separator's default overlap, as a fraction of a chunk.
DEFAULT_OVERLAP = 0.25
#: Stems per chunk the runner gives: the primary, then the mix minus compensate times it.
SOURCES = 2
#: Audio channels in and out.
WIDTH = 2
# The reference zeroes the lowest bins of the spectrum before the network.
_ZEROED_BINS = 3
# The network's input and output: left real, left imaginary, right real, right imaginary.
_SPECTRUM_CHANNELS = 4
# What onnxruntime raises for a file it cannot load or a graph it cannot run (not all of
# them exist in every version).
_ORT_ERRORS = (
    "Fail",
    "InvalidArgument",
    "InvalidProtobuf",
    "InvalidGraph",
    "NoModel",
    "NotImplemented",
    "RuntimeException",
    "EngineError",
    "ModelRequiresCompilation",
)


def mdx_plan(length: int, *, n_fft: int, chunk: int, overlap: float) -> ChunkPlan:
    """python-audio-separator's MDX-Net schedule over ``length`` frames, in mix frames.

    The reference pads the mix with ``trim = n_fft // 2`` zeros before it and
    ``gen + trim - length % gen`` after it (``gen = chunk - 2 * trim``), starts a chunk
    every ``int((1 - overlap) * chunk)`` padded frames, cuts the chunks that run past
    the padded end short (zero-filled, with a Hann window of their own length), divides
    by the summed windows and drops the padding. Chunks that start past the end of the
    mix are left out: none of their output is kept. With ``overlap == 0`` nothing is
    windowed (each frame is one chunk's).

    Raises:
        SettingsError: ``overlap`` outside ``[0, 1)`` or so small that the windows
            leave frames uncovered, or a chunk no longer than ``n_fft``.
    """
    trim = n_fft // 2
    gen = _kept(chunk, n_fft)
    step = int((1 - overlap) * chunk) if 0 <= overlap < 1 else 0
    # A Hann window is 0 at both ends: a chunk must start inside its neighbour's window.
    if step <= 0 or (overlap > 0 and step > chunk - 2):
        raise SettingsError(
            f"overlap {overlap} is not allowed for chunks of {chunk} samples; use 0 (no "
            f"window) or a fraction from {2 / chunk:.2g} to below 1 (the reference's "
            f"default is {DEFAULT_OVERLAP})",
            key="overlap",
            value=overlap,
        )
    padded = trim + length + gen + trim - length % gen
    starts: list[int] = []
    windows: dict[int, np.ndarray] = {}
    for offset in range(0, padded, step):
        if offset - trim >= length:
            break
        size = min(chunk, padded - offset)
        if size < chunk:
            windows[len(starts)] = _window(size, overlap)
        starts.append(offset - trim)
    return ChunkPlan(length, chunk, tuple(starts), _window(chunk, overlap), None, windows)


def _kept(chunk: int, n_fft: int) -> int:
    """Samples of a chunk the reference keeps: all but ``n_fft // 2`` at each end."""
    gen = chunk - 2 * (n_fft // 2)
    if gen <= 0:
        raise SettingsError(
            f"a segment of {chunk // HOP + 1} frames ({chunk} samples) keeps nothing of a "
            f"chunk with an n_fft of {n_fft}; use more than {(2 * (n_fft // 2)) // HOP + 1} "
            "frames",
            key="segment",
            value=chunk // HOP + 1,
        )
    return gen


def _window(size: int, overlap: float) -> np.ndarray:
    window = np.hanning(size) if overlap else np.ones(size)
    return window.astype(np.float32)


@dataclass(frozen=True)
class _Io:
    """What the ONNX file declares about its one input and one output."""

    input_name: str
    batch: int | None
    frames: int | None


class MdxNetRunner:
    """One MDX-Net model on an onnxruntime session: the ``run_batch`` of
    :func:`bridge.models.chunks.separate_chunks` (``sources=SOURCES``, ``width=WIDTH``).

    Calling it maps ``(B, 2, chunk)`` float32 chunks to ``(B, 2, 2, chunk)``: the
    primary stem (:attr:`stems` ``[0]``) and the chunk minus ``compensate`` times it.
    Make one with :func:`load_mdx_net`.

    Attributes:
        path: The ``.onnx`` file.
        params: Its parameters.
        segment: STFT frames per chunk.
        chunk: Samples per chunk, ``HOP * (segment - 1)``.
        providers: The onnxruntime execution providers the session runs on.
    """

    def __init__(
        self, session: Any, *, path: Path, params: MdxParams, segment: int, io: _Io
    ) -> None:
        self._session = session
        self._io = io
        self._errors = _ort_errors()
        self.path = path
        self.params = params
        self.segment = segment
        self.chunk = HOP * (segment - 1)
        self.providers: tuple[str, ...] = tuple(session.get_providers())
        self._hann = torch.hann_window(params.n_fft, periodic=True)
        # Checked here so that a segment too short fails at load, not at the first plan.
        _kept(self.chunk, params.n_fft)

    @property
    def stems(self) -> tuple[str, str]:
        """The two stems of each chunk, as UVR names them (``Vocals``, ``Instrumental``)."""
        return (self.params.primary_stem, self.params.secondary_stem)

    def plan(self, length: int, *, overlap: float = DEFAULT_OVERLAP) -> ChunkPlan:
        """The reference's schedule for a mix of ``length`` frames (see :func:`mdx_plan`)."""
        return mdx_plan(length, n_fft=self.params.n_fft, chunk=self.chunk, overlap=overlap)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """Both stems of ``(B, 2, chunk)`` float32 chunks, ``(B, 2, 2, chunk)``.

        Raises:
            ModelCorrupt: onnxruntime failed to run the network.
        """
        if batch.ndim != 3 or batch.shape[1:] != (WIDTH, self.chunk):
            raise ValueError(f"chunks must be (B, {WIDTH}, {self.chunk}), not {batch.shape}")
        chunks = np.ascontiguousarray(batch, dtype=np.float32)
        with torch.inference_mode():
            spectrum = self._spectrum(torch.from_numpy(chunks))
            predicted = torch.from_numpy(self._network(spectrum.numpy()))
            primary = self._waves(predicted).numpy()
        secondary = chunks - np.float32(self.params.compensate) * primary
        return np.stack([primary, secondary], axis=1)

    def _spectrum(self, chunks: torch.Tensor) -> torch.Tensor:
        count = chunks.shape[0]
        spec = torch.stft(
            chunks.reshape(-1, self.chunk),
            n_fft=self.params.n_fft,
            hop_length=HOP,
            window=self._hann,
            center=True,
            return_complex=True,
        )
        # (B * 2, bins, frames) complex -> (B, [L.re, L.im, R.re, R.im], bins, frames)
        real = torch.view_as_real(spec).permute(0, 3, 1, 2)
        real = real.reshape(count, _SPECTRUM_CHANNELS, -1, real.shape[-1])
        kept = real[:, :, : self.params.dim_f].contiguous()
        kept[:, :, :_ZEROED_BINS] = 0
        return kept

    def _network(self, spectrum: np.ndarray) -> np.ndarray:
        size = self._io.batch or spectrum.shape[0]
        outputs = []
        for first in range(0, spectrum.shape[0], size):
            part = spectrum[first : first + size]
            short = size - part.shape[0]
            if short:
                # A network with a fixed batch takes exactly that many: fill with silence.
                part = np.concatenate([part, np.zeros((short, *part.shape[1:]), np.float32)])
            try:
                (out,) = self._session.run(None, {self._io.input_name: part})
            except self._errors as exc:
                raise ModelCorrupt(
                    f"{self.path}: onnxruntime could not run it on a spectrum of shape "
                    f"{list(part.shape)} ({_first_line(exc)}); check that its parameters "
                    "(dim_f, segment) are this model's",
                    path=self.path,
                ) from exc
            if out.shape != part.shape:
                raise ModelCorrupt(
                    f"{self.path}: the network gave {list(out.shape)} for an input of "
                    f"{list(part.shape)}; an MDX-Net network gives back the shape it takes",
                    path=self.path,
                )
            outputs.append(np.asarray(out, dtype=np.float32)[: part.shape[0] - short])
        return np.concatenate(outputs)

    def _waves(self, predicted: torch.Tensor) -> torch.Tensor:
        count, _, dim_f, frames = predicted.shape
        bins = self.params.n_fft // 2 + 1
        full = torch.nn.functional.pad(predicted, (0, 0, 0, bins - dim_f))
        pairs = full.reshape(count * WIDTH, 2, bins, frames).permute(0, 2, 3, 1).contiguous()
        waves = torch.istft(
            torch.view_as_complex(pairs),
            n_fft=self.params.n_fft,
            hop_length=HOP,
            window=self._hann,
            center=True,
        )
        return waves.reshape(count, WIDTH, -1)


def load_mdx_net(
    path: Path,
    *,
    device: str = "cpu",
    params: MdxParams | None = None,
    segment: int | None = None,
    threads: int | None = None,
) -> MdxNetRunner:
    """Open an MDX-Net ``.onnx`` file on ``device`` and check it against its parameters.

    Args:
        path: The ``.onnx`` file.
        device: ``cpu``, ``cuda``, ``cuda:N`` (onnxruntime-gpu's CUDA provider) or ``mps``
            (the CoreML provider); the CPU provider takes what the other cannot run.
        params: The model's parameters; by default its sidecar's or UVR's
            (:func:`bridge.models.families.uvr_params.params_for`).
        segment: STFT frames per chunk; by default the frames the file declares, or
            the parameters' ``dim_t`` when it declares none.
        threads: onnxruntime's threads per operation; by default its own choice.

    Raises:
        MissingExtra: onnxruntime is not installed (the ``onnx`` extra).
        ModelNotFound: There is no such file.
        ModelCorrupt: onnxruntime cannot load it, or its inputs or outputs are not one
            ``(batch, 4, dim_f, segment)`` float tensor each, as its parameters say.
        ModelError: No parameters are known for it.
        DeviceUnavailable: onnxruntime has no provider for ``device``, or it did not start.
        SettingsError: An unknown device, or a segment the model or the schedule refuses.
    """
    require("onnx", needed_by="UVR MDX-Net models (.onnx)")
    import onnxruntime as ort

    if not path.is_file():
        raise ModelNotFound(f"{path}: no such MDX-Net model file; check the path", path=path)
    providers = execution_providers(device, ort.get_available_providers(), ort.__version__)
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: its warnings are about graph fusions
    if threads is not None:
        options.intra_op_num_threads = threads
    try:
        session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
    except _ort_errors() as exc:
        raise ModelCorrupt(
            f"{path}: onnxruntime cannot load it as an ONNX model ({_first_line(exc)}); the "
            "file is damaged or not a model: download it again",
            path=path,
        ) from exc
    wanted = providers[0] if isinstance(providers[0], str) else providers[0][0]
    if wanted not in session.get_providers():
        raise DeviceUnavailable(
            f"device {device}: onnxruntime {ort.__version__} could not start {wanted} (it "
            f"runs on {', '.join(session.get_providers())}); check the GPU libraries it "
            "needs, or use --device cpu",
            key="device",
            value=device,
        )
    params = params_for(path, given=params)
    io = _check_io(path, session, params)
    frames = segment if segment is not None else io.frames or params.dim_t
    if io.frames is not None and frames != io.frames:
        raise SettingsError(
            f"segment {frames} is not allowed for {path.name}: the network takes "
            f"{io.frames} frames; use --segment {io.frames} or leave it unset",
            key="segment",
            value=frames,
        )
    log.debug(
        "%s: MDX-Net %s, %d frames a chunk, on %s",
        path,
        params,
        frames,
        ", ".join(session.get_providers()),
    )
    return MdxNetRunner(session, path=path, params=params, segment=frames, io=io)


def execution_providers(
    device: str, available: Sequence[str], version: str
) -> list[str | tuple[str, dict[str, int]]]:
    """onnxruntime's providers for ``device``, the CPU last."""
    if device == "cpu":
        return ["CPUExecutionProvider"]
    accelerator: str | tuple[str, dict[str, int]]
    if device == "cuda" or device.startswith("cuda:"):
        index = device.partition(":")[2] or "0"
        if not index.isdigit():
            raise SettingsError(
                f"device {device!r} is not allowed; use cpu, cuda, cuda:N or mps",
                key="device",
                value=device,
            )
        name, install = "CUDAExecutionProvider", "install onnxruntime-gpu in its place"
        accelerator = (name, {"device_id": int(index)})
    elif device == "mps":
        name, install = "CoreMLExecutionProvider", "use the onnxruntime wheel for macOS"
        accelerator = name
    else:
        raise SettingsError(
            f"device {device!r} is not allowed; use cpu, cuda, cuda:N or mps",
            key="device",
            value=device,
        )
    if name not in available:
        raise DeviceUnavailable(
            f"device {device}: onnxruntime {version} has no {name} (it has "
            f"{', '.join(available)}); {install}, or use --device cpu",
            key="device",
            value=device,
        )
    return [accelerator, "CPUExecutionProvider"]


def _check_io(path: Path, session: Any, params: MdxParams) -> _Io:
    """The declared input and output, checked against ``params``."""
    expected = f"one float tensor [batch, 4, {params.dim_f}, {params.dim_t}]"
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1 or len(outputs) != 1:
        raise ModelCorrupt(
            f"{path}: has {len(inputs)} input(s) and {len(outputs)} output(s); an MDX-Net "
            f"model takes and gives {expected}",
            path=path,
        )
    declared = []
    for kind, tensor in (("input", inputs[0]), ("output", outputs[0])):
        shape = list(tensor.shape)
        fixed = [size if isinstance(size, int) and size > 0 else None for size in shape]
        wrong = (
            tensor.type != "tensor(float)"
            or len(shape) != 4
            or fixed[1] not in (None, _SPECTRUM_CHANNELS)
            or fixed[2] not in (None, params.dim_f)
        )
        if wrong:
            raise ModelCorrupt(
                f"{path}: its {kind} {tensor.name!r} is {tensor.type} {shape}; with its "
                f"parameters (dim_f {params.dim_f}) an MDX-Net model takes and gives "
                f"{expected}: check that the parameters are this model's",
                path=path,
            )
        declared.append(fixed)
    (in_batch, *_, in_frames), (out_batch, *_, out_frames) = declared
    if None not in (in_frames, out_frames) and in_frames != out_frames:
        raise ModelCorrupt(
            f"{path}: takes {in_frames} frames and gives {out_frames}; an MDX-Net model "
            f"gives back the shape it takes ({expected})",
            path=path,
        )
    return _Io(inputs[0].name, in_batch or out_batch, in_frames or out_frames)


def _ort_errors() -> tuple[type[Exception], ...]:
    from onnxruntime.capi import onnxruntime_pybind11_state as state

    return tuple(getattr(state, name) for name in _ORT_ERRORS if hasattr(state, name))


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
