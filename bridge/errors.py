"""Every error StemBridge raises on purpose.

One tree, so callers can catch as broadly or as narrowly as they need::

    StemBridgeError
    ├── SettingsError          a value given by the user (flag, config key) is not allowed
    │   ├── DeviceUnavailable  the requested device does not exist on this machine
    │   ├── ConfigError        the config file is unreadable or has a bad key or value
    │   ├── PresetError        an effects preset is missing or has a bad effect, key or value
    │   └── MissingExtra       a command needs an optional part (pip extra) not installed
    ├── ModelError             weights cannot be found, verified or loaded
    │   ├── ModelNotFound      no weights on disk and no way to download them
    │   └── ModelCorrupt       a weights file fails its checksum or cannot be parsed
    ├── AudioError             an input file cannot be used
    │   ├── UnreadableAudio    missing, unreadable, empty, not audio or truncated
    │   ├── RangeOutsideAudio  the requested range lies (partly) outside the file
    │   └── DatasetError       an evaluation dataset, track or estimate cannot be scored
    ├── EffectError            an effect or plugin failed (crashed, hung) while processing
    ├── OutputError            results cannot be written where they should go
    ├── HostError              a host integration cannot be installed or reached
    │   ├── AudacityNotRunning Audacity's script pipe is absent and Audacity is not running
    │   ├── ScriptingDisabled  Audacity runs but mod-script-pipe is not enabled
    │   ├── AudacityNotAnswering  the script pipe has no reader, or a reply did not come
    │   ├── NothingSelected    Audacity has no audio selected
    │   └── AudacityCommandFailed  Audacity answered a command with a failure
    ├── BrokerError            the studio broker (Redis) cannot be reached or refuses us
    ├── JobError               the job queue cannot do what was asked
    │   └── JobNotFound        no job has that id
    └── JobCancelled           work was stopped on request (not a failure)

Every error carries the values it talks about as attributes (``path``, ``value``)
and a message that names the value, what is allowed and what to do about it.
"""

from __future__ import annotations

from pathlib import Path


class StemBridgeError(Exception):
    """Root of all StemBridge errors.

    Args:
        message: A sentence a person can act on: the value, what was allowed, the fix.
        path: The file or folder the error is about, if any.
    """

    def __init__(self, message: str, *, path: Path | str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.path = Path(path) if path is not None else None

    def __str__(self) -> str:
        return self.message


class SettingsError(StemBridgeError):
    """A setting has a value that is not allowed."""

    def __init__(self, message: str, *, key: str | None = None, value: object = None) -> None:
        super().__init__(message)
        self.key = key
        self.value = value


class DeviceUnavailable(SettingsError):
    """The requested compute device is not present."""


class ConfigError(SettingsError):
    """The config file cannot be read, or a key in it is unknown or has a bad value."""


class PresetError(SettingsError):
    """An effects preset cannot be found or read, or names an effect, key or value not allowed.

    Args:
        message: Names the preset file, the stem, the key and the allowed values.
        path: The preset file, when there is one.
        key: The dotted place in the preset (``stems.vocals.chain[2].ratio``).
        value: The value refused.
    """

    def __init__(
        self,
        message: str,
        *,
        path: Path | str | None = None,
        key: str | None = None,
        value: object = None,
    ) -> None:
        super().__init__(message, key=key, value=value)
        self.path = Path(path) if path is not None else None


class MissingExtra(SettingsError):
    """A command needs an optional part of StemBridge whose packages are not installed.

    Args:
        message: Names what needs it, the extra and the ``pip install`` command.
        extra: The extra (``dashboard``, ``studio``, ``pictures``).
        module: The module that cannot be imported.
    """

    def __init__(self, message: str, *, extra: str, module: str) -> None:
        super().__init__(message, key=extra)
        self.extra = extra
        self.module = module


class ModelError(StemBridgeError):
    """Model weights cannot be found, verified or loaded."""


class ModelNotFound(ModelError):
    """No weights for the model were found and none could be downloaded."""


class ModelCorrupt(ModelError):
    """A weights file is damaged, fails its checksum, or holds something unexpected."""


class AudioError(StemBridgeError):
    """An input file cannot be used as audio."""


class UnreadableAudio(AudioError):
    """The file is missing, unreadable, empty, not audio, or truncated."""


class UnsupportedName(AudioError):
    """The input's path holds characters host scripts cannot read back (line breaks)."""


class RangeOutsideAudio(AudioError):
    """The requested time range is not inside the file."""


class DatasetError(AudioError):
    """An evaluation dataset has no tracks, or a track, reference or estimate cannot be
    scored (missing, or its length or rate differs from what it is compared with)."""


class EffectError(StemBridgeError):
    """An effect or third-party plugin failed while processing a stem (crash, hang, error)."""


class OutputError(StemBridgeError):
    """Results cannot be written to the output location."""


class HostError(StemBridgeError):
    """A host integration cannot be installed or reached (e.g. REAPER's resource folder)."""


class AudacityNotRunning(HostError):
    """Audacity's script pipe does not exist and no Audacity process runs."""


class ScriptingDisabled(HostError):
    """Audacity runs, but its script pipe does not exist: mod-script-pipe is not enabled."""


class AudacityNotAnswering(HostError):
    """Nobody reads Audacity's script pipe, Audacity closed it, or a reply did not come in time."""


class NothingSelected(HostError):
    """Audacity has no audio selected (no audio track selected, or an empty time range)."""


class AudacityCommandFailed(HostError):
    """Audacity answered a script command with a failure.

    Args:
        message: Names the command and Audacity's reply.
        command: The command sent.
        reply: What Audacity answered.
    """

    def __init__(self, message: str, *, command: str, reply: str) -> None:
        super().__init__(message)
        self.command = command
        self.reply = reply


class BrokerError(StemBridgeError):
    """The studio broker (Redis) cannot be reached, or refuses the credentials."""


class JobError(StemBridgeError):
    """The job queue cannot do what was asked."""


class JobNotFound(JobError):
    """No job has the given id."""


class JobCancelled(StemBridgeError):
    """The work was cancelled on request; nothing was written."""
