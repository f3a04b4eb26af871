"""`pvc vm list --watch`: from a change's commit to the new view on the watcher's stdout
(pushed by ZooKeeper watches, gathered for SETTLE, then the list is read again and drawn), on
a test sandbox of 3 nodes and 30 VMs. The change is a `vm meta` (one record write, made in this
process so the clock starts when it is committed)."""
from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

from bench.common import BENCH_SANDBOX_DIR, BenchSandbox, record, summary_ms
from pvc.core import config as configmod
from pvc.core.cluster import Cluster
from pvc.vm import changes

ROUNDS = 20


def main() -> None:
    with BenchSandbox("test", nodes=3, vms=30) as sb:
        pvc = str(Path(sys.executable).with_name("pvc"))
        watcher = subprocess.Popen([pvc, "vm", "list", "--watch", "--format", "json"],
                                   env=sb.env, stdout=subprocess.PIPE, text=True)
        views: "queue.Queue[tuple[float, list[dict]]]" = queue.Queue()

        def pump() -> None:
            assert watcher.stdout is not None
            for line in watcher.stdout:
                views.put((time.perf_counter(), json.loads(line)))
        threading.Thread(target=pump, daemon=True).start()
        views.get(timeout=30)                                  # the first drawing
        cluster = Cluster.connect(configmod.load(f"{BENCH_SANDBOX_DIR}/client.yaml"))
        samples = []
        for i in range(ROUNDS):
            wanted = i % 2 == 0
            changes.meta(cluster, "demo1", autostart=wanted)
            committed = time.perf_counter()
            while True:
                at, view = views.get(timeout=30)
                if next(v for v in view if v["name"] == "demo1")["autostart"] == wanted:
                    samples.append(at - committed)
                    break
        cluster.close()
        watcher.terminate()
        watcher.wait(10)
    figures = summary_ms(samples)
    record("watch: a VM's change → `pvc vm list --watch` redrawn (30 VMs, test sandbox)",
           figures, target="pushed, no polling: well under a second")


if __name__ == "__main__":
    main()
