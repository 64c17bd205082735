"""Run the daemon as a login service: systemd user unit, launchd agent, Windows task.

* Linux: a systemd user unit, ``~/.config/systemd/user/stembridge.service``, enabled
  with ``systemctl --user enable --now``; stopped with SIGTERM.
* macOS: a launchd LaunchAgent, ``~/Library/LaunchAgents/io.stembridge.daemon.plist``
  (written with ``plistlib``), loaded with ``launchctl bootstrap gui/<uid>``; ``bootout``
  sends SIGTERM.
* Windows: a Task Scheduler task run at this user's log-on, registered with
  ``schtasks /Create /XML``. Chosen over the Startup folder because it needs no
  administrator rights either (a task whose log-on trigger and principal are the
  registering user, with an interactive token and least privilege, is one any user may
  register: [MS-TSCH] 3.2.5.4.2), and unlike a Startup entry it restarts the daemon
  when it fails, starts it without a console window (``pythonw``) and can be asked
  whether it runs. A console-less process gets no signal, so it is stopped through
  the state folder's stop request (:func:`bridge.daemon.request_stop`), which queues
  the running job again as SIGTERM does, before the task is ended.

Each manager is driven through an injected command runner, so that installing and
uninstalling can be tested without one.
"""

from __future__ import annotations

import os
import plistlib
import shlex
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path, PureWindowsPath
from xml.sax.saxutils import escape

from bridge import atomic
from bridge.errors import HostError, OutputError, SettingsError

SYSTEMD_NAME = "stembridge.service"
LAUNCHD_LABEL = "io.stembridge.daemon"
TASK_NAME = "StemBridge"
#: The Task Scheduler schema's namespace (Task Scheduler 1.2: Windows 7 and later).
TASK_NAMESPACE = "http://schemas.microsoft.com/windows/2004/02/mit/task"
#: How long a graceful stop may take before the manager ends the process (systemd's
#: TimeoutStopSec, launchd's ExitTimeOut, the wait before ``schtasks /End``).
STOP_SECONDS = 60


@dataclass(frozen=True)
class Ran:
    """What a service-manager command did: its exit status and its output."""

    returncode: int
    output: str


#: Runs one service-manager command (tests inject a recorder).
Runner = Callable[[Sequence[str]], Ran]


def run_command(command: Sequence[str]) -> Ran:
    """Run ``command`` and return its status and output.

    Raises:
        HostError: The program does not exist here, or did not answer in 60 s.
    """
    try:
        done = subprocess.run(
            list(command), capture_output=True, text=True, timeout=60, check=False
        )
    except FileNotFoundError as exc:
        raise HostError(
            f"{command[0]} is not on this machine, so the service cannot be managed; "
            f"run `stembridge serve` from your login scripts instead ({exc})"
        ) from exc
    except subprocess.TimeoutExpired as exc:
        raise HostError(f"`{shlex.join(command)}` did not answer within 60 s") from exc
    return Ran(done.returncode, (done.stdout + done.stderr).strip())


@dataclass(frozen=True)
class ServiceFile:
    """A service definition, where it belongs, and how its manager is driven.

    Attributes:
        manager: ``systemd``, ``launchd`` or ``task scheduler``.
        path: Where the file is installed.
        text: Its content.
        encoding: How ``text`` is written (UTF-16 for Task Scheduler XML).
        start: Commands that start it now and at every login, run after writing.
        stop: Commands that stop it and forget it, run before removing the file.
        query: The command asking whether it is loaded or running (exit 0: yes).
        unload: Commands that let go of a loaded older definition before ``start`` loads
            a changed one.
        start_when_loaded: Whether ``start`` may run while the same definition is loaded
            (``launchctl bootstrap`` refuses a loaded agent; ``systemctl enable --now``
            and ``schtasks /Create /F`` take it as a no-op).
        graceful_stop: Whether ``stop`` needs the stop request first (Windows).
    """

    manager: str
    path: Path
    text: str
    encoding: str = "utf-8"
    start: tuple[tuple[str, ...], ...] = ()
    stop: tuple[tuple[str, ...], ...] = ()
    query: tuple[str, ...] = ()
    unload: tuple[tuple[str, ...], ...] = ()
    start_when_loaded: bool = True
    graceful_stop: bool = False

    @property
    def enable(self) -> str:
        """The start commands as one line a person can run."""
        return " && ".join(_shell_line(command) for command in self.start)

    def data(self) -> bytes:
        """The file's bytes."""
        return self.text.encode(self.encoding)


