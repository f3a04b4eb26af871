"""Coordinators on a sandbox with its database (Patroni + PostgreSQL on each coordinator, in
the nodes' network namespaces): the switchover an operator asks for, and the faults around it —
the primary's daemon dies, a Patroni member goes down, either side dies mid-switchover. After
each: exactly one primary, the floating IP on it alone, the database leader on it, every VM
running exactly once, nothing stuck."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any, Iterator

import pytest

from pvc.network import ip
from tests.faults.conftest import Faults, settled_sandbox, until

pytestmark = pytest.mark.faults

OFFSET = "1300"
NAME = "test-coordinators"


@pytest.fixture(scope="module")
def coord() -> Iterator[Faults]:
    # daemons are hung here for longer than fencing waits: these tests are about the primary
    with settled_sandbox(NAME, OFFSET, 6, database=True,
                         env={"PVC_CLUSTER__FENCING__ENABLED": "false"}) as f:
        yield f


@pytest.fixture
def c(coord: Faults) -> Iterator[Faults]:
    """A test starts with one settled primary and must leave it so."""
    settled(coord)
    yield coord
    settled(coord)


# ------------------------------------------------------------------------------ the truth

def status(f: Faults) -> dict[str, Any]:
    return f.pvc.cluster_status()


def fip(f: Faults) -> str:
    return f.layout.net.floating_ip


def holders_of_the_ip(f: Faults) -> list[str]:
    """The nodes whose namespace has the floating IP on its cluster interface (asked of the
    kernel, not of pvc)."""
    net = f.layout.net
    return [n for n in f.nodes if ip.has_address("cl0", fip(f), netns=net.ns(n))]


def primaries(f: Faults) -> list[str]:
    return [n["name"] for n in f.pvc.json("node", "list") if n["coordinator_state"] == "primary"]


def answering_node(f: Faults) -> str:
    """The node whose interface answers the floating IP, as a client on the cluster network
    sees it: ping it from the client namespace, then match the neighbour entry's MAC."""
    net = f.layout.net
    address = fip(f).split("/")[0]
    ping = subprocess.run(ip.in_netns(net.client, ["ping", "-c", "1", "-W", "2", address]),
                          capture_output=True, text=True, timeout=10)
    assert ping.returncode == 0, ping.stdout + ping.stderr
    neigh = ip.run("neigh", "show", address, netns=net.client)
    mac = neigh.split("lladdr")[1].split()[0]
    owners = [n for n in f.nodes if mac in ip.run("link", "show", "cl0", netns=net.ns(n))]
    assert len(owners) == 1, (neigh, owners)
    return owners[0]


def one_primary_everywhere(f: Faults) -> str | None:
    """The primary if pvc, the kernel and the database agree on exactly one node (None while
    they do not)."""
    st = status(f)
    primary = st["primary"]
    if not primary or primaries(f) != [primary] or holders_of_the_ip(f) != [primary]:
        return None
    if st["database"].get("leader") != primary or not st["healthy"]:
        return None
    return primary


def settled(f: Faults) -> str:
    primary = until("exactly one primary, with the floating IP and the database leader",
                    lambda: one_primary_everywhere(f))
    f.settled()
    return primary


def other(f: Faults, node: str) -> str:
    return next(n for n in f.nodes if n != node)


# ------------------------------------------------------------------------------ switchover

def test_the_primary_holds_the_floating_ip_and_the_database_leader(c: Faults) -> None:
    primary = one_primary_everywhere(c)
    assert primary is not None
    st = status(c)
    assert st["floating_ip"] == fip(c)
    assert {m["name"] for m in st["database"]["members"]} == set(c.nodes)
    assert answering_node(c) == primary
    states = {n["name"]: n["coordinator_state"] for n in c.pvc.json("node", "list")}
    assert sorted(states.values()) == ["primary", "secondary", "secondary"]


