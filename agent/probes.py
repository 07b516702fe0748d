"""The probe layer: the only code of the agent that touches the operating system.

Every observation a check makes goes through a `Host`: run a command (argv list, never a shell,
always a timeout), read a file, list a directory, look at processes or network interfaces.
Each observation is a `ProbeResult`, so that:

* a missing binary, a permission error or a timeout is data (``error``), not an exception;
* a `RecordingHost` can write every observation of a check cycle to one JSON file, and a
  `ReplayHost` can answer the same questions from that file on any machine (support bundles,
  fixtures of real macOS/Windows output, tests);
* expensive commands (the package manager) can be cached on the modification times of their inputs.

Check code receives a `Host` and must not import subprocess, open files or call psutil itself.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform as _platform
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from agent import __version__
from common.files import atomic_write

RECORDING_SCHEMA = "teleposture/recording/v1"
DEFAULT_TIMEOUT = 15.0
MAX_OUTPUT_BYTES = 8 * 1024 * 1024

# error kinds a ProbeResult can carry
NOT_FOUND = "not_found"
PERMISSION_DENIED = "permission_denied"
TIMEOUT = "timeout"
OS_ERROR = "os_error"
NOT_RECORDED = "not_recorded"


@dataclass(frozen=True)
class ProbeResult:
    """What one observation of the machine gave.

    ``kind`` is ``run``, ``read``, ``listdir``, ``stat``, ``processes`` or ``interfaces``;
    ``target`` is the argv (for ``run``) or the path / name observed.
    ``error`` is None when the observation could be made (a command that ran and exited non-zero
    is not an error of the probe: look at ``rc``).
    """

    kind: str
    target: Tuple[str, ...]
    stdout: str = ""
    stderr: str = ""
    rc: Optional[int] = 0
    timed_out: bool = False
    duration: float = 0.0
    error: Optional[str] = None
    detail: str = ""

    @property
    def ok(self) -> bool:
        """The probe ran (or the file was read) and, for commands, exited 0."""
        return self.error is None and self.rc == 0

    @property
    def name(self) -> str:
        """A short human name for reasons: ``manage-bde -status`` or ``/etc/os-release``."""
        return " ".join(self.target) if self.kind == "run" else f"{self.kind} {' '.join(self.target)}"

    def describe_failure(self) -> str:
        """A reason sentence (English) for an `error` result naming this probe."""
        # Imported here: the checks package (which holds the catalogue) imports this module.
        from agent.checks.messages import english
        return english(self.failure_message())

    def failure_message(self) -> Dict[str, Any]:
        """`describe_failure` as a translatable message: the probe's name and output stay parameters."""
        from agent.checks.messages import message
        if self.error == NOT_FOUND:
            return message("probe_command_not_found" if self.kind == "run" else "probe_not_found", probe=self.name)
        if self.error == PERMISSION_DENIED:
            return message("probe_permission_denied", probe=self.name)
        if self.error == TIMEOUT:
            return message("probe_timed_out", probe=self.name, seconds=f"{self.duration:.1f}")
        if self.error == NOT_RECORDED:
            return message("probe_not_recorded", probe=self.name)
        if self.error:
            return message("probe_os_error", probe=self.name, error=f"{self.error} {self.detail}".strip())
        first = (self.stderr or self.stdout).strip().splitlines()
        if first:
            return message("probe_exit_status_output", probe=self.name, status=str(self.rc), output=first[0][:200])
        return message("probe_exit_status", probe=self.name, status=str(self.rc))

    def to_json(self) -> Dict[str, Any]:
        data = asdict(self)
        data["target"] = list(self.target)
        return data

    @classmethod
    def from_json(cls, data: Dict[str, Any]) -> ProbeResult:
        return cls(
            kind=str(data["kind"]),
            target=tuple(str(t) for t in data["target"]),
            stdout=str(data.get("stdout", "")),
            stderr=str(data.get("stderr", "")),
            rc=data.get("rc"),
            timed_out=bool(data.get("timed_out", False)),
            duration=float(data.get("duration", 0.0)),
            error=data.get("error"),
            detail=str(data.get("detail", "")),
        )


