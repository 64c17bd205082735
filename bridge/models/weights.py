"""Finding, installing and downloading model weights, offline first.

Weights are looked up, in order, in

1. ``$STEMBRIDGE_MODEL_DIR`` (if set),
2. the user data folder (``stembridge models path``),
3. the Hugging Face cache (what ``demucs`` 4.1 and ``huggingface_hub`` download),
4. the torch hub cache (what older ``demucs`` versions download),
5. the folders ``stembridge models import`` registered (:mod:`bridge.models.registry`;
   last, so that a damaged registry only matters for a model found nowhere else),

and only then downloaded as demucs 4.1 downloads them: a named model from Hugging Face
(``$HF_ENDPOINT``, else huggingface.co) first, and when that fails, from demucs' legacy
checkpoint site (``dl.fbaipublicfiles.com/demucs/<folder>/<sig>-<sha8>.th``, or the
mirror ``$STEMBRIDGE_DEMUCS_URL`` names; each file checked against the sha256 prefix in
its name, into the install folder); a single signature from the legacy site only (demucs
asks the hub for a ``Demucs-<signature>`` repository first, which does not exist). Nothing
is downloaded
when ``STEMBRIDGE_OFFLINE`` or ``HF_HUB_OFFLINE`` is set. Before each file is
downloaded one TCP connection checks that the hub (or the proxy in front of it) can
be reached at all: a machine without network learns so in a moment, once, instead
of after ``huggingface_hub``'s retries. A folder holds a model in either official form:

* Hugging Face: ``<name>.yaml`` and ``<signature>.safetensors`` per network;
* demucs repo: ``<name>.yaml`` and ``<signature>-<sha256 prefix>.th`` per network.

The ``<name>.yaml`` bag file may be missing; demucs' own copy is used then.

The other families' models are files (an MSST ``.ckpt`` and its ``.yaml``, a UVR
``.onnx``): found by name in the same folders and in python-audio-separator's model
folder (``$AUDIO_SEPARATOR_MODEL_DIR``, else ``/tmp/audio-separator-models``), read
there and never changed, or downloaded from the locations the catalog lists for them
(UVR's releases first, then audio-separator's, as it does), checked against their
published checksum where there is one.
This module reads no weights and imports no torch.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import socket
import struct
import tarfile
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import platformdirs

from bridge import atomic
from bridge.errors import ModelCorrupt, ModelNotFound
from bridge.models.catalog import DEMUCS_URL, MODELS, ModelSpec, get_spec
from bridge.models.registry import ImportedModel, imported_models

log = logging.getLogger(__name__)

#: ``download(repo_id, filename) -> local path``; the signature of ``hf_hub_download``.
Download = Callable[[str, str], str]

_OFFLINE_VARS = ("STEMBRIDGE_OFFLINE", "HF_HUB_OFFLINE")
#: Where weights are downloaded from when ``$HF_ENDPOINT`` does not say.
DEFAULT_ENDPOINT = "https://huggingface.co"
#: How long the check that the hub can be reached waits for its connection.
REACH_TIMEOUT_SECONDS = 5.0
#: The only network classes a weights file may name.
ALLOWED_CLASSES = ("demucs.htdemucs.HTDemucs", "demucs.hdemucs.HDemucs", "demucs.demucs.Demucs")


@dataclass(frozen=True)
class WeightFiles:
    """The files that hold one model, found in one place.

    Attributes:
        spec: The model.
        origin: Where they were found (a folder, or ``huggingface cache``).
        bag_file: ``<name>.yaml``, or ``None`` to use the copy shipped with demucs.
        networks: One file per network of the bag, in bag order.
    """

    spec: ModelSpec
    origin: str
    bag_file: Path | None
    networks: tuple[Path, ...]

    @property
    def size_bytes(self) -> int:
        """Total size on disk (a network the bag lists twice counted once)."""
        files = dict.fromkeys([*self.networks, *([self.bag_file] if self.bag_file else [])])
        return sum(path.stat().st_size for path in files)


def install_folder(env: Mapping[str, str] | None = None) -> Path:
    """Where ``models install`` puts weights: ``$STEMBRIDGE_MODEL_DIR`` or the data folder."""
    env = os.environ if env is None else env
    if env.get("STEMBRIDGE_MODEL_DIR"):
        return Path(env["STEMBRIDGE_MODEL_DIR"]).expanduser()
    return Path(platformdirs.user_data_dir("stembridge")) / "models"


def search_folders(env: Mapping[str, str] | None = None) -> tuple[Path, ...]:
    """The folders searched for weights, in order (the Hugging Face cache aside)."""
    env = os.environ if env is None else env
    folders: list[Path] = []
    if env.get("STEMBRIDGE_MODEL_DIR"):
        folders.append(Path(env["STEMBRIDGE_MODEL_DIR"]).expanduser())
    folders.append(Path(platformdirs.user_data_dir("stembridge")) / "models")
    torch_home = env.get("TORCH_HOME") or os.path.join(
        env.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "torch"
    )
    folders.append(Path(torch_home) / "hub" / "checkpoints")
    return tuple(folders)


def find_in_folder(spec: ModelSpec, folder: Path) -> WeightFiles | None:
    """The model's files in ``folder``, preferring safetensors, or ``None`` if incomplete."""
    if not folder.is_dir():
        return None
    networks: list[Path] = []
    for signature in spec.signatures:
        safetensors = folder / f"{signature}.safetensors"
        if safetensors.is_file():
            networks.append(safetensors)
            continue
        checkpoints = sorted(folder.glob(f"{signature}-*.th"))
        if not checkpoints:
            return None
        if len(checkpoints) > 1:
            names = ", ".join(path.name for path in checkpoints)
            raise ModelCorrupt(
                f"{folder}: several checkpoints for network {signature} of {spec.name} "
                f"({names}); keep one and delete the others",
                path=folder,
            )
        networks.append(checkpoints[0])
    bag = folder / spec.bag_file
    return WeightFiles(spec, str(folder), bag if bag.is_file() else None, tuple(networks))


