"""Service definitions for systemd, launchd and the Windows Task Scheduler: right content,
validated, installed and removed through an injected manager, never clobbered."""

from __future__ import annotations

import dataclasses
import os
import plistlib
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

import pytest

from bridge.cli import EXIT_OK, main
from bridge.errors import HostError, OutputError, SettingsError
from bridge.hosts.service import (
    TASK_NAMESPACE,
    Ran,
    ServiceFile,
    install,
    service_file,
    status,
    task_program,
    uninstall,
)

from programs import required_program

#: How each manager is asked whether the service is loaded.
QUERIES = ("is-active", "print", "/Query")


class Manager:
    """A service manager that records commands and answers each with ``returncode``;
    asked whether the service is loaded, it says what ``loaded`` says (the commands
    recorded are the others)."""

    def __init__(self, returncode: int = 0, output: str = "", *, loaded: bool = False) -> None:
        self.commands: list[tuple[str, ...]] = []
        self.loaded = loaded
        self._answer = Ran(returncode, output)

    def __call__(self, command: Sequence[str]) -> Ran:
        if any(word in command for word in QUERIES):
            return Ran(0 if self.loaded else 3, "")
        self.commands.append(tuple(command))
        if "enable" in command or "bootstrap" in command or "/Create" in command:
            self.loaded = self._answer.returncode == 0
        if "disable" in command or "bootout" in command or "/Delete" in command:
            self.loaded = False
        return self._answer


def test_systemd_unit_runs_serve_with_the_config(tmp_path: Path) -> None:
    unit = service_file(platform="linux", home=tmp_path, config=tmp_path / "c.toml")
    assert unit.path == tmp_path / ".config/systemd/user/stembridge.service"
    assert f"ExecStart={sys.executable} -m bridge serve --config {tmp_path / 'c.toml'}" in unit.text
    assert "KillSignal=SIGTERM" in unit.text and "systemctl --user enable" in unit.enable


def test_systemd_itself_finds_nothing_to_ignore_in_the_unit(tmp_path: Path) -> None:
    analyze = required_program(
        "systemd-analyze", package="systemd", purpose="the unit is not checked by systemd"
    )
    unit = service_file(platform="linux", home=tmp_path, config=tmp_path / "c.toml")
    unit.path.parent.mkdir(parents=True)
    unit.path.write_text(unit.text)
    # A user manager of its own: this needs no running systemd, only a runtime folder.
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    checked = subprocess.run(
        [analyze, "--user", "verify", str(unit.path)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "XDG_RUNTIME_DIR": str(runtime)},
        check=False,
    )
    # verify exits 0 even for keys it ignores: what it says is the verdict
    assert checked.returncode == 0 and not checked.stderr.strip(), checked.stderr
    assert not checked.stdout.strip(), checked.stdout


def test_systemd_install_uninstall_round_trip_in_a_temporary_home(tmp_path: Path) -> None:
    # Given a fresh home and a systemctl that accepts everything
    unit = service_file(platform="linux", home=tmp_path)
    manager = Manager()
    # When installed twice
    assert install(unit, run=manager) is True
    assert install(unit, run=manager) is False
    # Then the unit is in place and systemd was told to reload and enable it each time
    assert unit.path.read_text() == unit.text
    enable = ("systemctl", "--user", "enable", "--now", "stembridge.service")
    assert manager.commands.count(enable) == 2
    assert ("systemctl", "--user", "daemon-reload") in manager.commands
    assert status(unit, run=manager).installed and status(unit, run=manager).loaded
    # And a changed unit replaces the running one (stopped first, so its job is queued)
    manager.commands.clear()
    edited = dataclasses.replace(unit, text=unit.text.replace("RestartSec=5", "RestartSec=9"))
    install(edited, force=True, run=manager)
    assert manager.commands[0] == ("systemctl", "--user", "stop", "stembridge.service")
    install(unit, force=True, run=manager)
    # When uninstalled
    manager.commands.clear()
    assert uninstall(unit, run=manager) is True
    # Then it was stopped before its file went, and systemd forgot it
    assert manager.commands == [
        ("systemctl", "--user", "disable", "--now", "stembridge.service"),
        ("systemctl", "--user", "daemon-reload"),
    ]
    assert not unit.path.exists() and uninstall(unit, run=manager) is False
    assert not status(unit, run=Manager(returncode=3)).loaded


