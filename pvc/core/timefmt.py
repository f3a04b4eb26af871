"""Times as JSON shows them: ISO 8601 in UTC with microseconds (fixed width, so they sort as
text in time order), `null` for "not yet". pvc stores times as epoch seconds (floats); these
functions turn a record's times into text and back (for scripts that compute with them)."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

# the keys of pvc's records whose float values are times
TIME_KEYS = frozenset({"created", "started", "finished", "defined", "keepalive", "since",
                       "expiry", "lock_acquired", "lock_released", "changed", "at",
                       "registered"})


def iso(ts: float) -> str | None:
    if not ts:
        return None
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="microseconds")


def epoch(text: str | None) -> float:
    return datetime.fromisoformat(text).timestamp() if text else 0.0


def _is_time(key: Any, value: Any) -> bool:
    return key in TIME_KEYS and isinstance(value, float)


def times_as_text(data: Any) -> Any:
    """data with every time (a float under a TIME_KEYS key, the first item of a history
    entry) in ISO 8601."""
    if isinstance(data, dict):
        return {k: iso(v) if _is_time(k, v) else
                [[iso(h[0]), *h[1:]] if h and isinstance(h[0], float) else h for h in v]
                if k == "history" and isinstance(v, list) else times_as_text(v)
                for k, v in data.items()}
    if isinstance(data, list):
        return [times_as_text(x) for x in data]
    return data


def times_as_epoch(data: Any) -> Any:
    """The inverse of times_as_text (for a script that computes with the times)."""
    if isinstance(data, dict):
        return {k: epoch(v) if k in TIME_KEYS and (v is None or isinstance(v, str)) else
                [[epoch(h[0]), *h[1:]] for h in v] if k == "history" and isinstance(v, list)
                else times_as_epoch(v) for k, v in data.items()}
    if isinstance(data, list):
        return [times_as_epoch(x) for x in data]
    return data