def service_file(
    *,
    platform: str = sys.platform,
    home: Path | None = None,
    config: Path | None = None,
    python: str = sys.executable,
    uid: int | None = None,
    user: str | None = None,
) -> ServiceFile:
    """The service definition for ``platform``, running ``python -m bridge serve``.

    Args:
        platform: ``sys.platform`` of the machine it is for.
        home: The user's home folder.
        config: The config file the daemon reads (default: its own lookup).
        python: The interpreter (``pythonw.exe`` beside it is used on Windows).
        uid: The user id (macOS; default: this process's).
        user: ``DOMAIN\\user`` (Windows; default: from the environment).

    Raises:
        SettingsError: The platform has no supported service manager.
    """
    home = home or Path.home()
    arguments = ["-m", "bridge", "serve"]
    if config is not None:
        arguments += ["--config", str(config.expanduser().resolve())]
    if platform.startswith("linux"):
        return _systemd(home, [python, *arguments])
    if platform == "darwin":
        return _launchd(home, [python, *arguments], os.getuid() if uid is None else uid)
    if platform == "win32":
        return _task(home, python, arguments, user or _windows_user())
    raise SettingsError(
        f"no service manager is supported on {platform} (systemd, launchd and the Windows "
        "Task Scheduler are); run `stembridge serve` from a startup script instead",
        key="platform",
        value=platform,
    )


def _systemd(home: Path, command: list[str]) -> ServiceFile:
    text = (
        "[Unit]\n"
        "Description=StemBridge daemon: stems from render folders\n"
        "After=default.target\n\n"
        "[Service]\n"
        f"ExecStart={shlex.join(command)}\n"
        "Restart=on-failure\n"
        "RestartSec=5\n"
        "# SIGTERM: the running job is stopped at its next step and queued again.\n"
        "KillSignal=SIGTERM\n"
        f"TimeoutStopSec={STOP_SECONDS}\n\n"
        "[Install]\n"
        "WantedBy=default.target\n"
    )
    systemctl = ("systemctl", "--user")
    return ServiceFile(
        manager="systemd",
        path=home / ".config" / "systemd" / "user" / SYSTEMD_NAME,
        text=text,
        start=((*systemctl, "daemon-reload"), (*systemctl, "enable", "--now", SYSTEMD_NAME)),
        stop=((*systemctl, "disable", "--now", SYSTEMD_NAME),),
        query=(*systemctl, "is-active", "--quiet", SYSTEMD_NAME),
        unload=((*systemctl, "stop", SYSTEMD_NAME),),
    )


def _launchd(home: Path, command: list[str], uid: int) -> ServiceFile:
    path = home / "Library" / "LaunchAgents" / f"{LAUNCHD_LABEL}.plist"
    agent = {
        "Label": LAUNCHD_LABEL,
        "ProgramArguments": command,
        "RunAtLoad": True,
        # Started again when it fails, not after a clean stop.
        "KeepAlive": {"SuccessfulExit": False},
        # bootout sends SIGTERM, then SIGKILL after this long: time to queue the job again.
        "ExitTimeOut": STOP_SECONDS,
        "ProcessType": "Background",
        "StandardErrorPath": str(home / "Library" / "Logs" / "stembridge.log"),
    }
    domain = f"gui/{uid}"
    return ServiceFile(
        manager="launchd",
        path=path,
        text=plistlib.dumps(agent, sort_keys=False).decode("utf-8"),
        start=(("launchctl", "bootstrap", domain, str(path)),),
        stop=(("launchctl", "bootout", f"{domain}/{LAUNCHD_LABEL}"),),
        query=("launchctl", "print", f"{domain}/{LAUNCHD_LABEL}"),
        unload=(("launchctl", "bootout", f"{domain}/{LAUNCHD_LABEL}"),),
        start_when_loaded=False,
    )