def hf_cache_folder(env: Mapping[str, str] | None = None) -> Path:
    """The Hugging Face hub cache, read from the environment at call time.

    (``huggingface_hub`` fixes its own idea of it when first imported; a daemon
    should follow the environment it is given.)
    """
    env = os.environ if env is None else env
    if env.get("HF_HUB_CACHE"):
        return Path(env["HF_HUB_CACHE"]).expanduser()
    home = env.get("HF_HOME") or os.path.join(
        env.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "huggingface"
    )
    return Path(home).expanduser() / "hub"


def find_in_hf_cache(spec: ModelSpec) -> WeightFiles | None:
    """The model's files in the local Hugging Face cache, without touching the network."""
    if not spec.hf_repo:
        return None
    from huggingface_hub import try_to_load_from_cache

    cache = hf_cache_folder()

    def cached(filename: str) -> Path | None:
        found = try_to_load_from_cache(spec.hf_repo, filename, cache_dir=cache)
        return Path(found) if isinstance(found, str) else None

    networks = [cached(f"{signature}.safetensors") for signature in spec.signatures]
    if any(path is None for path in networks):
        return None
    return WeightFiles(
        spec,
        f"huggingface cache ({cache})",
        cached(spec.bag_file),
        tuple(path for path in networks if path is not None),
    )


def find_installed(
    spec: ModelSpec, *, folders: Sequence[Path] | None = None
) -> WeightFiles | ModelFiles | None:
    """The first complete copy of the model on this machine, or ``None``."""
    if spec.family != "demucs":
        return find_files(spec, folders=folders)
    return _find_demucs(spec, folders)


