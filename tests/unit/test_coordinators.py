"""The primary election and the switchover handoff, on the in-memory store with the real
daemons: exactly one primary, the seed's order of steps, and what happens when a side dies."""
from __future__ import annotations

import threading
from typing import Iterator

import pytest

from pvc.coordinator import switchover
from pvc.core.states import OpState
from tests.fakes.cluster import FakeCluster


class Recorder:
    """A primary-only service that notes when it starts and stops."""

    def __init__(self, node: str, log: list[str], lock: threading.Lock) -> None:
        self.name = f"recorder-{node}"
        self.node, self.log, self.lock = node, log, lock

    def start(self) -> None:
        with self.lock:
            self.log.append(f"{self.node} start")

    def stop(self) -> None:
        with self.lock:
            self.log.append(f"{self.node} stop")


@pytest.fixture
def fc() -> Iterator[FakeCluster]:
    c = FakeCluster(nodes=3)
    yield c
    c.stop()


def primaries(fc: FakeCluster) -> list[str]:
    return [n.name for n in fc.client.nodes() if n.coordinator_state == "primary"]


def test_exactly_one_primary(fc: FakeCluster) -> None:
    holder = fc.client.store.get_text(fc.client.schema.primary)
    assert holder in fc.names and primaries(fc) == [holder]
    assert sum(d.role.is_primary for d in fc.daemons.values() if d.role) == 1


def test_switchover_follows_the_seeds_order(fc: FakeCluster) -> None:
    events: list[str] = []
    lock = threading.Lock()
    for name, d in fc.daemons.items():
        d.services.register(Recorder(name, events, lock))
    old = fc.client.store.get_text(fc.client.schema.primary)
    new = next(n for n in fc.names if n != old)
    record = fc.run(switchover.request(fc.client, new))
    assert record["state"] == OpState.SUCCEEDED, record
    assert f"{new} is the primary (was {old})" in record["message"]
    assert fc.client.store.get_text(fc.client.schema.primary) == new
    assert primaries(fc) == [new]
    assert events == [f"{old} stop", f"{new} start"]       # old stops before new starts
    assert not fc.client.store.exists(fc.client.schema.handoff)
    phases = [h[2].split()[1] for h in record["history"] if h[2].startswith("switchover: ")]
    assert phases == ["requested", "services-stopped", "ip-taken", "released",
                      "primary-taken", "database-moved", "done"]


def test_switchover_to_the_primary_itself_only_checks_the_database(fc: FakeCluster) -> None:
    holder = fc.client.store.get_text(fc.client.schema.primary)
    record = fc.run(switchover.request(fc.client, holder))
    assert record["state"] == OpState.SUCCEEDED
    assert record["message"] == f"{holder} is already the primary; no database configured"


def test_a_second_switchover_is_refused_while_one_runs(fc: FakeCluster) -> None:
    old = fc.client.store.get_text(fc.client.schema.primary)
    fc.client.store.create(fc.client.schema.handoff, {"op": "x", "from": old, "to": "hvX",
                                                      "phase": "requested", "changed": 0})
    with pytest.raises(Exception, match="a switchover is already in progress"):
        switchover.request(fc.client, next(n for n in fc.names if n != old))
    fc.client.store.delete(fc.client.schema.handoff)


def test_secondary_hands_the_role_to_another_running_coordinator(fc: FakeCluster) -> None:
    old = fc.client.store.get_text(fc.client.schema.primary)
    record = fc.run(switchover.request_secondary(fc.client, old))
    assert record["state"] == OpState.SUCCEEDED
    assert fc.client.store.get_text(fc.client.schema.primary) not in (None, old)


def test_when_the_primary_stops_another_is_elected(fc: FakeCluster) -> None:
    old = fc.client.store.get_text(fc.client.schema.primary)
    daemon = fc.daemons[old]
    daemon.stop()
    daemon.shutdown()
    fc.client.store.wait_for(fc.client.schema.primary, lambda v: v not in (None, old), 10,
                             decode=lambda d: d.decode() if d else None)
    assert len(primaries(fc)) == 1 and primaries(fc) != [old]


def test_a_new_primary_that_died_before_taking_over_leaves_the_old_one(fc: FakeCluster) -> None:
    old = fc.client.store.get_text(fc.client.schema.primary)
    new = next(n for n in fc.names if n != old)
    req = switchover.request(fc.client, new)
    fc.daemons[new].stop()            # its daemon no longer takes part (it hangs)
    import pvc.coordinator.role as role
    saved = role.HANDOFF_STALE
    role.HANDOFF_STALE = 0.5          # the stall bound, shortened for the test
    try:
        import pvc.coordinator.switchover as sw
        sw.HANDOFF_STALE, sw.WAIT_MARGIN = 0.5, 1.0
        record = fc.run(req)
    finally:
        role.HANDOFF_STALE = saved
        sw.HANDOFF_STALE = saved
    assert record["state"] == OpState.FAILED
    assert "stalled" in record["error"] or "abandoned" in record["error"]
    assert fc.client.store.get_text(fc.client.schema.primary) == old
