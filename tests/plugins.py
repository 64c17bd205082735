"""Stand-ins for third-party plugins: a real crashing VST3 built with gcc, and loaders.

The loaders run inside the plugin child process (they are passed to it by name
under ``spawn``), so they must stay importable and light.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np

_ENTRY_POINTS = """
int ModuleEntry(void *handle) { return 1; }
int ModuleExit(void) { return 1; }
void *GetPluginFactory(void) { %s return 0; }
"""


def build_vst3(folder: Path, name: str, factory_body: str) -> Path:
    """Compile a minimal Linux VST3 bundle whose factory runs ``factory_body`` (C code).

    pedalboard opens ``<name>.vst3/Contents/x86_64-linux/<name>.so`` and calls
    ``GetPluginFactory``, so a body that raises a signal is a plugin that crashes
    while loading, as a broken real one does.
    """
    compiler = shutil.which("gcc") or shutil.which("cc")
    if compiler is None:
        raise FileNotFoundError("no C compiler (apt-get install gcc)")
    bundle = folder / f"{name}.vst3"
    binary = bundle / "Contents" / "x86_64-linux" / f"{name}.so"
    binary.parent.mkdir(parents=True)
    source = folder / f"{name}.c"
    source.write_text(
        "#include <signal.h>\n#include <unistd.h>\n" + _ENTRY_POINTS % factory_body,
        encoding="utf-8",
    )
    subprocess.run([compiler, "-shared", "-fPIC", "-o", str(binary), str(source)], check=True)
    return bundle


class HalfGain:
    """A well-behaved plugin: halves the level; one parameter, ``gain``."""

    def __init__(self) -> None:
        self.parameters = {"gain": 0.5}
        self.gain = 0.5

    def process(
        self, block: np.ndarray, sample_rate: float, buffer_size: int = 8192, reset: bool = True
    ) -> np.ndarray:
        return (block * self.gain).astype(np.float32)


class CrashOnSecondBlock(HalfGain):
    """Processes one block, then dies of SIGSEGV like a plugin with a memory bug."""

    def __init__(self) -> None:
        super().__init__()
        self.blocks = 0

    def process(
        self, block: np.ndarray, sample_rate: float, buffer_size: int = 8192, reset: bool = True
    ) -> np.ndarray:
        self.blocks += 1
        if self.blocks == 2:
            os.kill(os.getpid(), signal.SIGSEGV)
        return super().process(block, sample_rate, buffer_size, reset)


class HangOnFirstBlock(HalfGain):
    """Never returns from processing."""

    def process(
        self, block: np.ndarray, sample_rate: float, buffer_size: int = 8192, reset: bool = True
    ) -> np.ndarray:
        while True:
            time.sleep(60)


def load_half_gain(path: str, name: str | None) -> HalfGain:
    return HalfGain()


def load_crashing(path: str, name: str | None) -> HalfGain:
    return CrashOnSecondBlock()


def load_hanging(path: str, name: str | None) -> HalfGain:
    return HangOnFirstBlock()