def locate(
    spec: ModelSpec,
    *,
    folders: Sequence[Path] | None = None,
    download: Download | None = None,
    fetch: Fetch | None = None,
    offline: bool | None = None,
) -> WeightFiles:
    """Find the model's weights, downloading them only when nothing is on disk: from
    Hugging Face, else from demucs' legacy site (as demucs 4.1 does).

    Args:
        spec: The model.
        folders: Folders to search (default :func:`search_folders`).
        download: Fetches one file of a Hugging Face repository (default
            ``huggingface_hub.hf_hub_download``).
        fetch: Fetches one legacy checkpoint from its URL (default :func:`download_url`).
        offline: Never download (default: from ``STEMBRIDGE_OFFLINE``/``HF_HUB_OFFLINE``).

    Raises:
        ModelNotFound: Nothing on disk and no download possible; the message lists the
            exact files and the folder to put them in.
        ModelCorrupt: A downloaded checkpoint does not hash to the prefix in its name.
    """
    found = _find_demucs(spec, folders)
    if found is not None:
        log.info("using %s weights from %s", spec.name, found.origin)
        return found
    if offline is None:
        offline = any(os.environ.get(var, "") not in ("", "0") for var in _OFFLINE_VARS)
    reason = "downloads are off (STEMBRIDGE_OFFLINE or HF_HUB_OFFLINE is set)"
    if not offline:
        failures: list[str] = []
        unreachable = True
        if spec.hf_repo:
            try:
                return _download(spec, hub_download() if download is None else download)
            except Exception as exc:  # demucs 4.1 falls back on any hub failure too
                log.info("downloading %s from Hugging Face failed: %s", spec.name, exc)
                failures.append(f"huggingface.co/{spec.hf_repo}: {exc}")
                unreachable = isinstance(exc, HubUnreachable)
        try:
            return _download_checkpoints(spec, download_url if fetch is None else fetch)
        except (OSError, urllib.error.URLError) as exc:
            log.info("downloading %s from the legacy site failed: %s", spec.name, exc)
            failures.append(f"{_legacy_site(spec)}: {exc}")
            unreachable = unreachable and isinstance(exc, HubUnreachable)
        if unreachable:
            reason = (
                f"it cannot be downloaded: {'; '.join(failures)}. Without network, set "
                "STEMBRIDGE_OFFLINE=1 to skip the download"
            )
        else:
            reason = f"the download failed ({'; '.join(failures)})"
    raise ModelNotFound(missing_message(spec, folders, reason))


def legacy_endpoint(env: Mapping[str, str] | None = None) -> str:
    """demucs' legacy checkpoint site: ``$STEMBRIDGE_DEMUCS_URL`` (a mirror), read at call
    time, or demucs' own ``dl.fbaipublicfiles.com/demucs/``."""
    env = os.environ if env is None else env
    url = env.get("STEMBRIDGE_DEMUCS_URL") or DEMUCS_URL
    return url if url.endswith("/") else url + "/"


def checkpoint_urls(spec: ModelSpec) -> tuple[str, ...]:
    """Where the legacy site serves each of the demucs model's checkpoints, in bag order."""
    return tuple(f"{_legacy_site(spec)}/{name}" for name in spec.checkpoints)


def _legacy_site(spec: ModelSpec) -> str:
    return f"{legacy_endpoint()}{spec.checkpoint_folder}"


def _download_checkpoints(spec: ModelSpec, fetch: Fetch) -> WeightFiles:
    """Each ``<sig>-<sha8>.th`` from demucs' legacy site into the install folder, checked
    against the prefix in its name (a damaged one is deleted); demucs' own bag file.

    Raises:
        HubUnreachable: The site takes no connection.
        urllib.error.URLError: A file could not be fetched.
        ModelCorrupt: A file does not hash to the prefix in its name.
    """
    target = install_folder()
    target.mkdir(parents=True, exist_ok=True)
    networks: list[Path] = []
    for name, url in zip(spec.checkpoints, checkpoint_urls(spec), strict=True):
        final = target / name
        if final not in networks:
            if not final.is_file():
                _fetch_first([url], final, fetch)
            try:
                verify_checkpoint(final)
            except ModelCorrupt:
                final.unlink(missing_ok=True)
                raise
        networks.append(final)
    log.info("downloaded %s from %s into %s", spec.name, _legacy_site(spec), target)
    return WeightFiles(spec, f"downloaded from {_legacy_site(spec)}", None, tuple(networks))


def _find_demucs(spec: ModelSpec, folders: Sequence[Path] | None) -> WeightFiles | None:
    """A demucs model's files on this machine, or ``None``."""
    for folder in search_folders() if folders is None else folders:
        found = find_in_folder(spec, folder)
        if found is not None:
            return found
    cached = find_in_hf_cache(spec)
    if cached is not None or folders is not None:
        return cached
    for imported in _imported(spec):
        found = find_in_folder(spec, imported.files[0].parent)
        if found is not None:
            return dataclasses.replace(found, origin=f"imported ({found.origin})")
    return None