def test_switchover_moves_the_ip_and_the_database_leader(c: Faults) -> None:
    old = one_primary_everywhere(c)
    assert old is not None
    new = other(c, old)
    res = c.pvc("node", "primary", new, "--wait", "--format", "json")
    record = json.loads(res.stdout)
    assert record["state"] == "succeeded", record
    assert f"{new} is the primary (was {old})" in record["message"]
    assert f"database leader moved from {old} to {new}" in record["message"]
    # the phases, in the seed's order, in the operation record
    phases = [line.split()[1] for line in (h[2] for h in record["history"])
              if line.startswith("switchover: ")]
    assert phases == ["requested", "services-stopped", "ip-taken", "released",
                      "primary-taken", "database-moved", "done"]
    st = status(c)
    assert st["primary"] == new and st["database"]["leader"] == new
    assert holders_of_the_ip(c) == [new]
    assert answering_node(c) == new
    # the former leader rejoins as a replica after the operation ended (it need not wait)
    until("the former leader streaming again", lambda: status(c)["healthy"])


def test_secondary_hands_the_role_on(c: Faults) -> None:
    old = one_primary_everywhere(c)
    record = json.loads(c.pvc("node", "secondary", str(old), "--wait", "--format",
                              "json").stdout)
    assert record["state"] == "succeeded", record
    assert status(c)["primary"] not in ("", old)


def test_a_second_switchover_is_refused_while_one_runs(c: Faults) -> None:
    old = one_primary_everywhere(c)
    assert old is not None
    first, second = [n for n in c.nodes if n != old][:2]
    op = c.submit("node", "primary", first)
    line = c.pvc.error("node", "primary", second)
    assert "in progress" in line or "already has operation" in line, line
    assert c.finished(op)["state"] == "succeeded"


# ------------------------------------------------------------------------------ faults

def test_the_primarys_daemon_dying_elects_another_and_the_database_follows(c: Faults) -> None:
    old = one_primary_everywhere(c)
    assert old is not None
    with c.paused(f"node-{old}"):        # hung: its session expires, it is dead
        new = until("another primary", lambda: (p := status(c)["primary"]) not in ("", old)
                    and p)
        until("the floating IP on the new primary", lambda: new in holders_of_the_ip(c))
        until("the database leader follows",
              lambda: status(c)["database"].get("leader") == new)
        assert answering_node(c) == new
    # the old daemon wakes on an expired session: it lets the role and the IP go
    assert settled(c) == new
    assert c.pvc.json("node", "info", old)["coordinator_state"] == "secondary"


def test_a_killed_primary_daemon_leaves_exactly_one_primary(c: Faults) -> None:
    old = one_primary_everywhere(c)
    c.killed(f"node-{old}")             # SIGKILL; the supervisor starts it again at once
    settled(c)


def test_the_primarys_database_member_down(c: Faults) -> None:
    primary = one_primary_everywhere(c)
    assert primary is not None
    c.pvc("sandbox", "process", "stop", f"patroni-{primary}", "--port-offset", OFFSET)
    try:
        reasons = until("the cluster says its database is degraded", lambda: [
            r for r in status(c)["reasons"] if r.startswith("database: the primary's member")])
        assert primary in reasons[0]
        until("Patroni elects another leader",
              lambda: status(c)["database"].get("leader") not in ("", primary))
        # the primary stays where it is; the database cannot follow it meanwhile
        assert status(c)["primary"] == primary and holders_of_the_ip(c) == [primary]
    finally:
        c.pvc("sandbox", "process", "start", f"patroni-{primary}", "--port-offset", OFFSET)
    # back and healthy: pvc moves the leader back to the primary's member
    assert settled(c) == primary


def test_a_replica_member_down_is_reported(c: Faults) -> None:
    primary = one_primary_everywhere(c)
    assert primary is not None
    replica = other(c, primary)
    c.pvc("sandbox", "process", "stop", f"patroni-{replica}", "--port-offset", OFFSET)
    try:
        until("the cluster says a member is down", lambda: any(
            r.startswith(f"database: member {replica} is") for r in status(c)["reasons"]))
        assert status(c)["database"]["leader"] == primary
    finally:
        c.pvc("sandbox", "process", "start", f"patroni-{replica}", "--port-offset", OFFSET)
    assert settled(c) == primary


