"""The gate's decision for one certificate: ask the collector, verify, cache; offline, honour the cached
decision until it expires, then fail closed (or open, for a configured time). What it decided is queued
and reported back to the collector.

A gate verifies, it does not decide: the outcome always comes from a token the collector signed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import requests

from agent import protocol
from common.files import atomic_write
from gate import decision as tokens
from gate.messages import refusal
from gate.settings import GateSettings

log = logging.getLogger("teleposture.gate")

ALLOW, DENY = "allow", "deny"
MAX_PENDING_REPORTS = 10000


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    code: str  # "ok", "fail_open", or why it refused (rule_failed, expired, collector_unreachable, ...)
    device_id: Optional[str]
    detail: str  # for the operator's log
    decision: Optional[tokens.Decision] = None

    def message(self, lang: str) -> str:
        """The line shown to the employee when refused."""
        causes = self.decision.causes if self.decision is not None and not self.decision.allowed else ()
        return refusal(lang, self.code, causes)


class CollectorUnreachable(Exception):
    pass


class Gate:
    def __init__(self, settings: GateSettings, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.clock = clock
        self.key = tokens.public_jwk(protocol.load_public_key(settings.public_key))
        self.session = requests.Session()
        if settings.ca_file is not None:
            self.session.verify = str(settings.ca_file)
        self._token = settings.token() if settings.collector_url else ""
        self.reports: deque[dict[str, Any]] = deque(maxlen=MAX_PENDING_REPORTS)
        self._reports_lock = threading.Lock()
        settings.cache_dir.mkdir(parents=True, exist_ok=True, mode=0o700)

    # -- the collector ------------------------------------------------------------------------

    def _fetch(self, fingerprint: str) -> Optional[str]:
        """The signed decision for the certificate; None when no device is linked to it."""
        if not self.settings.collector_url:
            raise CollectorUnreachable("no collector_url configured (offline gate)")
        try:
            response = self.session.get(f"{self.settings.collector_url}/api/v1/gate/decision",
                                        params={"fingerprint": fingerprint}, timeout=self.settings.timeout,
                                        headers={"Authorization": f"Bearer {self._token}"})
        except requests.RequestException as exc:
            raise CollectorUnreachable(type(exc).__name__) from exc
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            if response.status_code == 401:
                log.error("the collector refuses this gate's token (401): check token_file")
            raise CollectorUnreachable(f"collector answered HTTP {response.status_code}")
        try:
            return str(response.json()["token"])
        except (ValueError, KeyError, TypeError) as exc:
            raise CollectorUnreachable(f"collector answer without a token: {exc}") from exc

    def _cache_path(self, fingerprint: str) -> Path:
        return self.settings.cache_dir / f"{fingerprint}.jws"

    def _cache_write(self, fingerprint: str, token: str) -> None:
        atomic_write(self._cache_path(fingerprint), token, mode=0o600)

    def _cache_read(self, fingerprint: str) -> Optional[str]:
        try:
            return self._cache_path(fingerprint).read_text(encoding="utf-8")
        except FileNotFoundError:
            return None

    # -- deciding -------------------------------------------------------------------------------

    def _verdict(self, token: str, fingerprint: str, now: float, source: str) -> Verdict:
        try:
            decision = tokens.verify(token, self.key, now=now, fingerprint=fingerprint, leeway=self.settings.leeway)
        except tokens.DecisionError as exc:
            return Verdict(False, exc.code, None, f"{source} decision refused: {exc}")
        if decision.allowed:
            return Verdict(True, "ok", decision.device_id, f"{source} decision allows until "
                                                          f"{time.strftime('%H:%M:%SZ', time.gmtime(decision.expires_at))}",
                           decision)
        code = str(decision.causes[0].get("code", "deny")) if decision.causes else "deny"
        rules = ",".join(str(c.get("rule_id")) for c in decision.causes if c.get("rule_id"))
        return Verdict(False, code, decision.device_id, f"{source} decision denies: {code} {rules}".strip(), decision)

    def decide(self, fingerprint: str) -> Verdict:
        """The verdict for a client certificate (SHA-256, any usual spelling)."""
        fingerprint = tokens.normalise_fingerprint(fingerprint)
        now = self.clock()
        try:
            token = self._fetch(fingerprint)
        except CollectorUnreachable as exc:
            return self._offline(fingerprint, now, str(exc))
        if token is None:
            self._cache_path(fingerprint).unlink(missing_ok=True)
            return Verdict(False, "unknown_certificate", None, "no device is linked to this certificate")
        verdict = self._verdict(token, fingerprint, now, "collector")
        if verdict.decision is not None:  # only tokens that verified are kept
            self._cache_write(fingerprint, token)
        return verdict

    def _offline(self, fingerprint: str, now: float, why: str) -> Verdict:
        token = self._cache_read(fingerprint)
        if token is None:
            log.warning("collector unreachable (%s) and no cached decision for %s: refused (fail closed)",
                        why, fingerprint)
            return Verdict(False, "collector_unreachable", None, f"collector unreachable ({why}), nothing cached")
        verdict = self._verdict(token, fingerprint, now, "cached")
        if verdict.decision is not None or verdict.code != "expired":
            log.warning("collector unreachable (%s): honouring the cached decision for %s: %s", why, fingerprint,
                        verdict.detail)
            return verdict
        # The cached decision expired: fail closed, unless fail-open covers this device for a while.
        try:
            stale = tokens.verify(token, self.key, now=now, fingerprint=fingerprint, leeway=float("inf"))
        except tokens.DecisionError:
            stale = None
        if (self.settings.fail_open > 0 and stale is not None and stale.allowed
                and now <= stale.expires_at + self.settings.fail_open):
            log.warning("collector unreachable (%s): FAIL-OPEN for %s (decision expired %d s ago, fail_open %g s)",
                        why, fingerprint, now - stale.expires_at, self.settings.fail_open)
            return Verdict(True, "fail_open", stale.device_id, "collector unreachable, fail-open window", stale)
        log.warning("collector unreachable (%s): the cached decision for %s expired: refused (fail closed)",
                    why, fingerprint)
        return Verdict(False, "collector_unreachable", None if stale is None else stale.device_id,
                       f"collector unreachable ({why}) and the cached decision expired (fail closed)")

    # -- reporting back -------------------------------------------------------------------------

    def record(self, fingerprint: str, event: str, verdict: Verdict) -> None:
        with self._reports_lock:
            self.reports.append({"at": self.clock(), "fingerprint": tokens.normalise_fingerprint(fingerprint),
                                 "event": event, "outcome": ALLOW if verdict.allowed else DENY,
                                 "reason": verdict.code, "detail": verdict.detail[:1000]})

    def flush_reports(self) -> int:
        """Send queued reports; they stay queued (bounded, oldest dropped) while the collector is away."""
        if not self.settings.collector_url:
            return 0
        with self._reports_lock:
            batch = list(self.reports)[:1000]
        if not batch:
            return 0
        try:
            response = self.session.post(f"{self.settings.collector_url}/api/v1/gate/decisions",
                                         json={"decisions": batch}, timeout=self.settings.timeout,
                                         headers={"Authorization": f"Bearer {self._token}"})
        except requests.RequestException as exc:
            log.info("gate decisions not reported yet (%s); %d queued", type(exc).__name__, len(self.reports))
            return 0
        if response.status_code != 200:
            log.warning("collector refused %d gate decisions: HTTP %d %s", len(batch), response.status_code,
                        response.text[:200])
            if response.status_code not in (400, 422):
                return 0  # keep them for later; a 400 would refuse them forever, so drop
        with self._reports_lock:
            for _ in range(min(len(batch), len(self.reports))):
                self.reports.popleft()
        return len(batch)