def _task(home: Path, python: str, arguments: list[str], user: str) -> ServiceFile:
    interpreter = PureWindowsPath(python)
    windowless = interpreter.with_name("pythonw.exe")
    # pythonw has no console window; a venv or Store Python without one keeps python.exe.
    command = str(windowless) if Path(windowless).exists() else str(interpreter)
    # Kept where the user's data lives, so that install, --print and status compare it.
    local = Path(os.environ.get("LOCALAPPDATA") or home / "AppData" / "Local")
    path = local / "StemBridge" / f"{TASK_NAME}.xml"
    program = task_program(local / "StemBridge" / "daemon.log", arguments[2:])
    text = (
        '<?xml version="1.0" encoding="UTF-16"?>\n'
        f'<Task version="1.2" xmlns="{TASK_NAMESPACE}">\n'
        "  <RegistrationInfo>\n"
        "    <Description>StemBridge daemon: stems from render folders</Description>\n"
        f"    <URI>\\{TASK_NAME}</URI>\n"
        "  </RegistrationInfo>\n"
        "  <Triggers>\n"
        "    <LogonTrigger>\n"
        "      <Enabled>true</Enabled>\n"
        f"      <UserId>{escape(user)}</UserId>\n"
        "    </LogonTrigger>\n"
        "  </Triggers>\n"
        "  <Principals>\n"
        '    <Principal id="Author">\n'
        f"      <UserId>{escape(user)}</UserId>\n"
        "      <LogonType>InteractiveToken</LogonType>\n"
        "      <RunLevel>LeastPrivilege</RunLevel>\n"
        "    </Principal>\n"
        "  </Principals>\n"
        "  <Settings>\n"
        "    <MultipleInstancesPolicy>IgnoreNew</MultipleInstancesPolicy>\n"
        "    <DisallowStartIfOnBatteries>false</DisallowStartIfOnBatteries>\n"
        "    <StopIfGoingOnBatteries>false</StopIfGoingOnBatteries>\n"
        "    <AllowHardTerminate>true</AllowHardTerminate>\n"
        "    <StartWhenAvailable>false</StartWhenAvailable>\n"
        "    <RunOnlyIfNetworkAvailable>false</RunOnlyIfNetworkAvailable>\n"
        "    <IdleSettings>\n"
        "      <StopOnIdleEnd>false</StopOnIdleEnd>\n"
        "      <RestartOnIdle>false</RestartOnIdle>\n"
        "    </IdleSettings>\n"
        "    <AllowStartOnDemand>true</AllowStartOnDemand>\n"
        "    <Enabled>true</Enabled>\n"
        "    <Hidden>false</Hidden>\n"
        "    <RunOnlyIfIdle>false</RunOnlyIfIdle>\n"
        "    <WakeToRun>false</WakeToRun>\n"
        # The default limit (72 hours) would end a daemon that runs for days.
        "    <ExecutionTimeLimit>PT0S</ExecutionTimeLimit>\n"
        "    <Priority>7</Priority>\n"
        "    <RestartOnFailure>\n"
        "      <Interval>PT1M</Interval>\n"
        "      <Count>3</Count>\n"
        "    </RestartOnFailure>\n"
        "  </Settings>\n"
        '  <Actions Context="Author">\n'
        "    <Exec>\n"
        f"      <Command>{escape(command)}</Command>\n"
        f"      <Arguments>{escape(subprocess.list2cmdline(['-c', program]))}</Arguments>\n"
        "    </Exec>\n"
        "  </Actions>\n"
        "</Task>\n"
    )
    return ServiceFile(
        manager="task scheduler",
        path=path,
        text=text,
        encoding="utf-16",
        start=(
            ("schtasks", "/Create", "/TN", TASK_NAME, "/XML", str(path), "/F"),
            ("schtasks", "/Run", "/TN", TASK_NAME),
        ),
        stop=(
            ("schtasks", "/End", "/TN", TASK_NAME),
            ("schtasks", "/Delete", "/TN", TASK_NAME, "/F"),
        ),
        query=("schtasks", "/Query", "/TN", TASK_NAME),
        graceful_stop=True,
    )


