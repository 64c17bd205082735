"""Every model StemBridge knows, installed or not: what ``stembridge models list`` prints
and the dashboard shows, read without torch (host scripts list the installed models
before each dialog, so this stays a matter of file lookups).

One row per catalog model (named ensembles included), then one per model only an import
registered (``stembridge models import``), as a JSON-ready dict: ``name``, ``catalog``,
``family``, ``stems``, ``installed``, ``where``, ``size_bytes``, ``members``,
``ensemble``, ``scores``, ``licence``, ``files``, ``aliases``, ``description``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bridge.models.catalog import MODELS, get_spec
from bridge.models.registry import ImportedModel, imported_models
from bridge.models.weights import find_installed


def model_rows(*, installed_only: bool = False) -> list[dict[str, Any]]:
    """The rows, catalog models first in catalog order, then imported ones.

    Args:
        installed_only: Only the models whose files are all on this machine (a named
            ensemble: all its models' files).

    Raises:
        ModelError: The registry of imported folders cannot be read.
    """
    rows = [_catalog_row(name) for name in MODELS]
    rows += [
        _imported_row(folder.folder, model)
        for folder, model in imported_models()
        if model.catalog is None
    ]
    return [row for row in rows if row["installed"]] if installed_only else rows


def _catalog_row(name: str) -> dict[str, Any]:
    spec = MODELS[name]
    # A named ensemble is installed when all its models are; it weighs what they do.
    parts = [get_spec(m) for m in spec.members] if spec.family == "ensemble" else [spec]
    found = [find_installed(part) for part in parts]
    files = found[0] if len(found) == 1 else None
    complete = all(one is not None for one in found)
    return {
        "name": spec.name,
        "catalog": True,
        "family": spec.family,
        "stems": list(spec.sources),
        "installed": complete,
        "where": files.origin if files else ("its models'" if complete else None),
        "size_bytes": sum(one.size_bytes for one in found if one) if complete else None,
        "members": list(spec.members),
        "ensemble": spec.algorithm,
        "scores": [
            {"stem": score.stem, "sdr_db": score.sdr_db, "source": score.where}
            for score in spec.scores
        ],
        "licence": spec.licence,
        "files": [
            {"name": file.name, "urls": list(file.urls), "sha256": file.sha256}
            for file in spec.files
        ],
        "aliases": list(spec.aliases),
        "description": spec.description,
    }


def _imported_row(folder: Path, model: ImportedModel) -> dict[str, Any]:
    """A model only an import knows, as a catalog model's row."""
    present = model.present
    return {
        "name": model.name,
        "catalog": False,
        "family": model.family,
        "stems": list(model.stems),
        "installed": present,
        "where": f"imported ({folder})",
        "size_bytes": sum(path.stat().st_size for path in model.files) if present else None,
        "members": [],
        "ensemble": None,
        "scores": [],
        "licence": "as its publisher states",
        "files": [{"name": str(path), "urls": [], "sha256": None} for path in model.files],
        "aliases": [],
        "description": f"{model.family} model imported from {folder} ({model.found})",
    }
