"""Prometheus metrics of one collector node: the registry and its counters (served by server.api.metrics).

Counters and histograms are this process's; gauges read at scrape time (devices by status, database
pool) describe the fleet or this process. Other parts register their own gauges with
``Metrics.gauge(name, help, read)``: ``read`` returns a number, or ``{label value: number}`` together
with ``label=...`` (e.g. the event outbox depth and delivery failures of issue 13).
"""

from __future__ import annotations

import hmac
import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Optional, Union

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

Reading = Union[float, int, Mapping[str, Union[float, int]]]
# Seconds per report batch: a batch of one takes ~1-5 ms, a batch of 500 up to a few hundred.
INGEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class _Gauges(Collector):
    """Gauges whose value is read when scraped."""

    def __init__(self) -> None:
        self._gauges: list[tuple[str, str, Callable[[], Reading], Optional[str]]] = []
        self._lock = threading.Lock()

    def add(self, name: str, documentation: str, read: Callable[[], Reading], label: Optional[str]) -> None:
        with self._lock:
            if any(existing == name for existing, *_ in self._gauges):
                raise ValueError(f"gauge {name} is registered already")
            self._gauges.append((name, documentation, read, label))

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            gauges = list(self._gauges)
        for name, documentation, read, label in gauges:
            try:
                value = read()
            except Exception:  # noqa: BLE001 (one unreadable gauge must not hide the others)
                log.exception("metric %s could not be read", name)
                continue
            if isinstance(value, Mapping):
                family = GaugeMetricFamily(name, documentation, labels=[label or "label"])
                for key, number in sorted(value.items()):
                    family.add_metric([str(key)], float(number))
            else:
                family = GaugeMetricFamily(name, documentation, value=float(value))
            yield family

    def describe(self) -> Iterable[Metric]:
        return []  # values are read at scrape time only


class Metrics:
    """The registry of one app (not the process-global one: tests run several apps in one process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.reports = Counter("teleposture_reports", "Report envelopes received, by outcome "
                               "(accepted, duplicate, rejected).", ["outcome"], registry=self.registry)
        # The labelled children, resolved once: a labels() lookup per report batch cost more than the increment.
        self._accepted, self._duplicate, self._rejected = (self.reports.labels(outcome)
                                                           for outcome in ("accepted", "duplicate", "rejected"))
        self.batches = Counter("teleposture_report_batches", "Report requests answered, by HTTP status class.",
                               ["status"], registry=self.registry)
        self.signins = Counter("teleposture_signins", "Dashboard sign-in attempts, by outcome (ok, failed: "
                               "wrong or unknown, limited: refused by a failure limit, busy: too many "
                               "password checks waiting).", ["outcome"], registry=self.registry)
        for outcome in ("ok", "failed", "limited", "busy"):
            self.signins.labels(outcome)
        self.ingest_seconds = Histogram("teleposture_ingest_duration_seconds", "Time to verify, evaluate and "
                                        "store one report batch.", buckets=INGEST_BUCKETS, registry=self.registry)
        self._batches_ok = self.batches.labels("2xx")
        self._gauges = _Gauges()
        self.registry.register(self._gauges)

    def gauge(self, name: str, documentation: str, read: Callable[[], Reading], *,
              label: Optional[str] = None) -> None:
        """A gauge read at scrape time: ``read()`` gives a number, or ``{label value: number}``."""
        self._gauges.add(name, documentation, read, label)

    def batch_done(self, accepted: int, duplicate: int, rejected: int, seconds: float) -> None:
        for child, count in ((self._accepted, accepted), (self._duplicate, duplicate), (self._rejected, rejected)):
            if count:
                child.inc(count)
        self.ingest_seconds.observe(seconds)
        self._batches_ok.inc()

    def batch_failed(self, status: int) -> None:
        self.batches.labels(f"{status // 100}xx").inc()


def token_matches(expected: Optional[str], authorization: Optional[str]) -> bool:
    """Whether an ``Authorization: Bearer`` header carries the metrics token (constant-time)."""
    if not expected or not authorization:
        return False
    scheme, _, token = authorization.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), expected.encode())
