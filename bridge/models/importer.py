"""``stembridge models import FOLDER``: the models in another tool's model folder,
recognised by file type and config, registered where they are (or copied).

The folders this reads, as their tools lay them out:

* UVR (its ``models`` folder): ``MDX_Net_Models/*.onnx`` (MDX-Net; parameters in
  ``MDX_Net_Models/model_data/model_data.json`` by the file's hash, or in
  ``model_data/<hash>.json`` where set by hand), ``MDX_Net_Models/*.ckpt`` (MDX23C and
  RoFormers; the config that ``model_data.json``'s ``config_yaml`` names for the hash, in
  ``model_data/mdx_c_configs/``), ``Demucs_Models/v3_v4_repo/`` (``<name>.yaml`` and
  ``<signature>-<sha256 prefix>.th``), ``Demucs_Models/*.th`` (demucs v1 and v2) and
  ``VR_Models/*.pth`` (VR architecture: neither is run here).
* python-audio-separator (one flat folder, ``/tmp/audio-separator-models`` unless
  ``$AUDIO_SEPARATOR_MODEL_DIR``): a ``.ckpt`` beside its ``.yaml`` (the pairs in its
  ``download_checks.json``), ``.onnx`` files, demucs ``.yaml`` + ``.th``, ``.pth``, and
  UVR's tables as it downloads them (``mdx_model_data.json``).
* MSST (and any folder): ``<name>.ckpt`` beside ``<name>.yaml`` or ``<name>_config.yaml``.
* Open-Unmix (the ``openunmix`` package's torch hub folder, ``~/.cache/torch/hub/
  checkpoints``, or any folder): a model's ``<target>-<sha256 prefix>.pth`` files, all of
  them, under their published names.
* Spleeter (its ``pretrained_models`` folder): ``<release>/checkpoint``, ``model.index``
  and ``model.data-00000-of-00001`` for ``2stems``, ``4stems`` or ``5stems``.

A ``.ckpt``'s config is looked for, in order, where UVR's table for its hash says, where
``download_checks.json`` pairs it, under its catalog model's config name, and by the name
rule above, each beside it and then in ``model_data/mdx_c_configs/``; the config decides
the family (:func:`bridge.models.families.msst_config.read_config`). An ``.onnx``'s
parameters come from a sidecar or UVR's table (:mod:`bridge.models.families.uvr_params`),
else from the folder's UVR table. The loader reads parameters from a sidecar beside the
file, so for one only the folder's table knows, the import keeps a link to it beside a
sidecar in the data folder (:data:`bridge.models.registry.LINKS_NAME`), or with ``--copy``
writes the sidecar beside the copy.

The folder is walked without following symbolic links out of it. Nothing is copied
unless asked; a copy is verified (demucs' and Open-Unmix's checksums) and appears whole
or not at all.
"""

from __future__ import annotations

import filecmp
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bridge import atomic
from bridge.documents import parse_json
from bridge.errors import ModelCorrupt, ModelError, ModelNotFound, OutputError
from bridge.models.catalog import MODELS, ModelSpec, msst_sources, stem_word
from bridge.models.families.msst_config import ARCHITECTURES, read_config
from bridge.models.families.uvr_params import (
    UVR_MDX_NET,
    MdxParams,
    params_for,
    sidecar_path,
    uvr_hash,
)
from bridge.models.registry import (
    Family,
    ImportedFolder,
    ImportedModel,
    links_folder,
    read_registry,
    record,
    registry_path,
)
from bridge.models.weights import (
    ModelFiles,
    find_files,
    find_in_folder,
    install_folder,
    require_folder,
    verify_model_files,
    verify_network_file,
)

#: UVR's table gives these for an MDX-Net model; its other keys (``is_karaoke``,
#: ``is_bv_model``...) steer its own post-processing, which a sidecar does not take.
_MDX_KEYS = ("compensate", "mdx_dim_f_set", "mdx_dim_t_set", "mdx_n_fft_scale_set", "primary_stem")
_CONFIGS = Path("model_data") / "mdx_c_configs"
_DEMUCS_WEIGHTS = (".th", ".safetensors")
#: The files that are looked at (configs and tables are read for them).
_SUFFIXES = (".ckpt", ".onnx", ".pth", *_DEMUCS_WEIGHTS)
_DEMUCS = ", ".join(name for name, spec in MODELS.items() if spec.family == "demucs")
_LOOKED_FOR = (
    "MSST checkpoints (.ckpt with their .yaml beside them, or in model_data/mdx_c_configs "
    "as UVR keeps them), UVR MDX-Net models (.onnx with parameters from UVR's table, a "
    f".json beside them or model_data/model_data.json), demucs models ({_DEMUCS}: "
    "<signature>-<sha256 prefix>.th or <signature>.safetensors files), Open-Unmix models "
    "(every <target>-<sha256 prefix>.pth of one) and Spleeter release folders (2stems, "
    "4stems or 5stems with checkpoint, model.index and model.data-00000-of-00001)"
)
#: The catalog families whose models are fixed sets of files under published names.
_NAMED_FILES = ("openunmix", "spleeter")
_NOT_DEMUCS = (
    f"not a network of a demucs model StemBridge runs ({_DEMUCS}, as <signature>-<sha256 "
    "prefix>.th or <signature>.safetensors)"
)


