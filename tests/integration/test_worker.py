"""VM lifecycle through a real Celery worker on the node's own queue (Redis broker)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pvc.core import states
from pvc.core.store import decode_text
from pvc.hypervisor.adapter import LibvirtHypervisor, undefine_all
from pvc.operations.requests import abandon
from pvc.sandbox import procs
from pvc.vm import definition, lifecycle
from tasks.client import submit
from tests.conftest import make_config, write_config
from tests.integration.helpers import demo_xml

pytestmark = pytest.mark.integration


@pytest.fixture
def node_hv1(services, zk_root, cluster, tmp_path: Path):
    """hv1's daemon and worker as separate processes, as on a real node."""
    cfg = make_config(services, zk_root, "hv1")
    path = write_config(cfg, tmp_path / "hv1.yaml")
    hv = LibvirtHypervisor(cfg.node.libvirt_uri).connect()
    log = tmp_path / "worker.log"
    daemon = subprocess.Popen([sys.executable, "-m", "workers.node_daemon", "--config",
                               str(path)], stderr=subprocess.DEVNULL, start_new_session=True)
    worker = procs.spawn([sys.executable, "-m", "workers.worker", "--config", str(path)], log)
    try:
        cluster.store.wait_for(cluster.schema.node_field("hv1", "daemon_state"),
                               lambda v: v == "run", timeout=30, decode=decode_text)
        procs.wait_until("worker", lambda: "ready." in log.read_text(), 60, worker, log)
        yield cfg, hv
    finally:
        procs.stop(worker)
        procs.stop(daemon.pid)
        undefine_all(cfg.node.libvirt_uri)
        hv.close()


def run_action(cluster, cfg, ref: str, action: str) -> dict:
    req = lifecycle.request(cluster, ref, action)
    assert req.submit
    submit(cfg, req.op)
    return cluster.store.wait_for(cluster.schema.operation(req.op.id),
                                  lambda v: v["state"] in states.OP_TERMINAL, timeout=60)


def test_start_stop_shutdown_restart_through_the_worker(cluster, node_hv1) -> None:
    cfg, hv = node_hv1
    vm = definition.define(cluster, demo_xml("web1"))
    record = run_action(cluster, cfg, "web1", "start")
    assert record["state"] == "succeeded", record
    assert record["message"] == "web1 started on hv1" and record["node"] == "hv1"
    assert record["attempts"] == 1 and record["worker"]
    assert hv.is_running(vm.uuid)
    assert cluster.vm("web1").value.node == "hv1"            # placed by the selector
    assert vm.uuid in cluster.node("hv1").domains            # observed state published
    assert cluster.vm_operation(vm.uuid) is None             # no longer busy

    assert run_action(cluster, cfg, "web1", "restart")["state"] == "succeeded"
    assert hv.is_running(vm.uuid)
    assert run_action(cluster, cfg, "web1", "shutdown")["message"] == "web1 shut down"
    assert not hv.is_running(vm.uuid)
    assert cluster.vm("web1").value.state == "stop"
    assert run_action(cluster, cfg, "web1", "start")["state"] == "succeeded"
    assert run_action(cluster, cfg, "web1", "stop")["message"] == "web1 stopped"
    assert not hv.is_running(vm.uuid)
    kinds = [o.kind for o in cluster.operations()]
    assert sorted(kinds) == sorted(["vm.start", "vm.restart", "vm.shutdown", "vm.start",
                                    "vm.stop"])


def test_a_busy_vm_refuses_a_second_operation(cluster, node_hv1) -> None:
    cfg, _hv = node_hv1
    definition.define(cluster, demo_xml("web1"))
    first = lifecycle.request(cluster, "web1", "start")     # not submitted yet: in flight
    with pytest.raises(Exception, match=f"busy with operation {first.op.id}"):
        lifecycle.request(cluster, "web1", "stop")
    submit(cfg, first.op)
    cluster.store.wait_for(cluster.schema.operation(first.op.id),
                           lambda v: v["state"] == "succeeded", timeout=60)


def test_pickled_messages_are_refused(cluster, node_hv1) -> None:
    """JSON only: a pickle-serialized task is never executed."""
    cfg, hv = node_hv1
    vm = definition.define(cluster, demo_xml("web1"))
    req = lifecycle.request(cluster, "web1", "start")
    celery_client(cfg).send_task(req.op.task, args=[vm.uuid, req.op.id], task_id=req.op.id,
                                 queue="pvc.node.hv1", serializer="pickle")
    # The same operation sent properly afterwards runs; the pickled one never did.
    submit(cfg, req.op)
    record = cluster.store.wait_for(cluster.schema.operation(req.op.id),
                                    lambda v: v["state"] in states.OP_TERMINAL, timeout=60)
    assert record["attempts"] == 1 and record["state"] == "succeeded"
    assert hv.is_running(vm.uuid)


