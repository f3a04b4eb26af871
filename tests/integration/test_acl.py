"""ZooKeeper's doors: the server refuses every session that has not logged in over SASL, and
pvc's znodes belong to the cluster's identity, so even another user the server knows (Patroni,
in production) can neither read nor write them."""
from __future__ import annotations

from dataclasses import replace
from typing import Any, Iterator

import pytest
from kazoo.client import KazooClient
from kazoo.exceptions import KazooException, NoAuthError
from kazoo.handlers.threading import KazooTimeoutError

from pvc.core.cluster import Cluster
from pvc.core.schema import Schema
from pvc.core.store import NotAllowed
from pvc.core.zookeeper import ZkStore, sasl_login
from pvc.vm import definition
from tests.integration.helpers import demo_xml

pytestmark = pytest.mark.integration


def _client(services: Any, **kw: Any) -> KazooClient:
    zk = KazooClient(hosts=services.zk_hosts, timeout=2, **kw)
    zk.start(timeout=10)
    return zk


@pytest.fixture
def other(services: Any) -> Iterator[KazooClient]:
    """A client logged in as another user the server knows (as Patroni is)."""
    user, _, password = services.zk_other_auth_file.read_text().strip().partition(":")
    zk = _client(services, sasl_options=sasl_login(user, password))
    yield zk
    zk.stop()
    zk.close()


STRANGERS = {
    "no credentials": {},
    "a digest identity of its own": {"auth_data": [("digest", "evil:guess")]},
    "pvc's user with a wrong password": {"sasl_options": sasl_login("pvc", "guess")},
}


@pytest.mark.parametrize("who", list(STRANGERS))
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_session_that_has_not_logged_in_gets_nothing(services, cluster, zk_root, who):
    definition.define(cluster, demo_xml("secret-vm"))
    try:
        zk = _client(services, **STRANGERS[who])
    except (KazooException, KazooTimeoutError):
        return                                            # refused before any request
    try:
        for request in (lambda: zk.get_children("/"),
                        lambda: zk.get_children(f"{zk_root}/vms"),
                        lambda: zk.create("/intruder", b"x"),
                        lambda: zk.create("/zookeeper/intruder", b"x"),
                        lambda: zk.create("/service/pvc/failover", b"x", makepath=True)):
            with pytest.raises((KazooException, KazooTimeoutError)):
                request()
    finally:
        zk.stop()
        zk.close()
    assert cluster.store.children("/") == sorted(cluster.store.children("/"))
    assert "intruder" not in cluster.store.children("/")
    assert not cluster.store.exists("/service/pvc/failover")


def test_another_known_user_can_neither_read_nor_write_pvcs_tree(cluster, other, zk_root):
    vm = definition.define(cluster, demo_xml("secret-vm"))
    for read in (lambda: other.get(f"{zk_root}/vms/{vm.uuid}"),
                 lambda: other.get_children(f"{zk_root}/vms"),
                 lambda: other.get(f"{zk_root}/schema")):
        with pytest.raises(NoAuthError):
            read()
    for write in (lambda: other.set(f"{zk_root}/vms/{vm.uuid}", b"{}"),
                  lambda: other.create(f"{zk_root}/vms/intruder", b"x"),
                  lambda: other.delete(f"{zk_root}/vm_names/secret-vm")):
        with pytest.raises(NoAuthError):
            write()
    assert cluster.vm("secret-vm").value.uuid == vm.uuid          # untouched


def test_a_wrong_identity_gets_one_clear_error(client_config, tmp_path):
    Cluster.connect(client_config).close()                       # the root exists, guarded
    wrong = tmp_path / "wrong.auth"
    wrong.write_text("pvc:not-the-password\n")
    wrong.chmod(0o600)
    zk = replace(client_config.cluster.zookeeper, auth_file=str(wrong))
    cfg = replace(client_config, cluster=replace(client_config.cluster, zookeeper=zk))
    with pytest.raises(NotAllowed) as err:
        Cluster.connect(cfg)
    assert "password" in str(err.value) and "\n" not in str(err.value)


def test_cluster_secure_closes_a_cluster_made_without_acls(client_config, other, zk_root):
    zk = client_config.cluster.zookeeper
    old = ZkStore(zk.hosts, zk.timeout, zk.session_timeout, client_config.zookeeper_auth())
    old.acl = old.zk.default_acl = None                          # as pvc made znodes before ACLs
    open_cluster = Cluster(old.connect(), Schema(zk_root), client_config)
    open_cluster.ensure_schema()
    definition.define(open_cluster, demo_xml("old-vm"))
    open_cluster.close()
    assert other.get_children(f"{zk_root}/vms")                  # open before
    secured = Cluster.connect(client_config)
    try:
        changed = secured.store.secure(zk_root)
        assert changed >= 5
        assert secured.store.secure(zk_root) == 0                 # idempotent
        assert secured.vm("old-vm").value.name == "old-vm"
    finally:
        secured.close()
    with pytest.raises(NoAuthError):
        other.get_children(f"{zk_root}/vms")


def _secure(cfg: Any, tmp_path: Any) -> tuple[int, dict[str, Any]]:
    import json

    from tests.conftest import run_pvc, write_config
    res = run_pvc("--config", str(write_config(cfg, tmp_path / "pvc.yaml")), "cluster",
                  "secure", "--format", "json")
    assert "Traceback" not in res.stderr, res.stderr
    return res.returncode, json.loads(res.stdout)


def test_cluster_secure_finds_the_doors_closed(client_config, tmp_path):
    code, out = _secure(client_config, tmp_path)
    assert code == 0 and out["doors"] and all(d["closed"] for d in out["doors"]), out


def test_cluster_secure_names_what_an_old_zookeeper_leaves_open(client_config, tmp_path):
    """A ZooKeeper set up before pvc asked for logins: open sessions, every four-letter word.
    pvc still closes its own znodes, and says what to set on the servers (exit 1)."""
    from pvc.sandbox import procs, services
    port = 12191
    spec = services.zookeeper_spec(tmp_path / "zk", port, {"pvc": "x"})
    cfg_file = tmp_path / "zk" / "zoo.cfg"
    cfg_file.write_text("".join(line + "\n" for line in cfg_file.read_text().splitlines()
                                if not line.startswith(("enforce.", "4lw.", "authProvider")))
                        + "4lw.commands.whitelist=*\n")
    pid = services.spawn(spec)
    try:
        services.wait_zookeeper(port, pid, spec.log)
        zk = replace(client_config.cluster.zookeeper, hosts=f"127.0.0.1:{port}", sasl=False)
        cfg = replace(client_config, cluster=replace(client_config.cluster, zookeeper=zk))
        code, out = _secure(cfg, tmp_path)
    finally:
        procs.stop(pid)
    assert code == 1
    open_doors = {d["door"]: d["remedy"] for d in out["doors"] if not d["closed"]}
    assert "enforce.auth.enabled=true" in open_doors["ZooKeeper refuses sessions without a login"]
    assert any("4lw.commands.whitelist" in remedy for remedy in open_doors.values())
