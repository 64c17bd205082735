"""Files another user could have changed, made for real: a real other owner, real modes,
and a plug-in bundle laid out the way pedalboard opens one."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

#: ``nobody``: a uid that is not the one the tests run as.
OTHER_UID = 65534


def give_to_another_user(path: Path) -> None:
    """``chown`` ``path`` to :data:`OTHER_UID`; needs root, which CI runs the tests as.

    Root may read and write anything whatever the owner, which is why StemBridge's rule
    is about who owns a file and who may write to it, and why these tests hold as root.
    """
    if os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("CI must run the tests as root: they chown files to another user")
        pytest.skip("NOT ROOT: files owned by another user are not tested (run as root)")
    os.chown(path, OTHER_UID, OTHER_UID)


def plugin_bundle(folder: Path, name: str) -> tuple[Path, Path]:
    """A VST3 bundle ``<name>.vst3`` holding a (never loaded) library; returns the bundle
    and the library, each with the modes a normal install gives (0755/0644)."""
    bundle = folder / f"{name}.vst3"
    library = bundle / "Contents" / "x86_64-linux" / f"{name}.so"
    library.parent.mkdir(parents=True)
    library.write_bytes(b"\x7fELF not really")
    for part in (bundle, bundle / "Contents", library.parent):
        part.chmod(0o755)
    library.chmod(0o644)
    return bundle, library
