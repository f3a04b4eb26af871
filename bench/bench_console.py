"""Console logs: a line written to a guest's log file → printed by `pvc vm log --follow`
(median and p95 over 200 lines, a steady 10 lines/s), and ZooKeeper writes per second while a
guest prints 1,000 lines/s (bounded by the tailer's coalescing, not by the line rate).

Targets: median < 300 ms (the original: a 0.5 s tailer poll plus a 0.5-1 s client poll).
"""
from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

from bench.common import BENCH_SANDBOX_DIR, BenchSandbox, record, summary_ms

LINES = 200
SPACING = 0.1          # seconds between two lines of the steady writer
CHATTY_RATE = 1000     # lines per second
CHATTY_SECONDS = 5


def append(path: Path, text: str) -> None:
    with open(path, "a") as f:
        f.write(text)


def main() -> None:
    with BenchSandbox("test", nodes=1, vms=1) as sb:
        log = Path(BENCH_SANDBOX_DIR) / "nodes" / "hv1" / "console" / "demo1.log"
        append(log, "marker\n")
        while "marker" not in sb.pvc("vm", "log", "demo1").stdout:
            time.sleep(0.05)   # waiting for the first publication
        pvc = str(Path(sys.executable).with_name("pvc"))
        follower = subprocess.Popen([pvc, "vm", "log", "demo1", "--follow", "-n", "1"],
                                    stdout=subprocess.PIPE, text=True, env=sb.env)
        arrivals: "queue.Queue[tuple[float, str]]" = queue.Queue()

        def pump() -> None:
            assert follower.stdout is not None
            for line in follower.stdout:
                arrivals.put((time.perf_counter(), line.rstrip("\n")))

        threading.Thread(target=pump, daemon=True).start()
        assert arrivals.get(timeout=30)[1] == "marker"
        written: dict[str, float] = {}
        for i in range(LINES):
            text = f"bench line {i}"
            written[text] = time.perf_counter()
            append(log, text + "\n")
            time.sleep(SPACING)   # the guest's pace
        latencies = []
        while len(latencies) < LINES:
            at, text = arrivals.get(timeout=30)
            latencies.append(at - written[text])
        follower.terminate()
        follower.wait(10)

        from pvc.core.cluster import Cluster
        cluster = Cluster.connect(sb.config())
        path = cluster.schema.vm_console(cluster.vm("demo1").value.uuid)
        before = cluster.store.get(path).version
        t0 = time.perf_counter()
        per_tick = CHATTY_RATE // 100
        n = 0
        while time.perf_counter() - t0 < CHATTY_SECONDS:
            append(log, "".join(f"chatty {n + k}\n" for k in range(per_tick)))
            n += per_tick
            time.sleep(0.01)   # 100 bursts a second
        elapsed = time.perf_counter() - t0
        cluster.store.wait_for(path, lambda b: b["lines"][-1] == f"chatty {n - 1}", 30)
        writes = cluster.store.get(path).version - before
        cluster.close()
    figures = {f"follow latency: {k}": v for k, v in summary_ms(latencies).items()}
    figures["chatty guest: lines/s written"] = round(n / elapsed)
    figures["chatty guest: ZooKeeper writes/s"] = round(writes / elapsed, 1)
    record("console: guest log line → `pvc vm log --follow` (test sandbox)", figures,
           target="median < 300 ms; writes/s bounded by the coalescing interval (5/s)")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
