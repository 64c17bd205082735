"""Where and how the networks run: device choice, batch size, precision, transfers."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import sys
from collections.abc import Iterator, Sequence

import numpy as np
import torch

from bridge.errors import DeviceUnavailable, SettingsError

log = logging.getLogger(__name__)

_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_device(name: str) -> torch.device:
    """The torch device for ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.

    Raises:
        DeviceUnavailable: CUDA was asked for and is absent, or the index is too high.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceUnavailable(
                f"device {name}: CUDA is not available here (torch {torch.__version__}"
                f"{', a CPU-only build' if torch.version.cuda is None else ''}); "
                "use --device cpu or --device auto",
                key="device",
                value=name,
            )
        index = device.index or 0
        if index >= torch.cuda.device_count():
            raise DeviceUnavailable(
                f"device {name}: this machine has {torch.cuda.device_count()} GPU(s), "
                f"numbered 0 to {torch.cuda.device_count() - 1}; use one of those",
                key="device",
                value=name,
            )
    return device


def default_batch_size(device: torch.device) -> int:
    """Segments per forward pass when the user does not say.

    On a CPU one segment at a time is fastest (batching is memory-bound there); on
    a GPU, as many as fit comfortably: about one per 4 GiB of memory, up to 16.
    """
    if device.type != "cuda":
        return 1
    total = torch.cuda.get_device_properties(device).total_memory
    return max(1, min(16, total // (4 << 30)))


def check_precision(precision: str, device: torch.device) -> None:
    """Refuse half precision where it does not help.

    Raises:
        SettingsError: ``fp16``/``bf16`` on a device other than CUDA.
    """
    if precision != "fp32" and device.type != "cuda":
        raise SettingsError(
            f"precision {precision} needs a CUDA device, and this run uses {device} (half "
            "precision on a CPU is far slower than fp32); use --precision fp32",
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
    """

    def __init__(
        self, networks: Sequence[torch.nn.Module], *, device: torch.device, precision: str
    ) -> None:
        check_precision(precision, device)
        if device.type == "cpu":
            keep_freed_memory()
        self.device = device
        self.precision = precision
        self._networks = [network.to(device).eval() for network in networks]

    def __call__(self, member: int, batch: np.ndarray) -> np.ndarray:
        """Run network ``member`` on ``(B, channels, samples)`` float32 input."""
        tensor = torch.from_numpy(batch)
        if self.device.type == "cuda":
            tensor = tensor.pin_memory().to(self.device, non_blocking=True)
        autocast = (
            torch.autocast("cuda", dtype=_DTYPES[self.precision])
            if self.precision in _DTYPES
            else contextlib.nullcontext()
        )
        with torch.inference_mode(), autocast, _flush_denormals(self.device):
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
