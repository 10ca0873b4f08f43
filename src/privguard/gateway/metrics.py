"""Prometheus metrics of one gateway process (``GET /metrics``).

Each process has its own registry: with ``--workers N`` each scrape reaches one worker, so
scrape every worker (or sum over replicas) — docs/gateway.md says how. Labels carry tiers and
status codes, never client names or inputs.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Metrics:
    def __init__(self) -> None:
        disable_created_metrics()  # the *_created series only double the scrape
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "privguard_requests", "HTTP requests answered", ["route", "status"], registry=r
        )
        self.records = Counter(
            "privguard_records", "Records answered by /v1/predict", ["tier"], registry=r
        )
        self.latency = Histogram(
            "privguard_request_seconds",
            "Time to answer /v1/predict, log commit included",
            ["tier"],
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=r,
        )
        self.refused = Counter(
            "privguard_refused", "Requests refused, by error code", ["code"], registry=r
        )
        self.log_commits = Counter(
            "privguard_log_commits", "Audit-log transactions committed", registry=r
        )
        self.log_rows = Counter("privguard_log_rows", "Audit-log rows committed", registry=r)
        self.log_pending = Gauge(
            "privguard_log_pending", "Audit-log rows waiting for a commit", registry=r
        )
        self.findings = Counter(
            "privguard_monitor_findings",
            "Query-monitor findings",
            ["detector", "action"],
            registry=r,
        )
        self.monitor_dropped = Counter(
            "privguard_monitor_dropped",
            "Answered batches the query monitor could not observe (its queue was full)",
            registry=r,
        )
        self.monitor_failed = Counter(
            "privguard_monitor_failed",
            "Answered batches the query monitor failed to observe (an error: Redis unreachable, "
            "a client's shared state changing under every retry, ...; logged)",
            registry=r,
        )

        # labelled children, looked up once per label set: ``labels()`` takes a lock and
        # validates its arguments on every call, which the predict path cannot afford
        self._children: dict[tuple[Any, ...], Any] = {}

    def child(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(*labels)``, cached (label values here are tiers, routes, statuses
        and error codes: a small, bounded set)."""
        k = (id(metric), *labels)
        c = self._children.get(k)
        if c is None:
            c = self._children[k] = metric.labels(*labels)
        return c

    def on_commit(self, rows: int, _seconds: float) -> None:
        self.log_commits.inc()
        self.log_rows.inc(rows)

    def render(self) -> bytes:
        return generate_latest(self.registry)
