"""The primary election and the switchover handoff, on the in-memory store with the real
daemons: exactly one primary, the seed's order of steps, and what happens when a side dies."""
from __future__ import annotations

import threading
from typing import Any, Iterator

import pytest

from pvc.coordinator import role, switchover
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


def record_services(fc: FakeCluster) -> list[str]:
    """Every node gets a primary-only service noting when it starts and stops; the notes."""
    events: list[str] = []
    lock = threading.Lock()
    for name, d in fc.daemons.items():
        d.services.register(Recorder(name, events, lock))
    return events


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
    events = record_services(fc)
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


def wait_state(fc: FakeCluster, node: str, state: str) -> None:
    fc.client.store.wait_for(fc.client.schema.node_field(node, "coordinator_state"),
                             lambda v: v == state, 5,
                             decode=lambda d: d.decode() if d else None)


def crash(fc: FakeCluster, name: str) -> None:
    """A daemon dies: it acts no more and its session's ephemeral znodes go (no clean exit)."""
    daemon = fc.daemons[name]
    daemon.stop()
    assert daemon.ctx is not None
    fc.backend.expire(daemon.ctx.store.session_id)


def test_a_new_primary_that_hangs_before_taking_over_leaves_the_old_one(
        fc: FakeCluster, monkeypatch: pytest.MonkeyPatch) -> None:
    old = fc.client.store.get_text(fc.client.schema.primary)
    new = next(n for n in fc.names if n != old)
    req = switchover.request(fc.client, new)
    fc.daemons[new].stop()            # its daemon no longer takes part (it hangs, alive)
    monkeypatch.setattr(role, "HANDOFF_STALE", 0.5)   # the stall bound, shortened for the test
    monkeypatch.setattr(switchover, "HANDOFF_STALE", 0.5)
    monkeypatch.setattr(switchover, "WAIT_MARGIN", 1.0)
    record = fc.run(req)
    assert record["state"] == OpState.FAILED
    assert "stalled" in record["error"] or "abandoned" in record["error"]
    assert fc.client.store.get_text(fc.client.schema.primary) == old
    wait_state(fc, old, "primary")    # it serves again: its services were stopped
    assert fc.daemons[old].services.active


def test_a_new_primary_that_dies_is_given_up_without_waiting_for_the_stall_bound(
        fc: FakeCluster, monkeypatch: pytest.MonkeyPatch) -> None:
    old = fc.client.store.get_text(fc.client.schema.primary)
    new = next(n for n in fc.names if n != old)
    req = switchover.request(fc.client, new)
    crash(fc, new)
    # the daemons' stall bound never runs out here; the operation's own runs out in 5 s and
    # would say "stalled": only the old primary noticing the dead daemon says "abandoned"
    monkeypatch.setattr(role, "HANDOFF_STALE", 3600.0)
    monkeypatch.setattr(switchover, "HANDOFF_STALE", 5.0)
    monkeypatch.setattr(switchover, "WAIT_MARGIN", 0.0)
    record = fc.run(req)
    assert record["state"] == OpState.FAILED
    assert "abandoned" in record["error"], record["error"]
    assert fc.client.store.get_text(fc.client.schema.primary) == old
    assert primaries(fc) == [old] and fc.daemons[old].services.active
    assert not fc.client.store.exists(fc.client.schema.handoff)