def celery_client(cfg):
    """A Celery app that sends only, with pvc's broker settings."""
    from celery import Celery

    from tasks.app import settings
    app = Celery("test-client", set_as_current=False)
    app.conf.update({**settings(cfg), "task_send_sent_event": False})
    return app


def test_pvcs_message_is_the_one_celery_writes(services, zk_root) -> None:
    """tasks.wire writes a submission without Celery: the same JSON Celery's own client
    pushes (its random ids and origin aside), in the list a worker of that queue pops."""
    import json

    import redis

    from tasks import wire
    cfg = make_config(services, zk_root)
    r = redis.Redis(port=cfg.cluster.redis.port, password=cfg.redis_password(),
                    db=cfg.cluster.redis.broker_db)
    queue = f"pvc.node.wire-{zk_root.strip('/')}"
    celery_client(cfg).send_task("pvc.vm.start", args=["u-1", "op-1"], task_id="op-1",
                                 queue=queue, argsrepr="vm.start web1", kwargsrepr="by me",
                                 retry=True)
    theirs = json.loads(r.rpop(queue))
    ours = json.loads(wire.message("pvc.vm.start", "op-1", ["u-1", "op-1"], queue,
                                   "vm.start web1", "by me"))

    def comparable(m: dict) -> dict:
        m["headers"].pop("origin")
        for key in ("reply_to", "delivery_tag"):
            m["properties"].pop(key)
        return m
    assert comparable(ours) == comparable(theirs)
    r.delete(*r.keys(f"*{queue}*"))


def test_submit_with_redis_down_changes_nothing(services, zk_root, cluster) -> None:
    from dataclasses import replace

    from pvc.core.errors import Unavailable
    cfg = make_config(services, zk_root)
    bad = replace(cfg, cluster=replace(cfg.cluster, redis=replace(cfg.cluster.redis, port=1)))
    definition.define(cluster, demo_xml("web1"), node="hv1", allow_unknown_nodes=True)
    cluster.store.put(cluster.schema.node_field("hv1", "daemon_state"), "run")
    cluster.store.put(cluster.schema.node("hv1"), {"enable_hypervisor": True})
    cluster.store.put(cluster.schema.node_field("hv1", "resources"),
                      {"mem_total": 4096, "mem_free": 4096})
    cluster.store.create(cluster.schema.node_alive("hv1"), "x", ephemeral=True)
    cluster.store.create(cluster.schema.node_worker("hv1", "w1"), "", ephemeral=True,
                         makepath=True)
    req = lifecycle.request(cluster, "web1", "start")
    with pytest.raises(Unavailable, match="cannot reach Redis at 127.0.0.1:1"):
        submit(bad, req.op)
    abandon(cluster, req.op, "not submitted")
    vm = cluster.vm("web1").value
    assert vm.state == "stop" and cluster.vm_operation(vm.uuid) is None
    assert cluster.operation(req.op.id).state == "failed"


def test_the_consumer_watchdog_sees_a_message_nobody_takes(services, zk_root) -> None:
    """The same message next in the node's queue at two looks, with the worker idle: stalled
    (kombu's message format, in the real Redis). Busy, or the message taken: not stalled."""
    from pvc.operations import records
    from tasks.broker import RedisBroker
    from tasks.watchdog import ConsumerWatchdog
    cfg = make_config(services, zk_root, "hv9")       # a node with no worker at all
    busy = [False]
    dog = ConsumerWatchdog(cfg, lambda: busy[0])
    assert not dog.stalled()                          # nothing waits
    op = records.new_operation("vm.start", "idle1", "0" * 32, "hv9", "")
    submit(cfg, op)                                   # its message, as the CLI sends it
    assert RedisBroker(cfg).next_waiting("hv9") == op.id
    assert not dog.stalled()                          # first look
    busy[0] = True
    assert not dog.stalled()                          # a task runs: it waits its turn
    busy[0] = False
    assert dog.stalled()                              # the same, next, and nothing runs
    RedisBroker(cfg)._ask(["DEL", "pvc.node.hv9"])    # taken (or lost): nothing waits
    assert not dog.stalled()
