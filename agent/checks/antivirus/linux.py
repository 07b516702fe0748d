"""Anti-malware on linux: collector (probes) and pure parsers.

Products are recognised by their running processes (name, executable path or argv[0]), which
needs no privilege: ClamAV (clamd scanning daemon, clamonacc on-access scanner, freshclam
updater) and the EDR/anti-malware agents common on Linux laptops. ClamAV's signature age comes
from the 512-byte header of its ``daily`` database (``ClamAV-VDB:<build time>:<version>:...:<epoch>``),
Microsoft Defender's from ``mdatp health --output json``. Wazuh and OSSEC agents are log/HIDS
agents, not anti-malware: they are named in the evidence and not counted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from agent.checks._values import load_json
from agent.checks.antivirus.signatures import signature_facts
from agent.checks.base import CheckOutcome, ParseError
from agent.probes import NOT_FOUND, Host

CHECK = "antivirus"

CLAMAV_DB_DIR = "/var/lib/clamav"
CLAMAV_DAILY = ("daily.cld", "daily.cvd")
NOT_ANTIMALWARE = {"wazuh-agentd": "Wazuh agent", "ossec-agentd": "OSSEC agent", "wazuh-modulesd": "Wazuh agent"}


@dataclass(frozen=True)
class Product:
    name: str
    kind: str  # antivirus | edr
    process_names: Tuple[str, ...]
    exe_prefixes: Tuple[str, ...] = ()


EDR_PRODUCTS = (
    Product("CrowdStrike Falcon", "edr", ("falcond", "falcon-sensor"), ("/opt/CrowdStrike/",)),
    Product("SentinelOne", "edr", ("sentinelone-agent", "s1-agent", "s1-orchestrator", "s1-scanner"),
            ("/opt/sentinelone/",)),
    Product("Microsoft Defender for Endpoint", "antivirus", ("wdavdaemon",), ("/opt/microsoft/mdatp/",)),
    Product("Sophos Protection for Linux", "antivirus", ("sophos_threat_detector", "sophos_threat_d", "sophosspl",
                                                         "savd", "sav-protect"), ("/opt/sophos-spl/", "/opt/sophos-av/")),
    Product("ESET Endpoint Antivirus", "antivirus", ("esets_daemon", "oaeventd", "esets"), ("/opt/eset/",)),
    Product("Trend Micro Deep Security", "antivirus", ("ds_agent", "ds_am"), ("/opt/ds_agent/", "/opt/TrendMicro/")),
    Product("Bitdefender GravityZone", "antivirus", ("bdsecd",), ("/opt/bitdefender-security-tools/",)),
    Product("Trellix Endpoint Security", "antivirus", ("mfetpd", "isectpd"), ("/opt/McAfee/", "/opt/isec/")),
    Product("Kaspersky Endpoint Security", "antivirus", ("kesl", "wdserver"), ("/opt/kaspersky/",)),
    Product("Cortex XDR", "edr", ("traps_pmd",), ("/opt/traps/",)),
    Product("Elastic Defend", "edr", ("elastic-endpoint",), ("/opt/Elastic/Endpoint/",)),
)
CLAMAV_PROCESSES = ("clamd", "clamonacc", "freshclam")


def parse_processes(text: str) -> List[Dict[str, Any]]:
    """The probe layer's process list (JSON list of {pid, name, exe, cmdline, username})."""
    rows = load_json(text, "process list", list)
    if not all(isinstance(r, dict) for r in rows):
        raise ParseError("process list: expected a JSON list of process objects")
    return rows


def _process_names(row: Mapping[str, Any]) -> Tuple[str, str]:
    name = str(row.get("name") or "")
    exe = str(row.get("exe") or "")
    cmdline = row.get("cmdline") or []
    argv0 = str(cmdline[0]) if isinstance(cmdline, list) and cmdline else ""
    base = (exe or argv0).rsplit("/", 1)[-1]
    return name if name else base, exe or argv0


def running_names(rows: Sequence[Mapping[str, Any]]) -> Dict[str, str]:
    """process name (and executable basename) -> executable path, for every process."""
    found: Dict[str, str] = {}
    for row in rows:
        name, exe = _process_names(row)
        for candidate in (name, exe.rsplit("/", 1)[-1]):
            if candidate:
                found.setdefault(candidate, exe)
    return found


def match_product(product: Product, names: Mapping[str, str]) -> List[str]:
    """The processes of ``names`` that belong to ``product``."""
    hits = [n for n in product.process_names if n in names]
    hits += [f"{n} ({exe})" for n, exe in names.items()
             if exe and any(exe.startswith(prefix) for prefix in product.exe_prefixes) and n not in hits]
    return sorted(set(hits))


def parse_cvd_header(text: str) -> Tuple[int, float]:
    """``ClamAV-VDB:16 Apr 2020 07-58 -0400:25784:2267600:63:md5:dsig:builder:1587038280`` -> (version, epoch).

    The build time is written ``%d %b %Y %H-%M %z`` (dashes: colon is the separator); recent
    headers also end with the build time in epoch seconds, preferred when present.
    """
    header = text[:512].strip("\x00 \n")
    if not header.startswith("ClamAV-VDB:"):
        raise ParseError(f"ClamAV database header: expected 'ClamAV-VDB:...', found {header[:40]!r}")
    fields = header.split(":")
    if len(fields) < 4 or not fields[2].isdigit():
        raise ParseError(f"ClamAV database header: expected build time and version fields, found {header[:80]!r}")
    version = int(fields[2])
    tail = fields[-1].strip()
    if len(fields) >= 9 and re.fullmatch(r"\d{9,11}", tail):
        return version, float(tail)
    try:
        built = datetime.strptime(fields[1].strip(), "%d %b %Y %H-%M %z")
    except ValueError as exc:
        raise ParseError(f"ClamAV database header: unreadable build time {fields[1]!r}") from exc
    return version, built.timestamp()