def test_the_old_primary_dying_mid_switchover_leaves_the_target_primary(
        fc: FakeCluster, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(role, "HANDOFF_STALE", 3600.0)   # no help from the stall bound
    events = record_services(fc)
    old = fc.client.store.get_text(fc.client.schema.primary)
    new = next(n for n in fc.names if n != old)
    fc.daemons[old].stop()            # it will not stop its services: it dies first
    req = switchover.request(fc.client, new)
    result: list[dict] = []
    runner = threading.Thread(target=lambda: result.append(fc.run(req)))
    runner.start()
    fc.client.store.wait_for(fc.client.schema.handoff, lambda v: bool(v), 5)
    crash(fc, old)
    runner.join(30)
    record = result[0]
    assert record["state"] == OpState.SUCCEEDED, record
    assert fc.client.store.get_text(fc.client.schema.primary) == new
    fc.settled()
    assert [n for n in primaries(fc) if n != old] == [new]
    assert events == [f"{new} start"]
    assert not fc.client.store.exists(fc.client.schema.handoff)


class FakeFloatingIP:
    """The floating IP as the kernel would hold it, and every announcement."""

    def __init__(self) -> None:
        self.here = False
        self.announced = 0

    def take(self, announce: bool = False) -> bool:
        added, self.here = not self.here, True
        self.announced += int(added or announce)
        return added

    def release(self) -> bool:
        held, self.here = self.here, False
        return held

    def held(self) -> bool:
        return self.here


def primary_with_fake_ip(fc: FakeCluster, grace: float) -> tuple[str, Any, FakeFloatingIP]:
    """The primary's name, daemon and a floating IP it holds that the test can see, its
    suspension grace set."""
    holder = str(fc.client.store.get_text(fc.client.schema.primary))
    daemon = fc.daemons[holder]
    assert daemon.role is not None and daemon.ctx is not None
    ip = FakeFloatingIP()
    daemon.role.floating = ip                 # type: ignore[assignment]
    daemon.role.suspend_grace = grace
    daemon.role.step()
    return holder, daemon, ip


def test_a_primary_cut_off_from_zookeeper_lets_go(fc: FakeCluster) -> None:
    events = record_services(fc)
    holder, daemon, ip = primary_with_fake_ip(fc, 0)   # once the grace is over (here: none)
    assert ip.here
    daemon.ctx.store.suspend()                # type: ignore[attr-defined]
    assert not ip.here and events == [f"{holder} stop"]   # before any reconnect
    daemon.role.step()                        # the loop runs on: it holds nothing still
    assert not ip.here
    daemon.ctx.store.resume()                 # type: ignore[attr-defined]
    announced = ip.announced
    daemon.role.step()                        # the same session: the role was never lost
    assert ip.here and ip.announced > announced and events[-1] == f"{holder} start"


def test_a_suspension_shorter_than_the_grace_changes_nothing(fc: FakeCluster) -> None:
    """A client moving to another member of the ensemble: no flap of the IP or services."""
    events = record_services(fc)
    _holder, daemon, ip = primary_with_fake_ip(fc, 3600)   # back well within it
    daemon.ctx.store.suspend()                # type: ignore[attr-defined]
    assert ip.here and not daemon.role.cut_off
    daemon.ctx.store.resume()                 # type: ignore[attr-defined]
    assert daemon.role._letting_go is None    # the timer was called off
    daemon.role.step()
    assert ip.here and events == []


def test_a_primary_whose_session_expired_never_takes_the_ip_without_the_role(
        fc: FakeCluster) -> None:
    holder = fc.client.store.get_text(fc.client.schema.primary)
    daemon = fc.daemons[holder]
    assert daemon.role is not None
    ip = FakeFloatingIP()
    daemon.role.floating = ip                 # type: ignore[assignment]
    daemon.role.step()
    assert ip.here
    other = next(n for n in fc.names if n != holder)
    daemon.role.suspend_grace = 0
    daemon.role.suspended()                   # cut off, the grace over: let go
    assert not ip.here
    # meanwhile its session expired on the ensemble's side and another node won the role
    fc.client.store.delete(fc.client.schema.primary)
    fc.client.store.create(fc.client.schema.primary, other)
    daemon.role.expired()                     # what it hears when it reconnects
    daemon.role.step()
    assert not ip.here and not daemon.role.is_primary
    fc.backend.quiesce()
    assert fc.client.node(holder).coordinator_state == "secondary"
