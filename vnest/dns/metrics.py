"""Counters and a latency histogram for the embedded DNS server.

Plain Python, no Prometheus client library: the control plane serves ``prometheus_text()``
from its metrics endpoint, and tests read ``snapshot()``. Label values are bounded (query
types outside a fixed list count as "other") so a client sending odd types cannot grow
the metrics without limit.
"""

from __future__ import annotations

import bisect
from typing import Any

import dns.rdatatype

RESULTS = ("answered", "nxdomain", "nodata", "forwarded", "servfail", "refused", "malformed", "truncated")
QTYPES = ("A", "AAAA", "SRV", "PTR", "CNAME", "TXT", "SOA", "NS", "MX", "ANY")
# Seconds; in-cluster answers land in the first buckets, forwards in the later ones.
BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_QTYPE_OF: dict[int, str] = {dns.rdatatype.from_text(t): t for t in QTYPES}


def qtype_label(rdtype: int) -> str:
    return _QTYPE_OF.get(rdtype, "other")


class DnsMetrics:
    def __init__(self, labels: dict[str, str] | None = None) -> None:
        self.labels = dict(labels or {})
        self.queries: dict[str, int] = dict.fromkeys((*QTYPES, "other"), 0)
        self.results: dict[str, int] = dict.fromkeys(RESULTS, 0)
        self.buckets = [0] * (len(BUCKETS) + 1)  # the last one is +Inf
        self.latency_sum = 0.0
        self.latency_count = 0
        self.inflight_forwards = 0  # set by the server
        self.tcp_connections = 0  # set by the server

    def query(self, qtype: str, result: str, seconds: float) -> None:
        """One answered (or refused, or failed) query; ``qtype`` is a ``qtype_label``."""
        self.queries[qtype] += 1
        self.results[result] += 1
        self.buckets[bisect.bisect_left(BUCKETS, seconds)] += 1
        self.latency_sum += seconds
        self.latency_count += 1

    def malformed(self) -> None:
        self.results["malformed"] += 1

    def snapshot(self) -> dict[str, Any]:
        cumulative, total = {}, 0
        for bound, count in zip((*BUCKETS, float("inf")), self.buckets, strict=True):
            total += count
            cumulative["+Inf" if bound == float("inf") else repr(bound)] = total
        return {
            "queries": dict(self.queries),
            "results": dict(self.results),
            "latency_seconds": {"buckets": cumulative, "sum": self.latency_sum, "count": self.latency_count},
            "inflight_forwards": self.inflight_forwards,
            "tcp_connections": self.tcp_connections,
        }

    def prometheus_text(self) -> str:
        base = "".join(f',{k}="{label_value(v)}"' for k, v in sorted(self.labels.items()))
        plain = "{" + base[1:] + "}" if base else ""
        snap = self.snapshot()
        lines = [
            "# HELP vnest_dns_queries_total DNS queries answered, by query type.",
            "# TYPE vnest_dns_queries_total counter",
            *(f'vnest_dns_queries_total{{qtype="{t}"{base}}} {n}' for t, n in snap["queries"].items()),
            "# HELP vnest_dns_results_total DNS queries by outcome (malformed ones were dropped).",
            "# TYPE vnest_dns_results_total counter",
            *(f'vnest_dns_results_total{{result="{r}"{base}}} {n}' for r, n in snap["results"].items()),
            "# HELP vnest_dns_request_duration_seconds Time from receiving a query to sending its answer.",
            "# TYPE vnest_dns_request_duration_seconds histogram",
            *(
                f'vnest_dns_request_duration_seconds_bucket{{le="{le}"{base}}} {n}'
                for le, n in snap["latency_seconds"]["buckets"].items()
            ),
            f"vnest_dns_request_duration_seconds_sum{plain} {snap['latency_seconds']['sum']!r}",
            f"vnest_dns_request_duration_seconds_count{plain} {snap['latency_seconds']['count']}",
            "# HELP vnest_dns_inflight_forwards Queries waiting for an upstream answer.",
            "# TYPE vnest_dns_inflight_forwards gauge",
            f"vnest_dns_inflight_forwards{plain} {snap['inflight_forwards']}",
            "# HELP vnest_dns_tcp_connections Open TCP connections from clients.",
            "# TYPE vnest_dns_tcp_connections gauge",
            f"vnest_dns_tcp_connections{plain} {snap['tcp_connections']}",
        ]
        return "\n".join(lines) + "\n"


def label_value(value: str) -> str:
    """A Prometheus label value, escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
