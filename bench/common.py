"""Shared bits of the benchmarks: services, figures, the results file."""
from __future__ import annotations

import json
import platform
import statistics
import time
from pathlib import Path
from typing import Any

RESULTS_JSON = Path(__file__).with_name("results.json")
RESULTS_MD = Path(__file__).with_name("results.md")


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def summary_ms(values: list[float]) -> dict[str, float]:
    ms = [v * 1000 for v in values]
    return {"n": len(ms), "median_ms": round(statistics.median(ms), 2),
            "p95_ms": round(percentile(ms, 95), 2), "min_ms": round(min(ms), 2),
            "max_ms": round(max(ms), 2)}


def record(name: str, figures: dict[str, Any], target: str = "") -> None:
    """Print figures and keep them in bench/results.json + results.md."""
    print(f"== {name}")
    for k, v in figures.items():
        print(f"   {k}: {v}")
    data = json.loads(RESULTS_JSON.read_text()) if RESULTS_JSON.exists() else {}
    data[name] = {"figures": figures, "target": target,
                  "measured": time.strftime("%Y-%m-%d %H:%M"),
                  "machine": f"{platform.node()} {platform.machine()}, "
                             f"{_cpus()} cores"}
    RESULTS_JSON.write_text(json.dumps(data, indent=2) + "\n")
    render(data)


def _cpus() -> int:
    import os
    return os.cpu_count() or 0


def render(data: dict[str, Any]) -> None:
    lines = ["# Benchmark results", "",
             "Written by `make bench` (bench/run_all.py); each section by its benchmark.", ""]
    for name in sorted(data):
        entry = data[name]
        lines.append(f"## {name}")
        lines.append("")
        if entry.get("target"):
            lines.append(f"Target: {entry['target']}  ")
        lines.append(f"Measured {entry['measured']} on {entry['machine']}.")
        lines.append("")
        lines.append("| figure | value |")
        lines.append("|---|---|")
        for k, v in entry["figures"].items():
            lines.append(f"| {k} | {v} |")
        lines.append("")
    RESULTS_MD.write_text("\n".join(lines))


class BenchServices:
    """ZooKeeper, Redis and test-driver libvirtds for a benchmark, started by pvc's own code
    and stopped by PID."""

    def __init__(self, base: Path = Path("/run/pvc/bench"), zk_port: int = 32181,
                 redis_port: int = 36379) -> None:
        self.base = base
        self.zk_port = zk_port
        self.redis_port = redis_port
        self.pids: dict[str, int] = {}
        self.libvirtds: list[Any] = []

    def __enter__(self) -> "BenchServices":
        import shutil

        from pvc.sandbox import services
        if self.base.exists():
            shutil.rmtree(self.base)
        self.base.mkdir(parents=True, mode=0o700)
        self.password_file = self.base / "redis.password"
        password = services.write_secret(self.password_file)
        self.zk_auth_file = self.base / "zookeeper.auth"
        zk_password = services.write_secret(self.zk_auth_file, "pvc:" + services.new_password())
        self.pids["zk"] = services.start_zookeeper(self.base / "zk", self.zk_port,
                                                   {"pvc": zk_password.partition(":")[2]})
        self.pids["redis"] = services.start_redis(self.base / "redis", self.redis_port, password)
        return self

    def libvirtd(self, name: str) -> str:
        from pvc.sandbox import services
        index = len(self.libvirtds) + 1
        lv = services.Libvirtd(self.base / "lv" / name, index, (52000 + index * 10,
                                                               52009 + index * 10))
        pid = services.start_libvirtd(lv)
        services.wait_libvirtd(lv, pid, "test")
        self.libvirtds.append((lv, pid))
        return lv.uri("test")

    def config(self, root: str, node: str = "", uri: str = "") -> Any:
        from pvc.core.config import ClusterConfig, Config, NodeConfig, RedisConfig, ZooKeeperConfig
        cluster = ClusterConfig(
            name="bench", zookeeper=ZooKeeperConfig(hosts=f"127.0.0.1:{self.zk_port}",
                                                    root=root, session_timeout=4.0,
                                                    auth_file=str(self.zk_auth_file)),
            redis=RedisConfig(port=self.redis_port, password_file=str(self.password_file)))
        node_cfg = NodeConfig(name=node, libvirt_uri=uri, domain_type="test",
                              console_log_directory=str(self.base / "console"))
        return Config(cluster=cluster, node=node_cfg)

    def __exit__(self, *exc: object) -> None:
        import shutil

        from pvc.sandbox import procs, services
        for lv, pid in self.libvirtds:
            services.stop_libvirtd(lv, pid, "test")
        for pid in self.pids.values():
            procs.stop(pid)
        shutil.rmtree(self.base, ignore_errors=True)


BENCH_SANDBOX_DIR = "/run/pvc/bench-sandbox"
BENCH_OFFSET = "2000"