@dataclass(frozen=True)
class Skipped:
    """A file that looks like a model but is not registered.

    Attributes:
        path: The file (or linked folder).
        reason: Why, and what would make it importable.
    """

    path: Path
    reason: str


@dataclass(frozen=True)
class ImportResult:
    """What ``models import`` did.

    Attributes:
        entry: The folder's new registry entry.
        skipped: The files passed over, with why.
        registry: The registry file written.
    """

    entry: ImportedFolder
    skipped: tuple[Skipped, ...]
    registry: Path


@dataclass(frozen=True)
class _Found:
    """A recognised model, before it is linked or copied."""

    model: ImportedModel
    #: MDX-Net parameters only the folder's UVR table has, to be put in a sidecar.
    params: dict[str, Any] | None = None
    #: The table they are from.
    params_source: Path | None = None
    #: Files that travel with a copy and are not opened by the loader (a sidecar).
    extras: tuple[Path, ...] = ()
    #: The file names a copy takes, one per file of ``model`` (a catalog model's names).
    names: tuple[str, ...] = ()


@dataclass
class _Scan:
    """What walking one folder found (one scan's state, never shared)."""

    root: Path
    found: list[_Found] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    uvr_tables: dict[Path, list[tuple[Path, Mapping[str, Any]]]] = field(default_factory=dict)
    pairs: dict[Path, dict[str, str]] = field(default_factory=dict)

    def skip(self, path: Path, reason: str) -> None:
        self.skipped.append(Skipped(path, reason))

    def inside(self, path: Path) -> bool:
        return path.resolve().is_relative_to(self.root)


def import_folder(
    folder: Path,
    *,
    copy: bool = False,
    target: Path | None = None,
    registry: Path | None = None,
) -> ImportResult:
    """Register every model StemBridge can run that ``folder`` holds.

    Args:
        folder: A UVR, python-audio-separator or MSST model folder (searched through).
        copy: Copy the files into ``target`` instead of registering them where they are.
        target: Where ``copy`` puts them (default
            :func:`bridge.models.weights.install_folder`).
        registry: The registry file (default
            :func:`bridge.models.registry.registry_path`).

    Returns:
        The folder's entry (replacing the one an earlier import made) and what was skipped.

    Raises:
        ModelNotFound: ``folder`` is not a folder, or holds no model StemBridge can run
            (the message says what was looked for and why files were skipped).
        ModelError: The registry cannot be read.
        OutputError: A copy, a link or the registry cannot be written.
    """
    folder = folder.expanduser()
    require_folder(
        folder,
        "import",
        "give a model folder, such as UVR's models folder or python-audio-separator's "
        "/tmp/audio-separator-models",
    )
    registry = registry_path() if registry is None else registry
    read_registry(registry)  # refuse a damaged registry before anything is linked or copied
    scan = _Scan(folder.resolve())
    for here, files in _walk(scan):
        _scan_folder(scan, here, files)
    if not scan.found:
        why = "; ".join(f"{item.path.name}: {item.reason}" for item in scan.skipped[:5])
        more = f" (and {len(scan.skipped) - 5} more)" if len(scan.skipped) > 5 else ""
        raise ModelNotFound(
            f"{folder}: no model StemBridge can run was found; looked for {_LOOKED_FOR}"
            + (f". Skipped: {why}{more}" if why else ""),
            path=folder,
        )
    destination = (install_folder() if target is None else target) if copy else None
    models = []
    for found in scan.found:
        try:
            if destination is not None:
                models.append(_copy(found, destination))
            elif found.params is not None:
                models.append(_link(found, links_folder(registry)))
            else:
                models.append(found.model)
        except (_Refused, ModelCorrupt) as refused:  # this model only: the others go on
            scan.skip(found.model.files[0], str(refused))
    entry = ImportedFolder(scan.root, tuple(models), destination)
    try:
        record(entry, path=registry)
    except OSError as exc:
        raise OutputError(
            f"{registry}: the registry cannot be written ({exc.strerror or exc}); check that "
            "folder's permissions and free space",
            path=registry,
        ) from exc
    return ImportResult(entry, tuple(scan.skipped), registry)


