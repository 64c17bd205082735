"""Programs from Debian that some tests need: present in CI (``.ci/run`` installs them)."""

from __future__ import annotations

import os
import shutil

import pytest


def required_program(*names: str, package: str, purpose: str) -> str:
    """The path of the first of ``names`` found.

    Fails in CI, where ``.ci/run`` installs ``package``; elsewhere skips loudly, saying
    what goes untested.
    """
    for name in names:
        found = shutil.which(name)
        if found is not None:
            return found
    if os.environ.get("CI"):
        pytest.fail(f"CI must provide {names[0]} (.ci/run installs the {package} package)")
    pytest.skip(f"{names[0].upper()} IS NOT INSTALLED: {purpose} (apt-get install {package})")
