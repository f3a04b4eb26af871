"""Who holds the cluster flush lock and who waits for it, as `cluster status` and `node
lock` show it (apart from the flush itself, so reading it imports nothing more)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pvc.core.cluster import Cluster


@dataclass
class LockStatus:
    holder: dict[str, Any] | None
    queue: list[dict[str, Any]]

    def sentence(self) -> str:
        if self.holder is None:
            return "the flush lock is free"
        ahead = f", {len(self.queue)} queued" if self.queue else ""
        return (f"the flush lock is held by {self.holder.get('node')}'s "
                f"{self.holder.get('kind')} (op {self.holder.get('op')}){ahead}")


def lock_status(cluster: Cluster) -> LockStatus:
    contenders = [_ident(c) for c in cluster.store.lock_contenders(cluster.schema.flush_lock)]
    return LockStatus(contenders[0] if contenders else None, contenders[1:])


def _ident(raw: str) -> dict[str, Any]:
    try:
        return json.loads(raw)
    except (TypeError, ValueError):
        return {"op": raw, "kind": "?", "node": "?"}