class _Refused(Exception):
    """One model cannot be linked or copied (the others go on)."""


def _walk(scan: _Scan) -> Iterator[tuple[Path, list[Path]]]:
    """Each folder under the root with its files, in name order; links out are skipped."""
    for top, folders, names in os.walk(scan.root, followlinks=False):
        here = Path(top)
        folders.sort()
        for name in folders:
            linked = here / name
            if linked.is_symlink() and not scan.inside(linked):
                scan.skip(linked, f"a symbolic link out of the folder (to {linked.resolve()})")
        files = []
        for name in sorted(names):
            path = here / name
            if atomic.is_temporary(path) or path.suffix.lower() not in _SUFFIXES:
                continue
            if not scan.inside(path):
                scan.skip(path, f"a symbolic link out of the folder (to {path.resolve()})")
            elif path.is_file():
                files.append(path)
        yield here, files


def _scan_folder(scan: _Scan, here: Path, files: list[Path]) -> None:
    claimed: set[Path] = set()
    if any(path.suffix.lower() in _DEMUCS_WEIGHTS for path in files):
        for found in _demucs(scan, here):
            scan.found.append(found)
            claimed.update(found.model.files)
    for found in _named_files(scan, here):
        scan.found.append(found)
        claimed.update(found.model.files)
    taken = {found.model.name: found.model.files[0] for found in scan.found}
    for path in files:
        if path in claimed:
            continue
        suffix = path.suffix.lower()
        if suffix in _DEMUCS_WEIGHTS:
            scan.skip(path, _NOT_DEMUCS)
            continue
        if suffix == ".pth":
            scan.skip(
                path,
                "a VR architecture model (UVR's VR_Models), which StemBridge does not run, or "
                "an Open-Unmix target whose model's other targets are not beside it under "
                "their published names",
            )
            continue
        try:
            found = _msst(scan, path) if suffix == ".ckpt" else _onnx(scan, path)
        except (ModelError, _Refused) as exc:
            scan.skip(path, str(exc))
            continue
        if found.model.name in taken:
            scan.skip(
                path,
                f"the same file name as {taken[found.model.name]}, found first: --model "
                f"{found.model.name} would not tell them apart; import {path.parent} on its own",
            )
            continue
        taken[found.model.name] = path
        scan.found.append(found)


def _demucs(scan: _Scan, here: Path) -> Iterator[_Found]:
    """The catalog's demucs models complete in ``here``."""
    for spec in MODELS.values():
        if spec.family != "demucs":
            continue
        try:
            files = find_in_folder(spec, here)
        except ModelCorrupt as exc:
            scan.skip(here, str(exc))
            continue
        if files is None:
            continue
        paths = (*files.networks, *([files.bag_file] if files.bag_file else []))
        if not all(scan.inside(path) for path in paths):
            continue
        bag = f"its bag {spec.bag_file}" if files.bag_file else "demucs' own bag"
        model = ImportedModel(
            name=spec.name,
            family="demucs",
            stems=spec.sources,
            files=paths,
            catalog=spec.name,
            found=f"demucs networks with {bag}",
        )
        yield _Found(model, names=tuple(path.name for path in paths))


def _named_files(scan: _Scan, here: Path) -> Iterator[_Found]:
    """The catalog's Open-Unmix and Spleeter models whose every file is under ``here`` by
    its published name (a Spleeter file's name keeps its release folder)."""
    for spec in MODELS.values():
        if spec.family not in _NAMED_FILES:
            continue
        files = find_files(spec, folders=[here])
        if files is None or not all(scan.inside(path) for path in files.paths):
            continue
        family: Family = "openunmix" if spec.family == "openunmix" else "spleeter"
        what = "target networks" if family == "openunmix" else "release folder"
        model = ImportedModel(
            name=spec.name,
            family=family,
            stems=spec.sources,
            files=files.paths,
            catalog=spec.name,
            found=f"its {what} under the published names",
        )
        yield _Found(model, names=tuple(file.name for file in spec.files))