def test_the_old_primary_dying_mid_switchover(c: Faults) -> None:
    old = one_primary_everywhere(c)
    assert old is not None
    new = other(c, old)
    with c.paused(f"node-{old}"):        # it cannot stop its services or let the IP go
        op = c.submit("node", "primary", new)
        record = c.finished(op)
        assert record["state"] == "succeeded", record
        assert status(c)["primary"] == new and new in holders_of_the_ip(c)
    assert settled(c) == new


def test_the_new_primary_dying_mid_switchover(c: Faults) -> None:
    old = one_primary_everywhere(c)
    assert old is not None
    new = other(c, old)
    with c.paused(f"node-{new}"):        # its worker takes the operation; its daemon hangs
        op = c.submit("node", "primary", new)
        record = c.finished(op)
        assert record["state"] == "failed", record
        assert "abandoned" in record["error"] or "stalled" in record["error"], record
        until("the old primary serves again",
              lambda: c.pvc.json("node", "info", old)["coordinator_state"] == "primary")
        assert status(c)["primary"] == old and holders_of_the_ip(c) == [old]
    assert settled(c) == old


def test_the_database_leader_moved_behind_pvcs_back_comes_back(c: Faults) -> None:
    primary = one_primary_everywhere(c)
    assert primary is not None
    from pvc.coordinator.patroni import Patroni
    from pvc.core import config as configmod
    net = c.layout.net
    patroni = Patroni([f"http://{net.node_address(c.nodes.index(n) + 1)}:8008" for n in c.nodes],
                      auth=configmod.load(c.layout.client_config).patroni_auth())
    elsewhere = other(c, primary)
    patroni.switchover(elsewhere)           # as patronictl would: pvc is not asked
    assert status(c)["database"]["leader"] == elsewhere
    assert settled(c) == primary



# ------------------------------------------------------------------------------ DNS

def dig(f: Faults, name: str) -> str:
    """What PowerDNS answers on the floating IP (as a client on the cluster network would
    ask it: from the host, through its link to the switch)."""
    res = subprocess.run(["dig", "+short", "+time=1", "+tries=1", f"@{fip(f).split('/')[0]}",
                          f"{name}.sandbox.pvc"], capture_output=True, text=True, timeout=10)
    return res.stdout.strip()


def zone_writer(f: Faults) -> str:
    """The node whose DNS aggregator last wrote the zone (kept beside it in the database)."""
    import psycopg2
    net = f.layout.net
    password = f.layout.secret("dns.password").read_text().strip()
    hosts = ",".join(net.node_address(i + 1) for i in range(len(f.nodes)))
    conn = psycopg2.connect(host=hosts, port=5432, dbname="pvcdns", user="pdns",
                            password=password, connect_timeout=3)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT m.content FROM domainmetadata m JOIN domains d "
                        "ON d.id = m.domain_id WHERE d.name = 'sandbox.pvc' "
                        "AND m.kind = 'X-PVC-WRITER'")
            row = cur.fetchone()
            return row[0] if row else ""
    finally:
        conn.close()


def test_dns_publishes_leases_added_changed_removed_and_follows_the_primary(
        c: Faults, tmp_path: Path) -> None:
    from tests.e2e.test_networks import dhcp_client
    primary = one_primary_everywhere(c)
    assert primary is not None
    elsewhere = other(c, primary)
    assert dig(c, "ns1") == "10.100.0.1"
    with dhcp_client(c.pvc, elsewhere, "app") as app:
        first = app.lease()
        until("app's lease answered by PowerDNS", lambda: dig(c, "app") == first, 20)
        assert zone_writer(c) == primary
        with dhcp_client(c.pvc, primary, "app") as again:      # the name moves (changed)
            second = again.lease()
            assert second != first
            until("the changed address answered", lambda: dig(c, "app") == second, 20)
        with dhcp_client(c.pvc, primary, "gone") as gone:        # a name that goes (removed)
            gone_ip = gone.hold(tmp_path)
            until("gone's lease answered", lambda: dig(c, "gone") == gone_ip, 20)
            gone.release()
            until("the released name gone", lambda: dig(c, "gone") == "", 20)
        # a switchover: the aggregator moves with the primary and keeps publishing
        c.pvc("node", "primary", elsewhere, "--wait")
        with dhcp_client(c.pvc, primary, "after") as after:
            third = after.lease()
            until("a lease after the switchover answered", lambda: dig(c, "after") == third,
                  20)
        assert zone_writer(c) == elsewhere                     # written from the new primary
    settled(c)


