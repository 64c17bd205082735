"""Turn weight files into demucs networks without running code from the files.

``.th`` checkpoints are pickles; they are opened with ``torch.load(weights_only=True)``
and only the demucs network classes and ``Fraction`` allowed as globals, after
their checksum is verified. ``.safetensors`` files hold tensors only; the class
named in their metadata must be one of the same demucs classes (demucs' own
loader would import any module a file names).
"""

from __future__ import annotations

import json
import logging
import pickle
from fractions import Fraction
from importlib import resources
from pathlib import Path
from typing import Any

import torch
import yaml
from demucs.apply import BagOfModels, Model
from demucs.demucs import Demucs
from demucs.hdemucs import HDemucs
from demucs.htdemucs import HTDemucs
from demucs.states import load_model

from bridge.errors import ModelCorrupt
from bridge.models.weights import (
    WeightFiles,
    read_safetensors_metadata,
    verify_checkpoint,
)

log = logging.getLogger(__name__)

_CLASSES: dict[str, type[torch.nn.Module]] = {
    f"{klass.__module__}.{klass.__qualname__}": klass for klass in (HTDemucs, HDemucs, Demucs)
}


def load_bag(files: WeightFiles) -> BagOfModels:
    """Load every network of a model and combine them as its bag file says.

    Raises:
        ModelCorrupt: A file is damaged, names a forbidden class, or does not match
            the model (other sources, other networks).
    """
    spec = files.spec
    definition = _read_bag_definition(files)
    signatures = [str(sig) for sig in definition.get("models", [])]
    if signatures != list(spec.signatures):
        where = files.bag_file or "demucs' bundled bag file"
        raise ModelCorrupt(
            f"{where}: lists networks {signatures}, but {spec.name} is made of "
            f"{list(spec.signatures)}; use the official {spec.bag_file}",
            path=files.bag_file,
        )
    networks = [load_network(path) for path in files.networks]
    for path, network in zip(files.networks, networks, strict=True):
        if list(network.sources) != list(spec.sources):
            raise ModelCorrupt(
                f"{path}: produces {list(network.sources)}, but {spec.name} produces "
                f"{list(spec.sources)}; this file belongs to another model",
                path=path,
            )
    try:
        bag = BagOfModels(networks, definition.get("weights"), definition.get("segment"))
    except AssertionError as exc:
        raise ModelCorrupt(
            f"{files.bag_file}: the weights do not fit the networks ({exc}); use the "
            f"official {spec.bag_file}",
            path=files.bag_file,
        ) from exc
    bag.eval()
    log.info("loaded %s (%d network(s)) from %s", spec.name, len(networks), files.origin)
    return bag


def load_network(path: Path) -> Model:
    """Load one demucs network from a ``.th`` or ``.safetensors`` file.

    Raises:
        ModelCorrupt: The file is damaged, fails its checksum, or is not a demucs network.
    """
    package = _read_checkpoint(path) if path.suffix == ".th" else _read_safetensors(path)
    if isinstance(package.get("state"), dict) and package["state"].get("__quantized"):
        raise ModelCorrupt(
            f"{path}: quantized (diffq) networks are not supported; use an htdemucs model",
            path=path,
        )
    try:
        network: Model = load_model(package)
    except (RuntimeError, TypeError, ValueError, KeyError) as exc:
        raise ModelCorrupt(
            f"{path}: the weights do not fit the network they describe ({exc}); "
            "download the file again",
            path=path,
        ) from exc
    network.eval()
    return network


def _read_checkpoint(path: Path) -> dict[str, Any]:
    verify_checkpoint(path)
    try:
        with torch.serialization.safe_globals([*_CLASSES.values(), Fraction]):
            package = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as exc:
        raise ModelCorrupt(
            f"{path}: cannot be loaded safely ({str(exc).splitlines()[0]}); use the "
            "Hugging Face .safetensors form of this model instead",
            path=path,
        ) from exc
    if not isinstance(package, dict) or package.get("klass") not in _CLASSES.values():
        raise ModelCorrupt(
            f"{path}: does not hold a demucs network; use the official file", path=path
        )
    return package


def _read_safetensors(path: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    metadata = read_safetensors_metadata(path)
    if "structure" in metadata:
        raise ModelCorrupt(
            f"{path}: quantized (diffq) networks are not supported; use an htdemucs model",
            path=path,
        )
    try:
        state = load_file(str(path))
        args = _decode(json.loads(metadata["args"]))
        kwargs = _decode(json.loads(metadata["kwargs"]))
    except (OSError, ValueError, KeyError) as exc:
        raise ModelCorrupt(
            f"{path}: not a readable demucs safetensors file ({exc}); download it again",
            path=path,
        ) from exc
    return {"klass": _CLASSES[metadata["klass"]], "args": args, "kwargs": kwargs, "state": state}


def _decode(value: Any) -> Any:
    """JSON arguments back to Python, with demucs' encoding of fractions."""
    if isinstance(value, dict):
        if value.get("_type") == "fraction":
            return Fraction(value["numerator"], value["denominator"])
        return {key: _decode(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_decode(item) for item in value]
    return value


def _read_bag_definition(files: WeightFiles) -> dict[str, Any]:
    try:
        if files.bag_file is not None:
            text = files.bag_file.read_text()
        else:
            text = (resources.files("demucs") / "remote" / files.spec.bag_file).read_text()
        definition = yaml.safe_load(text)
    except (OSError, yaml.YAMLError) as exc:
        raise ModelCorrupt(
            f"{files.bag_file}: not a readable bag file ({exc}); use the official "
            f"{files.spec.bag_file}",
            path=files.bag_file,
        ) from exc
    if not isinstance(definition, dict):
        raise ModelCorrupt(
            f"{files.bag_file}: not a bag definition; use the official {files.spec.bag_file}",
            path=files.bag_file,
        )
    return definition
