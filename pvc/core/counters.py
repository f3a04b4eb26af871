"""Cumulative figures kept in ZooKeeper: an event is counted where it happens (an operation
that ended on some node's worker, a fence, an election), and the primary's metrics endpoint
exports the sums. Kept in the cluster, not in a process, so a figure survives the primary's
change and counts what every node did.

One znode per family, /counters/FAMILY (JSON):
    counter    {"type": "counter", "series": {LABELS: value}}
    histogram  {"type": "histogram", "buckets": [upper bounds], "series": {LABELS:
               {"counts": [per bucket, the last one +Inf], "sum": s, "count": n}}}
LABELS is the labels' JSON (keys sorted). Every event is one compare-and-set write: the events
counted are operations, fences and elections, not anything per second.

Counting is best effort: a figure that could not be written is logged, never the reason an
operation fails.
"""
from __future__ import annotations

import json
import logging
from bisect import bisect_left
from typing import Any

from pvc.core.cluster import Cluster
from pvc.core.errors import PvcError

log = logging.getLogger(__name__)

# Seconds: from a quick VM start to a long flush.
DURATION_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0)

# The families, what each counts, and its labels: the one list of what may be counted.
FAMILIES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "operation_seconds": ("histogram", "seconds from an operation's request to its end",
                          ("kind", "state")),
    "flush_lock_wait_seconds": ("histogram", "seconds a flush or unflush waited for the "
                                "cluster flush lock", ("kind",)),
    "fences": ("counter", "fences by outcome: asked, done, failed", ("result",)),
    "elections": ("counter", "primary elections won, by the winner", ("node",)),
    "switchovers": ("counter", "switchovers of the primary role, by outcome", ("result",)),
}


def labels_key(labels: dict[str, str]) -> str:
    return json.dumps(labels, sort_keys=True, separators=(",", ":"))


def count(cluster: Cluster, family: str, labels: dict[str, str], amount: float = 1) -> None:
    """Add `amount` to a counter."""
    def add(current: dict[str, Any]) -> dict[str, Any]:
        series = dict(current.get("series", {}))
        key = labels_key(labels)
        series[key] = series.get(key, 0) + amount
        return {"type": "counter", "series": series}

    _write(cluster, family, labels, add)


def observe(cluster: Cluster, family: str, labels: dict[str, str], value: float) -> None:
    """One observation into a histogram."""
    def add(current: dict[str, Any]) -> dict[str, Any]:
        buckets = list(current.get("buckets") or DURATION_BUCKETS)
        series = dict(current.get("series", {}))
        key = labels_key(labels)
        s = series.get(key) or {"counts": [0] * (len(buckets) + 1), "sum": 0.0, "count": 0}
        counts = list(s["counts"])
        counts[bisect_left(buckets, value)] += 1     # le: an observation equal to a bound
        series[key] = {"counts": counts, "sum": s["sum"] + value, "count": s["count"] + 1}
        return {"type": "histogram", "buckets": buckets, "series": series}

    _write(cluster, family, labels, add)


def _write(cluster: Cluster, family: str, labels: dict[str, str], change: Any) -> None:
    kind, _help, names = FAMILIES[family]
    assert set(labels) == set(names), (family, labels)
    path = cluster.schema.counter(family)
    try:
        cluster.store.ensure(cluster.schema.counters)   # clusters older than the counters
        cluster.store.update(path, lambda current, _tx: change(current or {}), missing=None)
    except PvcError as e:
        log.warning("could not count %s %s: %s", family, labels, e)


def read_all(cluster: Cluster) -> dict[str, dict[str, Any]]:
    """Every family's stored figures ({} for one never counted)."""
    paths = [cluster.schema.counter(f) for f in FAMILIES]
    return {f: (data or {}) for f, data in zip(FAMILIES, cluster.store.get_json_many(paths))}


def series(data: dict[str, Any]) -> list[tuple[dict[str, str], Any]]:
    """(labels, value) of each series of one family's figures."""
    return [(json.loads(key), value) for key, value in sorted(data.get("series", {}).items())]