def missing_message(spec: ModelSpec, folders: Sequence[Path] | None, reason: str) -> str:
    """Say exactly which files are missing and where to put them."""
    searched = ", ".join(str(folder) for folder in (folders or search_folders()))
    return (
        f"model {spec.name} is not installed and {reason}. Searched: {searched} and "
        f"{hf_cache_folder()}. Put {expected_files(spec)} into {install_folder()}, "
        "or run: stembridge models install --from FOLDER"
    )


def expected_files(spec: ModelSpec) -> str:
    """The files of either official form, and where each comes from."""
    checkpoints = " + ".join(dict.fromkeys(spec.checkpoints))
    legacy = f"{checkpoints} (from {_legacy_site(spec)}/)"
    if not spec.hf_repo:
        return legacy
    signatures = dict.fromkeys(spec.signatures)
    safetensors = " + ".join(f"{signature}.safetensors" for signature in signatures)
    return (
        f"{spec.bag_file} + {safetensors} (from https://huggingface.co/{spec.hf_repo}) or {legacy}"
    )


@dataclass(frozen=True)
class ModelFiles:
    """The files of a model of another family (not demucs), found in one place.

    Attributes:
        spec: The model.
        origin: Where they were found (a folder, or ``downloaded``).
        paths: One path per file of :attr:`ModelSpec.files`, in that order (weights first).
    """

    spec: ModelSpec
    origin: str
    paths: tuple[Path, ...]

    @property
    def size_bytes(self) -> int:
        """Total size on disk."""
        return sum(path.stat().st_size for path in self.paths)


#: ``fetch(url, target)`` writes the file at ``url`` to ``target`` (whole or not at all).
Fetch = Callable[[str, Path], None]


def other_tools_folders(env: Mapping[str, str] | None = None) -> tuple[Path, ...]:
    """Model folders of other tools that are searched (read only): python-audio-separator's."""
    env = os.environ if env is None else env
    return (Path(env.get("AUDIO_SEPARATOR_MODEL_DIR") or "/tmp/audio-separator-models"),)


def find_files(spec: ModelSpec, *, folders: Sequence[Path] | None = None) -> ModelFiles | None:
    """Every file of a non-demucs model in one folder, or ``None``."""
    if spec.local:
        paths = tuple(Path(file.name) for file in spec.files)
        return ModelFiles(spec, "given", paths) if all(p.is_file() for p in paths) else None
    searched = (*search_folders(), *other_tools_folders()) if folders is None else folders
    for folder in searched:
        paths = tuple(folder / file.name for file in spec.files)
        if all(path.is_file() for path in paths):
            return ModelFiles(spec, str(folder), paths)
    if folders is not None:
        return None
    for imported in _imported(spec):
        if len(imported.files) == len(spec.files) and imported.present:
            return ModelFiles(spec, f"imported ({imported.files[0].parent})", imported.files)
    return None


def _imported(spec: ModelSpec) -> list[ImportedModel]:
    """The catalog model's copies in the folders ``stembridge models import`` registered."""
    return [model for _, model in imported_models() if model.catalog == spec.name]


def locate_files(
    spec: ModelSpec,
    *,
    folders: Sequence[Path] | None = None,
    fetch: Fetch | None = None,
    offline: bool | None = None,
) -> ModelFiles:
    """Find a non-demucs model's files, downloading the missing ones into the install
    folder only when the model is not complete anywhere.

    Raises:
        ModelNotFound: Not on disk and not downloadable; the message names the files, where
            they are published and the folder to put them in.
        ModelCorrupt: A downloaded file does not match its published checksum.
    """
    found = find_files(spec, folders=folders)
    if found is not None:
        log.info("using %s from %s", spec.name, found.origin)
        return found
    names = ", ".join(Path(file.name).name for file in spec.files)
    if spec.local:
        raise ModelNotFound(f"{names}: no such model file; check the path given as --model")
    if offline is None:
        offline = any(os.environ.get(var, "") not in ("", "0") for var in _OFFLINE_VARS)
    reason = "downloads are off (STEMBRIDGE_OFFLINE or HF_HUB_OFFLINE is set)"
    if not offline:
        try:
            return _download_files(spec, download_url if fetch is None else fetch)
        except HubUnreachable as exc:
            log.info("not downloading %s: %s", spec.name, exc)
            reason = (
                f"it cannot be downloaded: {exc}. Without network, set STEMBRIDGE_OFFLINE=1 "
                "to skip the download"
            )
        except (OSError, urllib.error.URLError) as exc:
            log.info("downloading %s failed: %s", spec.name, exc)
            reason = f"the download failed ({exc})"
    where = "; ".join(f"{Path(f.name).name} from {' or '.join(f.urls)}" for f in spec.files)
    searched = ", ".join(str(folder) for folder in (folders or search_folders()))
    partial = _partial(spec, folders)
    if partial is not None:
        raise ModelNotFound(partial + f" and {reason}; put it there ({where})")
    raise ModelNotFound(
        f"model {spec.name} is not installed and {reason}. Searched: {searched} and "
        f"{', '.join(map(str, other_tools_folders()))}. Put {names} into {install_folder()} "
        f"({where})"
    )


