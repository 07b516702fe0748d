r"""Windows service host for the bundled agent (service TelepostureAgent, LocalSystem).

The MSI registers ``teleposture-agent.exe windows-service``. This host speaks the service control
manager's protocol (pywin32), enrols once from the token the MSI wrote to the registry, then runs the
agent's scheduler (agent.service.scheduler.Daemon, what ``teleposture-agent run`` runs) in this process and
stops it with ``Daemon.stop()`` when Windows asks: running jobs finish, nothing queued is lost. If
the agent cannot start (not enrolled yet, collector unreachable at enrolment) or its scheduler dies,
the host exits without reporting "stopped", so the SCM applies the failure actions the MSI set
(restart after 1 min, 1 min, 5 min). Logs go to %ProgramData%\Teleposture\agent.log.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import winreg
from pathlib import Path
from typing import Any, List, TextIO

import servicemanager
import win32event
import win32service
import win32serviceutil

SERVICE_NAME = "TelepostureAgent"
ENROLLMENT_KEY = r"SOFTWARE\Teleposture\Enrollment"
LOG_ROTATE_BYTES = 10 * 1024 * 1024


def data_dir() -> Path:
    return Path(os.environ.get("ProgramData", r"C:\ProgramData")) / "Teleposture"


def agent_exe() -> str:
    return sys.executable  # the PyInstaller-built teleposture-agent.exe itself


def _read_enrollment() -> tuple[str, str]:
    try:
        with winreg.OpenKey(winreg.HKEY_LOCAL_MACHINE, ENROLLMENT_KEY, 0, winreg.KEY_READ) as key:
            server = str(winreg.QueryValueEx(key, "ServerUrl")[0] or "")
            token = str(winreg.QueryValueEx(key, "Token")[0] or "")
    except OSError:
        return "", ""
    return server.strip(), token.strip()


def _erase_token() -> None:
    try:
        with winreg.OpenKey(winreg.HKEY_LOCAL_MACHINE, ENROLLMENT_KEY, 0, winreg.KEY_SET_VALUE) as key:
            winreg.SetValueEx(key, "Token", 0, winreg.REG_SZ, "")
    except OSError as exc:
        servicemanager.LogErrorMsg(f"Teleposture: could not erase the enrolment token from HKLM\\{ENROLLMENT_KEY}: {exc}")


# SYSTEM and Administrators full control, nothing inherited: the enrolment token is a secret.
ENROLLMENT_KEY_SDDL = "D:P(A;OICI;KA;;;SY)(A;OICI;KA;;;BA)"


def restrict_enrollment_key() -> None:
    """Leave the installer's enrolment key readable by SYSTEM and Administrators only (HKLM\\SOFTWARE is
    readable by Users; the MSI locks the key too, but a build without LockPermissions must not leak it)."""
    import win32api
    import win32security

    try:
        descriptor = win32security.ConvertStringSecurityDescriptorToSecurityDescriptor(
            ENROLLMENT_KEY_SDDL, win32security.SDDL_REVISION_1)
        with winreg.OpenKey(winreg.HKEY_LOCAL_MACHINE, ENROLLMENT_KEY, 0, winreg.KEY_ALL_ACCESS) as key:
            win32api.RegSetKeySecurity(int(key), win32security.DACL_SECURITY_INFORMATION
                                       | win32security.PROTECTED_DACL_SECURITY_INFORMATION, descriptor)
    except FileNotFoundError:
        return
    except (OSError, win32api.error) as exc:
        servicemanager.LogErrorMsg(f"Teleposture: could not restrict access to HKLM\\{ENROLLMENT_KEY}: {exc}")


def enrol_pending(log: TextIO) -> None:
    """Enrol with the token the MSI stored, once; erase it when used or when already enrolled."""
    restrict_enrollment_key()
    server, token = _read_enrollment()
    if not token:
        return
    state = data_dir()
    if (state / "identity.json").exists() and (state / "device_key.pem").exists():
        servicemanager.LogInfoMsg("Teleposture: already enrolled; the enrolment token from the installer is ignored")
        _erase_token()
        return
    if not server:
        servicemanager.LogErrorMsg("Teleposture: an enrolment token was given without SERVERURL; reinstall with both")
        return
    env = dict(os.environ, TELEPOSTURE_TOKEN=token)
    result = subprocess.run([agent_exe(), "enroll", "--server", server], env=env, stdout=log, stderr=log,
                            timeout=120, check=False)
    if result.returncode == 0:
        servicemanager.LogInfoMsg(f"Teleposture: enrolled with {server}")
        _erase_token()
    else:
        servicemanager.LogErrorMsg(f"Teleposture: enrolment with {server} failed (exit {result.returncode}); "
                                   f"see {state / 'agent.log'}; retried at the next start")


def open_log() -> TextIO:
    state = data_dir()
    state.mkdir(parents=True, exist_ok=True)
    path = state / "agent.log"
    if path.exists() and path.stat().st_size > LOG_ROTATE_BYTES:
        path.replace(state / "agent.log.1")
    return open(path, "a", encoding="utf-8", buffering=1)


def _fail(message: str, log: TextIO) -> None:
    """Report a failure and leave without telling the SCM "stopped": it restarts the service."""
    servicemanager.LogErrorMsg(f"Teleposture: {message}; the service control manager will restart the service")
    print(f"teleposture service: {message}", file=log, flush=True)
    os._exit(1)


class AgentService(win32serviceutil.ServiceFramework):
    _svc_name_ = SERVICE_NAME
    _svc_display_name_ = "Teleposture Agent"

    def __init__(self, args: List[str]) -> None:
        super().__init__(args)
        self.stop_event = win32event.CreateEvent(None, True, False, None)
        self.daemon: Any = None

    def SvcStop(self) -> None:  # noqa: N802 (pywin32's name)
        self.ReportServiceStatus(win32service.SERVICE_STOP_PENDING)
        win32event.SetEvent(self.stop_event)

    def SvcDoRun(self) -> None:  # noqa: N802 (pywin32's name)
        from agent.service import logs
        from agent.service.config import ConfigError, load_settings
        from agent.service.core import AgentService as Agent
        from agent.service.scheduler import Daemon
        from agent.service.state import StateError
        from agent.service.transport import TransportError

        log = open_log()
        # A service has no console: everything the agent prints or logs goes to the log file.
        sys.stdout = sys.stderr = log
        enrol_pending(log)
        try:
            settings = load_settings({})
            logs.configure(settings.log_format, settings.log_level, stream=log)
            agent = Agent(settings)
        except (ConfigError, StateError, TransportError) as exc:
            _fail(f"the agent cannot start: {exc}", log)
            return
        self.daemon = Daemon(agent, splay=settings.splay)
        runner = threading.Thread(target=self.daemon.run_forever, kwargs={"install_signals": False},
                                  name="teleposture-daemon", daemon=True)
        runner.start()
        while True:
            if win32event.WaitForSingleObject(self.stop_event, 1000) == win32event.WAIT_OBJECT_0:
                self.daemon.stop()
                runner.join(timeout=25)
                agent.close()
                log.close()
                return
            if not runner.is_alive():
                _fail("the agent's scheduler stopped on its own (see agent.log)", log)


def main() -> int:
    servicemanager.Initialize()
    servicemanager.PrepareToHostSingle(AgentService)
    servicemanager.StartServiceCtrlDispatcher()
    return 0
