"""Broker and worker faults: Redis restarted with an operation queued, a message lost, a lost
`vm stop` cancelled, a whole worker killed (also in the middle of a batch), foreign
submissions and Flower's buttons."""
from __future__ import annotations

import base64
import json
import os
import signal
import urllib.error
import urllib.request
from contextlib import contextmanager
from typing import Iterator

import pytest

from tests.faults.conftest import Faults, until

pytestmark = pytest.mark.faults


@contextmanager
def worker_frozen(f: Faults, node: str) -> Iterator[None]:
    """The worker's main process stops consuming (SIGSTOP); its pool processes stay
    registered, so requests are accepted and wait in the queue. Entered once Redis no longer
    holds a blocking read of the frozen process (it would take the next message)."""
    # the check can see such a read: the running worker is caught in one. After an earlier
    # test moved or restarted the broker's master, an idle worker may hold none (kombu's
    # stalled consumer, which its watchdog ends once a message waits): an operation through
    # it first makes it consume again
    try:
        until("the worker's blocking read", lambda: f.redis_blocked_reads(
            f.pid(f"worker-{node}"), node) > 0, 10)
    except AssertionError:
        f.pvc("vm", "restart", vm_on(f, node), "--wait", "--wait-timeout", "60")
        until("the worker's blocking read", lambda: f.redis_blocked_reads(
            f.pid(f"worker-{node}"), node) > 0, 10)
    with f.paused(f"worker-{node}") as pid:
        until("the frozen worker's pending read to expire",
              lambda: f.redis_blocked_reads(pid, node) == 0, 10)
        yield


def queued(f: Faults, node: str) -> list[str]:
    return f.redis("LRANGE", f"pvc.node.{node}", "0", "-1").split("\n")


def vm_on(f: Faults, node: str) -> str:
    return next(vm for vm, nodes in sorted(f.where().items()) if nodes == [node])


def test_redis_restarted_with_an_operation_queued(cluster_ok: Faults) -> None:
    f = cluster_ok
    vm = vm_on(f, "hv1")
    with worker_frozen(f, "hv1"):
        op = f.submit("vm", "restart", vm)
        assert any(op in m for m in queued(f, "hv1"))
        master = f"redis-{f.redis_master_node()}"
        f.pvc("sandbox", "process", "restart", master, "--port-offset", f.pvc.offset)
        assert any(op in m for m in queued(f, "hv1"))     # the append-only file kept it
    assert f.finished(op)["state"] == "succeeded"


def test_a_lost_message_is_sent_again_by_the_primary(cluster_ok: Faults) -> None:
    f = cluster_ok
    vm = vm_on(f, "hv2")
    with worker_frozen(f, "hv2"):
        op = f.submit("vm", "restart", vm)
        f.redis("DEL", "pvc.node.hv2")                   # the message is lost
        res = f.pvc("task", "watch", op, "--wait-timeout", "5", ok=False)
        assert res.returncode == 3
        assert "still queued: waiting for a worker of hv2" in res.stderr
        assert f"stopped waiting after 5s: operation {op} is queued" in res.stderr
        until("the primary to send it again", lambda: f.record(op)["resends"] == 1)
    record = f.finished(op)
    assert record["state"] == "succeeded"
    assert "re-sent by the primary" in json.dumps(record["history"])


def test_cancelling_a_lost_stop_restores_the_desired_state(cluster_ok: Faults) -> None:
    f = cluster_ok
    vm = vm_on(f, "hv3")
    with worker_frozen(f, "hv3"):
        op = f.submit("vm", "stop", vm)
        f.redis("DEL", "pvc.node.hv3")
        assert f.pvc.json("vm", "info", vm)["state"] == "stop"
        f.pvc("task", "cancel", op)
        assert f.pvc.json("vm", "info", vm)["state"] == "start"   # as before the request
    f.pvc("sandbox", "process", "restart", "node-hv3", "--port-offset", f.pvc.offset)
    until("hv3's daemon back", lambda: f.pvc.json("node", "info", "hv3")["daemon_state"]
          == "run")
    assert f.where()[vm] == ["hv3"]                     # its restart destroyed nothing
    assert f.record(op)["state"] == "cancelled"


def test_a_whole_worker_killed_is_started_again(cluster_ok: Faults) -> None:
    f = cluster_ok
    before = f.restarts("worker-hv1")
    f.killed("worker-hv1")
    assert f.restarts("worker-hv1") == before + 1
    status = f.pvc.status()
    assert status["processes"]["worker-hv1"]["restarts"] == before + 1
    until("hv1's worker registered again",
          lambda: f.pvc.json("node", "info", "hv1")["workers"] > 0)
    vm = vm_on(f, "hv1")
    f.pvc("vm", "restart", vm, "--wait", "--wait-timeout", "60")


