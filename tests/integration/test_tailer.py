"""The console tailer against a real ZooKeeper, with log files written by the test."""
from __future__ import annotations

import queue
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from pvc.console import buffer
from pvc.console.tailer import Tailer
from pvc.vm import definition
from tests.conftest import make_config
from tests.integration.helpers import demo_xml

pytestmark = pytest.mark.integration


@pytest.fixture
def setup(services, zk_root, cluster, tmp_path: Path):
    """A VM 'web' that node hvT runs (as its daemon would publish), with a log file."""
    base = make_config(services, zk_root)
    cfg = replace(base, cluster=replace(base.cluster, console_log_lines=100),
                  node=replace(base.node, name="hvT", console_log_directory=str(tmp_path)))
    vm = definition.define(cluster, demo_xml("web"), node="hvT", allow_unknown_nodes=True)
    domains = cluster.schema.node_field("hvT", "domains")
    cluster.store.put(domains, {vm.uuid: {"name": "web", "state": "running"}})
    tailers: list[Tailer] = []

    def start() -> Tailer:
        t = Tailer(cfg)
        t.start()
        tailers.append(t)
        return t

    yield cluster, vm, tmp_path / "web.log", start, domains
    for t in tailers:
        if not t.stopping.is_set():
            t.stop()


def buffer_at(cluster, vm, last_seq: int) -> dict:
    return cluster.store.wait_for(cluster.schema.vm_console(vm.uuid),
                                  lambda b: bool(b) and b["last_seq"] >= last_seq, timeout=20)


def append(path: Path, data: bytes) -> None:
    with open(path, "ab") as f:
        f.write(data)


def test_file_created_later_partial_lines_and_bad_bytes(setup) -> None:
    cluster, vm, log, start, _ = setup
    start()
    append(log, b"hello\nhal")
    buf = buffer_at(cluster, vm, 1)
    assert buf["lines"] == ["hello"]
    append(log, b"f \xff\n")
    buf = buffer_at(cluster, vm, 2)
    assert buf["lines"] == ["hello", "half \ufffd"] and buf["node"] == "hvT"


def test_truncation_and_rotation_keep_numbering(setup) -> None:
    cluster, vm, log, start, _ = setup
    start()
    append(log, b"a\nb\n")
    buffer_at(cluster, vm, 2)
    log.write_bytes(b"restarted\n")                      # truncated by a VM restart
    assert buffer_at(cluster, vm, 3)["lines"][-1] == "restarted"
    append(log, b"before rotation\n")
    log.rename(log.with_suffix(".log.0"))
    log.write_bytes(b"after rotation\n")
    buf = buffer_at(cluster, vm, 5)
    assert buffer.numbered(buf)[-3:] == [(3, "restarted"), (4, "before rotation"),
                                          (5, "after rotation")]


def test_burst_of_10000_lines_is_bounded(setup) -> None:
    cluster, vm, log, start, _ = setup
    tailer = start()
    append(log, b"".join(b"burst %d\n" % i for i in range(10_000)))
    buf = cluster.store.wait_for(cluster.schema.vm_console(vm.uuid),
                                 lambda b: bool(b) and b["lines"][-1:] == ["burst 9999"], 20)
    assert len(buf["lines"]) == 100
    assert "lines dropped" in buf["lines"][0]         # where the flood was cut, in the buffer
    assert buf["lines"][-99:] == [f"burst {i}" for i in range(9_901, 10_000)]
    # coalesced: a handful of writes for 10,000 lines, not one per line
    assert tailer.writes <= 10, tailer.writes


def test_a_follower_sees_every_line_of_a_steady_writer_once_in_order(setup) -> None:
    cluster, vm, log, start, _ = setup
    start()
    path = cluster.schema.vm_console(vm.uuid)
    seen: list[tuple[int, str]] = []
    last = [0]
    done = threading.Event()
    updates: "queue.Queue[dict | None]" = queue.Queue()
    cluster.store.watch_data(path, lambda v, _ver: updates.put(v))
    expected = [f"tick {i // 3}" for i in range(60)]    # each line three times in a row

    def follow() -> None:
        while len(seen) < len(expected):
            missed, lines = buffer.new_since(updates.get(), last[0])
            assert missed == 0
            seen.extend(lines)
            if lines:
                last[0] = lines[-1][0]
        done.set()

    threading.Thread(target=follow, daemon=True).start()
    for line in expected:
        append(log, line.encode() + b"\n")
        time.sleep(0.01)   # pacing of the simulated guest, not synchronisation
    assert done.wait(20)
    assert [line for _s, line in seen] == expected
    assert [s for s, _l in seen] == list(range(1, 61))


def test_tailer_restart_continues_numbering_without_repeats(setup) -> None:
    cluster, vm, log, start, _ = setup
    first = start()
    append(log, b"one\ntwo\n")
    buffer_at(cluster, vm, 2)
    first.stop()
    append(log, b"three\n")                               # written while nobody follows
    start()
    buf = buffer_at(cluster, vm, 3)
    assert buffer.numbered(buf) == [(1, "one"), (2, "two"), (3, "three")]


def test_follows_as_vms_come_and_go(setup) -> None:
    cluster, vm, log, start, domains = setup
    tailer = start()
    append(log, b"x\n")
    buffer_at(cluster, vm, 1)
    cluster.store.put(domains, {})                        # the VM stopped or left
    assert tailer.wait_following(vm.uuid, present=False, timeout=10)
    append(log, b"not followed\n")
    cluster.store.put(domains, {vm.uuid: {"name": "web", "state": "running"}})
    buf = buffer_at(cluster, vm, 2)                       # followed again: resumes its cursor
    assert buffer.numbered(buf) == [(1, "x"), (2, "not followed")]


def test_a_log_that_is_a_link_to_a_secret_is_never_published(setup, tmp_path) -> None:
    cluster, vm, log, start, _ = setup
    secret = tmp_path / "shadow"
    secret.write_text("root:$6$notforyou:19000:0:99999:7:::\n")
    log.symlink_to(secret)
    tailer = start()
    assert tailer.wait_following(vm.uuid, True, 10)
    secret.write_text("root:$6$stillnot:19000:0:99999:7:::\nmore\n")   # inotify fires
    log.unlink()
    log.write_text("honest line\n")                                    # a real log again
    buf = cluster.store.wait_for(cluster.schema.vm_console(vm.uuid),
                                 lambda b: bool(b) and "honest line" in b["lines"], 20)
    assert not any("root:" in line for line in buf["lines"])
