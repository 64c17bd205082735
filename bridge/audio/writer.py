"""Write the stems of one input: block by block into hidden files, published together.

Nothing is visible under a stem's final name until every stem is complete; a
failure or cancellation removes the temporary files, and existing stems are only
replaced when the caller allows it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import numpy as np
import soundfile as sf

from bridge import atomic
from bridge.audio.formats import OutputFormat
from bridge.errors import OutputError

log = logging.getLogger(__name__)


def stem_paths(folder: Path, names: Sequence[str], fmt: OutputFormat) -> dict[str, Path]:
    """The final file of each stem."""
    return {name: folder / f"{name}.{fmt.extension}" for name in names}


def check_writable_folder(folder: Path) -> None:
    """Check that stems can be written into ``folder``, creating nothing that stays.

    The folder itself is only created when writing starts (see :class:`StemWriter`),
    so a job refused later leaves no empty folder behind.

    Raises:
        OutputError: The folder (or, if it does not exist yet, the nearest existing
            folder above it) is not a folder or cannot be written to.
    """
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        if not existing.is_dir():
            raise NotADirectoryError(20, "Not a directory")
        probe = atomic.temp_path_for(existing / "write-check")
        probe.touch(exist_ok=False)
        probe.unlink()
    except OSError as exc:
        raise OutputError(
            f"{folder}: cannot write stems here ({exc.strerror or exc}); choose another "
            "output folder with -o, or fix its permissions",
            path=folder,
        ) from exc


def refuse_existing(paths: Sequence[Path]) -> None:
    """Raise if any of ``paths`` exists (used when overwriting is not allowed).

    Raises:
        OutputError: Naming the first existing file.
    """
    for path in paths:
        if path.exists():
            raise OutputError(
                f"{path} already exists; pass --overwrite to replace it, or choose another "
                "output folder with -o",
                path=path,
            )


class StemWriter:
    """Stream the stems of one input into temporary files, then publish them.

    Use as a context manager; call :meth:`commit` when all frames are written. Leaving
    the block without committing (an error, a cancellation) deletes the temporary
    files and leaves whatever was at the final names untouched.

    Args:
        folder: Where the stems go; created (with missing parents) if needed, and
            removed again if it was created and nothing was published.
        names: Stem names, in the order of the rows passed to :meth:`write`.
        fmt: The file format of every stem.
        overwrite: Replace existing files with the same names.
    """

    def __init__(
        self, folder: Path, names: Sequence[str], fmt: OutputFormat, *, overwrite: bool
    ) -> None:
        self._final = stem_paths(folder, names, fmt)
        self._fmt = fmt
        self._overwrite = overwrite
        self._temps: dict[str, Path] = {}
        self._files: dict[str, sf.SoundFile] = {}
        self._frames = 0
        self._folder = folder
        self._created: list[Path] = []

    def __enter__(self) -> StemWriter:
        if not self._overwrite:
            refuse_existing(list(self._final.values()))
        try:
            missing = [self._folder, *self._folder.parents]
            self._created = [path for path in missing if not path.exists()]
            self._folder.mkdir(parents=True, exist_ok=True)
            for name, final in self._final.items():
                temp = atomic.temp_path_for(final)
                self._temps[name] = temp
                self._files[name] = sf.SoundFile(
                    str(temp),
                    "w",
                    samplerate=self._fmt.sample_rate,
                    channels=self._fmt.channels,
                    format=self._fmt.container,
                    subtype=self._fmt.subtype,
                )
        except (OSError, sf.LibsndfileError, RuntimeError) as exc:
            self._discard()
            raise self._error(exc) from exc
        return self

    def write(self, block: np.ndarray) -> None:
        """Append one block shaped ``(stems, channels, frames)``."""
        try:
            for row, name in enumerate(self._final):
                self._files[name].write(np.ascontiguousarray(block[row].T))
        except (OSError, sf.LibsndfileError, RuntimeError) as exc:
            raise self._error(exc) from exc
        self._frames += block.shape[-1]

    def commit(self) -> dict[str, Path]:
        """Close every stem and rename them to their final names.

        Returns:
            The final path of each stem.
        """
        try:
            for file in self._files.values():
                file.close()
            if not self._overwrite:
                refuse_existing(list(self._final.values()))
            for name, final in self._final.items():
                atomic.commit(self._temps[name], final)
        except (OSError, sf.LibsndfileError, RuntimeError) as exc:
            raise self._error(exc) from exc
        self._temps.clear()
        self._created.clear()
        log.debug("wrote %d stems of %d frames", len(self._final), self._frames)
        return dict(self._final)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._discard()

    def _discard(self) -> None:
        for file in self._files.values():
            if not file.closed:
                try:
                    file.close()
                except (OSError, sf.LibsndfileError, RuntimeError):
                    log.debug("closing a discarded stem failed", exc_info=True)
        for temp in self._temps.values():
            temp.unlink(missing_ok=True)
        for folder in self._created:
            try:
                folder.rmdir()
            except OSError:
                break
        self._created.clear()
        self._temps.clear()

    def _error(self, exc: BaseException) -> OutputError:
        folder = next(iter(self._final.values())).parent
        return OutputError(
            f"{folder}: writing stems failed ({exc}); check free space and permissions, "
            "then run again",
            path=folder,
        )
