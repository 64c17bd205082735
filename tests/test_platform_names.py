"""Every folder and file name StemBridge makes is one a Windows file system takes, and a
stem folder whose files Windows could not open (its 260-character limit) is refused.

Checked with ``PureWindowsPath`` and Windows' own rules (device names, forbidden
characters, trailing dots and spaces), on every platform.
"""

from __future__ import annotations

from pathlib import Path, PureWindowsPath

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge import atomic
from bridge.errors import OutputError
from bridge.jobs.status_file import STATUS_DIR, status_path
from bridge.manifest import MANIFEST_NAME
from bridge.models.catalog import MODELS
from bridge.names import (
    FORBIDDEN,
    LONGEST_INSIDE,
    PathLimit,
    folder_name,
    inside,
    windows_reserved,
)
from bridge.owners import process_tag
from bridge.pictures import picture_paths
from bridge.pipeline.folders import LOCK_DIR, MAX_NUMBER, RESERVATION_NAME
from bridge.stems import plan_stems

#: The containers stems can be written in (bridge/audio/formats.py).
EXTENSIONS = ("wav", "flac", "aiff", "ogg", "mp3")


def windows_takes(name: str) -> bool:
    """Whether Windows accepts ``name`` as one file or folder name, as itself."""
    pure = PureWindowsPath(name)
    return (
        pure.name == name  # one component, no drive, nothing dropped
        and not windows_reserved(name)
        and not pure.is_reserved()
        and not any(char in FORBIDDEN or ord(char) < 32 for char in name)
        and not name.endswith((".", " "))
        and 0 < len(name) <= 255
    )


@pytest.mark.parametrize(
    "name",
    ["CON", "con.wav", "Nul.flac", "aux", "COM1.mp3", "LPT9", "COM¹", "conin$", "CON .txt"],
)
def test_device_names_are_recognised(name: str) -> None:
    assert windows_reserved(name) and not windows_takes(name)


@pytest.mark.parametrize(
    "stem",
    ["CON", "nul.take", "AUX ", "com1", "LPT²", "a<b>c", 'q"u', "x|y?z*", "end.", "end ", "..."],
)
def test_stem_folder_names_from_hostile_inputs(stem: str) -> None:
    name = folder_name(stem)
    assert windows_takes(name), name
    assert windows_takes(f"{name} ({MAX_NUMBER})")  # the numbered folders beside it


@given(st.text(min_size=0, max_size=300))
def test_every_stem_folder_name_is_a_windows_name(stem: str) -> None:
    name = folder_name(stem)
    assert windows_takes(name), repr(name)
    assert windows_takes(f"{name} ({MAX_NUMBER})")


def every_stem_name() -> set[str]:
    """The stem files' names of every known model: its sources and their sums."""
    names: set[str] = set()
    for spec in MODELS.values():
        words = [*spec.sources, *(f"no_{source}" for source in spec.sources)]
        if "vocals" in spec.sources and "instrumental" not in spec.sources:
            words.append("instrumental")
        names |= {plan.name for plan in plan_stems(list(dict.fromkeys(words)), spec.sources)}
    return names


def test_stem_picture_and_bookkeeping_file_names_are_windows_names() -> None:
    tag = process_tag()
    folder = Path("stems")
    finals = [folder / MANIFEST_NAME]
    for stem in sorted(every_stem_name()):
        for extension in EXTENSIONS:
            final = folder / f"{stem}.{extension}"
            finals += [final, *picture_paths(final).values()]
    assert len(finals) > 100
    names = {final.name for final in finals}
    names |= {atomic.temp_path_for(final, tag=tag).name for final in finals}
    names |= {atomic.temp_path_for(final, tag="3f9a1c2b7d10.2.1").name for final in finals}
    names |= {atomic.journal_path(folder, "3f9a1c2b7d10.2.1").name, RESERVATION_NAME}
    names |= {LOCK_DIR, STATUS_DIR, status_path(folder, "3f9a1c2b7d10").name}
    bad = sorted(name for name in names if not windows_takes(name))
    assert not bad
    longest = max(len(name) for name in names if name.startswith(atomic.TEMP_PREFIX))
    assert longest <= LONGEST_INSIDE, "the path limit's margin must hold the longest name"


def test_a_stem_folder_too_long_for_windows_is_refused_with_both_fixes(tmp_path: Path) -> None:
    limit = PathLimit(259)
    root = tmp_path / ("r" * max(1, 259 - LONGEST_INSIDE - len(str(tmp_path)) - 20))
    short = inside(root, root / "song", limit=limit)
    assert short == root / "song"
    with pytest.raises(OutputError, match=r"shorter output folder.*LongPathsEnabled"):
        inside(root, root / ("long song name " * 3), limit=limit)
    # Where long paths are enabled (and off Windows), no limit applies
    assert inside(root, root / ("x" * 200), limit=PathLimit()) == root / ("x" * 200)


def test_a_stem_sum_named_after_a_device_is_refused_and_a_model_stem_renamed() -> None:
    from bridge.errors import SettingsError
    from bridge.models.catalog import stem_word

    with pytest.raises(SettingsError, match="Windows keeps the name 'con'"):
        plan_stems(["con=vocals+drums"], ("drums", "bass", "other", "vocals"))
    assert [p.name for p in plan_stems(["rhythm=drums+bass"], ("drums", "bass"))] == ["rhythm"]
    # A model whose config names a stem "AUX" writes aux_.wav
    assert stem_word("AUX") == "aux_" and stem_word("Vocals") == "vocals"
    assert windows_takes(f"{stem_word('aux')}.wav")
