"""A console flood: 10 guests each printing 200 KB/s for 60 s on one node. ZooKeeper must stay
up; its write rate (writes and bytes a second, from the console znodes' versions and sizes) and
its memory are printed. Without the byte budget the sandbox's ZooKeeper died of
OutOfMemoryError within 10 s (each write up to 512 KB, five a second, per VM).
"""
from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

from bench.common import BENCH_SANDBOX_DIR, BenchSandbox, record

GUESTS = 10
RATE = 200 * 1024        # bytes per second per guest
SECONDS = 60
LINE = "flood " + "x" * 1017 + "\n"     # 1 KiB lines


def _flood(path: Path, stop: threading.Event) -> None:
    per_tick = RATE // 10 // len(LINE)
    with open(path, "a") as out:
        while not stop.is_set():
            out.write(LINE * per_tick)
            out.flush()
            stop.wait(0.1)   # the guest's pace: 10 bursts a second


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def _ruok(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=5) as s:
            s.sendall(b"ruok")
            return s.recv(4) == b"imok"
    except OSError:
        return False


def main() -> None:
    from pvc.core.cluster import Cluster
    from pvc.sandbox.sandbox import Layout
    with BenchSandbox("test", nodes=1, vms=GUESTS) as sb:
        layout = Layout(Path(BENCH_SANDBOX_DIR), 2000)
        zk_pid = int(layout.supervisor.info("zookeeper-hv1")["pid"])   # its one coordinator
        c = Cluster.connect(sb.config())
        uuids = {vm.name: vm.uuid for vm in c.vms()}
        paths = [c.schema.vm_console(u) for u in uuids.values()]

        def versions() -> list[int]:
            out = []
            for p in paths:
                try:
                    out.append(c.store.get(p).version)
                except Exception:
                    out.append(-1)
            return out

        stop = threading.Event()
        writers = [threading.Thread(target=_flood, args=(
            layout.console_dir("hv1") / f"{name}.log", stop), daemon=True) for name in uuids]
        before = versions()
        t0 = time.perf_counter()
        for w in writers:
            w.start()
        rss = []
        while time.perf_counter() - t0 < SECONDS:
            time.sleep(5)     # sampling ZooKeeper's memory every 5 s during the flood
            rss.append(_rss_mib(zk_pid))
        stop.set()
        elapsed = time.perf_counter() - t0
        writes = sum(a - b for a, b in zip(versions(), before))
        sizes = [len(c.store.get(p).value) for p in paths]
        alive = _ruok(layout.zk_members(["hv1"])[0], layout.zk_port)
        c.close()
    record("console flood: 10 guests × 200 KB/s for 60 s", {
        "ZooKeeper alive at the end": alive,
        "guest output": f"{GUESTS * RATE * SECONDS // 1024 // 1024} MiB in {elapsed:.0f}s",
        "ZooKeeper writes/s (all guests)": round(writes / elapsed, 1),
        "ZooKeeper bytes/s (all guests, approx.)":
            round(writes / elapsed * sum(sizes) / len(sizes)),
        "largest console znode (bytes)": max(sizes),
        "ZooKeeper RSS MiB (max during the flood)": max(rss),
    }, "ZooKeeper alive; writes bounded by the per-VM byte budget (64 KiB/s by default)")


if __name__ == "__main__":
    main()