def _partial(spec: ModelSpec, folders: Sequence[Path] | None) -> str | None:
    """What a folder holding some of a model's files lacks (an Open-Unmix folder with
    three of its four targets), or ``None`` when none holds part of it."""
    searched = (*search_folders(), *other_tools_folders()) if folders is None else folders
    for folder in searched:
        have = [file for file in spec.files if (folder / file.name).is_file()]
        if have and len(have) < len(spec.files):
            # A file's name under the folder (Spleeter's keep their release folder's).
            lacking = [f.name for f in spec.files if f not in have]
            return f"{folder}: model {spec.name} lacks {', '.join(lacking)}"
    return None


def download_url(url: str, target: Path, *, timeout_seconds: float = 60.0) -> None:
    """Download ``url`` into ``target``, whole or not at all, once the host is reachable.

    Raises:
        HubUnreachable: The host takes no connection.
        urllib.error.URLError: The server refused or failed (an HTTP error included).
    """
    check_reachable(url)
    log.info("downloading %s", url)
    temp = atomic.temp_path_for(target)
    try:
        with (
            urllib.request.urlopen(url, timeout=timeout_seconds) as answer,
            open(temp, "wb") as out,
        ):
            while chunk := answer.read(1 << 20):
                out.write(chunk)
        atomic.commit(temp, target)
    finally:
        temp.unlink(missing_ok=True)


def _download_files(spec: ModelSpec, fetch: Fetch) -> ModelFiles:
    if spec.archive is not None:
        return _download_archive(spec, fetch)
    target = install_folder()
    target.mkdir(parents=True, exist_ok=True)
    paths = []
    for file in spec.files:
        final = target / Path(file.name).name
        if not final.is_file():
            if spec.licence_notice:
                log.warning("%s: its weights are licensed %s", spec.name, spec.licence)
            _fetch_first(file.urls, final, fetch)
        if file.sha256 is not None:
            _check_sha256(final, file.sha256)
        paths.append(final)
    return ModelFiles(spec, f"downloaded into {target}", tuple(paths))


def _download_archive(spec: ModelSpec, fetch: Fetch) -> ModelFiles:
    """A model published as one archive (Spleeter's release folders), as spleeter's
    ``GithubModelProvider`` fetches it: the checksum index, then the archive, checked
    against its published sha256, its files unpacked under their catalog names.

    Raises:
        HubUnreachable: The host takes no connection.
        urllib.error.URLError: A file could not be fetched.
        ModelCorrupt: No published checksum, a checksum mismatch, or an archive that is
            not one or lacks a file.
    """
    archive = spec.archive
    if archive is None:
        raise ValueError(f"{spec.name} is not published as an archive")
    target = install_folder()
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".stembridge-", dir=target) as scratch:
        index = Path(scratch) / "checksums.json"
        _fetch_first([archive.checksums], index, fetch)
        try:
            expected = str(json.loads(index.read_text(encoding="utf-8"))[archive.key])
        except (ValueError, KeyError, TypeError) as exc:
            raise ModelCorrupt(
                f"{archive.checksums}: no checksum for {archive.key} ({exc}); the release "
                "moved or the download was damaged: run again, or install the folder by hand",
                path=index,
            ) from exc
        packed = Path(scratch) / Path(urlsplit(archive.url).path).name
        _fetch_first([archive.url], packed, fetch)
        _check_sha256(packed, expected)
        unpacked = _unpack(packed, spec, Path(scratch) / "unpacked")
        paths = []
        for file, source in zip(spec.files, unpacked, strict=True):
            final = target / file.name
            final.parent.mkdir(parents=True, exist_ok=True)
            atomic.copy_file(source, final, link=True)
            paths.append(final)
    log.info("downloaded %s from %s into %s", spec.name, archive.url, target)
    return ModelFiles(spec, f"downloaded into {target}", tuple(paths))


