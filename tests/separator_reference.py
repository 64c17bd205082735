"""python-audio-separator's own code, imported as the reference the other families are held to.

Its package ``__init__`` imports the whole separator (onnxruntime, requests, a compiled
diffq...), so its modules are imported here under bare parent packages instead, and
removed from ``sys.modules`` afterwards. ``tests/references/`` lists what ``.ci/run``
installs for them; without it a test skips loudly, and fails on CI, which must have it.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import sys
import types
import warnings
from pathlib import Path
from typing import Any, NoReturn

import pytest

INSTALL = (
    "pip install -r tests/references/roformer.txt && pip install --no-deps -r "
    "tests/references/roformer-no-deps.txt && pip install -r tests/references/separators.txt"
)


def missing(exc: ImportError, what: str) -> NoReturn:
    """Fail on CI, which must have the reference; elsewhere skip, loudly."""
    if os.environ.get("CI"):
        pytest.fail(f"CI must provide {what}: {exc}; .ci/run runs {INSTALL}")
    pytest.skip(f"NOT INSTALLED: {what}: {exc}; {INSTALL}")


def import_reference(module: str, *, stand_ins: tuple[str, ...] = ()) -> Any:
    """``audio_separator.<module>`` without the package's ``__init__``.

    Args:
        module: The module under ``audio_separator`` (``separator.architectures.mdx``...).
        stand_ins: Modules it imports but the tested path never uses: given as empty
            modules (onnx2torch, which would pull torchvision).
    """
    spec = importlib.util.find_spec("audio_separator")
    if spec is None or not spec.submodule_search_locations:
        missing(ImportError("No module named 'audio_separator'"), "python-audio-separator")
    root = Path(next(iter(spec.submodule_search_locations)))
    parts = module.split(".")
    saved = {name: sys.modules.get(name) for name in stand_ins}
    for depth in range(len(parts)):
        name = ".".join(["audio_separator", *parts[:depth]])
        package = types.ModuleType(name)
        package.__path__ = [str(root.joinpath(*parts[:depth]))]
        sys.modules[name] = package
    for name in stand_ins:
        sys.modules[name] = types.ModuleType(name)
    try:
        with warnings.catch_warnings():
            # pydub imports audioop, rotary-embedding-torch an old autocast: both deprecated
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", FutureWarning)
            return importlib.import_module(f"audio_separator.{module}")
    except ImportError as exc:
        missing(exc, f"python-audio-separator's {module}")
    finally:
        for name in [name for name in sys.modules if name.split(".")[0] == "audio_separator"]:
            del sys.modules[name]
        for name, before in saved.items():
            if before is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = before


def common_config(model: Path, model_data: dict[str, Any]) -> dict[str, Any]:
    """What python-audio-separator's ``Separator`` gives every architecture's separator."""
    import torch

    cpu = torch.device("cpu")
    return {
        "logger": logging.getLogger("audio_separator_reference"),
        "log_level": logging.WARNING,
        "torch_device": cpu,
        "torch_device_cpu": cpu,
        "torch_device_mps": None,
        "onnx_execution_provider": ["CPUExecutionProvider"],
        "model_name": model.stem,
        "model_path": str(model),
        "model_data": model_data,
        "output_dir": str(model.parent),
        "output_format": "WAV",
        "normalization_threshold": 0.9,
        "amplification_threshold": 0.0,
        "enable_denoise": False,
        "output_single_stem": None,
        "invert_using_spec": False,
        "sample_rate": 44100,
        "use_soundfile": False,
    }
