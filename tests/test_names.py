"""Stem folder names made from input names: one safe component, always inside the root."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.errors import OutputError, UnsupportedName
from bridge.names import FALLBACK, MAX_NAME_BYTES, check_path_text, folder_name, inside, stem_folder


@pytest.mark.parametrize(
    ("stem", "expected"),
    [
        ("song", "song"),
        ("..", FALLBACK),  # "...wav"
        (".", FALLBACK),  # "..wav"
        ("", FALLBACK),
        ("   ", FALLBACK),
        ("~root", "root"),
        ("~", FALLBACK),
        (".hidden", "hidden"),
        ("a/b", "a_b"),
        ("a\\b", "a_b"),
        ('x<y>z:"|?*', "x_y_z_____"),
        ("trailing. . ", "trailing"),
        ("CON", "_CON"),
        ("nul.take", "_nul.take"),
        ("COM1", "_COM1"),
        ("CONSOLE", "CONSOLE"),
        ("new\nline", "new_line"),
        ("ls\u2028sep", "ls_sep"),
        ("nel\u0085x", "nel_x"),
        ("Ünïcødé ✓ 日本語", "Ünïcødé ✓ 日本語"),
    ],
)
def test_folder_names_are_one_safe_component(stem: str, expected: str) -> None:
    name = folder_name(stem)
    assert name == expected
    assert name not in ("", ".", "..") and Path(name).name == name


def test_long_names_are_cut_at_a_character_boundary() -> None:
    name = folder_name("日本語" * 200)
    # 3 bytes a character: 80 whole characters fit
    assert len(name.encode("utf-8")) == MAX_NAME_BYTES
    assert ("日本語" * 200).startswith(name) and len(name) == 80


@pytest.mark.parametrize("file", ["...wav", "..wav", "~root.wav", "a/../../x.wav"])
def test_stem_folders_stay_inside_their_root(tmp_path: Path, file: str) -> None:
    folder = stem_folder(tmp_path / "out", tmp_path / file)
    assert folder.parent == tmp_path / "out"


def test_a_folder_outside_its_root_is_refused(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match="must lie inside"):
        inside(tmp_path / "out", tmp_path / "out" / ".." / "elsewhere")
    with pytest.raises(OutputError, match="must lie inside"):
        inside(tmp_path / "out", tmp_path / "out")


@pytest.mark.parametrize("char", ["\n", "\r", "\t", "\x00", "\x7f", "\x85", "\u2028", "\u2029"])
def test_paths_status_files_cannot_carry_are_refused(char: str) -> None:
    with pytest.raises(UnsupportedName, match="line break or control character") as caught:
        check_path_text(f"/renders/ls{char}sep.wav")
    # The message shows the character escaped, so it cannot break a line itself
    assert char not in str(caught.value)


def test_ordinary_paths_pass() -> None:
    check_path_text('/renders/Ünïcødé – it\'s "quoted" $(x).wav')  # noqa: RUF001
