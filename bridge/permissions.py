"""Who could have changed what StemBridge trusts, and folders kept to their user.

**Trusted files.** A config, a preset and a plug-in decide what code runs as this
user (a preset or a config names VST3 plug-ins; a plug-in is code), so each one the
daemon, ``separate`` or ``submit`` loads must be one that only this user could have
changed: owned by this user or by root, and not writable by others or by a group
with other members (the user's own private group, which Ubuntu's umask 002 makes
group-writable, is fine). Readability is not the question: root reads anything,
and what matters is who could have written it. Presets bundled in the installed
package are trusted as the package is, and not checked here.

**Private folders.** The state folder (job store, daemon lock) and each
``.stembridge`` status folder hold paths and job details: they are created
user-only (0700); an existing one this user owns is tightened to 0700; one another
user owns is refused, since its owner could read and replace what is kept there.

**Windows**: ``st_mode`` has no group or other bits there and ``st_uid`` is 0 (files
are protected by ACLs it does not show), so every check returns early on a system
that is not POSIX rather than deciding from numbers that mean nothing.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from bridge.errors import ConfigError

# chmod on a filesystem without Unix modes (FAT, SMB without Unix extensions) fails
# like this; there, as on Windows, the modes say nothing and the folder is used.
_MODES_UNSUPPORTED = (errno.EPERM, errno.ENOTSUP, errno.EROFS)


@dataclass(frozen=True)
class Exposure:
    """Why a file could have been changed by another user.

    Attributes:
        path: The file or folder at fault (inside a plug-in bundle: the part that is).
        problem: ``owned by another user (uid 65534)`` or ``other users may write to
            it (mode 666)``.
        foreign_owner: Whether another user owns it (then ``chmod`` is not the fix).
    """

    path: Path
    problem: str
    foreign_owner: bool


def exposure(path: Path) -> Exposure | None:
    """Whether someone other than this user (or root) could have changed ``path`` (a
    link is followed: its target is what is read).

    Returns:
        Why it could, or ``None`` when it could not, when it does not exist (reading
        it reports that) or on a system that is not POSIX.
    """
    if os.name != "posix":
        return None
    try:
        info = path.stat()
    except OSError:
        return None
    if info.st_uid not in (os.getuid(), 0):
        return Exposure(path, f"owned by another user (uid {info.st_uid})", foreign_owner=True)
    if info.st_mode & 0o002 or (info.st_mode & 0o020 and not _private_group(info.st_gid)):
        mode = stat.S_IMODE(info.st_mode)
        return Exposure(path, f"other users may write to it (mode {mode:o})", foreign_owner=False)
    return None


def bundle_exposure(bundle: Path) -> Exposure | None:
    """:func:`exposure` of a plug-in: the bundle and every folder and file inside it
    (the code is a library deep inside ``Foo.vst3/Contents/``).

    Links inside are checked for their target and not followed further.
    """
    found = exposure(bundle)
    if found is not None or not bundle.is_dir():
        return found
    for folder, folders, files in os.walk(bundle):
        for name in sorted(folders) + sorted(files):
            found = exposure(Path(folder) / name)
            if found is not None:
                return found
    return None


def check_private(file: Path) -> None:
    """Refuse a config another user could have written: it names the plug-ins the
    daemon loads and the folders it writes to, so it is as powerful as a script.

    Raises:
        ConfigError: The file is owned by another user, or writable by group or others.
    """
    found = exposure(file)
    if found is None:
        return
    if found.foreign_owner:
        raise ConfigError(
            f"{file}: {found.problem}; a config decides which plug-ins the daemon runs, "
            "so use one you own"
        )
    raise ConfigError(
        f"{file}: {found.problem}, and a config decides which plug-ins the daemon runs; "
        f"run: chmod go-w '{file}'"
    )


def readable_by_others(path: Path) -> bool:
    """Whether users other than this one (and root) may read ``path`` (a secret in it
    is then no secret); ``False`` on a system that is not POSIX."""
    if os.name != "posix":
        return False
    try:
        info = path.stat()
    except OSError:
        return False
    return bool(info.st_mode & 0o004 or (info.st_mode & 0o040 and not _private_group(info.st_gid)))


def private_folder(folder: Path) -> None:
    """Make ``folder`` (and missing parents) a folder only this user may use.

    A new folder is created 0700; an existing one this user owns is tightened to
    0700 (a loose one that was made by hand, or by an older version, is not used as
    it is).

    Raises:
        PermissionError: Another user owns it; the message says so and what to do.
        OSError: It cannot be created.
    """
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    if os.name != "posix":
        return
    info = folder.stat()
    if info.st_uid != os.getuid():
        raise PermissionError(
            errno.EPERM,
            f"{folder} is owned by another user (uid {info.st_uid}), who could read and "
            "change what StemBridge keeps there; remove it, or use a folder of your own",
            str(folder),
        )
    if stat.S_IMODE(info.st_mode) & 0o077:
        try:
            folder.chmod(0o700)
        except OSError as exc:
            if exc.errno not in _MODES_UNSUPPORTED:
                raise


def _private_group(gid: int) -> bool:
    """Whether ``gid`` is this user's own group (Ubuntu's umask 002 makes files
    group-writable, harmlessly, when nobody else is in the group)."""
    import grp
    import pwd

    try:
        members = set(grp.getgrgid(gid).gr_mem)
        user = pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return False
    return gid == os.getgid() and members <= {user}
