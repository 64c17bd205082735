"""Where and how the networks run: device choice, batch size, precision, transfers.

Devices: CUDA, Apple's MPS (Metal) and the CPU; ``auto`` takes the first of them this
machine has. On MPS the networks run in fp32, and the STFTs around them on the CPU
(:func:`fft_device`), as demucs does for its own: MPS lacks complex FFT kernels on many
macOS and torch versions.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import sys
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from bridge.errors import DeviceUnavailable, SettingsError

log = logging.getLogger(__name__)

_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class Accelerators:
    """What this machine offers torch (tests pass their own).

    Attributes:
        cuda_count: CUDA GPUs (0: none, or a CPU-only torch).
        mps: Whether Apple's Metal (MPS) backend is usable.
        mps_built: Whether this torch was built with MPS at all (for the message).
        mps_memory_bytes: The MPS device's recommended working set (0: unknown).
        cuda_memory_bytes: Each CUDA GPU's memory, by index.
    """

    cuda_count: int = 0
    mps: bool = False
    mps_built: bool = False
    mps_memory_bytes: int = 0
    cuda_memory_bytes: tuple[int, ...] = ()

    @classmethod
    def probe(cls) -> Accelerators:
        """Ask torch (CUDA is initialised only where it is available)."""
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        mps_backend = getattr(torch.backends, "mps", None)
        mps = bool(mps_backend and mps_backend.is_available())
        recommended = getattr(getattr(torch, "mps", None), "recommended_max_memory", None)
        return cls(
            cuda_count=count,
            mps=mps,
            mps_built=bool(mps_backend and mps_backend.is_built()),
            mps_memory_bytes=int(recommended()) if mps and recommended is not None else 0,
            cuda_memory_bytes=tuple(
                torch.cuda.get_device_properties(i).total_memory for i in range(count)
            ),
        )


def resolve_device(name: str, *, accelerators: Accelerators | None = None) -> torch.device:
    """The torch device for ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.

    ``auto`` is CUDA when there is a GPU, then MPS (Apple silicon), then the CPU.

    Raises:
        DeviceUnavailable: CUDA or MPS was asked for and is absent, or the index is
            too high.
    """
    found = Accelerators.probe() if accelerators is None else accelerators
    if name == "auto":
        if found.cuda_count:
            return torch.device("cuda")
        return torch.device("mps" if found.mps else "cpu")
    device = torch.device(name)
    if device.type == "mps" and not found.mps:
        reason = (
            "this machine has no Metal GPU, or macOS is older than 12.3"
            if found.mps_built
            else f"torch {torch.__version__} was built without it (MPS is on Apple silicon Macs)"
        )
        raise DeviceUnavailable(
            f"device {name}: MPS is not available here ({reason}); use --device cpu or "
            "--device auto",
            key="device",
            value=name,
        )
    if device.type == "cuda":
        if not found.cuda_count:
            raise DeviceUnavailable(
                f"device {name}: CUDA is not available here (torch {torch.__version__}"
                f"{', a CPU-only build' if torch.version.cuda is None else ''}); "
                "use --device cpu or --device auto",
                key="device",
                value=name,
            )
        index = device.index or 0
        if index >= found.cuda_count:
            raise DeviceUnavailable(
                f"device {name}: this machine has {found.cuda_count} GPU(s), "
                f"numbered 0 to {found.cuda_count - 1}; use one of those",
                key="device",
                value=name,
            )
    return device


def default_batch_size(device: torch.device, *, accelerators: Accelerators | None = None) -> int:
    """Segments per forward pass when the user does not say.

    On a CPU one segment at a time is fastest (batching is memory-bound there); on
    a GPU, as many as fit comfortably: about one per 4 GiB of memory (a CUDA GPU's
    total, MPS's recommended working set, which it shares with the system), up to 16.
    """
    if device.type not in ("cuda", "mps"):
        return 1
    found = Accelerators.probe() if accelerators is None else accelerators
    if device.type == "mps":
        memory = found.mps_memory_bytes
    else:
        index = device.index or 0
        memory = found.cuda_memory_bytes[index] if index < len(found.cuda_memory_bytes) else 0
    return max(1, min(16, memory // (4 << 30)))


def fft_device(device: torch.device) -> torch.device:
    """Where a network on ``device`` computes its STFTs: the CPU for MPS (as demucs'
    ``spec.py`` does), the device itself elsewhere."""
    return torch.device("cpu") if device.type == "mps" else device


def check_precision(precision: str, device: torch.device) -> None:
    """Refuse half precision where it does not help.

    Raises:
        SettingsError: ``fp16``/``bf16`` on a device other than CUDA (on MPS the
            networks run in fp32: autocast there does not cover their ops).
    """
    if precision != "fp32" and device.type != "cuda":
        raise SettingsError(
            f"precision {precision} needs a CUDA device, and this run uses {device} (half "
            "precision on a CPU is far slower than fp32, and MPS runs fp32); use "
            "--precision fp32",
            key="precision",
            value=precision,
        )


def keep_freed_memory() -> bool:
    """Ask glibc to keep freed memory in the process instead of returning it to the OS.

    Every forward pass allocates and frees tensors of hundreds of megabytes; by
    default glibc maps each with mmap and unmaps it on free, so the next pass
    page-faults all of it in again (about 350,000 faults and 0.7 s of system time
    per HT Demucs segment on a 2-core CPU). Keeping the memory makes a CPU forward
    about 1.15x faster with bit-identical results; the engine's memory is bounded,
    so the process simply stays at its (bounded) peak. A no-op off glibc. Processes
    that separate on other threads call it before starting them.

    Returns:
        Whether the allocator was tuned.
    """
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    libc = ctypes.CDLL(name)
    if not hasattr(libc, "mallopt"):
        return False
    m_trim_threshold, m_mmap_max, m_arena_max = -1, -4, -8
    tuned = libc.mallopt(m_mmap_max, 0) == 1
    tuned = libc.mallopt(m_trim_threshold, ctypes.c_int(2**31 - 1)) == 1 and tuned
    # Threads get arenas of their own, which map and unmap big blocks regardless; one
    # arena makes the setting hold for the daemon's worker thread too. Call this before
    # starting threads.
    tuned = libc.mallopt(m_arena_max, 1) == 1 and tuned
    log.debug("glibc allocator told to keep freed memory: %s", tuned)
    return tuned


def keep_freed_memory_for(device: str) -> bool:
    """:func:`keep_freed_memory`, but only where it pays: separating on the CPU. A GPU's
    tensors live on the device, and a process that only dispatches or serves pages has
    no big buffers to keep.

    Returns:
        Whether the allocator was tuned.
    """
    try:
        resolved = resolve_device(device)
    except DeviceUnavailable:
        return False  # the job fails with that message; nothing to tune for it
    return resolved.type == "cpu" and keep_freed_memory()


class TorchRunner:
    """Runs the networks of a bag on one device.

    Args:
        networks: The bag's networks (moved to ``device`` once, here).
        device: Where they run.
        precision: ``fp32``, or ``fp16``/``bf16`` autocast on CUDA.
        lock: Held while a network runs; runners over the same networks share one, so
            threads that share a model never run them at once (a compiled core keeps
            per-shape state).
    """

    def __init__(
        self,
        networks: Sequence[torch.nn.Module],
        *,
        device: torch.device,
        precision: str,
        lock: threading.Lock | None = None,
    ) -> None:
        check_precision(precision, device)
        if device.type == "cpu":
            keep_freed_memory()
        self.device = device
        self.precision = precision
        self.lock = lock or threading.Lock()
        self._networks = [network.to(device).eval() for network in networks]

    def __call__(self, member: int, batch: np.ndarray) -> np.ndarray:
        """Run network ``member`` on ``(B, channels, samples)`` float32 input."""
        tensor = torch.from_numpy(batch)
        if self.device.type == "cuda":
            tensor = tensor.pin_memory().to(self.device, non_blocking=True)
        elif self.device.type != "cpu":
            tensor = tensor.to(self.device)
        autocast = (
            torch.autocast("cuda", dtype=_DTYPES[self.precision])
            if self.precision in _DTYPES
            else contextlib.nullcontext()
        )
        with self.lock, torch.inference_mode(), autocast, _flush_denormals(self.device):
            out = self._networks[member](tensor)
        return out.float().cpu().numpy()


@contextlib.contextmanager
def _flush_denormals(device: torch.device) -> Iterator[None]:
    """Subnormal floats as zero while a network runs on the CPU, as audio DSP code does:
    near-silent input and decaying attention weights make them, and each costs the FPU
    tens of cycles (a small BS-RoFormer's chunk ran 4.4x slower with them)."""
    if device.type != "cpu" or not torch.set_flush_denormal(True):
        yield
        return
    try:
        yield
    finally:
        torch.set_flush_denormal(False)