def _key(kind: str, target: Sequence[str]) -> str:
    return json.dumps([kind, list(target)], ensure_ascii=False)


def current_platform() -> str:
    """``linux``, ``darwin`` or ``windows``."""
    system = _platform.system().lower()
    if system.startswith("win"):
        return "windows"
    return system


class Host:
    """The interface checks use. Subclasses: LiveHost, RecordingHost, ReplayHost."""

    platform: str = "linux"

    def run(self, argv: Sequence[str], timeout: float = DEFAULT_TIMEOUT,
            cache_on: Sequence[str] = ()) -> ProbeResult:
        """Run ``argv`` (no shell). ``cache_on``: paths whose mtimes key a cached answer."""
        raise NotImplementedError

    def read_text(self, path: str) -> ProbeResult:
        """Read a text file; its content is in ``stdout``."""
        raise NotImplementedError

    def listdir(self, path: str) -> ProbeResult:
        """Names in a directory, one per line in ``stdout`` (sorted)."""
        raise NotImplementedError

    def stat(self, path: str) -> ProbeResult:
        """``stdout`` is JSON ``{"mtime": float, "size": int, "mode": int, "is_dir": bool}``."""
        raise NotImplementedError

    def processes(self) -> ProbeResult:
        """``stdout`` is a JSON list of ``{pid, name, exe, cmdline, username}``."""
        raise NotImplementedError

    def interfaces(self) -> ProbeResult:
        """``stdout`` is JSON ``{name: {"up": bool, "mtu": int, "addresses": [{family, address, netmask}]}}``."""
        raise NotImplementedError

    def now(self) -> float:
        """Epoch seconds; a replay answers the recording's time so verdicts are identical."""
        return time.time()

    def which(self, name: str) -> Optional[str]:
        """Full path of a command, or None. Recorded, so replays answer as the machine did."""
        result = self.run(["__which__", name], timeout=1.0)
        return result.stdout.strip() or None if result.ok else None

    def exists(self, path: str) -> bool:
        return self.stat(path).error is None

    # Used by agent.checks._windows_batch to batch PowerShell probes and keep the probe cache.
    def cached(self, argv: Sequence[str], cache_on: Sequence[str]) -> Optional[ProbeResult]:
        """The cached answer to ``argv`` while its ``cache_on`` inputs are unchanged, else None (no run)."""
        return None

    def remember(self, argv: Sequence[str], cache_on: Sequence[str], result: ProbeResult) -> None:
        """Cache ``result`` as the answer to ``argv`` (obtained another way, e.g. within a batch)."""

    def recorded_runs(self) -> List[ProbeResult]:
        """The commands a recording being replayed holds (empty on a live machine)."""
        return []


class WrappedHost(Host):
    """A host that passes every probe to ``inner``; subclasses override what they answer themselves
    (agent.checks.cycle.CycleHost: one process list per cycle; agent.checks._windows_batch: one PowerShell)."""

    def __init__(self, inner: Host) -> None:
        self.inner = inner
        self.platform = inner.platform

    def run(self, argv: Sequence[str], timeout: float = DEFAULT_TIMEOUT,
            cache_on: Sequence[str] = ()) -> ProbeResult:
        return self.inner.run(argv, timeout, cache_on)

    def read_text(self, path: str) -> ProbeResult:
        return self.inner.read_text(path)

    def listdir(self, path: str) -> ProbeResult:
        return self.inner.listdir(path)

    def stat(self, path: str) -> ProbeResult:
        return self.inner.stat(path)

    def processes(self) -> ProbeResult:
        return self.inner.processes()

    def interfaces(self) -> ProbeResult:
        return self.inner.interfaces()

    def now(self) -> float:
        return self.inner.now()

    def which(self, name: str) -> Optional[str]:
        return self.inner.which(name)

    def exists(self, path: str) -> bool:
        return self.inner.exists(path)

    def cached(self, argv: Sequence[str], cache_on: Sequence[str]) -> Optional[ProbeResult]:
        return self.inner.cached(argv, cache_on)

    def remember(self, argv: Sequence[str], cache_on: Sequence[str], result: ProbeResult) -> None:
        self.inner.remember(argv, cache_on, result)

    def recorded_runs(self) -> List[ProbeResult]:
        return self.inner.recorded_runs()