def _msst(scan: _Scan, checkpoint: Path) -> _Found:
    """An MSST ``.ckpt`` and its config."""
    spec = _catalog(checkpoint, families=ARCHITECTURES)
    config, how = _config_of(scan, checkpoint, spec)
    family = next((kind for kind in ARCHITECTURES if spec and spec.family == kind), None)
    read = read_config(config, architecture=family)
    training = read.training
    stems = spec.sources if spec else msst_sources(training.instruments, training.target_instrument)
    model = ImportedModel(
        name=checkpoint.name,
        family=read.architecture,
        stems=stems,
        files=(checkpoint, config),
        catalog=spec.name if spec else None,
        found=f"config {how}",
    )
    # A copy takes the names it is searched by: the catalog's, or the name rule's.
    names = (checkpoint.name, f"{checkpoint.stem}.yaml")
    return _Found(model, names=tuple(file.name for file in spec.files) if spec else names)


def _config_of(scan: _Scan, checkpoint: Path, spec: ModelSpec | None) -> tuple[Path, str]:
    """Where a checkpoint's config is, and how it was found there."""
    here = checkpoint.parent
    candidates: list[tuple[str, str]] = []
    entry = _uvr_entry(scan, checkpoint, uvr_hash(checkpoint))
    if entry is not None and isinstance(entry[1].get("config_yaml"), str):
        candidates.append((entry[1]["config_yaml"], f"named by {entry[0].name}"))
    paired = _pairs(scan, here).get(checkpoint.name)
    if paired is not None:
        candidates.append((paired, "paired in download_checks.json"))
    if spec is not None and len(spec.files) > 1:
        candidates.append((spec.files[1].name, f"of catalog model {spec.name}"))
    candidates += [(f"{checkpoint.stem}{end}", "by name") for end in (".yaml", "_config.yaml")]
    for name, how in candidates:
        if Path(name).name != name:
            continue  # a table naming a path: only file names are looked up
        for place, where in ((here, "beside it"), (here / _CONFIGS, f"in {_CONFIGS}")):
            config = place / name
            if config.is_file() and scan.inside(config):
                return config, f"{name} {where} ({how})"
    looked = ", ".join(dict.fromkeys(name for name, _ in candidates))
    raise _Refused(
        f"no config for this checkpoint: looked for {looked} beside it and in {_CONFIGS}, "
        f"and UVR's model_data.json has no config_yaml for its hash "
        f"{uvr_hash(checkpoint)}; put the .yaml published with it beside it as "
        f"{checkpoint.stem}.yaml"
    )


def _onnx(scan: _Scan, model: Path) -> _Found:
    """A UVR MDX-Net ``.onnx`` and its parameters."""
    spec = _catalog(model, families=("mdx_net",))
    sidecar = sidecar_path(model)
    key = uvr_hash(model)
    if sidecar.is_file() or key in UVR_MDX_NET:
        known = params_for(model)
        how = f"parameters from {sidecar.name}" if sidecar.is_file() else "UVR's table"
        found = _Found(
            _onnx_model(model, spec, known, how),
            extras=(sidecar,) if sidecar.is_file() else (),
            names=(model.name,),
        )
        return found
    entry = _uvr_entry(scan, model, key)
    if entry is None:
        raise _Refused(
            f"an MDX-Net model of unknown UVR hash {key} without parameters: neither UVR's "
            f"table, a sidecar {sidecar.name} beside it nor a model_data.json here knows it; write "
            f"its parameters to {sidecar.name} beside it, as in UVR's model_data.json"
        )
    source, values = entry
    params = {name: values[name] for name in _MDX_KEYS if name in values}
    known = MdxParams.from_uvr(params, source=f"{source} [{key}]")
    imported = _onnx_model(model, spec, known, f"parameters from {source.name}")
    return _Found(imported, params=params, params_source=source, names=(model.name,))


def _onnx_model(model: Path, spec: ModelSpec | None, params: MdxParams, how: str) -> ImportedModel:
    primary, secondary = stem_word(params.primary_stem), stem_word(params.secondary_stem)
    return ImportedModel(
        name=model.name,
        family="mdx_net",
        stems=spec.sources if spec else (primary, secondary),
        files=(model,),
        catalog=spec.name if spec else None,
        found=how,
    )


def _catalog(path: Path, *, families: tuple[str, ...]) -> ModelSpec | None:
    """The catalog model whose file this is, by the file name UVR publishes it under."""
    for spec in MODELS.values():
        if spec.family in families and path.name in spec.aliases:
            return spec
    return None


