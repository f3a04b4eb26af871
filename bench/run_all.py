"""Run every benchmark; each prints its figures and records them in bench/results.md."""
from __future__ import annotations

from bench import (
    bench_cli,
    bench_cli_scale,
    bench_compose,
    bench_console,
    bench_console_flood,
    bench_coordinators,
    bench_dns,
    bench_fencing,
    bench_flush,
    bench_memory,
    bench_metrics,
    bench_migration,
    bench_power_off,
    bench_reconcile,
    bench_recovery,
    bench_scale,
    bench_storage,
    bench_vm_start,
    bench_watch,
)

BENCHMARKS = [bench_cli, bench_reconcile, bench_vm_start, bench_memory, bench_flush,
              bench_migration, bench_console, bench_recovery, bench_console_flood,
              bench_coordinators, bench_dns, bench_fencing, bench_watch, bench_power_off, bench_storage,
              bench_metrics, bench_compose, bench_cli_scale, bench_scale]


def main() -> None:
    for bench in BENCHMARKS:
        bench.main()


if __name__ == "__main__":
    main()
