"""The optional parts of StemBridge and the packages each needs (its pip extra).

A plain ``pip install stembridge`` separates files (``separate``), runs the daemon
without its dashboard (``serve --no-dashboard``, ``watch``) and answers host scripts
(``submit``, ``status``, ``jobs``, ``cancel``). The extras add the rest:

=========  ====================================  ========================================
extra      packages                              what needs them
=========  ====================================  ========================================
pictures   Pillow                                each stem's waveform and spectrogram PNGs
dashboard  Starlette, uvicorn                    ``serve``'s web dashboard (with ``pictures``)
studio     Dramatiq, Redis                       ``--broker``, ``worker``, ``workers``
onnx       onnxruntime                           UVR's MDX-Net models (``.onnx`` files)
evaluate   musdb, stempeg, matplotlib            ``evaluate``: MUSDB18, the plots
diffq      diffq                                 demucs' quantized models (``mdx_q``...)
all        every extra above                     ``pip install 'stembridge[all]'``
=========  ====================================  ========================================

Whether an extra is there is found out by importing its modules when a command is
about to need them, never at import time, so a lean install fails with one line
naming the extra and the ``pip`` command instead of a traceback.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from bridge.errors import MissingExtra


@dataclass(frozen=True)
class Extra:
    """One pip extra.

    Attributes:
        name: As in ``stembridge[name]``.
        packages: The distributions it installs (as named in ``pyproject.toml``).
        modules: What the code imports from them; all must import.
    """

    name: str
    packages: tuple[str, ...]
    modules: tuple[str, ...]

    @property
    def install_command(self) -> str:
        """The ``pip`` command that adds it (quoted for a POSIX shell)."""
        return f"pip install 'stembridge[{self.name}]'"


EXTRAS: dict[str, Extra] = {
    "pictures": Extra("pictures", ("Pillow",), ("PIL.Image",)),
    "dashboard": Extra("dashboard", ("starlette", "uvicorn"), ("starlette", "uvicorn")),
    "studio": Extra("studio", ("dramatiq", "redis"), ("dramatiq", "redis")),
    "onnx": Extra("onnx", ("onnxruntime",), ("onnxruntime",)),
    "evaluate": Extra(
        "evaluate", ("musdb", "stempeg", "matplotlib"), ("musdb", "stempeg", "matplotlib")
    ),
    "diffq": Extra("diffq", ("diffq",), ("diffq",)),
}


def missing_module(extra: str) -> str | None:
    """The first module of ``extra`` that cannot be imported, or ``None`` when all can."""
    for module in EXTRAS[extra].modules:
        try:
            importlib.import_module(module)
        except ImportError:
            return module
    return None


def require(extra: str, *, needed_by: str, otherwise: str = "") -> None:
    """Check that ``extra`` is installed before something that needs it starts.

    Args:
        extra: A key of :data:`EXTRAS`.
        needed_by: What needs it, for the message (``the web dashboard``).
        otherwise: How to do without it, if there is a way (``or pass --no-dashboard``).

    Raises:
        MissingExtra: One of its modules cannot be imported; the message names the
            extra, the module and the ``pip`` command.
    """
    module = missing_module(extra)
    if module is None:
        return
    spec = EXTRAS[extra]
    raise MissingExtra(
        f"{needed_by} needs the '{extra}' extra ({', '.join(spec.packages)}), and {module} "
        f"cannot be imported; install it with: {spec.install_command}"
        + (f", {otherwise}" if otherwise else ""),
        extra=extra,
        module=module,
    )
