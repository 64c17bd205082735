"""Turn weight files into demucs networks without running code from the files.

``.th`` checkpoints are pickles; they are opened with ``torch.load(weights_only=True)``
and only the demucs network classes and ``Fraction`` allowed as globals, after
their checksum is verified. ``.safetensors`` files hold tensors only; the class
named in their metadata must be one of the same demucs classes (demucs' own
loader would import any module a file names).

DiffQ-quantized networks (``mdx_q``, ``mdx_extra_q``) are dequantized on load with the
``diffq`` package (the ``diffq`` extra), as demucs does: their pickles may name DiffQ's
two quantizer classes besides, and nothing else; without ``diffq`` they are refused
with the command that installs it. A network a bag lists twice is loaded once.
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

from bridge import extras
from bridge.errors import ModelCorrupt, ModelError
from bridge.models.catalog import DEMUCS_SIGNATURES, ModelSpec
from bridge.models.weights import (
    WeightFiles,
    read_safetensors_metadata,
    verify_checkpoint,
)

log = logging.getLogger(__name__)

_CLASSES: dict[str, type[torch.nn.Module]] = {
    f"{klass.__module__}.{klass.__qualname__}": klass for klass in (HTDemucs, HDemucs, Demucs)
}
#: The quantizers demucs saves quantized networks with (``demucs.states.get_quantizer``).
_QUANTIZERS = ("diffq.diffq.DiffQuantizer", "diffq.uniform.UniformQuantizer")


def load_bag(files: WeightFiles) -> BagOfModels:
    """Load every network of a model and combine them as its bag file says.

    Raises:
        ModelCorrupt: A file is damaged, names a forbidden class, or does not match
            the model (other sources, other networks, a network its bag file names that
            is not the model's).
        MissingExtra: A network is DiffQ-quantized and ``diffq`` is not installed.
    """
    spec = files.spec
    definition = _read_bag_definition(files)
    signatures = [str(sig) for sig in definition.get("models", [])]
    if signatures != list(spec.signatures):
        where = files.bag_file or "demucs' bundled bag file"
        unknown = [sig for sig in signatures if sig not in spec.signatures]
        if unknown:
            raise ModelCorrupt(
                f"{where}: names network {unknown[0]}, which is none of {spec.name}'s "
                f"({', '.join(dict.fromkeys(spec.signatures))}) and is not installed; use "
                f"the official {spec.bag_file}, or delete it to use demucs' own copy",
                path=files.bag_file,
            )
        raise ModelCorrupt(
            f"{where}: lists networks {signatures}, but {spec.name} is made of "
            f"{list(spec.signatures)}; use the official {spec.bag_file}",
            path=files.bag_file,
        )
    loaded: dict[Path, Model] = {}
    for path in files.networks:
        if path not in loaded:
            loaded[path] = load_network(path)
    networks = [loaded[path] for path in files.networks]
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
        ModelCorrupt: The file is damaged, fails its checksum, is not a demucs network, or
            holds weights of other shapes than the network it describes.
        MissingExtra: The network is DiffQ-quantized and ``diffq`` is not installed.
    """
    package = _read_checkpoint(path) if path.suffix == ".th" else _read_safetensors(path)
    try:
        # Quantized states are dequantized here, by diffq.restore_quantized_state.
        network: Model = load_model(package)
    except (RuntimeError, TypeError, ValueError, KeyError, IndexError, AssertionError) as exc:
        raise ModelCorrupt(
            f"{path}: the weights do not fit the network they describe ({exc}); "
            "download the file again",
            path=path,
        ) from exc
    network.eval()
    return network


def _quantizer_classes(path: Path) -> list[type]:
    """DiffQ's quantizer classes, which a quantized network's file names.

    Raises:
        MissingExtra: ``diffq`` cannot be imported; the message names ``path``.
    """
    extras.require(
        "diffq",
        needed_by=f"{path}: a DiffQ-quantized network",
        otherwise="or use the model it was quantized from (mdx for mdx_q, mdx_extra for "
        "mdx_extra_q)",
    )
    from diffq import DiffQuantizer, UniformQuantizer

    return [DiffQuantizer, UniformQuantizer]


#: The first torch with ``torch.serialization.safe_globals`` (pyproject.toml's floor).
SAFE_LOADING_TORCH = "2.5"


def require_safe_loading(path: Path, serialization: Any = torch.serialization) -> None:
    """Refuse to open a pickled checkpoint with a torch that cannot allow-list its classes.

    Raises:
        ModelError: This torch predates ``safe_globals``; the message says which to install.
    """
    if not hasattr(serialization, "safe_globals") or not hasattr(
        serialization, "get_unsafe_globals_in_checkpoint"
    ):
        raise ModelError(
            f"{path}: torch {torch.__version__} cannot open this checkpoint safely "
            f"(torch.serialization.safe_globals needs torch {SAFE_LOADING_TORCH} or later); "
            f"pip install 'torch>={SAFE_LOADING_TORCH}', or use the model's .safetensors form"
        )


def _names_a_quantizer(path: Path) -> bool:
    """Whether the checkpoint's pickle names a DiffQ quantizer, read without loading it.

    A file in torch's legacy (pre-zip) format cannot be read so; it is then opened as it
    is, and a quantized one is refused as not loadable safely.
    """
    try:
        named = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except ValueError:
        return False
    return any(name in _QUANTIZERS for name in named)


def _read_checkpoint(path: Path) -> dict[str, Any]:
    verify_checkpoint(path)
    require_safe_loading(path)
    allowed: list[Any] = [*_CLASSES.values(), Fraction]
    try:
        if _names_a_quantizer(path):
            allowed += _quantizer_classes(path)
        with torch.serialization.safe_globals(allowed):
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
    try:
        state: dict[str, Any] = load_file(str(path))
        if "structure" in metadata:
            quantizers = {
                f"{klass.__module__}.{klass.__qualname__}": klass
                for klass in _quantizer_classes(path)
            }
            state = _unflatten(state, json.loads(metadata["structure"]), quantizers, path)
        args = _decode(json.loads(metadata["args"]))
        kwargs = _decode(json.loads(metadata["kwargs"]))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelCorrupt(
            f"{path}: not a readable demucs safetensors file ({exc}); download it again",
            path=path,
        ) from exc
    return {"klass": _CLASSES[metadata["klass"]], "args": args, "kwargs": kwargs, "state": state}


def _unflatten(tensors: dict[str, Any], node: Any, classes: dict[str, type], path: Path) -> Any:
    """A quantized state back from its flat tensors and the JSON ``structure`` (the
    inverse of demucs' ``tools/export_hf.py``), importing no class but ``classes``."""
    if not isinstance(node, dict):
        return node
    if "_tensor" in node:
        return tensors[node["_tensor"]]
    if "_dict" in node:
        return {key: _unflatten(tensors, item, classes, path) for key, item in node["_dict"]}
    if "_list" in node:
        return [_unflatten(tensors, item, classes, path) for item in node["_list"]]
    if "_tuple" in node:
        return tuple(_unflatten(tensors, item, classes, path) for item in node["_tuple"])
    if node.get("_class") in classes:
        return classes[node["_class"]]
    raise ModelCorrupt(
        f"{path}: its state names {node.get('_class') or node!r}; only "
        f"{', '.join(classes)} are loaded; use the official file",
        path=path,
    )


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
    if files.bag_file is None and files.spec.name in DEMUCS_SIGNATURES:
        return _single_network(files.spec)
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


def _single_network(spec: ModelSpec) -> dict[str, Any]:
    """A signature alone, as ``demucs -n <signature>`` runs it: no weights, and the
    network's own segment (not the bag's)."""
    return {"models": list(spec.signatures)}
