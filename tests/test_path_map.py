"""Path maps: the daemon's paths become this machine's and back, on any OS, by string logic."""

from __future__ import annotations

import pytest

from bridge.broker.paths import PathMap
from bridge.errors import SettingsError

STUDIO = PathMap(
    (
        ("/mnt/nas", "Z:\\"),
        ("/mnt/nas/Archive", "\\\\archive\\old\\"),
        ("/srv/renders/", "/Volumes/Renders"),
        ("D:\\Projects", "/home/mix/projects"),
    )
)


@pytest.mark.parametrize(
    ("daemon", "local"),
    [
        ("/mnt/nas/Song A/x.wav", "Z:\\Song A\\x.wav"),
        ("/mnt/nas", "Z:\\"),
        ("/mnt/nas/a.wav", "Z:\\a.wav"),
        # the longest prefix wins
        ("/mnt/nas/Archive/2019/b.wav", "\\\\archive\\old\\2019\\b.wav"),
        ("/mnt/nas/Archive", "\\\\archive\\old"),
        # POSIX to POSIX; the configured trailing "/" is ignored
        ("/srv/renders/take 1.wav", "/Volumes/Renders/take 1.wav"),
        # a Windows daemon, a POSIX worker
        ("D:\\Projects\\Band\\mix.wav", "/home/mix/projects/Band/mix.wav"),
        # non-ASCII names survive
        ("/mnt/nas/Ünïcödé/日本語 ミックス.wav", "Z:\\Ünïcödé\\日本語 ミックス.wav"),
    ],
)
def test_round_trip(daemon: str, local: str) -> None:
    assert STUDIO.to_local(daemon) == local
    assert STUDIO.to_daemon(local) == daemon


@pytest.mark.parametrize(
    "path",
    [
        "/mnt/nasty/a.wav",  # a prefix matches only at a separator
        "/mnt/na",
        "/mnt/NAS/a.wav",  # POSIX prefixes are case-sensitive
        "/other/a.wav",
        "relative/a.wav",
        "",
        "Z:\\a.wav",  # a local path given where a daemon path is expected
    ],
)
def test_paths_without_a_matching_prefix_are_unchanged(path: str) -> None:
    assert STUDIO.to_local(path) == path


def test_windows_prefixes_ignore_case_and_take_either_separator() -> None:
    assert STUDIO.to_daemon("z:\\Song A\\x.wav") == "/mnt/nas/Song A/x.wav"
    assert STUDIO.to_daemon("Z:/Song A/x.wav") == "/mnt/nas/Song A/x.wav"
    assert STUDIO.to_daemon("\\\\ARCHIVE\\Old\\x.wav") == "/mnt/nas/Archive/x.wav"
    assert STUDIO.to_daemon("//archive/old/x.wav") == "/mnt/nas/Archive/x.wav"
    assert STUDIO.to_local("d:\\projects\\a.wav") == "/home/mix/projects/a.wav"
    # the rest of the path keeps its case
    assert STUDIO.to_daemon("z:\\SONG\\X.WAV") == "/mnt/nas/SONG/X.WAV"


def test_windows_boundaries_hold_too() -> None:
    assert STUDIO.to_local("D:\\Projects2\\a.wav") == "D:\\Projects2\\a.wav"
    assert STUDIO.to_daemon("Z:relative.wav") == "Z:relative.wav"  # not on the drive's root


def test_a_drive_root_stays_a_root() -> None:
    paths = PathMap((("/mnt/nas/", "Y:"), ("/data", "Z:\\Studio\\")))
    assert paths.to_local("/mnt/nas/a/b.wav") == "Y:\\a\\b.wav"
    assert paths.to_local("/data/a.wav") == "Z:\\Studio\\a.wav"
    assert paths.to_daemon("Z:\\Studio") == "/data"


def test_a_trailing_separator_on_the_path_is_kept() -> None:
    assert STUDIO.to_local("/mnt/nas/Stems/") == "Z:\\Stems\\"
    assert STUDIO.to_daemon("Z:\\Stems\\") == "/mnt/nas/Stems/"


def test_a_posix_root_maps_everything() -> None:
    paths = PathMap((("/", "\\\\nas\\root"),))
    assert paths.to_local("/a/b.wav") == "\\\\nas\\root\\a\\b.wav"
    assert paths.to_daemon("\\\\nas\\root\\a\\b.wav") == "/a/b.wav"


def test_decomposed_unicode_in_a_prefix_still_matches() -> None:
    # Given a prefix written in NFC and a path as macOS may spell it (NFD)
    paths = PathMap((("/Volumes/Caf\u00e9", "Z:\\"),))
    # Then the prefix matches and the rest of the name is left as it came
    assert paths.to_local("/Volumes/Cafe\u0301/Cafe\u0301.wav") == "Z:\\Cafe\u0301.wav"


def test_two_daemon_prefixes_on_one_local_prefix_map_back_to_the_first() -> None:
    paths = PathMap((("/mnt/nas", "Z:\\"), ("/Volumes/nas", "Z:\\")))
    assert paths.to_local("/Volumes/nas/a.wav") == "Z:\\a.wav"
    assert paths.to_daemon("Z:\\a.wav") == "/mnt/nas/a.wav"


def test_empty_map_changes_nothing() -> None:
    assert PathMap().to_local("/mnt/nas/a.wav") == "/mnt/nas/a.wav"
    assert PathMap().to_daemon("Z:\\a.wav") == "Z:\\a.wav"


def test_pairs_are_kept_as_configured() -> None:
    paths = PathMap((("/mnt/nas/", "Z:\\"),))
    assert paths.pairs == (("/mnt/nas/", "Z:\\"),)
    assert paths == PathMap((("/mnt/nas/", "Z:\\"),))


@pytest.mark.parametrize(
    ("pairs", "message"),
    [
        ((("", "Z:\\"),), "the daemon's path must be a non-empty string"),
        ((("/mnt/nas", ""),), "the path on this machine must be a non-empty string"),
        ((("/mnt/nas", 5),), "the path on this machine must be a non-empty string"),
        ((("mnt/nas", "Z:\\"),), "the daemon's path 'mnt/nas' is not an absolute path"),
        ((("/mnt/nas", "Z:Studio"),), "the path on this machine 'Z:Studio' is not an absolute"),
        ((("/mnt/nas", "\\\\server"),), "is not an absolute path"),
        ((("/mnt/nas", "Z:\\"), ("/mnt/nas/", "Y:\\")), "names the same place as '/mnt/nas'"),
        ((("/a", "/b", "/c"),), "is not a pair"),
    ],
)
def test_bad_pairs_are_refused_by_name(pairs: tuple, message: str) -> None:
    with pytest.raises(SettingsError) as caught:
        PathMap(pairs)
    assert message in str(caught.value), str(caught.value)