def _uvr_entry(scan: _Scan, model: Path, key: str) -> tuple[Path, Mapping[str, Any]] | None:
    """The entry of UVR's table for the file's hash in its folder: ``model_data/<hash>.json``
    (set by hand in UVR: it wins there), ``model_data/model_data.json``, or
    python-audio-separator's copy ``mdx_model_data.json``."""
    here = model.parent
    if here not in scan.uvr_tables:
        tables: list[tuple[Path, Mapping[str, Any]]] = []
        for path in (here / "model_data" / "model_data.json", here / "mdx_model_data.json"):
            table = _json(scan, path)
            if isinstance(table, dict):
                tables.append((path, table))
        scan.uvr_tables[here] = tables
    own = _json(scan, here / "model_data" / f"{key}.json")
    if isinstance(own, dict):
        return here / "model_data" / f"{key}.json", own
    for path, table in scan.uvr_tables[here]:
        if isinstance(table.get(key), dict):
            return path, table[key]
    return None


def _pairs(scan: _Scan, here: Path) -> dict[str, str]:
    """The checkpoint → config names of ``download_checks.json`` (UVR's download lists,
    which python-audio-separator keeps in its folder)."""
    if here not in scan.pairs:
        lists = _json(scan, here / "download_checks.json")
        pairs: dict[str, str] = {}
        for key, models in lists.items() if isinstance(lists, dict) else ():
            if not key.startswith(("mdx23c_download", "roformer_download")):
                continue
            for files in models.values() if isinstance(models, dict) else ():
                if isinstance(files, dict):
                    pairs.update({k: v for k, v in files.items() if isinstance(v, str)})
        scan.pairs[here] = pairs
    return scan.pairs[here]


def _json(scan: _Scan, path: Path) -> object:
    """A JSON file of the folder, or ``None`` (absent, or unreadable: said as skipped)."""
    if not path.is_file() or not scan.inside(path):
        return None
    try:
        return parse_json(path.read_bytes())
    except (OSError, ValueError) as exc:
        if not any(item.path == path for item in scan.skipped):
            scan.skip(path, f"cannot be read as JSON ({exc}); its entries are not used")
        return None


def _link(found: _Found, links: Path) -> ImportedModel:
    """An MDX-Net file whose parameters only the folder's table has: a link to it beside a
    sidecar with them, which the loader reads."""
    source = found.model.files[0]
    folder = links / uvr_hash(source)
    link = folder / source.name
    try:
        folder.mkdir(parents=True, exist_ok=True)
        atomic.write_bytes(sidecar_path(link), json.dumps(found.params).encode("utf-8"))
        temp = atomic.temp_path_for(link)
        os.symlink(source, temp)
        os.replace(temp, link)
    except OSError as exc:
        raise _Refused(
            f"its parameters are only in {found.params_source}, and the link StemBridge "
            f"keeps beside them could not be made in {folder} "
            f"({exc.strerror or exc}); import with --copy, or write them to "
            f"{sidecar_path(source).name} beside it"
        ) from exc
    return replace(found.model, files=(link,), found=f"{found.model.found}, through {link}")


def _copy(found: _Found, target: Path) -> ImportedModel:
    """The model's files copied into ``target`` under the names it is searched by."""
    model = found.model
    if model.family == "demucs":
        for path in model.files:
            if path.suffix == ".th":
                verify_network_file(path)
    elif model.catalog is not None and model.family in _NAMED_FILES:
        verify_model_files(ModelFiles(MODELS[model.catalog], str(model.files[0]), model.files))
    pairs = [*zip(model.files, found.names, strict=True)]
    pairs += [(extra, extra.name) for extra in found.extras]
    for source, name in pairs:
        final = target / name
        if final.exists() and not filecmp.cmp(source, final, shallow=False):
            raise _Refused(
                f"a different {name} is already in {target}; remove it there, or import "
                "without --copy"
            )
    try:
        for source, name in pairs:
            if not (target / name).exists():
                (target / name).parent.mkdir(parents=True, exist_ok=True)
                atomic.copy_file(source, target / name)
        if found.params is not None:
            sidecar = sidecar_path(target / found.names[0])
            atomic.write_bytes(sidecar, json.dumps(found.params).encode("utf-8"))
    except OSError as exc:
        raise OutputError(
            f"{target}: cannot copy {model.name} there ({exc.strerror or exc}); check that "
            "folder's permissions and free space",
            path=target,
        ) from exc
    copies = tuple(target / name for name in found.names)
    return replace(model, files=copies, found=f"{model.found}; copied")