# ------------------------------------------------------------------------------ the doors

def test_a_stranger_cannot_write_to_patronis_api(c: Faults) -> None:
    leader = status(c)["database"]["leader"]
    for n in c.nodes:
        got = c.attack("patroni", f"http://{c.layout.net.node_address(c.nodes.index(n) + 1)}:8008")
        assert got and set(got.values()) == {401}, (n, got)
    assert status(c)["database"]["leader"] == leader
    assert not Path("/tmp/pvc-attacker-was-here").exists()


def test_a_stranger_can_neither_read_nor_write_patronis_znodes(c: Faults) -> None:
    got = c.attack("zookeeper", c.layout.zk_hosts(c.nodes))
    assert "allowed" not in got.values(), got
    with c.client() as cluster:           # pvc sees what the stranger did not make
        assert "intruder" not in cluster.store.children("/")
        assert not cluster.store.exists("/service/pvc/failover")
        assert cluster.store.children(f"/service/pvc{c.layout.port_offset}")  # Patroni's own


@pytest.mark.parametrize("program, said", [
    ("pdns", "PowerDNS does not answer on"),
    ("patroni", "Patroni's REST API does not answer on"),
])
def test_a_service_around_pvc_that_stops_serving_degrades_the_cluster(
        c: Faults, program: str, said: str) -> None:
    primary = status(c)["primary"]
    victim = other(c, primary)                      # the database leader and DNS stay put
    name = f"{program}-{victim}"
    c.layout.supervisor.stop_program(name)
    try:
        until(f"{name} to show in cluster status", lambda: any(
            r.startswith(f"node {victim}: {said}") for r in status(c)["reasons"]))
    finally:
        c.layout.supervisor.start_program(name)
    until("the cluster healthy again", lambda: status(c)["healthy"], 90)


# ------------------------------------------------------------------------------ power

def leftovers(f: Faults, node: str) -> list[int]:
    """Processes of node still alive (its ZooKeeper member, Redis and Sentinel, PostgreSQL,
    PowerDNS, dnsmasq, guests, pvc's)."""
    from pvc.sandbox import procs
    base = str(f.layout.dir)
    return sorted({pid for pattern in (f"{base}/nodes/{node}/", f"{base}/db/{node}/",
                                       f"{base}/db/pdns-{node}/", f"{base}/zookeeper/{node}/",
                                       f"{base}/redis/{node}/", f"{base}/sentinel/{node}/")
                   for pid in procs.processes_mentioning(pattern)})


def all_in_one(c: Faults) -> str:
    """Make one coordinator at once the primary, the database leader, the ZooKeeper leader
    and the broker's master; return it."""
    leader = until("a ZooKeeper leader", c.zookeeper_leader)
    if one_primary_everywhere(c) != leader:
        c.pvc("node", "primary", leader, "--wait")
        settled(c)
    c.make_redis_master(leader)
    assert one_primary_everywhere(c) == leader and c.zookeeper_leader() == leader
    return leader


