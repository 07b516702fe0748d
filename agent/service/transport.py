"""HTTP(S) to the collector: enrolment, report uploads, signed policy fetches.

TLS certificates are verified (system CAs, or ``ca_file``). Plain ``http://`` is refused unless the
operator explicitly allowed it (``--allow-http`` / ``TELEPOSTURE_ALLOW_HTTP=1`` / ``allow_http = true``);
it is meant for development, and a non-loopback http URL is logged as a warning even then.

Errors are sorted for the caller: `RetryableError` (network, timeout, 5xx, 429, an answer that is not the
protocol's JSON) carries the Retry-After the collector asked for; `CollectorRefused` (other 4xx) will not
get better by retrying soon.
"""

from __future__ import annotations

import gzip
import ipaddress
import logging
import random
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, Dict, List, Mapping, Optional, Sequence
from urllib.parse import urlsplit

import requests
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent import __version__, protocol

log = logging.getLogger(__name__)

ENROLL_PATH = "/api/v1/enroll"
REPORTS_PATH = "/api/v1/reports"
POLICY_PATH = "/api/v1/policy"
MAX_RETRY_AFTER = 6 * 3600.0


class TransportError(RuntimeError):
    """The collector could not be talked to, or answered something unusable."""


class ConfigurationError(TransportError):
    """The URL or TLS settings cannot be used (fix the configuration, retrying will not help)."""