def _unpack(packed: Path, spec: ModelSpec, folder: Path) -> list[Path]:
    """The archive's members named like the model's files (by base name, wherever they
    lie in it), written into ``folder``; nothing else is extracted.

    Raises:
        ModelCorrupt: Not a readable archive, or a file is not in it.
    """
    wanted = {Path(file.name).name: folder / Path(file.name).name for file in spec.files}
    folder.mkdir()
    try:
        with tarfile.open(packed, "r:*") as tar:
            for member in tar:
                name = member.name.rsplit("/", 1)[-1]
                if member.isfile() and name in wanted:
                    source = tar.extractfile(member)
                    if source is not None:
                        with source, open(wanted[name], "wb") as out:
                            shutil.copyfileobj(source, out, 1 << 20)
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise ModelCorrupt(
            f"{packed.name}: not a readable archive ({exc}); download it again", path=packed
        ) from exc
    lacking = [name for name, path in wanted.items() if not path.is_file()]
    if lacking:
        raise ModelCorrupt(
            f"{packed.name}: lacks {', '.join(lacking)}; the release is not the model's "
            "official archive: install the folder by hand",
            path=packed,
        )
    return list(wanted.values())


def _fetch_first(urls: Sequence[str], target: Path, fetch: Fetch) -> None:
    """Try each location in turn (a mirror may not hold the file)."""
    errors = []
    for url in urls:
        try:
            fetch(url, target)
            return
        except HubUnreachable:
            raise
        except (OSError, urllib.error.URLError) as exc:
            errors.append(f"{url}: {exc}")
    raise urllib.error.URLError("; ".join(errors) or "no download location is known")


