"""The managed networks' gateways: a primary-only service. While this node is the primary,
each network's gateway address is on its bridge here and a dnsmasq serves the network: DHCP
(its range, the gateway as router and DNS server) and an authoritative zone for its domain
whose transfer is allowed only from the gateway itself (the DNS aggregator on this node).

Leases live in ZooKeeper (dnsmasq's --dhcp-script, workers.lease_hook; --leasefile-ro makes
dnsmasq read them back at start), so a new primary's dnsmasq knows every lease the old one
gave: leases survive a switchover.
"""
from __future__ import annotations

import logging
import os
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path

from pvc.core.cluster import Cluster
from pvc.core.config import Config
from pvc.core.errors import PvcError
from pvc.network import ip, managed
from pvc.network.managed import ManagedNetwork

log = logging.getLogger(__name__)
LEASE_TIME = "1h"
STOP_WAIT = 5.0
LISTEN_WAIT = 3.0


class Gateways:
    name = "gateways"

    def __init__(self, cluster: Cluster, config: Config) -> None:
        self.cluster = cluster
        self.config_path = config.source
        self.run_dir = Path(config.node.run_directory) / "gateways"
        self.active = False
        self.serving: dict[int, tuple[ManagedNetwork, subprocess.Popen]] = {}

    def forget_stale(self) -> None:
        """At the daemon's start: an earlier process's dnsmasqs and gateway addresses go (this
        node is not the primary until it wins the role again)."""
        for pidfile in self.run_dir.glob("dnsmasq-*.pid") if self.run_dir.is_dir() else []:
            try:
                pid = int(pidfile.read_text())
                if b"dnsmasq" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    os.kill(pid, 15)
            except (OSError, ValueError):
                pass
            pidfile.unlink(missing_ok=True)
        for net in managed.all_networks(self.cluster):
            if ip.link_exists(net.bridge):
                ip.del_address(net.bridge, net.gateway_cidr)

    # ------------------------------------------------------------------ PrimaryService
    def start(self) -> None:
        self.active = True
        self.refresh()

    def stop(self) -> None:
        self.active = False
        for vni in list(self.serving):
            self._stop(vni)

    # ------------------------------------------------------------------ keeping in step
    def refresh(self) -> None:
        """Serve exactly the managed networks (a changed one is served again, a dnsmasq that
        died is started again)."""
        if not self.active:
            return
        wanted = {n.vni: n for n in managed.all_networks(self.cluster)}
        for vni, (net, proc) in list(self.serving.items()):
            if wanted.get(vni) != net or proc.poll() is not None:
                self._stop(vni)
        for vni, net in wanted.items():
            if vni not in self.serving:
                try:
                    self._start(net)
                except PvcError as e:
                    log.warning("network %s: gateway not served: %s", vni, e)

    def _start(self, net: ManagedNetwork) -> None:
        if not ip.link_exists(net.bridge):
            raise PvcError(f"bridge {net.bridge} is not built here")
        ip.add_address(net.bridge, net.gateway_cidr)
        self.run_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        logfile = open(self.run_dir / f"dnsmasq-{net.vni}.log", "ab")
        # in the daemon's process group and cgroup: whatever stops the daemon stops it too
        proc = subprocess.Popen(self.command(net), stdin=subprocess.DEVNULL, stdout=logfile,
                                stderr=subprocess.STDOUT)
        logfile.close()
        (self.run_dir / f"dnsmasq-{net.vni}.pid").write_text(str(proc.pid))
        self.serving[net.vni] = (net, proc)
        self._until_listening(net, proc)
        log.info("network %s: gateway %s, dnsmasq %s", net.vni, net.gateway_cidr, proc.pid)

    @staticmethod
    def _until_listening(net: ManagedNetwork, proc: subprocess.Popen) -> None:
        """A started gateway serves: wait (bounded) until dnsmasq answers on port 53."""
        deadline = time.monotonic() + LISTEN_WAIT
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                socket.create_connection((net.gateway, 53), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.02)   # dnsmasq is binding its sockets
        log.warning("network %s: dnsmasq does not answer on %s:53 yet", net.vni, net.gateway)

    def _stop(self, vni: int) -> None:
        net, proc = self.serving.pop(vni)
        (self.run_dir / f"dnsmasq-{vni}.pid").unlink(missing_ok=True)
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(STOP_WAIT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        try:
            ip.del_address(net.bridge, net.gateway_cidr)
        except PvcError as e:
            log.warning("network %s: gateway address not removed: %s", vni, e)

    def not_serving(self) -> dict[int, str]:
        """While active: the managed networks whose dnsmasq does not run here, and why."""
        if not self.active:
            return {}
        wanted = {n.vni for n in managed.all_networks(self.cluster)}
        down = {}
        for vni in sorted(wanted):
            served = self.serving.get(vni)
            if served is None:
                down[vni] = "its gateway could not be started (see the node daemon's log)"
            elif served[1].poll() is not None:
                down[vni] = f"its dnsmasq exited ({served[1].returncode})"
        return down

    # ------------------------------------------------------------------ dnsmasq
    def hook(self, net: ManagedNetwork) -> Path:
        """dnsmasq runs its --dhcp-script without arguments of ours: a wrapper names them."""
        path = self.run_dir / f"lease-hook-{net.vni}"
        cmd = [sys.executable, "-m", "workers.lease_hook", "--config", self.config_path,
               "--vni", str(net.vni)]
        text = "#!/bin/sh\nexec " + " ".join(map(shlex.quote, cmd)) + ' "$@"\n'
        env_path = os.environ.get("PYTHONPATH", "")
        if env_path:
            text = text.replace("exec ", f"PYTHONPATH={shlex.quote(env_path)} exec ", 1)
        path.write_text(text)
        path.chmod(0o700)
        return path

    def command(self, net: ManagedNetwork) -> list[str]:
        d, gw = net.domain, net.gateway
        cmd = ["dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv",
               "--no-hosts", "--bind-interfaces", f"--listen-address={gw}",
               "--log-facility=-", "--user=root", "--pid-file=",
               f"--domain={d}", f"--local=/{d}/", f"--auth-zone={d}",
               f"--auth-server=ns1.{d},{gw}", f"--auth-peer={gw}",
               f"--host-record=ns1.{d},{gw}"]
        if net.dhcp:
            cmd += [f"--dhcp-range={net.dhcp_start},{net.dhcp_end},{LEASE_TIME}",
                    "--dhcp-authoritative", "--no-ping", "--leasefile-ro",
                    f"--dhcp-script={self.hook(net)}", "--log-dhcp",
                    f"--dhcp-option=option:router,{gw}",
                    f"--dhcp-option=option:dns-server,{gw}"]
        return cmd
