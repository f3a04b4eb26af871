"""`pvc --help` cold start: a new process each time. Target < 250 ms."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from bench.common import record, summary_ms


def main() -> None:
    pvc = str(Path(sys.executable).with_name("pvc"))
    subprocess.run([pvc, "--help"], capture_output=True, check=True)  # warm the page cache
    samples = []
    for _ in range(20):
        t0 = time.perf_counter()
        subprocess.run([pvc, "--help"], capture_output=True, check=True)
        samples.append(time.perf_counter() - t0)
    record("cli: `pvc --help` start-up", summary_ms(samples), target="< 250 ms")


if __name__ == "__main__":
    main()