def task_program(log: Path, arguments: list[str]) -> str:
    """The ``python -c`` program the Windows task runs: ``stembridge ARGUMENTS`` with its
    output appended to ``log``. Under ``pythonw`` there is no console and ``sys.stderr``
    is ``None``, so the first line ``serve`` says would fail; the task's Exec has no shell
    to redirect it."""
    return (
        "import sys; "
        f"sys.stdout = sys.stderr = open({str(log)!r}, 'a', encoding='utf-8', buffering=1); "
        f"from bridge.cli import process_main; raise SystemExit(process_main({arguments!r}))"
    )


def _windows_user() -> str:
    name = os.environ.get("USERNAME") or os.environ.get("USER") or "user"
    domain = os.environ.get("USERDOMAIN")
    return f"{domain}\\{name}" if domain else name


def install(service: ServiceFile, *, force: bool = False, run: Runner = run_command) -> bool:
    """Write the service file and start it through its manager; returns whether the file
    changed. A changed definition replaces a loaded one (stopped as on SIGTERM, so its
    running job is queued again); an unchanged loaded one is left running.

    Raises:
        OutputError: A different file is already there and ``force`` is off.
        HostError: The manager refused (its output is in the message).
    """
    changed = True
    if service.path.exists():
        if service.path.read_bytes() == service.data():
            changed = False
        elif not force:
            raise OutputError(
                f"{service.path} already exists with other content; pass --force to replace "
                "it, or --print to see the new one",
                path=service.path,
            )
    loaded = run(service.query).returncode == 0
    if loaded and not changed and not service.start_when_loaded:
        return False
    if loaded and changed:
        for command in service.unload:
            run(command)  # an older definition that is already gone is what we want
    if changed:
        service.path.parent.mkdir(parents=True, exist_ok=True)
        atomic.write_bytes(service.path, service.data())
    for command in service.start:
        _check(run(command), command, service, "start")
    return changed


def uninstall(
    service: ServiceFile,
    *,
    run: Runner = run_command,
    stop_daemon: Callable[[], None] | None = None,
) -> bool:
    """Stop the service, forget it in its manager and remove its file; returns whether
    there was one to remove.

    Args:
        service: What :func:`service_file` gives for this machine.
        run: The command runner.
        stop_daemon: For managers that cannot stop it gracefully (Windows): asks the
            daemon to stop and waits, so its running job is queued again.

    Raises:
        HostError: The manager refused to stop it (the file is left in place).
    """
    if not service.path.exists():
        return False
    if service.graceful_stop and stop_daemon is not None:
        stop_daemon()
    for command in service.stop:
        ran = run(command)
        # Stopping what is not running, or forgetting what is not loaded, is not a failure.
        if ran.returncode != 0 and service.manager == "systemd":
            _check(ran, command, service, "stop")
    service.path.unlink()
    if service.manager == "systemd":
        run(("systemctl", "--user", "daemon-reload"))
    return True


@dataclass(frozen=True)
class ServiceStatus:
    """Whether the service is installed, and what its manager says of it."""

    installed: bool
    loaded: bool
    manager_says: str


def status(service: ServiceFile, *, run: Runner = run_command) -> ServiceStatus:
    """Ask the manager about the service (``loaded``: active, loaded or registered)."""
    installed = service.path.exists()
    try:
        ran = run(service.query)
    except HostError as exc:
        return ServiceStatus(installed, False, str(exc))
    first_line = ran.output.splitlines()[0] if ran.output else ""
    return ServiceStatus(installed, ran.returncode == 0, first_line)


def _check(ran: Ran, command: Sequence[str], service: ServiceFile, what: str) -> None:
    if ran.returncode != 0:
        raise HostError(
            f"`{_shell_line(command)}` failed (exit {ran.returncode}): "
            f"{ran.output or 'no output'}; "
            f"{service.manager} could not {what} the service ({service.path}). Fix what it "
            "says and run the command again"
        )


def _shell_line(command: Sequence[str]) -> str:
    return shlex.join(command) if command and command[0] != "schtasks" else " ".join(command)