class RetryableError(TransportError):
    def __init__(self, message: str, retry_after: Optional[float] = None, status: Optional[int] = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.status = status


class CollectorRefused(TransportError):
    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def is_loopback_host(host: str) -> bool:
    if host.lower() in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_url(url: str, allow_http: bool) -> str:
    """The collector base URL without a trailing slash; raises ConfigurationError for unusable ones."""
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ConfigurationError(f"collector URL must look like https://collector.example.org, found {url!r}")
    if parts.query or parts.fragment:
        raise ConfigurationError(f"collector URL must not carry a query or fragment, found {url!r}")
    if parts.scheme == "http":
        if not allow_http:
            raise ConfigurationError(
                f"refusing plain http:// for the collector ({url}): reports and policies would travel "
                "unencrypted. Use https://, or for development pass --allow-http (TELEPOSTURE_ALLOW_HTTP=1)")
        if not is_loopback_host(parts.hostname):
            log.warning("plain http to a non-loopback collector %s: development use only", parts.hostname)
    return url.rstrip("/")


def parse_retry_after(value: Optional[str], now: Optional[float] = None) -> Optional[float]:
    """Seconds from a Retry-After header (delta-seconds or HTTP date), capped; None if absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), MAX_RETRY_AFTER)
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if moment is None:
        return None
    current = time.time() if now is None else now
    return min(max(0.0, moment.timestamp() - current), MAX_RETRY_AFTER)


class Backoff:
    """Exponential backoff with "equal" jitter (a random delay between half and all of the doubling ceiling,
    so a retry never comes at once); a Retry-After from the collector takes precedence."""

    def __init__(self, base: float = 2.0, cap: float = 900.0, rng: Optional[random.Random] = None) -> None:
        self.base = base
        self.cap = cap
        self.failures = 0
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not a secret

    def next_delay(self, retry_after: Optional[float] = None) -> float:
        self.failures += 1
        ceiling = min(self.cap, self.base * (2 ** min(self.failures - 1, 30)))
        delay = self._rng.uniform(ceiling / 2, ceiling)
        if retry_after is not None:
            # never earlier than asked; a little jitter after it so a fleet does not come back at once
            delay = retry_after + self._rng.uniform(0, min(self.base, retry_after * 0.1 + 0.1))
        return delay

    def reset(self) -> None:
        self.failures = 0


@dataclass(frozen=True)
class Verdict:
    status: str  # accepted | duplicate | rejected
    reason: str = ""
    last_seq: Optional[int] = None  # the device's last accepted seq, as the collector answered
    last_report_id: Optional[str] = None  # that report's id (duplicates): tells a resend from a re-used seq
    # The device's running noncompliance ladders, when the collector sends them (docs/actions.md).
    actions: Optional[List[Dict[str, Any]]] = None


@dataclass(frozen=True)
class PolicyAnswer:
    not_modified: bool
    bundle: Optional[Dict[str, Any]]
    etag: Optional[str]
    last_seq: Optional[int] = None


HEADER_LAST_SEQ = "X-Teleposture-Last-Seq"
HEADER_SERVER_TIME = "X-Teleposture-Server-Time"


def server_clock(response: requests.Response, body: Any = None) -> Optional[float]:
    """The collector's time from an answer: `server_time` in the body, its header, else HTTP `Date`."""
    if isinstance(body, dict) and isinstance(body.get("server_time"), (int, float)) \
            and not isinstance(body.get("server_time"), bool):
        return float(body["server_time"])
    header = response.headers.get(HEADER_SERVER_TIME)
    if header:
        try:
            return float(header)
        except ValueError:
            pass
    date = response.headers.get("Date")
    if date:
        try:
            moment = parsedate_to_datetime(date)
        except (TypeError, ValueError, IndexError):
            return None
        if moment is not None and moment.tzinfo is not None:
            return moment.timestamp()
    return None


class Transport:
    def __init__(self, base_url: str, *, ca_file: Optional[str] = None, allow_http: bool = False,
                 timeout: float = 30.0, session: Optional[requests.Session] = None) -> None:
        self.base_url = check_url(base_url, allow_http)
        if ca_file is not None:
            try:
                with open(ca_file, "rb") as handle:
                    if b"-----BEGIN CERTIFICATE-----" not in handle.read(1 << 20):
                        raise ConfigurationError(f"CA file {ca_file} holds no PEM certificate")
            except OSError as exc:
                raise ConfigurationError(f"cannot read CA file {ca_file}: {exc.strerror or exc}") from exc
        self.verify: Any = ca_file if ca_file is not None else True
        self.timeout = timeout
        self.session = session or requests.Session()
        self.session.headers["User-Agent"] = f"teleposture-agent/{__version__}"
        # collector clock minus ours, measured at the last answer (None until one carried a time)
        self.clock_offset: Optional[float] = None
        self._sent_at = 0.0

    def close(self) -> None:
        self.session.close()

    # -- plumbing ------------------------------------------------------------------------------------------
    def _request(self, method: str, path: str, *, data: Optional[bytes] = None,
                 headers: Optional[Mapping[str, str]] = None) -> requests.Response:
        url = self.base_url + path
        try:
            sent = time.time()
            response = self.session.request(method, url, data=data, headers=dict(headers or {}),
                                            timeout=self.timeout, verify=self.verify, allow_redirects=False)
            self._sent_at = sent
            self._measure(response)
            return response
        except requests.exceptions.SSLError as exc:
            raise RetryableError(f"TLS verification of {url} failed: {_short(exc)} (is the collector's "
                                 "certificate signed by a CA you trust? see --ca-file)") from exc
        except requests.exceptions.Timeout as exc:
            raise RetryableError(f"{method} {url}: no answer within {self.timeout:.0f}s") from exc
        except requests.exceptions.ConnectionError as exc:
            raise RetryableError(f"{method} {url}: cannot connect ({_short(exc)})") from exc
        except requests.exceptions.RequestException as exc:
            raise RetryableError(f"{method} {url}: {type(exc).__name__}: {_short(exc)}") from exc

    def _measure(self, response: requests.Response, body: Any = None) -> None:
        """Clock offset = collector time - the midpoint of our request (the answer was made in between)."""
        server = server_clock(response, body)
        if server is not None:
            self.clock_offset = server - (self._sent_at + time.time()) / 2

    @staticmethod
    def _raise_for_status(response: requests.Response, what: str) -> None:
        status = response.status_code
        if status < 400 and status not in (301, 302, 303, 307, 308):
            return
        detail = _error_detail(response)
        if status == 429 or status >= 500:
            raise RetryableError(f"{what}: collector answered HTTP {status}{detail}",
                                 retry_after=parse_retry_after(response.headers.get("Retry-After")),
                                 status=status)
        if status in (301, 302, 303, 307, 308):
            raise CollectorRefused(f"{what}: collector redirects to {response.headers.get('Location')!r}; "
                                   "configure that URL instead", status)
        raise CollectorRefused(f"{what}: collector answered HTTP {status}{detail}", status)

    @staticmethod
    def _json(response: requests.Response, what: str) -> Any:
        try:
            return response.json()
        except ValueError as exc:
            raise RetryableError(f"{what}: the answer is not JSON (HTTP {response.status_code}, "
                                 f"{response.headers.get('Content-Type', 'no content type')}, "
                                 f"{response.content[:60]!r})", status=response.status_code) from exc

    # -- the three calls -------------------------------------------------------------------------------------
    def enroll(self, token: str, public_key: str, device: Mapping[str, Any],
               previous: Optional[Mapping[str, str]] = None) -> Dict[str, Any]:
        request: Dict[str, Any] = {"token": token, "public_key": public_key, "device": dict(device)}
        if previous is not None:  # agent.protocol.reenrol_proof: the old key hands the machine over
            request["previous"] = dict(previous)
        body = protocol.canonical_json(request)
        response = self._request("POST", ENROLL_PATH, data=body.encode("utf-8"),
                                 headers={"Content-Type": "application/json"})
        if response.status_code in (400, 401, 403, 404, 409, 410, 422):
            raise CollectorRefused(f"enrolment refused: HTTP {response.status_code}{_error_detail(response)} "
                                   "(is the token valid, unused and not expired?)", response.status_code)
        self._raise_for_status(response, "enrolment")
        answer = self._json(response, "enrolment")
        if not isinstance(answer, dict):
            raise TransportError("enrolment: expected a JSON object answer")
        for name in ("device_id", "server_key"):
            if not isinstance(answer.get(name), str) or not answer[name]:
                raise TransportError(f"enrolment answer lacks {name!r} (is {self.base_url} a Teleposture collector?)")
        return answer

    def upload(self, envelopes: Sequence[str]) -> List[Verdict]:
        """POST a batch (gzip) and return one verdict per envelope, in order."""
        body = '{"envelopes":[' + ",".join(envelopes) + "]}"
        compressed = gzip.compress(body.encode("utf-8"), compresslevel=6)
        response = self._request("POST", REPORTS_PATH, data=compressed, headers={
            "Content-Type": "application/json", "Content-Encoding": "gzip"})
        self._raise_for_status(response, "upload")
        answer = self._json(response, "upload")
        self._measure(response, answer)  # the body's server_time is finer than the Date header
        return parse_verdicts(answer, len(envelopes))

    def fetch_policy(self, key: Ed25519PrivateKey, device_id: str, etag: Optional[str],
                     now: Optional[float] = None) -> PolicyAnswer:
        """``now``: the signing timestamp (the agent's clock corrected by the measured skew)."""
        headers = protocol.sign_request(key, device_id, "GET", urlsplit(self.base_url + POLICY_PATH).path, now)
        if etag:
            headers["If-None-Match"] = etag
        response = self._request("GET", POLICY_PATH, headers=headers)
        last_seq = _header_int(response, HEADER_LAST_SEQ)
        if response.status_code == 304:
            return PolicyAnswer(True, None, etag, last_seq)
        self._raise_for_status(response, "policy fetch")
        answer = self._json(response, "policy fetch")
        if isinstance(answer, dict) and isinstance(answer.get("bundle"), dict):
            answer = answer["bundle"]
        if not isinstance(answer, dict):
            raise TransportError("policy fetch: expected a signed bundle object {payload, signature, key_id}")
        return PolicyAnswer(False, answer, response.headers.get("ETag"), last_seq)


def parse_verdicts(answer: Any, count: int) -> List[Verdict]:
    """Per-envelope verdicts from an upload answer.

    Accepts ``{"results": [...]}`` where each item is ``"accepted"``, ``"duplicate"``, ``"rejected: why"``
    or an object ``{"status"|"result": ..., "reason": ...}``, one per envelope in request order.
    """
    items = answer.get("results") if isinstance(answer, dict) else None
    if not isinstance(items, list):
        raise RetryableError("upload: the answer has no 'results' list (not a Teleposture collector, or a "
                             "proxy in the way?)")
    if len(items) != count:
        raise RetryableError(f"upload: {count} envelopes sent but {len(items)} verdicts received")
    verdicts: List[Verdict] = []
    for item in items:
        text: Any = item
        reason = ""
        last_seq: Optional[int] = None
        last_report_id: Optional[str] = None
        actions = None
        if isinstance(item, dict):
            text = item.get("status", item.get("result"))
            reason = str(item.get("reason") or "")
            if isinstance(item.get("last_seq"), int) and not isinstance(item.get("last_seq"), bool):
                last_seq = int(item["last_seq"])
            if isinstance(item.get("last_report_id"), str):
                last_report_id = item["last_report_id"]
            actions = item.get("actions") if isinstance(item.get("actions"), list) else None
        if not isinstance(text, str):
            raise RetryableError(f"upload: unreadable verdict {str(item)[:80]!r}")
        head, _, tail = text.partition(":")
        head = head.strip().lower()
        if head not in ("accepted", "duplicate", "rejected"):
            raise RetryableError(f"upload: unknown verdict {text[:80]!r}")
        verdicts.append(Verdict(head, (reason or tail.strip()) if head == "rejected" else "", last_seq,
                                last_report_id, actions))
    return verdicts


def _header_int(response: requests.Response, name: str) -> Optional[int]:
    value = response.headers.get(name, "")
    return int(value) if value.isdigit() else None


def _short(exc: BaseException) -> str:
    text = str(exc)
    return text if len(text) <= 200 else text[:200] + "..."


def _error_detail(response: requests.Response) -> str:
    try:
        data = response.json()
    except ValueError:
        return ""
    if isinstance(data, dict):
        for name in ("detail", "error", "message"):
            if isinstance(data.get(name), str):
                return f": {data[name][:200]}"
    return ""