def test_a_worker_killed_while_restoring_unacked_messages(cluster_ok: Faults) -> None:
    """A worker dies with an operation running, and (the unlucky moment) while it held
    kombu's mutex for restoring unacked messages, which it leaves behind as it set it. The
    operation is redelivered and ends within the settle bound all the same (kombu's own
    expiry of that mutex is 5 minutes, during which nothing would be redelivered and the
    sweep, which sees the message unacked, would resend nothing)."""
    from tasks.app import settings
    f = cluster_ok
    vm = vm_on(f, "hv1")
    with f.paused("libvirtd-hv1"):              # the restart waits inside the worker
        op = f.submit("vm", "restart", vm)
        until("the restart running", lambda: f.record(op)["state"] == "running")
        expire = settings(f.config())["broker_transport_options"].get("unacked_mutex_expire",
                                                                       300)
        f.redis("SET", "unacked_mutex", "a-dead-restorer", "EX", str(expire))
        f.killed("worker-hv1")
    record = f.finished(op)
    assert record["state"] == "succeeded" and record["attempts"] == 2, record


def test_foreign_submissions_are_refused_in_one_line(cluster_ok: Faults) -> None:
    f = cluster_ok
    from celery import Celery

    from pvc.core import config as configmod
    from tasks.app import settings
    app = Celery("intruder", set_as_current=False)
    app.conf.update(settings(configmod.load(f.layout.client_config)))
    result = app.send_task("pvc.vm.stop", args=["no-such-vm", "no-such-op"])   # pvc.default
    with pytest.raises(Exception) as refused:            # a failure with the reason, in Celery
        result.get(timeout=30)
    assert "refused: no operation 'no-such-op'" in str(refused.value)
    assert result.state == "FAILURE"
    logs = "".join(f.log(f"worker-{n}") for n in f.nodes)
    assert "refused: no operation 'no-such-op'" in logs
    at = logs.find("Traceback")
    assert at < 0, logs[max(0, at - 300):at + 2500]
    # remote control that would act behind the records' back: refused with a sentence
    replies = app.control.revoke("no-such-op", reply=True, timeout=5)
    assert replies and all("refuse the remote-control command 'revoke'" in r[h]["error"]
                           for r in replies for h in r), replies
    assert app.control.ping(timeout=5)                    # inspection stays


def test_an_operation_consumed_by_another_nodes_worker_is_forwarded(cluster_ok: Faults) -> None:
    f = cluster_ok
    vm = vm_on(f, "hv1")
    with worker_frozen(f, "hv1"):
        op = f.submit("vm", "restart", vm)
        message = f.redis("LPOP", "pvc.node.hv1").strip()
        f.redis("RPUSH", "pvc.node.hv2", message)       # hv2's worker gets hv1's operation
        until("hv2's worker to forward it", lambda: f"forwarded: operation {op} belongs to "
              "hv1" in f.log("worker-hv2"))
    record = f.finished(op)
    assert record["state"] == "succeeded" and record["node"] == "hv1"
    assert f.where()[vm] == ["hv1"]


def flower_json(f: Faults, path: str) -> dict:
    st = f.pvc.status()
    password = open(st["flower"]["password_file"]).read().strip()
    auth = "Basic " + base64.b64encode(f"pvc:{password}".encode()).decode()
    req = urllib.request.Request(st["flower"]["url"] + path, headers={"Authorization": auth})
    try:
        return json.load(urllib.request.urlopen(req, timeout=20))
    except urllib.error.HTTPError:
        return {}


def test_flower_reads_but_cannot_change_anything(cluster_ok: Faults) -> None:
    f = cluster_ok
    f.pvc("vm", "restart", vm_on(f, "hv1"), "--wait")   # a CLI process submits a task
    st = f.pvc.status()
    password = open(st["flower"]["password_file"]).read().strip()
    auth = {"Authorization": "Basic " + base64.b64encode(f"pvc:{password}".encode()).decode()}

    def call(path: str, method: str = "GET") -> int:
        req = urllib.request.Request(st["flower"]["url"] + path, method=method, headers=auth,
                                     data=b"" if method == "POST" else None)
        try:
            return urllib.request.urlopen(req, timeout=20).status
        except urllib.error.HTTPError as e:
            return e.code

    assert call("/api/tasks") == 200
    changing = ("/api/task/revoke/x", "/api/task/async-apply/pvc.vm.stop",
                "/api/task/send-task/pvc.vm.stop", "/api/worker/queue/add-consumer/hv2@x",
                "/api/worker/shutdown/hv1@x", "/api/worker/pool/restart/hv1@x")
    for path in changing:
        assert call(path) == 404, path            # the handler is gone (it answered 405)
        assert call(path, "POST") in (403, 404), path
    assert call("/metrics") == 404
    workers = flower_json(f, "/workers?json=1")["data"]
    assert sorted(w["hostname"].split("@")[0] for w in workers) == f.nodes   # no CLI process