class BenchSandbox:
    """A sandbox of its own (directory, ports) for a benchmark, via the pvc CLI."""

    def __init__(self, kind: str, nodes: int = 3, vms: int = 3,
                 env: dict[str, str] | None = None, database: bool = False,
                 storage: bool = False, monitoring: bool = False) -> None:
        import os
        self.env = dict(os.environ, PVC_SANDBOX_DIR=BENCH_SANDBOX_DIR, **(env or {}))
        # `pvc` as installed: its modules' bytecode cached, not compiled at every start
        self.env.pop("PYTHONDONTWRITEBYTECODE", None)
        self.up_output = ""
        self.args = ["--hypervisor", kind, "--nodes", str(nodes), "--vms", str(vms),
                     "--port-offset", BENCH_OFFSET,
                     "--database" if database else "--no-database",
                     "--storage" if storage else "--no-storage",
                     "--monitoring" if monitoring else "--no-monitoring"]

    def pvc(self, *args: str, check: bool = True) -> Any:
        import subprocess
        import sys
        pvc = str(Path(sys.executable).with_name("pvc"))
        return subprocess.run([pvc, *args], env=self.env, capture_output=True, text=True,
                              check=check)

    def config(self) -> Any:
        from pvc.core import config
        return config.load(Path(BENCH_SANDBOX_DIR) / "client.yaml", environ={})

    def watch(self, op_id: str) -> dict[str, Any]:
        """Wait for an operation to end; its record."""
        import json

        from pvc.core.timefmt import times_as_epoch
        self.pvc("task", "watch", op_id, check=False)
        return times_as_epoch(  # type: ignore[no-any-return]
            json.loads(self.pvc("task", "show", op_id, "--format", "json").stdout))

    def submit(self, *args: str) -> str:
        """Run a submitting command; the operation id it printed."""
        import json
        return json.loads(self.pvc(*args, "--format", "json").stdout)["id"]

    def __enter__(self) -> "BenchSandbox":
        self.pvc("sandbox", "down", "--port-offset", BENCH_OFFSET, check=False)
        res = self.pvc("sandbox", "up", *self.args, check=False)
        if res.returncode != 0:
            raise RuntimeError(f"sandbox up failed: {res.stderr}")
        self.up_output = res.stderr    # its timed steps
        return self

    def __exit__(self, *exc: object) -> None:
        self.pvc("sandbox", "down", "--port-offset", BENCH_OFFSET, check=False)


def pss_kib(pid: int) -> int:
    """Proportional set size of one process (KiB), 0 if it is gone."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def descendants(pid: int) -> list[int]:
    """pid and every process below it."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int(Path(entry, "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


# ---------------------------------------------------------------------- whole processes

def median_ms(args: list[str], env: dict[str, str] | None = None, runs: int = 9,
              between: list[str] | None = None) -> float:
    """The median wall time of a whole process (after one run that warms the caches);
    `between`: a command run before each, untimed (e.g. stop what the timed one starts)."""
    import statistics
    import subprocess
    subprocess.run(args, env=env, capture_output=True, check=True)
    samples = []
    for _ in range(runs):
        if between:
            subprocess.run(between, env=env, capture_output=True, check=True)
        t0 = time.perf_counter()
        subprocess.run(args, env=env, capture_output=True, check=True)
        samples.append(time.perf_counter() - t0)
    return round(statistics.median(samples) * 1000, 1)


def bare_python_ms() -> float:
    """A bare interpreter's start and exit in the same run: the machine's noise floor."""
    return median_ms(["/usr/bin/python3", "-c", "pass"])


def tiny_vm_xml(name: str, memory_mib: int = 4) -> str:
    """A VM as an operator writes it, small enough for thousands on test-kind nodes."""
    return (f"<domain type='kvm'><name>{name}</name><memory unit='MiB'>{memory_mib}</memory>"
            "<vcpu>1</vcpu><os><type arch='x86_64'>hvm</type></os></domain>")


def define_and_start(sb: "BenchSandbox", count: int, where: Path) -> dict[str, float]:
    """`pvc vm define` of count files in one command, then `pvc vm start --all --wait`:
    each timed as the whole process."""
    import subprocess
    import sys
    where.mkdir(parents=True, exist_ok=True)
    files = []
    for i in range(count):
        f = where / f"s{i}.xml"
        f.write_text(tiny_vm_xml(f"s{i}"))
        files.append(str(f))
    pvc = str(Path(sys.executable).with_name("pvc"))
    out = {}
    for label, args in ((f"define {count} VMs (one command) s", ["vm", "define", *files]),
                        (f"start {count} VMs (--all --wait) s",
                         ["vm", "start", "--all", "--yes", "--wait"])):
        t0 = time.perf_counter()
        res = subprocess.run([pvc, *args], env=sb.env, capture_output=True, text=True)
        out[label] = round(time.perf_counter() - t0, 2)
        if res.returncode != 0:
            raise RuntimeError(f"pvc {args[:2]}: {res.stderr[-2000:]}")
    return out