def file_sha256(path: Path) -> str:
    """The file's SHA-256, hex, read in 1 MiB pieces."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _check_sha256(path: Path, expected: str) -> None:
    """Check a download against its published checksum; a damaged one is deleted."""
    actual = file_sha256(path)
    # A torch.hub file name carries only the first hex digits of its sha256.
    if not actual.startswith(expected):
        path.unlink(missing_ok=True)
        raise ModelCorrupt(
            f"{path}: checksum mismatch (published {expected}, downloaded "
            f"{actual}); the download was damaged; run again",
            path=path,
        )


def verify_model_files(files: ModelFiles) -> None:
    """Check a model's files found in a folder against the checksums published for them
    (Open-Unmix's, the prefix in each name); the files are left as they are.

    Raises:
        ModelCorrupt: A file's content does not hash to its published checksum.
    """
    for file, path in zip(files.spec.files, files.paths, strict=True):
        if file.sha256 is not None and not (actual := file_sha256(path)).startswith(file.sha256):
            raise ModelCorrupt(
                f"{path}: checksum mismatch (published {file.sha256}, this file hashes to "
                f"{actual[: len(file.sha256)]}); it is damaged or not {files.spec.name}'s "
                "published file; download it again",
                path=path,
            )


class HubUnreachable(ConnectionError):
    """The hub (or the proxy in front of it) does not take a connection: no download
    can work, and :func:`locate` says so at once."""


def hub_endpoint(env: Mapping[str, str] | None = None) -> str:
    """The Hugging Face endpoint: ``$HF_ENDPOINT``, read at call time, or huggingface.co."""
    env = os.environ if env is None else env
    return env.get("HF_ENDPOINT") or DEFAULT_ENDPOINT


def hub_download(
    *, endpoint: str | None = None, timeout_seconds: float = REACH_TIMEOUT_SECONDS
) -> Download:
    """``hf_hub_download`` from ``endpoint`` into :func:`hf_cache_folder`, each file
    only once :func:`check_reachable` found the endpoint answering.

    Args:
        endpoint: The hub's URL (default :func:`hub_endpoint`).
        timeout_seconds: How long the reachability check waits.
    """
    url = hub_endpoint() if endpoint is None else endpoint

    def download(repo_id: str, filename: str) -> str:
        check_reachable(url, timeout_seconds=timeout_seconds)
        from huggingface_hub import hf_hub_download

        return str(hf_hub_download(repo_id, filename, cache_dir=hf_cache_folder(), endpoint=url))

    return download


def check_reachable(url: str, *, timeout_seconds: float = REACH_TIMEOUT_SECONDS) -> None:
    """Open (and close) one TCP connection to ``url``'s host, or to the proxy the
    environment names for it.

    Raises:
        HubUnreachable: The name does not resolve, the connection is refused, or no
            answer came within ``timeout_seconds``.
    """
    parts = urlsplit(url)
    host, port = parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)
    what = f"{host}:{port}"
    proxies = urllib.request.getproxies()
    proxy = proxies.get(parts.scheme) or proxies.get("all")
    if proxy and not urllib.request.proxy_bypass(host):
        # Through a proxy only the proxy is ever connected to: it is what must answer.
        proxy_parts = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        host, port = proxy_parts.hostname or "", proxy_parts.port or 80
        what = f"the proxy {host}:{port} (for {what})"
    try:
        socket.create_connection((host, port), timeout=timeout_seconds).close()
    except OSError as exc:
        why = str(exc) or type(exc).__name__
        raise HubUnreachable(f"{what} cannot be reached ({why})") from exc


def _download(spec: ModelSpec, download: Download) -> WeightFiles:
    log.info("downloading %s from huggingface.co/%s", spec.name, spec.hf_repo)
    bag = Path(download(spec.hf_repo, spec.bag_file))
    paths = {
        signature: Path(download(spec.hf_repo, f"{signature}.safetensors"))
        for signature in dict.fromkeys(spec.signatures)
    }
    networks = tuple(paths[signature] for signature in spec.signatures)
    return WeightFiles(spec, f"downloaded from huggingface.co/{spec.hf_repo}", bag, networks)


def verify_network_file(path: Path) -> None:
    """Check one network file without loading it (see the two verifiers below).

    Raises:
        ModelCorrupt: The file is damaged or names a class that is not allowed.
    """
    if path.suffix == ".th":
        verify_checkpoint(path)
    else:
        read_safetensors_metadata(path)


def read_safetensors_metadata(path: Path) -> dict[str, str]:
    """Read and check a ``.safetensors`` header: complete, and naming an allowed class.

    Returns:
        The header's metadata (``klass``, ``args``, ``kwargs``...).

    Raises:
        ModelCorrupt: The header is unreadable, the data is cut short, or the metadata
            does not describe a demucs network.
    """
    try:
        with open(path, "rb") as file:
            (header_size,) = struct.unpack("<Q", file.read(8))
            header = json.loads(file.read(header_size))
        size = path.stat().st_size
        end = max(
            (
                int(entry["data_offsets"][1])
                for key, entry in header.items()
                if key != "__metadata__"
            ),
            default=0,
        )
        metadata = header.get("__metadata__") or {}
    except (OSError, ValueError, KeyError, TypeError, struct.error) as exc:
        raise ModelCorrupt(
            f"{path}: not a readable safetensors file ({exc}); download it again", path=path
        ) from exc
    if size < 8 + header_size + end:
        raise ModelCorrupt(
            f"{path}: the file is cut short ({size} bytes, its header needs "
            f"{8 + header_size + end}); download it again",
            path=path,
        )
    if metadata.get("klass") not in ALLOWED_CLASSES:
        raise ModelCorrupt(
            f"{path}: names network class {metadata.get('klass')!r}; only "
            f"{', '.join(ALLOWED_CLASSES)} are loaded; use the official files",
            path=path,
        )
    return dict(metadata)


def verify_checkpoint(path: Path) -> None:
    """Check a ``<signature>-<sha256 prefix>.th`` file against the prefix in its name.

    Raises:
        ModelCorrupt: The name has no prefix, or the file's hash does not start with it.
    """
    _, _, expected = path.stem.rpartition("-")
    if not expected:
        raise ModelCorrupt(
            f"{path}: a demucs checkpoint must be named <signature>-<sha256 prefix>.th; "
            "rename it or download it again",
            path=path,
        )
    actual = file_sha256(path)[: len(expected)]
    if actual != expected:
        raise ModelCorrupt(
            f"{path}: checksum mismatch (the name says {expected}, the content hashes to "
            f"{actual}); the file is damaged or incomplete; download it again",
            path=path,
        )


def require_folder(folder: Path, purpose: str, fix: str) -> None:
    """Refuse a model folder given by the user that is missing or not a folder.

    Raises:
        ModelNotFound: Naming ``folder``, what it was given for, and ``fix``.
    """
    if not folder.is_dir():
        problem = "is not a folder" if folder.exists() else "does not exist"
        raise ModelNotFound(f"{folder}: the folder to {purpose} {problem}; {fix}", path=folder)


def install_from(
    source: Path, *, names: Sequence[str] | None = None, target: Path | None = None
) -> list[WeightFiles | ModelFiles]:
    """Copy the complete models found in ``source`` into the install folder.

    Every file is checked before anything is copied: each ``.th`` and ``.safetensors``
    network (:func:`verify_network_file`), and each file with a published checksum
    (Open-Unmix's). Files appear in the target whole or not at all.

    Args:
        source: A folder holding model files in an official form.
        names: Only these models (default: every complete model in ``source``).
        target: Where to copy (default :func:`install_folder`).

    Returns:
        The installed copies.

    Raises:
        ModelNotFound: ``source`` is not a folder, or holds none of the requested models.
        ModelCorrupt: A file fails its checksum (nothing is copied then).
    """
    require_folder(
        source,
        "install from",
        "give the folder that holds the downloaded model files (e.g. --from ~/Downloads/htdemucs)",
    )
    target = install_folder() if target is None else target
    wanted = _installable(names)
    found = [files for spec in wanted if (files := _in_folder(spec, source)) is not None]
    if not found:
        expected = "; or ".join(f"{spec.name}: {_expected(spec)}" for spec in wanted)
        raise ModelNotFound(
            f"{source}: no complete model found; expected {expected}",
            path=source,
        )
    for one in found:
        if isinstance(one, ModelFiles):
            verify_model_files(one)
        else:
            for network in dict.fromkeys(one.networks):
                verify_network_file(network)
    target.mkdir(parents=True, exist_ok=True)
    installed: list[WeightFiles | ModelFiles] = []
    for one in found:
        if isinstance(one, ModelFiles):
            # A catalog file keeps its place under the folder (Spleeter's <release>/...).
            placed = [None if one.spec.local else f.name for f in one.spec.files]
            pairs = zip(one.paths, placed, strict=True)
            copies = tuple(_copy(path, target, name) for path, name in pairs)
            installed.append(ModelFiles(one.spec, str(target), copies))
        else:
            copied = {path: _copy(path, target) for path in dict.fromkeys(one.networks)}
            networks = tuple(copied[path] for path in one.networks)
            bag = _copy(one.bag_file, target) if one.bag_file else None
            installed.append(WeightFiles(one.spec, str(target), bag, networks))
        log.info("installed %s into %s", one.spec.name, target)
    return installed


def _installable(names: Sequence[str] | None) -> list[ModelSpec]:
    """The models ``names`` asks for (any name ``--model`` takes; a named ensemble is its
    models), or every catalog model.

    Raises:
        SettingsError: A name that is no model.
    """
    asked = [get_spec(name) for name in names] if names else list(MODELS.values())
    wanted: list[ModelSpec] = []
    for spec in asked:
        parts = [get_spec(m) for m in spec.members] if spec.family == "ensemble" else [spec]
        wanted.extend(part for part in parts if part not in wanted)
    return wanted


def _in_folder(spec: ModelSpec, folder: Path) -> WeightFiles | ModelFiles | None:
    """The model's files in ``folder`` alone (no cache, no other folder)."""
    if spec.family == "demucs":
        return find_in_folder(spec, folder)
    return find_files(spec, folders=[folder])


def _expected(spec: ModelSpec) -> str:
    if spec.family == "demucs":
        return expected_files(spec)
    return " + ".join(Path(file.name).name for file in spec.files)


def _copy(path: Path, folder: Path, name: str | None = None) -> Path:
    final = folder / (path.name if name is None else name)
    final.parent.mkdir(parents=True, exist_ok=True)
    atomic.copy_file(path, final)
    return final