def test_a_worker_stopped_mid_flush_finishes_it_first(cluster_ok: Faults) -> None:
    """SIGTERM to the worker running a flush (what systemd's stop sends; Flower's Terminate
    is refused): its task threads are never cut off in the middle of a move. The worker
    stops taking messages, finishes the flush, then ends and is started again; the record
    says `succeeded`, nothing stays held, every VM runs once."""
    f = cluster_ok
    libvirtd = f.pid("libvirtd-hv2")
    with f.client() as c:
        # the flush stops after its first move
        caught = f.freeze_on_change(c, "hv3", "libvirtd-hv2")
        try:
            op = f.submit("node", "flush", "hv2", "--max-parallel", "1")
            assert caught.wait(60)
            # per-VM progress reaches Celery from the flush's threads: Flower shows it
            shown = until("Flower to show the flush's progress", lambda: (
                info := flower_json(f, f"/api/task/info/{op}")).get("state") == "PROGRESS"
                and info)
            assert shown["name"] == "pvc.node.flush" and " done: " in shown["result"]
            worker = f.pid("worker-hv2")
            assert int(f.record(op)["worker"].rsplit(":", 1)[1]) == worker   # one process
            os.kill(worker, signal.SIGTERM)
        finally:
            os.kill(libvirtd, signal.SIGCONT)
    record = f.finished(op)
    assert record["state"] == "succeeded", record
    f.layout.supervisor.wait_restarted("worker-hv2", worker)
    assert f.pvc.json("node", "info", "hv2")["domain_state"] == "flushed"
    assert not any(v["operation"] for v in f.pvc.json("vm", "list"))
    assert all(len(nodes) == 1 for nodes in f.where().values())
    f.pvc("node", "unflush", "hv2", "--wait", "--wait-timeout", "120")


def test_a_worker_killed_in_the_middle_of_a_batch(cluster_ok: Faults) -> None:
    """SIGKILL to the worker running `vm stop --node hv2` (its libvirtd frozen once the first
    VM stopped): the batch's message comes back to the new worker, which skips the VMs done
    and stops the rest. The record succeeds on a later attempt; every VM of hv2 is stopped
    and runs nowhere, none stays busy; started again, each runs exactly once."""
    f = cluster_ok
    names = sorted(n for n, v in f.pvc.vms().items()
                   if v["node"] == "hv2" and v["observed"] == "running")
    assert len(names) >= 2
    libvirtd = f.pid("libvirtd-hv2")
    with f.client() as c:
        # the batch stops after its first VM
        caught = f.freeze_on_change(c, "hv2", "libvirtd-hv2", grows=False)
        try:
            res = f.pvc.json("vm", "stop", "--node", "hv2", "--yes")
            (op,) = [o["id"] for o in res["operations"]]
            assert caught.wait(60)
            f.killed("worker-hv2")
        finally:
            os.kill(libvirtd, signal.SIGCONT)
    record = f.finished(op)
    assert record["state"] == "succeeded" and record["attempts"] >= 2, record
    assert record["progress"]["done"] == record["progress"]["total"] == len(names)
    vms = f.pvc.vms()
    assert {(vms[n]["state"], vms[n]["observed"]) for n in names} == {("stop", "stopped")}
    assert not any(v["operation"] for v in vms.values())
    assert not any(n in f.where() for n in names)
    f.pvc("vm", "start", *names, "--wait", "--wait-timeout", "120")
    assert all(f.where()[n] == ["hv2"] for n in names)


def test_the_broker_master_killed_with_an_operation_queued(cluster_ok: Faults) -> None:
    """The Redis master is killed for good (SIGKILL, left dead as a dead node's would be)
    with an operation queued: the Sentinels promote a replica that has the message, the
    worker finds the new master through them, and the operation ends; the old master comes
    back as a replica of the new one."""
    f = cluster_ok
    vm = vm_on(f, "hv1")
    old = f.redis_master_node()
    with worker_frozen(f, "hv1"):
        op = f.submit("vm", "restart", vm)
        assert any(op in m for m in queued(f, "hv1"))
        f.dead(f"redis-{old}")
        until("a new master", lambda: f.redis_master_node() != old, 60)
        assert any(op in m for m in queued(f, "hv1"))     # replicated before the loss
    assert f.finished(op)["state"] == "succeeded"
    f.layout.supervisor.start_program(f"redis-{old}")

    def whole() -> bool:
        st = f.pvc.cluster_status()
        replicas = st["broker"]["replicas"]
        return not [r for r in st["reasons"] if r.startswith("broker:")] and \
            len(replicas) == len(f.coordinators) - 1 and \
            all(r["state"] == "up" for r in replicas)
    until("the old master back as a replica", whole, 60)
    assert f.redis_master_node() not in ("", old)