def _value(data: Mapping[str, Any], *names: str) -> Any:
    for name in names:
        if name in data:
            value = data[name]
            # mdatp wraps managed settings as {"value": x, "isManaged": bool}
            return value.get("value") if isinstance(value, dict) else value
    return None


def parse_mdatp_health(text: str) -> Dict[str, Any]:
    """``mdatp health --output json``: health, real-time protection, definitions age."""
    data = load_json(text, "mdatp health --output json", dict)
    realtime = _value(data, "realTimeProtectionEnabled", "real_time_protection_enabled")
    minutes = _value(data, "definitionsUpdatedMinutesAgo", "definitions_updated_minutes_ago")
    healthy = _value(data, "healthy")
    return {
        "healthy": healthy if isinstance(healthy, bool) else None,
        "realtime": realtime if isinstance(realtime, bool) else None,
        "signature_age_days": round(minutes / 1440, 2) if isinstance(minutes, (int, float)) else None,
        "version": _value(data, "appVersion", "app_version"),
    }


def summarize(products: Sequence[Mapping[str, Any]]) -> Dict[str, Any]:
    """The check's facts from the per-product entries (pure)."""
    running = [p for p in products if p["running"]]
    realtime_values = [p["realtime"] for p in running if p["realtime"] is not None]
    ages = [p["signature_age_days"] for p in running if p["signature_age_days"] is not None]
    return {
        "running": bool(running),
        "products": [dict(p) for p in products],
        "realtime_protection": (True in realtime_values) if realtime_values else (False if not running else None),
        "signature_age_days": min(ages) if ages else None,
        **signature_facts(running),
    }


def collect(host: Host, params: Mapping[str, Any]) -> CheckOutcome:
    probe = host.processes()
    if probe.error is not None:
        return CheckOutcome.probe_failed(CHECK, probe)
    names = running_names(parse_processes(probe.stdout))
    evidence: List[str] = []
    products: List[Dict[str, Any]] = []

    clamav = _clamav(host, names, evidence)
    if clamav is not None:
        products.append(clamav)
    for product in EDR_PRODUCTS:
        hits = match_product(product, names)
        if not hits:
            continue
        entry: Dict[str, Any] = {"name": product.name, "kind": product.kind, "running": True, "realtime": None,
                                 "signature_age_days": None, "version": None}
        evidence.append(f"{product.name}: running ({', '.join(hits)})")
        if product.process_names == ("wdavdaemon",) and host.which("mdatp"):
            health = host.run(["mdatp", "health", "--output", "json"], timeout=20)
            if not health.ok:
                return CheckOutcome.probe_failed(CHECK, health)
            entry.update({k: v for k, v in parse_mdatp_health(health.stdout).items() if k != "healthy"})
        products.append(entry)
    for process, label in NOT_ANTIMALWARE.items():
        if process in names:
            evidence.append(f"{label} running ({process}): a log/HIDS agent, not anti-malware; not counted")
    if not any(p["running"] for p in products):
        looked_for = ["ClamAV (clamd, clamonacc)"] + [f"{p.name} ({', '.join(p.process_names)})" for p in EDR_PRODUCTS]
        evidence.append("no anti-malware process running; looked for: " + "; ".join(looked_for))
    return CheckOutcome(CHECK, facts=summarize(products), evidence=evidence)


def _clamav(host: Host, names: Mapping[str, str], evidence: List[str]) -> Optional[Dict[str, Any]]:
    daemon = "clamd" in names
    onaccess = "clamonacc" in names
    updater = "freshclam" in names
    listing = host.listdir(CLAMAV_DB_DIR)
    if listing.error == NOT_FOUND and not (daemon or onaccess or updater):
        return None  # not installed
    entry: Dict[str, Any] = {"name": "ClamAV", "kind": "antivirus", "running": daemon or onaccess,
                             "realtime": onaccess, "signature_age_days": None, "version": None}
    evidence.append(f"ClamAV: clamd {'running' if daemon else 'not running'}, clamonacc "
                    f"{'running' if onaccess else 'not running'}, freshclam daemon "
                    f"{'running' if updater else 'not running'}")
    if not listing.ok:
        evidence.append(listing.describe_failure())
        return entry
    present = [n for n in CLAMAV_DAILY if n in listing.stdout.splitlines()]
    if not present:
        evidence.append(f"{CLAMAV_DB_DIR}: no daily.cld or daily.cvd (signatures never downloaded)")
        return entry
    path = f"{CLAMAV_DB_DIR}/{present[0]}"
    # Only the 512-byte header: the database itself is tens of megabytes.
    head = host.run(["head", "-c", "512", path], timeout=5)
    if not head.ok:
        evidence.append(head.describe_failure())
        return entry
    version, built = parse_cvd_header(head.stdout)
    age = max(0.0, (host.now() - built) / 86400)
    entry["signature_age_days"] = round(age, 2)
    entry["version"] = f"daily {version}"
    evidence.append(f"{path}: daily version {version}, built {datetime.fromtimestamp(built, timezone.utc):%Y-%m-%d %H:%M} UTC, "
                    f"{age:.1f} days old")
    return entry
