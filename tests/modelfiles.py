"""Small randomly initialised demucs networks, written in both official on-disk forms.

The files are made with demucs' own classes and helpers, exactly as the released
ones are: ``demucs.states.save_with_checksum`` for ``<sig>-<sha8>.th`` and the
metadata layout of demucs' ``tools/export_hf.py`` for ``<sig>.safetensors``.
"""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import torch
import yaml
from demucs.hdemucs import HDemucs
from demucs.htdemucs import HTDemucs
from demucs.states import get_state, save_with_checksum
from safetensors.torch import save_file

from bridge.models.catalog import ModelSpec

#: The released htdemucs architecture (41.98 M parameters).
OFFICIAL_HTDEMUCS = dict(dconv_mode=3, depth=4, t_layers=5, bottom_channels=512)
#: A network with the same structure, tiny and with a 2 s segment, for fast tests.
TINY_HTDEMUCS = dict(channels=4, depth=4, dconv_comp=4, t_heads=2, t_layers=1)
#: A tiny Hybrid Demucs v3 (the hdemucs_mmi architecture); its bag file sets a 4 s segment.
TINY_HDEMUCS = dict(channels=4, dconv_comp=4)
TINY_HDEMUCS_SEGMENT = 4


def make_network(sources: tuple[str, ...], *, seed: int, official: bool = False) -> HTDemucs:
    """A randomly initialised HT Demucs network."""
    torch.manual_seed(seed)
    if official:
        network = HTDemucs(list(sources), segment=Fraction(39, 5), **OFFICIAL_HTDEMUCS)
    else:
        network = HTDemucs(list(sources), segment=Fraction(2), **TINY_HTDEMUCS)
    return network.eval()


def make_networks(
    spec: ModelSpec, *, seed: int = 0, official: bool = False
) -> list[HTDemucs] | list[HDemucs]:
    """One network per signature of ``spec`` (Hybrid Demucs v3 for hdemucs_mmi)."""
    if spec.name == "hdemucs_mmi":
        torch.manual_seed(seed)
        return [HDemucs(list(spec.sources), **TINY_HDEMUCS).eval()]
    return [
        make_network(spec.sources, seed=seed + i, official=official)
        for i in range(len(spec.signatures))
    ]


def bag_definition(spec: ModelSpec) -> dict:
    """The bag file content: each network a specialist of one source when several;
    hdemucs_mmi with a short segment (the released file says 44 s)."""
    definition: dict = {"models": list(spec.signatures)}
    if spec.name == "hdemucs_mmi":
        definition["segment"] = TINY_HDEMUCS_SEGMENT
    if len(spec.signatures) > 1:
        definition["weights"] = [
            [1.0 if i == k else 0.0 for k in range(len(spec.sources))]
            for i in range(len(spec.signatures))
        ]
    return definition


def write_demucs_form(folder: Path, spec: ModelSpec, networks: list) -> list[Path]:
    """``<name>.yaml`` and ``<sig>-<sha8>.th`` files, as demucs' training code saves them."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / spec.bag_file).write_text(yaml.safe_dump(bag_definition(spec)))
    for signature, network in zip(spec.signatures, networks, strict=True):
        args, kwargs = network._init_args_kwargs
        package = {
            "klass": type(network),
            "args": args,
            "kwargs": kwargs,
            "state": get_state(network, None, half=False),
            "training_args": {"note": "random init for tests"},
        }
        save_with_checksum(package, folder / f"{signature}.th")
    return sorted(folder.glob("*.th"))


def _json_default(value: object) -> object:
    if isinstance(value, Fraction):
        return {"_type": "fraction", "numerator": value.numerator, "denominator": value.denominator}
    return str(value)


def write_hf_form(folder: Path, spec: ModelSpec, networks: list) -> list[Path]:
    """``<name>.yaml`` and ``<sig>.safetensors`` files, as on the Hugging Face hub."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / spec.bag_file).write_text(yaml.safe_dump(bag_definition(spec)))
    paths = []
    for signature, network in zip(spec.signatures, networks, strict=True):
        args, kwargs = network._init_args_kwargs
        metadata = {
            "klass": f"{type(network).__module__}.{type(network).__qualname__}",
            "args": json.dumps(args, default=_json_default),
            "kwargs": json.dumps(kwargs, default=_json_default),
        }
        state = {key: value.contiguous() for key, value in network.state_dict().items()}
        path = folder / f"{signature}.safetensors"
        save_file(state, str(path), metadata=metadata)
        paths.append(path)
    return paths
