"""Write the stems of one input block by block into hidden files, ready to be published.

Nothing is visible under a stem's final name here: :meth:`StemWriter.finish` hands
back the complete temporary files and the publish stage renames them (see
:mod:`bridge.pipeline.publish`); a failure or cancellation removes them.
"""

from __future__ import annotations

import errno
import logging
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import soundfile as sf

from bridge import atomic
from bridge.audio.formats import OutputFormat
from bridge.audio.quantize import Quantizer
from bridge.errors import OutputError

log = logging.getLogger(__name__)


def stem_paths(folder: Path, names: Sequence[str], fmt: OutputFormat) -> dict[str, Path]:
    """The final file of each stem."""
    return {name: folder / f"{name}.{fmt.extension}" for name in names}


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
    """Stream the stems of one input into temporary files in their (reserved) folder.

    Use as a context manager; call :meth:`finish` when all frames are written and
    publish what it returns before leaving the block. Leaving it removes every
    temporary file still there (all of them after an error or a cancellation) and
    never touches the final names.

    When a gain is only known at the end (loudness normalisation), ``staged=True``
    first writes float32 copies and :meth:`finish` applies each stem's gain while
    converting them to the output format; memory stays bounded either way.

    Args:
        folder: Where the stems go (it exists: its writer reserved it).
        names: Stem names.
        fmt: The file format of every stem.
        tag: The writer's tag, carried by every temporary name (see :mod:`bridge.atomic`).
        dither: Add TPDF dither when rounding to PCM (see :mod:`bridge.audio.quantize`).
        staged: Write float copies first and apply gains in :meth:`finish`.
    """

    def __init__(
        self,
        folder: Path,
        names: Sequence[str],
        fmt: OutputFormat,
        *,
        tag: str,
        dither: bool = False,
        staged: bool = False,
    ) -> None:
        self._final = stem_paths(folder, names, fmt)
        self._fmt = fmt
        self._tag = tag
        self._staged = staged
        self._quantizers = {
            name: Quantizer(fmt.subtype, dither=dither, seed=index)
            for index, name in enumerate(names)
        }
        self._temps: dict[str, Path] = {}
        self._stages: dict[str, Path] = {}
        self._files: dict[str, sf.SoundFile] = {}
        self.frames = dict.fromkeys(names, 0)

    @property
    def clipped_samples(self) -> dict[str, int]:
        """Samples of each stem that were outside full scale and clipped (PCM only)."""
        return {name: q.clipped_samples for name, q in self._quantizers.items()}

    def __enter__(self) -> StemWriter:
        try:
            for name, final in self._final.items():
                self._temps[name] = atomic.temp_path_for(final, tag=self._tag)
                if self._staged:
                    stage = final.with_name(f"{name}.staged.w64")
                    self._stages[name] = atomic.temp_path_for(stage, tag=self._tag)
                    self._files[name] = self._open(self._stages[name], "W64", "FLOAT")
                else:
                    self._files[name] = self._open(self._temps[name])
        except (OSError, sf.LibsndfileError, RuntimeError) as exc:
            self._discard()
            raise self._error(exc) from exc
        return self

    def write(self, name: str, block: np.ndarray) -> None:
        """Append ``(channels, frames)`` float samples to one stem."""
        try:
            if self._staged:
                self._files[name].write(np.ascontiguousarray(block.T, dtype=np.float32))
            else:
                self._files[name].write(self._quantizers[name](block))
        except (OSError, sf.LibsndfileError, RuntimeError) as exc:
            raise self._error(exc) from exc
        self.frames[name] += block.shape[-1]

    def finish(self, gains_db: Mapping[str, float] | None = None) -> dict[str, tuple[Path, Path]]:
        """Close every stem (applying ``gains_db`` on the way out of a staged write).

        Returns:
            Each stem's complete temporary file and its final path, to be published.
        """
        try:
            for file in self._files.values():
                file.close()
            if self._staged:
                for name in self._final:
                    self._convert(name, (gains_db or {}).get(name, 0.0))
        except (OSError, sf.LibsndfileError, RuntimeError) as exc:
            raise self._error(exc) from exc
        log.debug("wrote stems %s", self.frames)
        return {name: (self._temps[name], final) for name, final in self._final.items()}

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._discard()

    def _open(self, path: Path, container: str | None = None, subtype: str | None = None) -> Any:
        fmt = self._fmt
        return sf.SoundFile(
            str(path),
            "w",
            samplerate=fmt.sample_rate,
            channels=fmt.channels,
            format=container or fmt.container,
            subtype=subtype or fmt.subtype,
            **({} if container else fmt.encoder_options),
        )

    def _convert(self, name: str, gain_db: float) -> None:
        """Second pass of a staged write: gain, round, encode."""
        gain = np.float32(10 ** (gain_db / 20))
        stage = self._stages[name]
        with sf.SoundFile(str(stage)) as source, self._open(self._temps[name]) as target:
            for block in source.blocks(blocksize=1 << 16, dtype="float32", always_2d=True):
                target.write(self._quantizers[name](block.T * gain))
        stage.unlink()
        del self._stages[name]

    def _discard(self) -> None:
        for file in self._files.values():
            if not file.closed:
                try:
                    file.close()
                except (OSError, sf.LibsndfileError, RuntimeError):
                    log.debug("closing a discarded stem failed", exc_info=True)
        for temp in [*self._temps.values(), *self._stages.values()]:
            temp.unlink(missing_ok=True)
        self._temps.clear()
        self._stages.clear()

    def _error(self, exc: BaseException) -> OutputError:
        return writing_failed(next(iter(self._final.values())).parent, exc)


def writing_failed(folder: Path, exc: BaseException) -> OutputError:
    """The error for a failed write into ``folder``: a full disk is named as such."""
    free = _free_bytes(folder)
    if (isinstance(exc, OSError) and exc.errno == errno.ENOSPC) or free < _NEARLY_FULL:
        return OutputError(
            f"{folder}: no space left on its disk ({free / 2**20:.1f} MiB free) while "
            "writing stems; nothing was kept; free some space, then run the job again",
            path=folder,
        )
    return OutputError(
        f"{folder}: writing stems failed ({exc}); check free space and permissions, then run again",
        path=folder,
    )


# libsndfile reports a full disk only as "System error": below this, that is the cause.
_NEARLY_FULL = 4 * 2**20


def _free_bytes(folder: Path) -> int:
    """Free space on the disk that holds ``folder`` (or its nearest existing parent)."""
    for path in (folder, *folder.parents):
        try:
            return shutil.disk_usage(path).free
        except OSError:
            continue
    return _NEARLY_FULL
