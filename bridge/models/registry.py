"""The model folders of other tools that ``stembridge models import`` registered.

The registry is one small JSON file in the user data folder (:func:`registry_path`),
written whole or not at all (:mod:`bridge.atomic`) and read without torch, so that
``--model`` can be checked against it as cheaply as against the catalog::

    {
      "version": 1,
      "folders": [
        {
          "folder": "/home/me/Ultimate Vocal Remover/models",
          "copied_to": null,
          "models": [
            {
              "name": "my_roformer.ckpt",
              "family": "bs_roformer",
              "stems": ["vocals", "instrumental"],
              "catalog": null,
              "files": ["/home/me/.../MDX_Net_Models/my_roformer.ckpt",
                        "/home/me/.../mdx_c_configs/my_roformer.yaml"],
              "found": "config from model_data/model_data.json"
            }
          ]
        }
      ]
    }

One entry per imported folder (its resolved path): importing a folder again replaces its
entry. ``files`` are what the model runs from, weights first, then an MSST config;
``catalog`` names the catalog model the files are (found by :mod:`bridge.models.weights`
as installed), ``null`` for a model only the import knows (named by ``name``, its file
name, as ``--model``). ``copied_to`` is the install folder when the import copied the
files there.

This module knows nothing of the catalog (the catalog looks imported names up here), so
a family is checked against :data:`FAMILIES`, the catalog's families.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import platformdirs

from bridge import atomic
from bridge.documents import parse_json
from bridge.errors import ModelError, ModelNotFound

#: The catalog's families (``bridge.models.catalog.Family``; a test keeps them equal).
Family = Literal[
    "demucs", "bs_roformer", "mel_band_roformer", "mdx23c", "mdx_net", "openunmix", "spleeter"
]
FAMILIES: tuple[str, ...] = get_args(Family)

REGISTRY_NAME = "imported-models.json"
#: Where an import keeps the parameters of an ``.onnx`` file that only the folder's
#: ``model_data.json`` knows: a link to the file beside a sidecar, as the loader reads them.
LINKS_NAME = "imported-links"
VERSION = 1

_FOLDER_KEYS = ("folder", "copied_to", "models")
_MODEL_KEYS = ("name", "family", "stems", "catalog", "files", "found")


@dataclass(frozen=True)
class ImportedModel:
    """A model found in an imported folder.

    Attributes:
        name: What ``--model`` takes for it: its file name (``my_roformer.ckpt``), or a
            demucs model's catalog name.
        family: How it is loaded and run.
        stems: What it produces, in its output order.
        files: What it runs from: the weights, then an MSST model's config.
        catalog: The catalog model these files are, if any.
        found: How it was recognised (for ``models import``'s table).
    """

    name: str
    family: Family
    stems: tuple[str, ...]
    files: tuple[Path, ...]
    catalog: str | None = None
    found: str = ""

    @property
    def present(self) -> bool:
        """Whether every file is still there."""
        return all(path.is_file() for path in self.files)


@dataclass(frozen=True)
class ImportedFolder:
    """One imported folder and what was found in it.

    Attributes:
        folder: The folder, resolved.
        models: The models found.
        copied_to: The folder the files were copied into (``--copy``), if any.
    """

    folder: Path
    models: tuple[ImportedModel, ...]
    copied_to: Path | None = None


def registry_path() -> Path:
    """The registry file: ``imported-models.json`` in the user data folder (where
    platformdirs puts it now: it reads the environment at each call)."""
    return Path(platformdirs.user_data_dir("stembridge")) / REGISTRY_NAME


def links_folder(path: Path | None = None) -> Path:
    """Where links with parameters beside them are kept: next to the registry ``path``."""
    return (registry_path() if path is None else path).parent / LINKS_NAME


def read_registry(path: Path | None = None) -> tuple[ImportedFolder, ...]:
    """Every imported folder, in the order they were first imported (none: no file).

    Raises:
        ModelError: The file cannot be read or is not a registry; the message names it
            and says how to start again.
    """
    path = registry_path() if path is None else path
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return ()
    except OSError as exc:
        raise _unreadable(path, exc.strerror or str(exc)) from exc
    try:
        document = parse_json(data)
    except ValueError as exc:
        raise _unreadable(path, f"not JSON: {exc}") from exc
    return _folders(path, document)


def record(entry: ImportedFolder, *, path: Path | None = None) -> None:
    """Put ``entry`` in the registry, replacing the entry of the same folder.

    Raises:
        ModelError: The registry there cannot be read (it is left as it is).
        OSError: It cannot be written.
    """
    path = registry_path() if path is None else path
    folders = list(read_registry(path))
    same = [k for k, old in enumerate(folders) if old.folder == entry.folder]
    if same:
        folders[same[0]] = entry
    else:
        folders.append(entry)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_bytes(path, _dump(folders))


def imported_models(path: Path | None = None) -> Iterator[tuple[ImportedFolder, ImportedModel]]:
    """Every imported model with its folder, folder by folder.

    Raises:
        ModelError: The registry cannot be read.
    """
    for folder in read_registry(path):
        for model in folder.models:
            yield folder, model


def find_imported(name: str, *, path: Path | None = None) -> ImportedModel | None:
    """The imported model ``--model name`` means (not a catalog model's), or ``None``.

    The first folder imported that holds it wins.

    Raises:
        ModelNotFound: It was imported but its files are gone.
        ModelError: The registry cannot be read.
    """
    gone: list[tuple[ImportedFolder, ImportedModel]] = []
    for folder, model in imported_models(path):
        if model.name != name or model.catalog is not None:
            continue
        if model.present:
            return model
        gone.append((folder, model))
    if not gone:
        return None
    folder, model = gone[0]
    missing = next(file for file in model.files if not file.is_file())
    raise ModelNotFound(
        f"model {name} was imported from {folder.folder}, but {missing} is no longer there; "
        f"import the folder again (stembridge models import FOLDER) to update it",
        path=missing,
    )


def _unreadable(path: Path, why: str) -> ModelError:
    return ModelError(
        f"{path}: the registry of imported model folders cannot be read ({why}); delete it "
        "and import the folders again (stembridge models import FOLDER)",
        path=path,
    )


def _folders(path: Path, document: object) -> tuple[ImportedFolder, ...]:
    if not isinstance(document, dict) or document.get("version") != VERSION:
        version = document.get("version") if isinstance(document, dict) else None
        raise _unreadable(path, f"version {version!r}, expected {VERSION}")
    if set(document) != {"version", "folders"} or not isinstance(document["folders"], list):
        raise _unreadable(path, "it must hold exactly 'version' and a list 'folders'")
    return tuple(_folder(path, f"folders[{k}]", item) for k, item in enumerate(document["folders"]))


def _folder(path: Path, where: str, item: object) -> ImportedFolder:
    entry = _object(path, where, item, _FOLDER_KEYS)
    copied = entry["copied_to"]
    if copied is not None and not isinstance(copied, str):
        raise _unreadable(path, f"{where}.copied_to = {copied!r} is not a path")
    if not isinstance(entry["models"], list):
        raise _unreadable(path, f"{where}.models is not a list")
    return ImportedFolder(
        folder=Path(_text(path, f"{where}.folder", entry["folder"])),
        models=tuple(
            _model(path, f"{where}.models[{k}]", model) for k, model in enumerate(entry["models"])
        ),
        copied_to=None if copied is None else Path(copied),
    )


def _model(path: Path, where: str, item: object) -> ImportedModel:
    entry = _object(path, where, item, _MODEL_KEYS)
    family = entry["family"]
    if family not in FAMILIES:
        raise _unreadable(path, f"{where}.family = {family!r} is not one of {FAMILIES}")
    catalog = entry["catalog"]
    if catalog is not None:
        catalog = _text(path, f"{where}.catalog", catalog)
    files = _texts(path, f"{where}.files", entry["files"])
    if not files:
        raise _unreadable(path, f"{where}.files is empty")
    return ImportedModel(
        name=_text(path, f"{where}.name", entry["name"]),
        family=family,
        stems=_texts(path, f"{where}.stems", entry["stems"]),
        files=tuple(Path(file) for file in files),
        catalog=catalog,
        found=_text(path, f"{where}.found", entry["found"], empty=True),
    )


def _object(path: Path, where: str, item: object, keys: Sequence[str]) -> dict[str, Any]:
    if not isinstance(item, dict) or set(item) != set(keys):
        raise _unreadable(path, f"{where} must be an object with exactly {', '.join(keys)}")
    return item


def _text(path: Path, where: str, value: object, *, empty: bool = False) -> str:
    if not isinstance(value, str) or not (value or empty) or "\0" in value:
        raise _unreadable(path, f"{where} = {value!r} is not a non-empty string")
    return value


def _texts(path: Path, where: str, value: object) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise _unreadable(path, f"{where} is not a list")
    return tuple(_text(path, f"{where}[{k}]", item) for k, item in enumerate(value))


def _dump(folders: Sequence[ImportedFolder]) -> bytes:
    document = {
        "version": VERSION,
        "folders": [
            {
                "folder": str(folder.folder),
                "copied_to": None if folder.copied_to is None else str(folder.copied_to),
                "models": [
                    {
                        "name": model.name,
                        "family": model.family,
                        "stems": list(model.stems),
                        "catalog": model.catalog,
                        "files": [os.fspath(file) for file in model.files],
                        "found": model.found,
                    }
                    for model in folder.models
                ],
            }
            for folder in folders
        ],
    }
    return (json.dumps(document, indent=2) + "\n").encode("utf-8")