def test_an_edited_unit_is_not_clobbered_without_force(tmp_path: Path) -> None:
    unit = service_file(platform="linux", home=tmp_path)
    install(unit, run=Manager())
    unit.path.write_text(unit.text + "# my edit\n")
    with pytest.raises(OutputError, match="--force"):
        install(unit, run=Manager())
    assert unit.path.read_text().endswith("# my edit\n")
    assert install(unit, force=True, run=Manager()) is True
    assert unit.path.read_text() == unit.text


def test_a_manager_that_refuses_is_named_with_its_output(tmp_path: Path) -> None:
    unit = service_file(platform="linux", home=tmp_path)
    with pytest.raises(HostError, match="Failed to connect to bus"):
        install(unit, run=Manager(returncode=1, output="Failed to connect to bus"))


def test_launchd_agent_is_a_valid_plist_bootstrapped_in_the_gui_domain(tmp_path: Path) -> None:
    agent = service_file(platform="darwin", home=tmp_path, uid=501, config=tmp_path / "c.toml")
    assert agent.path == tmp_path / "Library/LaunchAgents/io.stembridge.daemon.plist"
    parsed = plistlib.loads(agent.data())
    assert parsed["Label"] == "io.stembridge.daemon"
    assert parsed["ProgramArguments"] == [
        sys.executable,
        *("-m", "bridge", "serve", "--config", str(tmp_path / "c.toml")),
    ]
    assert parsed["RunAtLoad"] is True and parsed["KeepAlive"] == {"SuccessfulExit": False}
    assert isinstance(parsed["ExitTimeOut"], int)
    manager = Manager()
    install(agent, run=manager)
    # launchctl refuses to bootstrap a loaded agent: an unchanged one is left running
    assert install(agent, run=manager) is False
    uninstall(agent, run=manager)
    assert manager.commands == [
        ("launchctl", "bootstrap", "gui/501", str(agent.path)),
        ("launchctl", "bootout", "gui/501/io.stembridge.daemon"),
    ]


#: The Task Scheduler schema's elements ([MS-TSCH] 2.5, taskschedulerschema): the children
#: each element may have. Anything else makes ``schtasks /Create /XML`` refuse the file.
TASK_SCHEMA: dict[str, set[str]] = {
    "Task": {"RegistrationInfo", "Triggers", "Settings", "Data", "Principals", "Actions"},
    "RegistrationInfo": {
        *("URI", "SecurityDescriptor", "Source", "Date", "Author", "Version"),
        *("Description", "Documentation"),
    },
    "Triggers": {
        *("BootTrigger", "RegistrationTrigger", "IdleTrigger", "TimeTrigger", "EventTrigger"),
        *("LogonTrigger", "SessionStateChangeTrigger", "CalendarTrigger"),
    },
    "LogonTrigger": {
        *("Enabled", "StartBoundary", "EndBoundary", "Repetition", "ExecutionTimeLimit"),
        *("UserId", "Delay"),
    },
    "Principals": {"Principal"},
    "Principal": {
        *("UserId", "LogonType", "GroupId", "DisplayName", "RunLevel", "ProcessTokenSidType"),
        "RequiredPrivileges",
    },
    "Settings": {
        *("AllowStartOnDemand", "RestartOnFailure", "MultipleInstancesPolicy"),
        *("DisallowStartIfOnBatteries", "StopIfGoingOnBatteries", "AllowHardTerminate"),
        *("StartWhenAvailable", "NetworkProfileName", "RunOnlyIfNetworkAvailable", "WakeToRun"),
        *("Enabled", "Hidden", "DeleteExpiredTaskAfter", "IdleSettings", "NetworkSettings"),
        *("ExecutionTimeLimit", "Priority", "RunOnlyIfIdle", "UseUnifiedSchedulingEngine"),
        *("DisallowStartOnRemoteAppSession", "MaintenanceSettings", "Volatile"),
    },
    "IdleSettings": {"Duration", "WaitTimeout", "StopOnIdleEnd", "RestartOnIdle"},
    "RestartOnFailure": {"Interval", "Count"},
    "Actions": {"Exec", "ComHandler", "SendEmail", "ShowMessage"},
    "Exec": {"Command", "Arguments", "WorkingDirectory"},
}


