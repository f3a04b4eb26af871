"""The node daemon against real ZooKeeper and a real libvirtd (test driver)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from pvc.core.store import decode_text
from pvc.hypervisor.adapter import LibvirtHypervisor, undefine_all
from pvc.node.daemon import NodeDaemon
from pvc.operations import holds
from pvc.vm import definition
from tests.conftest import make_config, write_config
from tests.integration.helpers import demo_xml

pytestmark = pytest.mark.integration


@pytest.fixture
def hv1_config(services, zk_root):
    return make_config(services, zk_root, "hv1")


@pytest.fixture
def hv(hv1_config):
    """A connection held by the test: the test driver keeps its state while one is open."""
    h = LibvirtHypervisor(hv1_config.node.libvirt_uri).connect()
    yield h
    undefine_all(hv1_config.node.libvirt_uri)
    h.close()


def start_daemon(cfg) -> tuple[NodeDaemon, threading.Thread]:
    d = NodeDaemon(cfg)
    d.start()
    t = threading.Thread(target=d.run, daemon=True)
    t.start()
    return d, t


def stop_daemon(d: NodeDaemon, t: threading.Thread) -> None:
    d.stop()
    t.join(10)
    d.shutdown()


def test_registration_publishes_states_and_resources(cluster, hv1_config, hv) -> None:
    d, t = start_daemon(hv1_config)
    try:
        node = cluster.node("hv1")
        assert (node.daemon_state, node.domain_state) == ("run", "ready")
        assert node.coordinator_state in ("primary", "secondary")
        assert node.hypervisor == "test" and node.live_migration is False
        assert node.mem_total > 0 and node.vms == 0 and node.keepalive > 0
        assert cluster.store.get_text(cluster.schema.primary) == "hv1"
    finally:
        stop_daemon(d, t)
    assert cluster.node("hv1").daemon_state == "stop"
    assert cluster.store.get_text(cluster.schema.primary) is None


def test_reconcile_at_start(cluster, hv1_config, hv) -> None:
    """Start what should run here; stop what runs here but belongs elsewhere or is stopped."""
    mine = definition.define(cluster, demo_xml("mine"), node="hv1", initial_state="start",
                             allow_unknown_nodes=True)
    elsewhere = definition.define(cluster, demo_xml("elsewhere"), node="hv2", initial_state="start",
                                  allow_unknown_nodes=True)
    stopped = definition.define(cluster, demo_xml("stopped"), node="hv1", allow_unknown_nodes=True)
    for vm in (elsewhere, stopped):
        hv.start(f"<domain type='test'><name>{vm.name}</name><uuid>{vm.uuid}</uuid>"
                 "<memory unit='MiB'>16</memory><os><type>hvm</type></os></domain>", vm.uuid)
    d, t = start_daemon(hv1_config)
    try:
        result = d.last_reconcile
        assert result.started == ["mine"]
        assert sorted(result.stopped) == ["elsewhere (assigned to hv2)",
                                          "stopped (desired state is stop)"]
        assert set(hv.running()) == {mine.uuid}
        node = cluster.node("hv1")
        assert set(node.domains) == {mine.uuid} and node.mem_allocated == 16
    finally:
        stop_daemon(d, t)


def test_reconcile_after_a_restart_brings_back_a_lost_vm(cluster, hv1_config, hv) -> None:
    vm = definition.define(cluster, demo_xml("web"), node="hv1", initial_state="start",
                           allow_unknown_nodes=True)
    d, t = start_daemon(hv1_config)
    stop_daemon(d, t)
    hv.destroy(vm.uuid)                       # the VM died while the daemon was down
    assert not hv.is_running(vm.uuid)
    d, t = start_daemon(hv1_config)
    try:
        assert d.last_reconcile.started == ["web"]
        assert hv.is_running(vm.uuid)
    finally:
        stop_daemon(d, t)


def test_domain_events_update_observed_state(cluster, hv1_config, hv) -> None:
    vm = definition.define(cluster, demo_xml("web"), node="hv1", initial_state="start",
                           allow_unknown_nodes=True)
    d, t = start_daemon(hv1_config)
    try:
        path = cluster.schema.node_field("hv1", "domains")
        cluster.store.wait_for(path, lambda v: vm.uuid in (v or {}), timeout=10)
        # in maintenance the daemon does not start it again (which could come before a
        # watch reads the published domains)
        holds.maintenance_on(cluster)
        hv.destroy(vm.uuid)   # behind pvc's back: the daemon hears libvirt's event
        cluster.store.wait_for(path, lambda v: vm.uuid not in (v or {}), timeout=10)
        holds.maintenance_off(cluster)   # and once it is over, it is started again
        cluster.store.wait_for(path, lambda v: vm.uuid in (v or {}), timeout=10)
    finally:
        if cluster.maintenance() is not None:
            holds.maintenance_off(cluster)
        stop_daemon(d, t)


def test_hypervisor_disabled_node_runs_nothing(services, zk_root, cluster) -> None:
    cfg = make_config(services, zk_root, "hv3", enable_hypervisor=False)
    definition.define(cluster, demo_xml("web"), node="hv3", initial_state="start",
                      allow_unknown_nodes=True)
    d, t = start_daemon(cfg)
    try:
        node = cluster.node("hv3")
        assert node.daemon_state == "run" and not node.enable_hypervisor
        assert not node.is_target() and node.domains == {}
    finally:
        stop_daemon(d, t)


def test_killed_daemon_is_seen_dead_once_its_session_expires(cluster, hv1_config, hv,
                                                             tmp_path: Path) -> None:
    cfg_file = write_config(hv1_config, tmp_path / "hv1.yaml")
    proc = subprocess.Popen([sys.executable, "-m", "workers.node_daemon", "--config",
                             str(cfg_file)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        alive = cluster.schema.node_alive("hv1")
        cluster.store.wait_for(cluster.schema.node_field("hv1", "daemon_state"),
                               lambda v: v == "run", timeout=30, decode=decode_text)
        assert cluster.node("hv1").daemon_state == "run"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        cluster.store.wait_for(alive, lambda v: v is None, timeout=30, decode=decode_text)
        assert cluster.node("hv1").daemon_state == "dead"
    finally:
        if proc.poll() is None:
            proc.kill()