def _classify_os_error(exc: OSError) -> Tuple[str, str]:
    if isinstance(exc, FileNotFoundError):
        return NOT_FOUND, str(exc)
    if isinstance(exc, PermissionError):
        return PERMISSION_DENIED, str(exc)
    return OS_ERROR, f"{type(exc).__name__}: {exc}"


class LiveHost(Host):
    """Observes the machine the agent runs on."""

    def __init__(self, cache_dir: Optional[Path] = None, env: Optional[Dict[str, str]] = None) -> None:
        self.platform = current_platform()
        self.cache_dir = cache_dir
        # Commands run in the C locale where the OS allows: parsers read English, stable output.
        base_env = dict(os.environ)
        base_env.update({"LC_ALL": "C", "LANG": "C"})
        if env:
            base_env.update(env)
        self._env = base_env
        self._memory_cache: Dict[str, Tuple[str, ProbeResult]] = {}

    # -- commands -------------------------------------------------------------
    def run(self, argv: Sequence[str], timeout: float = DEFAULT_TIMEOUT,
            cache_on: Sequence[str] = ()) -> ProbeResult:
        target = tuple(argv)
        if target and target[0] == "__which__":
            found = shutil.which(target[1]) if len(target) > 1 else None
            return ProbeResult("run", target, stdout=found or "", rc=0 if found else 1)
        if cache_on:
            signature = self._mtime_signature(cache_on)
            cached = self._cache_get(target, signature)
            if cached is not None:
                return cached
            result = self._run(target, timeout)
            if result.error is None and not result.timed_out:
                self._cache_put(target, signature, result)
            return result
        return self._run(target, timeout)

    def _run(self, target: Tuple[str, ...], timeout: float) -> ProbeResult:
        start = time.monotonic()
        try:
            proc = subprocess.run(
                list(target), capture_output=True, timeout=timeout, env=self._env,
                stdin=subprocess.DEVNULL, check=False,
            )
        except subprocess.TimeoutExpired as exc:
            # what was written before the kill is kept: a batch of probes keeps the answers it gave
            partial = exc.stdout if isinstance(exc.stdout, bytes) else b""
            return ProbeResult("run", target, stdout=partial[:MAX_OUTPUT_BYTES].decode("utf-8", "replace"),
                               rc=None, timed_out=True, error=TIMEOUT, duration=time.monotonic() - start)
        except OSError as exc:
            error, detail = _classify_os_error(exc)
            return ProbeResult("run", target, rc=None, error=error, detail=detail,
                               duration=time.monotonic() - start)
        return ProbeResult(
            "run", target,
            stdout=proc.stdout[:MAX_OUTPUT_BYTES].decode("utf-8", "replace"),
            stderr=proc.stderr[:MAX_OUTPUT_BYTES].decode("utf-8", "replace"),
            rc=proc.returncode, duration=time.monotonic() - start,
        )

    # -- cache ----------------------------------------------------------------
    def cached(self, argv: Sequence[str], cache_on: Sequence[str]) -> Optional[ProbeResult]:
        return self._cache_get(tuple(argv), self._mtime_signature(cache_on)) if cache_on else None

    def remember(self, argv: Sequence[str], cache_on: Sequence[str], result: ProbeResult) -> None:
        if cache_on and result.error is None and not result.timed_out:
            self._cache_put(tuple(argv), self._mtime_signature(cache_on), result)

    @staticmethod
    def _mtime_signature(paths: Sequence[str]) -> str:
        parts = []
        for path in paths:
            try:
                st = os.stat(path)
                parts.append(f"{path}:{st.st_mtime_ns}:{st.st_size}")
            except OSError:
                parts.append(f"{path}:-")
        return "|".join(parts)

    def _cache_file(self, target: Tuple[str, ...]) -> Optional[Path]:
        if self.cache_dir is None:
            return None
        digest = hashlib.sha256(_key("run", target).encode()).hexdigest()[:32]
        return self.cache_dir / f"probe-{digest}.json"

    def _cache_get(self, target: Tuple[str, ...], signature: str) -> Optional[ProbeResult]:
        key = _key("run", target)
        hit = self._memory_cache.get(key)
        if hit and hit[0] == signature:
            return hit[1]
        path = self._cache_file(target)
        if path is None:
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("signature") != signature or data.get("agent_version") != __version__:
                return None
            result = ProbeResult.from_json(data["result"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        self._memory_cache[key] = (signature, result)
        return result

    def _cache_put(self, target: Tuple[str, ...], signature: str, result: ProbeResult) -> None:
        self._memory_cache[_key("run", target)] = (signature, result)
        path = self._cache_file(target)
        if path is None:
            return
        try:
            atomic_write(path, json.dumps({"signature": signature, "agent_version": __version__,
                                           "result": result.to_json()}))
        except OSError:
            pass  # a cache that cannot be written only costs time

    # -- files ----------------------------------------------------------------
    def read_text(self, path: str) -> ProbeResult:
        start = time.monotonic()
        try:
            # Read in small chunks: procfs files refuse one huge read() with ENOMEM.
            chunks: List[bytes] = []
            size = 0
            with open(path, "rb") as handle:
                while size < MAX_OUTPUT_BYTES:
                    chunk = handle.read(65536)
                    if not chunk:
                        break
                    chunks.append(chunk)
                    size += len(chunk)
            data = b"".join(chunks)[:MAX_OUTPUT_BYTES]
        except OSError as exc:
            error, detail = _classify_os_error(exc)
            return ProbeResult("read", (path,), rc=None, error=error, detail=detail,
                               duration=time.monotonic() - start)
        return ProbeResult("read", (path,), stdout=data.decode("utf-8", "replace"),
                           duration=time.monotonic() - start)

    def listdir(self, path: str) -> ProbeResult:
        try:
            names = sorted(os.listdir(path))
        except OSError as exc:
            error, detail = _classify_os_error(exc)
            return ProbeResult("listdir", (path,), rc=None, error=error, detail=detail)
        return ProbeResult("listdir", (path,), stdout="\n".join(names))

    def stat(self, path: str) -> ProbeResult:
        try:
            st = os.stat(path)
        except OSError as exc:
            error, detail = _classify_os_error(exc)
            return ProbeResult("stat", (path,), rc=None, error=error, detail=detail)
        info = {"mtime": st.st_mtime, "size": st.st_size, "mode": st.st_mode,
                "is_dir": os.path.isdir(path)}
        return ProbeResult("stat", (path,), stdout=json.dumps(info))

    # -- psutil -----------------------------------------------------------------
    def processes(self) -> ProbeResult:
        import psutil

        start = time.monotonic()
        rows: List[Dict[str, Any]] = []
        for proc in psutil.process_iter(["pid", "name", "exe", "cmdline", "username"]):
            info = proc.info
            rows.append({
                "pid": info.get("pid"),
                "name": info.get("name") or "",
                "exe": info.get("exe") or "",
                "cmdline": list(info.get("cmdline") or [])[:20],
                "username": info.get("username") or "",
            })
        return ProbeResult("processes", ("psutil",), stdout=json.dumps(rows),
                           duration=time.monotonic() - start)

    def interfaces(self) -> ProbeResult:
        import socket

        import psutil

        stats = psutil.net_if_stats()
        out: Dict[str, Any] = {}
        for name, addrs in psutil.net_if_addrs().items():
            entries = []
            for addr in addrs:
                if addr.family == socket.AF_INET:
                    family = "ipv4"
                elif addr.family == socket.AF_INET6:
                    family = "ipv6"
                else:
                    continue
                entries.append({"family": family, "address": addr.address.split("%")[0],
                                "netmask": addr.netmask})
            st = stats.get(name)
            out[name] = {"up": bool(st.isup) if st else False, "mtu": st.mtu if st else 0,
                         "addresses": entries}
        for name, st in stats.items():
            out.setdefault(name, {"up": bool(st.isup), "mtu": st.mtu, "addresses": []})
        return ProbeResult("interfaces", ("psutil",), stdout=json.dumps(out, sort_keys=True))


@dataclass
class Recording:
    """One JSON file holding every observation of a cycle, and the machine it came from."""

    platform: str
    os_version: str = ""
    agent_version: str = __version__
    recorded_at: float = field(default_factory=time.time)
    note: str = ""
    probes: Dict[str, ProbeResult] = field(default_factory=dict)

    def to_json(self) -> Dict[str, Any]:
        return {
            "schema": RECORDING_SCHEMA,
            "platform": self.platform,
            "os_version": self.os_version,
            "agent_version": self.agent_version,
            "recorded_at": self.recorded_at,
            "note": self.note,
            "probes": [p.to_json() for p in self.probes.values()],
        }

    def save(self, path: Path) -> None:
        """Write the file readable by its owner only (0600): it describes the machine and its user."""
        atomic_write(path, json.dumps(self.to_json(), indent=1, ensure_ascii=False), mode=0o600)

    @classmethod
    def load(cls, path: Path) -> Recording:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise RecordingError(f"{path}: cannot read recording: {exc}") from exc
        return cls.from_json(data, source=str(path))

    @classmethod
    def from_json(cls, data: Any, source: str = "recording") -> Recording:
        if not isinstance(data, dict) or data.get("schema") != RECORDING_SCHEMA:
            raise RecordingError(f"{source}: not a Teleposture recording (expected schema {RECORDING_SCHEMA})")
        platform = data.get("platform")
        if platform not in ("linux", "darwin", "windows"):
            raise RecordingError(f"{source}: platform must be linux, darwin or windows, found {platform!r}")
        probes: Dict[str, ProbeResult] = {}
        for index, raw in enumerate(data.get("probes") or []):
            try:
                result = ProbeResult.from_json(raw)
            except (KeyError, TypeError, ValueError) as exc:
                raise RecordingError(f"{source}: probe #{index} is malformed: {exc}") from exc
            probes[_key(result.kind, result.target)] = result
        return cls(platform=platform, os_version=str(data.get("os_version", "")),
                   agent_version=str(data.get("agent_version", "")),
                   recorded_at=float(data.get("recorded_at") or 0.0), note=str(data.get("note", "")),
                   probes=probes)


class RecordingError(ValueError):
    """A recording file that cannot be replayed."""


# A support recording leaves the employee's machine (docs/support-recordings.md): of each process it keeps
# only what the check parsers read. The first argument is kept for interpreters, where it names the program
# really running ("bash /usr/bin/wg-quick up wg0"); other arguments (file names, URLs, tokens) are dropped.
INTERPRETERS = frozenset({"sh", "bash", "dash", "zsh", "perl", "ruby", "node", "osascript", "powershell",
                          "pwsh", "wscript", "cscript"})
# pppd's arguments say which VPN helper started it ("pty 'pptp vpn.example.org'", "plugin sstp-pppd-plugin.so");
# agent/checks/vpn/linux.py looks for these words, and a recording keeps only the words found.
PPPD_VPN_WORDS = ("pptp", "l2tp", "sstp", "openfortivpn")


def _is_interpreter(program: str) -> bool:
    base = program.replace("\\", "/").rsplit("/", 1)[-1].lower().removesuffix(".exe")
    return base in INTERPRETERS or base.startswith("python")


def minimal_process_row(row: Any) -> Dict[str, Any]:
    """One process as a support recording keeps it: name, exe, argv[0] (and argv[1] for interpreters)."""
    if not isinstance(row, dict):
        return {}
    cmdline = row.get("cmdline")
    argv = [str(word) for word in cmdline] if isinstance(cmdline, list) else []
    kept = argv[:2] if argv and _is_interpreter(argv[0]) else argv[:1]
    if str(row.get("name") or "") == "pppd" and argv:
        words = " ".join(argv[1:]).lower()
        kept += [word for word in PPPD_VPN_WORDS if word in words]
    return {"name": str(row.get("name") or ""), "exe": str(row.get("exe") or ""), "cmdline": kept}


def minimal_processes(result: ProbeResult) -> ProbeResult:
    """The ``processes`` observation with only the fields minimal_process_row keeps (pid, user and
    other arguments left out)."""
    try:
        rows = json.loads(result.stdout) if result.stdout else []
    except ValueError:
        return replace(result, stdout="")
    kept = [minimal_process_row(row) for row in rows] if isinstance(rows, list) else []
    return replace(result, stdout=json.dumps(kept))


class RecordingHost(Host):
    """Wraps a live host and keeps every observation it made (process lists reduced, see above)."""

    def __init__(self, inner: Host) -> None:
        self.inner = inner
        self.platform = inner.platform
        self.recording = Recording(platform=inner.platform, recorded_at=inner.now())

    def _keep(self, result: ProbeResult) -> ProbeResult:
        self.recording.probes[_key(result.kind, result.target)] = result
        return result

    def run(self, argv: Sequence[str], timeout: float = DEFAULT_TIMEOUT,
            cache_on: Sequence[str] = ()) -> ProbeResult:
        return self._keep(self.inner.run(argv, timeout, cache_on))

    def read_text(self, path: str) -> ProbeResult:
        return self._keep(self.inner.read_text(path))

    def listdir(self, path: str) -> ProbeResult:
        return self._keep(self.inner.listdir(path))

    def stat(self, path: str) -> ProbeResult:
        return self._keep(self.inner.stat(path))

    def processes(self) -> ProbeResult:
        result = self.inner.processes()
        self._keep(minimal_processes(result))
        return result

    def interfaces(self) -> ProbeResult:
        return self._keep(self.inner.interfaces())

    def now(self) -> float:
        return self.recording.recorded_at

    def cached(self, argv: Sequence[str], cache_on: Sequence[str]) -> Optional[ProbeResult]:
        return self.inner.cached(argv, cache_on)

    def remember(self, argv: Sequence[str], cache_on: Sequence[str], result: ProbeResult) -> None:
        self.inner.remember(argv, cache_on, result)


class ReplayHost(Host):
    """Answers from a recording: the same questions get the same answers, on any OS."""

    def __init__(self, recording: Recording) -> None:
        self.recording = recording
        self.platform = recording.platform

    def _answer(self, kind: str, target: Sequence[str]) -> ProbeResult:
        found = self.recording.probes.get(_key(kind, target))
        if found is None:
            return ProbeResult(kind, tuple(target), rc=None, error=NOT_RECORDED)
        return found

    def run(self, argv: Sequence[str], timeout: float = DEFAULT_TIMEOUT,
            cache_on: Sequence[str] = ()) -> ProbeResult:
        return self._answer("run", argv)

    def read_text(self, path: str) -> ProbeResult:
        return self._answer("read", [path])

    def listdir(self, path: str) -> ProbeResult:
        return self._answer("listdir", [path])

    def stat(self, path: str) -> ProbeResult:
        return self._answer("stat", [path])

    def processes(self) -> ProbeResult:
        return self._answer("processes", ["psutil"])

    def interfaces(self) -> ProbeResult:
        return self._answer("interfaces", ["psutil"])

    def cached(self, argv: Sequence[str], cache_on: Sequence[str]) -> Optional[ProbeResult]:
        # answered on its own in the recording: it was cached (not batched) when recorded
        return self.recording.probes.get(_key("run", argv)) if cache_on else None

    def recorded_runs(self) -> List[ProbeResult]:
        return [probe for probe in self.recording.probes.values() if probe.kind == "run"]

    def now(self) -> float:
        return self.recording.recorded_at