def _check_schema(element: ET.Element) -> None:
    name = element.tag.removeprefix(f"{{{TASK_NAMESPACE}}}")
    assert element.tag == f"{{{TASK_NAMESPACE}}}{name}", f"{element.tag}: not in the namespace"
    children = [child.tag.removeprefix(f"{{{TASK_NAMESPACE}}}") for child in element]
    allowed = TASK_SCHEMA.get(name, set())
    assert set(children) <= allowed, f"<{name}> may not hold {set(children) - allowed}"
    assert len(children) == len(set(children)) or name in ("Triggers", "Actions")
    for child in element:
        _check_schema(child)


def test_windows_task_is_valid_scheduler_xml_needing_no_administrator(tmp_path: Path) -> None:
    task = service_file(
        platform="win32",
        home=tmp_path,
        python=r"C:\Users\ana\AppData\Local\Programs\Python\Python311\python.exe",
        user=r"STUDIO\ana",
        config=tmp_path / "my config.toml",
    )
    data = task.data()
    assert data.startswith(b"\xff\xfe")  # UTF-16 with its BOM, as the declaration says
    root = ET.fromstring(data)
    _check_schema(root)
    assert root.get("version") == "1.2"
    ns = {"t": TASK_NAMESPACE}
    # Registered by the user for the user, interactive token, least privilege: the case
    # [MS-TSCH] 3.2.5.4.2 allows without administrator rights.
    trigger_user = root.findtext("t:Triggers/t:LogonTrigger/t:UserId", namespaces=ns)
    principal = root.find("t:Principals/t:Principal", ns)
    assert principal is not None
    assert trigger_user == principal.findtext("t:UserId", namespaces=ns) == r"STUDIO\ana"
    assert principal.findtext("t:LogonType", namespaces=ns) == "InteractiveToken"
    assert principal.findtext("t:RunLevel", namespaces=ns) == "LeastPrivilege"
    assert root.findtext("t:Settings/t:ExecutionTimeLimit", namespaces=ns) == "PT0S"
    command = root.findtext("t:Actions/t:Exec/t:Command", namespaces=ns)
    assert command is not None and command.endswith("python.exe")  # no pythonw.exe there
    arguments = root.findtext("t:Actions/t:Exec/t:Arguments", namespaces=ns)
    log = tmp_path / "AppData/Local/StemBridge/daemon.log"
    serve = ["serve", "--config", str((tmp_path / "my config.toml").resolve())]
    assert arguments == subprocess.list2cmdline(["-c", task_program(log, serve)])


def test_the_windows_task_program_sends_the_output_to_its_log(tmp_path: Path) -> None:
    # pythonw gives no console: what stembridge says goes to the log instead
    log = tmp_path / "daemon.log"
    ran = subprocess.run(
        [sys.executable, "-c", task_program(log, ["--version"])],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert ran.returncode == 0 and ran.stdout == "" and ran.stderr == ""
    assert log.read_text().startswith("stembridge ")


def test_windows_uninstall_asks_the_daemon_to_stop_before_ending_the_task(
    tmp_path: Path,
) -> None:
    task = service_file(platform="win32", home=tmp_path, python=r"C:\P\python.exe", user="ana")
    manager = Manager()
    install(task, run=manager)
    assert manager.commands[0][:2] == ("schtasks", "/Create")
    assert ("/XML", str(task.path)) == manager.commands[0][3 + 1 : 3 + 3]
    order: list[str] = []
    manager.commands.clear()

    def stop_daemon() -> None:
        order.append("stop request")
        assert not manager.commands, "the daemon is asked before the task is ended"

    # Stopping a task that no longer runs answers non-zero; uninstalling still succeeds.
    failing = Manager(returncode=1)
    assert uninstall(task, run=failing, stop_daemon=stop_daemon) is True
    assert order == ["stop request"]
    assert [c[:2] for c in failing.commands] == [("schtasks", "/End"), ("schtasks", "/Delete")]
    assert not task.path.exists()


def test_unsupported_platforms_are_refused_with_what_to_do() -> None:
    with pytest.raises(SettingsError, match="startup script"):
        service_file(platform="aix")


def test_cli_prints_without_touching_anything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    assert main(["service", "install", "--print"]) == EXIT_OK
    expected: ServiceFile = service_file(home=tmp_path)
    assert capsys.readouterr().out == expected.text
    assert main(["service", "uninstall", "--print"]) == EXIT_OK
    assert main(["service", "status", "--print"]) == EXIT_OK
    out = capsys.readouterr().out
    assert f"rm {expected.path}" in out
    assert not expected.path.exists()
