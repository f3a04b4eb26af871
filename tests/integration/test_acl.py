"""ZooKeeper ACLs: pvc's znodes belong to the cluster's identity; a client without it can
neither read nor write them."""
from __future__ import annotations

from dataclasses import replace

import pytest
from kazoo.client import KazooClient
from kazoo.exceptions import NoAuthError

from pvc.core.cluster import Cluster
from pvc.core.store import NotAllowed
from pvc.vm import definition
from tests.integration.helpers import demo_xml

pytestmark = pytest.mark.integration


@pytest.fixture
def stranger(services):
    """A plain kazoo client with no credentials."""
    zk = KazooClient(hosts=services.zk_hosts)
    zk.start(timeout=10)
    yield zk
    zk.stop()
    zk.close()


def test_an_unauthenticated_client_can_neither_read_nor_write(cluster, stranger, zk_root):
    vm = definition.define(cluster, demo_xml("secret-vm"))
    for read in (lambda: stranger.get(f"{zk_root}/vms/{vm.uuid}"),
                 lambda: stranger.get_children(f"{zk_root}/vms"),
                 lambda: stranger.get(f"{zk_root}/schema")):
        with pytest.raises(NoAuthError):
            read()
    for write in (lambda: stranger.set(f"{zk_root}/vms/{vm.uuid}", b"{}"),
                  lambda: stranger.create(f"{zk_root}/vms/intruder", b"x"),
                  lambda: stranger.delete(f"{zk_root}/vm_names/secret-vm")):
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
    assert "missing or wrong" in str(err.value) and "\n" not in str(err.value)


def test_cluster_secure_closes_a_cluster_made_without_acls(client_config, stranger):
    zk = replace(client_config.cluster.zookeeper, auth_file="")
    open_cfg = replace(client_config, cluster=replace(client_config.cluster, zookeeper=zk))
    open_cluster = Cluster.connect(open_cfg)
    definition.define(open_cluster, demo_xml("old-vm"))
    root = open_cluster.schema.root
    open_cluster.close()
    assert stranger.get_children(f"{root}/vms")                   # open before
    secured = Cluster.connect(client_config)
    try:
        changed = secured.store.secure(root)
        assert changed >= 5
        assert secured.store.secure(root) == 0                    # idempotent
        assert secured.vm("old-vm").value.name == "old-vm"
    finally:
        secured.close()
    with pytest.raises(NoAuthError):
        stranger.get_children(f"{root}/vms")