def test_power_off_of_the_primary_takes_everything_it_held(c: Faults) -> None:
    """The coordinator that is at once primary, database leader, ZooKeeper leader and Redis
    master, powered off through pvc (a fence run by another node): nothing of it outlives the
    power (processes, addresses, its link); an operation submitted at once completes; a new
    primary takes the floating IP and the database leader, the ensemble a new leader, the
    broker a new master; its VMs run once elsewhere; after power on and unflush it comes
    back as a secondary."""
    old = all_in_one(c)
    home = sorted(vm for vm, nodes in c.where().items() if nodes == [old])
    alive = [n for n in c.nodes if n != old]
    elsewhere = next(vm for vm, nodes in sorted(c.where().items()) if nodes != [old])
    c.pvc("node", "power", old, "off", "--yes", "--reason", "power test")
    # submitted while the ensemble, the broker and the database elect: ZooKeeper may refuse
    # for a moment (nothing changed: asked again), the broker's failover is ridden out
    op = until("an operation submitted", lambda: c.submit("vm", "restart", elsewhere))
    assert leftovers(c, old) == []
    ns = c.layout.net.ns(old)
    assert ip.run("-4", "address", "show", "scope", "global", netns=ns).strip() == ""
    assert "state DOWN" in ip.run("link", "show", "cl0", netns=ns)

    def new_primary() -> str | None:
        st = status(c)
        primary = st["primary"]
        if primary in ("", old) or holders_of_the_ip(c) != [primary]:
            return None
        return primary if st["database"].get("leader") == primary else None
    new = until("a new primary with the floating IP and the database leader", new_primary)
    assert answering_node(c) == new
    assert c.zookeeper_leader() in alive
    until("a new broker master", lambda: c.redis_master_node() in alive)
    assert c.finished(op)["state"] == "succeeded"
    for vm in home:
        until(f"{vm} running once elsewhere", lambda vm=vm: sum(
            vm in {d.name for d in c.hv(n).running().values()} for n in alive) == 1)
    c.pvc("node", "power", old, "on")
    c._hvs.pop(old, None)                      # its libvirtd is a new process
    until(f"{old} back and unflushed", lambda: c.pvc(
        "node", "unflush", old, "--wait", "--wait-timeout", "120", ok=False).returncode == 0)


def dns_answers(f: Faults, name: str, timeout: float) -> bool:
    """Whether PowerDNS answers on the floating IP within timeout (dnspython: sub-second
    timeouts, which dig has not)."""
    import dns.exception
    import dns.message
    import dns.query
    query = dns.message.make_query(f"{name}.sandbox.pvc", "A")
    try:
        return bool(dns.query.udp(query, fip(f).split("/")[0], timeout=timeout).answer)
    except (dns.exception.DNSException, OSError):
        return False


def test_a_primary_cut_off_the_network_lets_go_of_the_floating_ip(c: Faults) -> None:
    """The primary's link goes down for 30 s. Sampled every 200 ms: no two namespaces hold
    the floating IP later than the session timeout and the handoff delay after the cut; a new
    primary holds it, DNS through it answers within 2 s of the takeover; when the link is
    back the old primary never takes it again (it lost the role with its session)."""
    import time

    from pvc.core import config as configmod
    old = one_primary_everywhere(c)
    assert old is not None and dig(c, "ns1")
    cfg = configmod.load(c.layout.client_config).cluster
    bound = cfg.zookeeper.session_timeout + cfg.handoff_delay
    ns = c.layout.net.ns(old)
    samples: list[tuple[float, list[str], bool]] = []
    ip.set_link_up("cl0", False, ns)
    cut = time.monotonic()
    try:
        while time.monotonic() - cut < 30:
            samples.append((time.monotonic() - cut, holders_of_the_ip(c),
                            dns_answers(c, "ns1", 0.15)))
            time.sleep(0.05)   # with the query's bound: a sample every 200 ms at most
    finally:
        ip.set_link_up("cl0", True, ns)
    twice = [(round(t, 1), h) for t, h, _dns in samples if len(h) > 1]
    assert all(t <= bound for t, _h in twice), twice
    late = [h for t, h, _dns in samples if t > bound]
    new = late[-1][0] if late and len(late[-1]) == 1 else ""
    assert new and new != old, samples[-5:]
    assert all(h == [new] for h in late[-20:]), late[-20:]     # held by the new one, alone
    takeover = next(t for t, h, _dns in samples if new in h)
    answered = [t for t, h, dns_ok in samples if dns_ok and t >= takeover]
    assert answered and answered[0] - takeover <= 2.0, (takeover, answered[:3])
    until("the old primary back as a secondary", lambda: c.pvc.json(
        "node", "info", old)["coordinator_state"] == "secondary")
    assert holders_of_the_ip(c) == [new]
    until("DNS through the floating IP", lambda: dig(c, "ns1"), 10)
