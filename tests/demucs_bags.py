"""Small randomly initialised demucs 4.1 bags beyond HT Demucs, in demucs' on-disk form.

Made with demucs' own classes and helpers, as the released files are: the time-domain
``Demucs`` (v2/v3), ``HDemucs`` and their mixes under per-source weights (``mdx``,
``repro_mdx_a``), and DiffQ-quantized copies (``mdx_q``) saved with
``demucs.states.get_state(network, DiffQuantizer(...))`` as demucs' training does.
A quantized network can also be written in the Hugging Face form, its packed state
flattened as demucs' ``tools/export_hf.py`` flattens it (``structure`` metadata).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import torch
import yaml
from demucs.demucs import Demucs
from demucs.hdemucs import HDemucs
from demucs.states import get_state, save_with_checksum
from safetensors.torch import save_file

from bridge.models.catalog import ModelSpec

from modelfiles import _json_default

#: A tiny time-domain Demucs: the v3 layout (resampling, DConv branches), 4 channels.
TINY_DEMUCS = dict(channels=4, depth=4, dconv_comp=4)
#: Without the 2x resampling and the DConv branches (nearly all of a tiny network's time), with
#: 10 s segments: for separating minutes of audio in a test.
FAST_DEMUCS = dict(channels=4, depth=4, dconv_mode=0, resample=False)
#: The Demucs class at its released size (its defaults: 64 channels, 6 levels).
RELEASED_DEMUCS: dict[str, Any] = {}
SIZES = {"tiny": TINY_DEMUCS, "fast": FAST_DEMUCS, "released": RELEASED_DEMUCS}
TINY_HDEMUCS = dict(channels=4, dconv_comp=4)
#: The bag files' segment for the tiny networks (the released bags say 44 s).
TINY_SEGMENT = 2
SEGMENTS = {"tiny": TINY_SEGMENT, "fast": 10, "released": 44}
#: The time-domain members of the mixed bags; the others are HDemucs.
TIME_DOMAIN = {"0d19c1c6", "7ecf8ec1", "9a6b4851", "1ef250f1", "6b9c2ca1", "b72baf4e"}
QUANTIZED = ("mdx_q", "mdx_extra_q")


def make_network(
    spec: ModelSpec, signature: str, *, seed: int, size: str = "tiny"
) -> torch.nn.Module:
    """The network behind ``signature``: a time-domain Demucs (of ``size``) or an HDemucs,
    whose own segment is the size's."""
    torch.manual_seed(seed)
    sources = list(spec.sources)
    if signature in TIME_DOMAIN:
        return Demucs(sources, segment=SEGMENTS[size], **SIZES[size]).eval()
    return HDemucs(sources, segment=SEGMENTS[size], **TINY_HDEMUCS).eval()


def official_definition(spec: ModelSpec, *, size: str = "tiny") -> dict:
    """demucs' own bag file for ``spec``, with the size's segment."""
    import importlib.resources

    text = (importlib.resources.files("demucs") / "remote" / spec.bag_file).read_text()
    definition = yaml.safe_load(text)
    definition["segment"] = SEGMENTS[size]
    return definition


def _package(network: torch.nn.Module, quantized: bool) -> dict:
    args, kwargs = network._init_args_kwargs
    quantizer = None
    if quantized:
        from diffq import DiffQuantizer

        quantizer = DiffQuantizer(network, min_size=0.0001, group_size=8)
    return {
        "klass": type(network),
        "args": args,
        "kwargs": kwargs,
        "state": get_state(network, quantizer, half=False),
        "training_args": {"note": "random init for tests"},
    }


def write_bag(
    folder: Path,
    spec: ModelSpec,
    *,
    seed: int = 0,
    definition: dict | None = None,
    size: str = "tiny",
) -> list[Path]:
    """``<name>.yaml`` and one ``<sig>-<sha8>.th`` per distinct signature of ``spec``."""
    folder.mkdir(parents=True, exist_ok=True)
    bag = official_definition(spec, size=size) if definition is None else definition
    (folder / spec.bag_file).write_text(yaml.safe_dump(bag))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i, signature in enumerate(dict.fromkeys(spec.signatures)):
            network = make_network(spec, signature, seed=seed + i, size=size)
            package = _package(network, spec.name in QUANTIZED)
            save_with_checksum(package, folder / f"{signature}.th")
    return sorted(folder.glob("*.th"))


def _flatten(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """demucs' ``tools/export_hf.py`` layout: tensors out, the rest as JSON nodes."""
    if isinstance(value, torch.Tensor):
        key = f"t{len(tensors)}"
        tensors[key] = value.contiguous()
        return {"_tensor": key}
    if isinstance(value, dict):
        return {"_dict": [[key, _flatten(item, tensors)] for key, item in value.items()]}
    if isinstance(value, list):
        return {"_list": [_flatten(item, tensors) for item in value]}
    if isinstance(value, tuple):
        return {"_tuple": [_flatten(item, tensors) for item in value]}
    if isinstance(value, type):
        return {"_class": f"{value.__module__}.{value.__qualname__}"}
    return value


def write_quantized_safetensors(folder: Path, spec: ModelSpec, *, seed: int = 0) -> list[Path]:
    """``<name>.yaml`` and ``<sig>.safetensors`` files of a quantized bag (the hub's form)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / spec.bag_file).write_text(yaml.safe_dump(official_definition(spec)))
    paths = []
    for i, signature in enumerate(dict.fromkeys(spec.signatures)):
        package = _package(make_network(spec, signature, seed=seed + i), quantized=True)
        tensors: dict[str, torch.Tensor] = {}
        structure = _flatten(package["state"], tensors)
        network_class = package["klass"]
        metadata = {
            "klass": f"{network_class.__module__}.{network_class.__qualname__}",
            "args": json.dumps(package["args"], default=_json_default),
            "kwargs": json.dumps(package["kwargs"], default=_json_default),
            "structure": json.dumps(structure),
        }
        path = folder / f"{signature}.safetensors"
        save_file(tensors, str(path), metadata=metadata)
        paths.append(path)
    return paths
