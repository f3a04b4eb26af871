"""The DNS aggregator writes only while it is active (this node the primary): no connection
to the database at all otherwise. Its database and zone transfers are replaced here by
recorders (a pure unit test; the real ones are exercised in tests/faults/test_coordinators.py)."""
from __future__ import annotations

from typing import Any, Iterator

import pytest

from pvc.core.config import ClusterConfig, Config, DnsConfig, NodeConfig
from pvc.network import managed
from pvc.node import dns
from tests.fakes.cluster import FakeCluster


@pytest.fixture
def fc() -> Iterator[FakeCluster]:
    c = FakeCluster(nodes=1)
    yield c
    c.stop()


class Db:
    def __init__(self) -> None:
        self.connections = 0
        self.zones: list[str] = []

    def connect(self, _dsn: str) -> Any:
        self.connections += 1
        return self

    def close(self) -> None:
        pass


def test_the_aggregator_touches_the_database_only_while_active(
        fc: FakeCluster, monkeypatch: pytest.MonkeyPatch) -> None:
    managed.add(fc.client, managed.ManagedNetwork(100, "sandbox.pvc", "10.100.0.0/24",
                                                  "10.100.0.1"))
    db = Db()
    monkeypatch.setattr(dns.postgres, "connect", db.connect)
    monkeypatch.setattr(dns, "zone_records", lambda net: {dns.Record(net.domain, "NS", "x", 1)})
    monkeypatch.setattr(dns, "write_zone", lambda conn, d, r, w: db.zones.append(d) or True)
    monkeypatch.setattr(dns, "drop_other_zones", lambda conn, keep: [])
    config = Config(cluster=ClusterConfig(dns=DnsConfig(enabled=True)),
                    node=NodeConfig(name="hv1"))
    agg = dns.DnsAggregator(fc.client, config)
    assert agg.sync() == [] and db.connections == 0            # never started
    agg.start()
    agg.stop()
    assert agg.sync() == [] and db.connections <= 1            # stopped: nothing more
    before = db.connections
    agg.active = True                                          # as start() leaves it
    assert agg.sync() == ["sandbox.pvc"] and db.connections == before + 1
    agg.active = False

