"""Configuration: one YAML file per node (or a client), validated against a declarative schema.

The schema is the dataclasses below: each field's type, default and `meta(...)` constraints are
the whole truth about a key. `load()` reports every problem at once, each with its key path.
Environment variables override file values: `PVC_NODE__NAME=hv2` sets `node.name` (sections and
keys joined by a double underscore, because keys contain single ones); values are read as YAML
scalars, then validated like the file.
"""
from __future__ import annotations

import dataclasses
import ipaddress
import math
import os
import re
import stat
import typing
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import yaml

from pvc.core import names
from pvc.core.errors import ConfigError

ENV_PREFIX = "PVC_"
SELECTORS = ("mem", "memprov", "load", "vcpus", "vms")
MIGRATION_METHODS = ("live", "shutdown", "none")


def meta(help: str, choices: tuple[str, ...] | None = None, minimum: float | None = None,
         maximum: float | None = None, secret: bool = False) -> dict[str, Any]:
    return {"help": help, "choices": choices, "minimum": minimum, "maximum": maximum,
            "secret": secret}


def _f(default: Any, help: str, **kw: Any) -> Any:
    if isinstance(default, (list, dict)):
        factory: Callable[[], Any] = lambda: type(default)(default)
        return field(default_factory=factory, metadata=meta(help, **kw))
    return field(default=default, metadata=meta(help, **kw))


@dataclass(frozen=True)
class ZooKeeperConfig:
    hosts: str = _f("127.0.0.1:2181", "comma-separated host:port list of the ensemble")
    root: str = _f("/pvc", "chroot under which all pvc state lives")
    timeout: float = _f(5.0, "seconds any single ZooKeeper call may take", minimum=0.1)
    session_timeout: float = _f(10.0, "session timeout; a dead daemon is seen dead after it",
                                minimum=1.0)
    auth_file: str = _f("", "file (mode 0600) holding `user:password`: pvc authenticates "
                            "with it and every znode it creates is readable and writable by "
                            "that identity only (empty: no authentication, open znodes)")
    sasl: bool = _f(True, "log each session in with SASL (DIGEST-MD5) as auth_file's user: "
                          "the servers refuse every session that has not logged in (README, "
                          "Security); false only for servers without a JAAS Server section")


@dataclass(frozen=True)
class RedisConfig:
    host: str = _f("127.0.0.1", "Redis host (Celery broker and results)")
    port: int = _f(6379, "Redis port", minimum=1, maximum=65535)
    password: str = _f("", "Redis password (keep the file mode 0600)", secret=True)
    password_file: str = _f("", "file holding the Redis password, instead of `password`")
    sentinels: str = _f("", "comma-separated host:port list of the Redis Sentinels: clients "
                            "find the master through them (host and port are then unused); "
                            "the Sentinels share the Redis password")
    master_name: str = _f("pvc", "the name the Sentinels monitor the master under")
    broker_db: int = _f(0, "database number of the broker", minimum=0)
    result_db: int = _f(1, "database number of the result backend", minimum=0)


@dataclass(frozen=True)
class MigrationConfig:
    default_method: str = _f("live", "method when neither request nor VM says",
                             choices=MIGRATION_METHODS)
    default_selector: str = _f("mem", "target selector when the VM has none", choices=SELECTORS)
    max_parallel: int = _f(4, "migrations running at once in one flush, cluster-wide", minimum=1)
    per_source: int = _f(4, "migrations leaving one node at once", minimum=1)
    per_target: int = _f(2, "migrations entering one node at once", minimum=1)
    timeout: float = _f(300.0, "seconds one migration may take before it is aborted",
                        minimum=1.0)
    bandwidth: int = _f(0, "MiB/s one live migration may use (0: unlimited)", minimum=0)


@dataclass(frozen=True)
class OperationsConfig:
    shutdown_timeout: float = _f(60.0, "seconds a graceful shutdown may take before a hard stop",
                                 minimum=0.0)
    keep_records: int = _f(1000, "operation records kept in ZooKeeper", minimum=10)
    lost_after: float = _f(30.0, "seconds an operation may wait with no message in the broker "
                                 "(and no live executor) before the primary sends it again",
                           minimum=1.0)
    max_resends: int = _f(3, "times the primary sends a lost operation again before it fails "
                             "it", minimum=0)
    drift_grace: float = _f(15.0, "seconds a VM's desired and observed state may disagree "
                                  "(and a node fail to fix it) before the cluster is degraded",
                            minimum=0.0)


@dataclass(frozen=True)
class DatabaseConfig:
    enabled: bool = _f(False, "the DNS aggregator's PostgreSQL runs under Patroni on the "
                              "coordinators (a member per coordinator, named after it)")
    scope: str = _f("pvc", "Patroni's cluster name (its namespace in ZooKeeper)")
    patroni_port: int = _f(8008, "Patroni's REST API port on each coordinator's cluster "
                                 "address", minimum=1, maximum=65535)
    postgres_port: int = _f(5432, "PostgreSQL's port on each coordinator's cluster address",
                            minimum=1, maximum=65535)
    rest_auth_file: str = _f("", "file (mode 0600) holding `user:password` of Patroni's REST "
                                 "API (its restapi.authentication): pvc sends it with every "
                                 "request; Patroni refuses unauthenticated writes")


@dataclass(frozen=True)
class FencingConfig:
    enabled: bool = _f(True, "the primary fences dead nodes that have a BMC (node.ipmi_host)")
    intervals: int = _f(6, "a node is dead after this many of its keepalive intervals without "
                           "a keepalive (and its ZooKeeper session gone)", minimum=2)
    saving_throws: int = _f(3, "the primary checks this many more times, a keepalive apart, "
                               "before it fences", minimum=0)
    action: str = _f("migrate", "after a confirmed power-off: migrate (start its VMs "
                                "elsewhere) or none", choices=("migrate", "none"))
    power_timeout: float = _f(10.0, "seconds to wait for the BMC to report power off",
                              minimum=1.0)


@dataclass(frozen=True)
class DnsConfig:
    enabled: bool = _f(False, "the DNS aggregator publishes the managed networks' zones in "
                              "PowerDNS's database (needs cluster.database), served by a "
                              "PowerDNS on every coordinator")
    port: int = _f(53, "PowerDNS's port (on the floating IP and each coordinator's cluster "
                       "address)", minimum=1, maximum=65535)
    dbname: str = _f("pvcdns", "PowerDNS's database")
    user: str = _f("pdns", "the database role PowerDNS and the aggregator use")
    password_file: str = _f("", "file (mode 0600) holding that role's password")


@dataclass(frozen=True)
class StorageConfig:
    enabled: bool = _f(False, "VM disks on Ceph RBD: pvc manages pools, volumes and snapshots "
                              "and hands each disk's lock over (Ceph itself is installed and "
                              "run by the operator)")
    ceph_conf: str = _f("/etc/ceph/ceph.conf", "Ceph's configuration (monitors, fsid)")
    client: str = _f("pvc", "pvc's cephx user (client.NAME); its key is in `keyring`")
    keyring: str = _f("", "keyring (mode 0600) holding pvc's key; empty: ceph.conf's")
    pool: str = _f("vms", "the pool of VM disks when a command names none")
    libvirt_user: str = _f("libvirt", "the cephx user QEMU opens disks as (profile rbd)")
    libvirt_key_file: str = _f("", "file (mode 0600) holding that user's key (base64); each "
                                    "node's daemon gives it to its libvirtd as a secret")
    libvirt_secret_uuid: str = _f("", "UUID of that libvirt secret, the same on every node")
    timeout: float = _f(10.0, "seconds one Ceph call may take", minimum=0.5)


@dataclass(frozen=True)
class MetricsConfig:
    enabled: bool = _f(False, "the primary serves Prometheus metrics (pvc.observe.exporter) "
                       "at listen:port, to a scraper that sends the bearer token")
    listen: str = _f("", "address the endpoint binds; empty: the floating IP's (the endpoint "
                     "follows the primary)")
    port: int = _f(9105, "the endpoint's port", minimum=1, maximum=65535)
    token_file: str = _f("", "file (mode 0600) holding the bearer token a scrape must send")
    interval: float = _f(10.0, "seconds between two collections of the cluster's figures (a "
                         "scrape serves the last one)", minimum=0.5)
    stats_interval: float = _f(10.0, "seconds between two samples of a node's VM statistics",
                               minimum=0.5)
    stats_rate: int = _f(16 * 1024, "bytes per second a node's VM statistics may write to "
                         "ZooKeeper (a larger sample waits longer)", minimum=256)


@dataclass(frozen=True)
class ClusterConfig:
    name: str = _f("pvc", "cluster name")
    coordinators: list[str] = _f([], "node names taking part in the primary election")
    floating_ip: str = _f("", "the cluster's floating address (CIDR, e.g. 10.0.0.250/24), held "
                              "by the primary coordinator on its cluster_interface")
    flower_url: str = _f("", "where operators open Flower (e.g. http://10.0.0.250:5555); "
                             "`pvc task show` links each task's page there")
    handoff_delay: float = _f(2.0, "seconds the old primary keeps the floating IP after the new "
                                   "one announced it (ARP caches settle)", minimum=0.0)
    console_log_lines: int = _f(1000, "lines of console kept per VM (the buffer follows the "
                                      "VM from node to node)", minimum=1)
    console_log_bytes: int = _f(128 * 1024, "most bytes of console kept per VM (at most "
                                            "524288: ZooKeeper's node size)", minimum=4096)
    console_log_rate: int = _f(64 * 1024, "bytes per second one VM's console may write to "
                                          "ZooKeeper; a chattier guest is written less often",
                               minimum=1024)
    node_log_lines: int = _f(1000, "lines of log kept per node (its daemon, workers and tailer; "
                             "`pvc node log`)", minimum=1)
    node_log_bytes: int = _f(128 * 1024, "most bytes of log kept per node", minimum=1024)
    node_log_rate: int = _f(32 * 1024, "bytes per second each process of a node may write to its "
                            "log in ZooKeeper (lines beyond it are dropped and counted)",
                            minimum=256)
    zookeeper: ZooKeeperConfig = field(default_factory=ZooKeeperConfig)
    redis: RedisConfig = field(default_factory=RedisConfig)
    migration: MigrationConfig = field(default_factory=MigrationConfig)
    operations: OperationsConfig = field(default_factory=OperationsConfig)
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    dns: DnsConfig = field(default_factory=DnsConfig)
    fencing: FencingConfig = field(default_factory=FencingConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)


@dataclass(frozen=True)
class NodeConfig:
    name: str = _f("", "this node's name; empty on a client-only configuration")
    enable_hypervisor: bool = _f(True, "run VMs here (off: never a target, runs no VMs)")
    enable_networking: bool = _f(False, "manage cluster networks on this node")
    enable_storage: bool = _f(False, "this node reaches the cluster's Ceph (its libvirtd gets "
                                     "the disks' secret; VMs with RBD disks may run here) and "
                                     "holds OSDs (a flush sets noout for them)")
    libvirt_uri: str = _f("qemu:///system", "libvirt URI of this node's hypervisor")
    migration_uri: str = _f("", "libvirt URI other nodes use to reach this one (default: "
                                "libvirt_uri)")
    migration_address: str = _f("127.0.0.1", "address QEMU live-migration traffic goes to")
    cluster_interface: str = _f("", "interface on the cluster network (the floating IP goes "
                                    "there while this node is the primary)")
    cluster_address: str = _f("", "this node's address on the cluster network (Patroni, "
                                  "PowerDNS; default: migration_address)")
    domain_type: str = _f("", "force every guest's <domain type> (e.g. qemu for TCG); empty: "
                              "as defined", choices=("", "kvm", "qemu", "test"))
    console_log_directory: str = _f("/var/log/pvc/console", "where guests' serial logs go")
    run_directory: str = _f("/run/pvc", "this node's runtime files (the primary's DHCP servers)")
    ipmi_host: str = _f("", "this node's BMC (IPMI over LAN), which the primary uses to power "
                            "it off when it dies; empty: the node cannot be fenced")
    ipmi_port: int = _f(623, "the BMC's UDP port", minimum=1, maximum=65535)
    ipmi_user: str = _f("", "BMC user")
    ipmi_password_file: str = _f("", "file (mode 0600) holding the BMC password")
    stop_budget: float = _f(900.0, "seconds this node's stop may take with pvc-flush.service: "
                                   "the flush, then shutting down cleanly what could not "
                                   "move (the unit's TimeoutStopSec)", minimum=60.0)
    keepalive_interval: float = _f(5.0, "seconds between keepalives", minimum=0.1)
    restart_limit: int = _f(3, "times a VM that should run and died is started again within "
                               "restart_window before it is left stopped", minimum=0)
    restart_window: float = _f(300.0, "seconds of the crash-loop bound", minimum=1.0)
    worker_concurrency: int = _f(2, "parallel tasks of this node's Celery worker", minimum=1)
    worker_pool: str = _f("threads", "how the worker runs its tasks: threads (one process, "
                                     "about 60 MiB less per node) or prefork (a process per "
                                     "task slot)", choices=("threads", "prefork"))


@dataclass(frozen=True)
class Config:
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    node: NodeConfig = field(default_factory=NodeConfig)
    source: str = field(default="", metadata={"internal": True})
    warnings: tuple[str, ...] = field(default=(), metadata={"internal": True})
    exposed_secrets: bool = field(default=False, metadata={"internal": True})

    @property
    def is_node(self) -> bool:
        return bool(self.node.name)

    def zookeeper_auth(self) -> tuple[str, str] | None:
        """(user, password) of the cluster's ZooKeeper identity, if configured."""
        return _user_password(self.cluster.zookeeper.auth_file)

    def patroni_auth(self) -> tuple[str, str] | None:
        """(user, password) of Patroni's REST API, if configured."""
        return _user_password(self.cluster.database.rest_auth_file)

    def ipmi_password(self) -> str:
        path = self.node.ipmi_password_file
        return Path(path).read_text().strip() if path else ""

    def dns_password(self) -> str:
        path = self.cluster.dns.password_file
        return Path(path).read_text().strip() if path else ""

    def metrics_token(self) -> str:
        path = self.cluster.metrics.token_file
        return Path(path).read_text().strip() if path else ""

    def metrics_address(self) -> str:
        """Where the metrics endpoint binds: its own address, else the floating IP's."""
        return self.cluster.metrics.listen or self.cluster.floating_ip.split("/")[0]

    def redis_password(self) -> str:
        redis = self.cluster.redis
        if redis.password_file:
            return Path(redis.password_file).read_text().strip()
        return redis.password


def _user_password(path: str) -> tuple[str, str] | None:
    """(user, password) from a `user:password` file; None when no file is configured."""
    if not path:
        return None
    user, _, password = Path(path).read_text().strip().partition(":")
    return user, password


# ---------------------------------------------------------------------------- validation

def _type_name(tp: Any) -> str:
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false",
            list: "a list"}.get(typing.get_origin(tp) or tp, str(tp))


def _check_scalar(tp: Any, value: Any) -> tuple[bool, Any]:
    if tp is bool:
        return isinstance(value, bool), value
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if tp is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return ok, float(value) if ok else value
    if tp is str:
        return isinstance(value, str), value
    return False, value


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _build(cls: type, data: Any, path: str, errors: list[str]) -> Any:
    """Build dataclass `cls` from `data`, appending every problem found to `errors`."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        errors.append(f"{path or '(top)'}: expected a mapping, got {type(data).__name__}")
        return cls()
    hints = _field_types(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    for key in data:
        if key not in fields:
            errors.append(f"{_join(path, str(key))}: unknown key")
    values: dict[str, Any] = {}
    for name, f in fields.items():
        if name not in data:
            continue
        value = _check_field(hints[name], f.metadata, data[name], _join(path, name), errors)
        if value is not _INVALID:
            values[name] = value
    return cls(**values)


_INVALID = object()


def _check_field(tp: Any, md: Mapping[str, Any], value: Any, path: str, errors: list[str]) -> Any:
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _build(tp, value, path, errors)
    if typing.get_origin(tp) is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, list):
            errors.append(f"{path}: expected a list, got {type(value).__name__}")
            return _INVALID
        items = []
        for i, item in enumerate(value):
            ok, item = _check_scalar(item_tp, item)
            if not ok:
                errors.append(f"{path}[{i}]: expected {_type_name(item_tp)}")
            items.append(item)
        return items
    ok, value = _check_scalar(tp, value)
    if not ok:
        errors.append(f"{path}: expected {_type_name(tp)}, got {value!r}")
        return _INVALID
    if md.get("choices") is not None and value not in md["choices"]:
        allowed = ", ".join(repr(c) for c in md["choices"])
        errors.append(f"{path}: {value!r} is not one of {allowed}")
        return _INVALID
    if isinstance(value, float) and not math.isfinite(value):
        errors.append(f"{path}: {value!r} is not a finite number")
        return _INVALID
    if md.get("minimum") is not None and value < md["minimum"]:
        errors.append(f"{path}: {value!r} is below the minimum {md['minimum']}")
        return _INVALID
    if md.get("maximum") is not None and value > md["maximum"]:
        errors.append(f"{path}: {value!r} is above the maximum {md['maximum']}")
        return _INVALID
    return value


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


# Keys that moved: old (section, key) -> new section. The old place keeps working, with a warning.
MOVED_KEYS: dict[tuple[str, str], str] = {
    ("node", "console_log_lines"): "cluster",   # the buffer follows the VM between nodes
}


def _moved_keys(data: dict[str, Any]) -> list[str]:
    """Move deprecated keys to their new place in `data` (the new place wins); say so."""
    warnings = []
    for (old_section, key), new_section in MOVED_KEYS.items():
        section = data.get(old_section)
        if isinstance(section, dict) and key in section:
            value = section.pop(key)
            target = data.setdefault(new_section, {})
            if isinstance(target, dict):
                target.setdefault(key, value)
            warnings.append(f"{old_section}.{key} is deprecated: set {new_section}.{key} "
                            "instead")
    return warnings


def _semantic_checks(cfg: Config, errors: list[str]) -> None:
    redis = cfg.cluster.redis
    if redis.password and redis.password_file:
        errors.append("cluster.redis: set password or password_file, not both")
    _check_secret_file("cluster.redis.password_file", redis.password_file, errors)
    _check_secret_file("cluster.dns.password_file", cfg.cluster.dns.password_file, errors)
    _check_secret_file("node.ipmi_password_file", cfg.node.ipmi_password_file, errors)
    _storage_checks(cfg, errors)
    _metrics_checks(cfg, errors)
    if cfg.cluster.dns.enabled and not cfg.cluster.database.enabled:
        errors.append("cluster.dns: enabled needs cluster.database.enabled (its records live "
                      "in PostgreSQL)")
    zk = cfg.cluster.zookeeper
    for key, path in (("cluster.zookeeper.auth_file", zk.auth_file),
                      ("cluster.database.rest_auth_file", cfg.cluster.database.rest_auth_file)):
        _check_secret_file(key, path, errors, _holds_user_password, "must hold user:password")
    if cfg.cluster.floating_ip:
        try:
            iface = ipaddress.ip_interface(cfg.cluster.floating_ip)
            if iface.network.prefixlen == iface.max_prefixlen:
                errors.append("cluster.floating_ip: give the prefix length (e.g. /24)")
        except ValueError:
            errors.append(f"cluster.floating_ip: {cfg.cluster.floating_ip!r} is not an "
                          "address with a prefix length (e.g. 10.0.0.250/24)")
    for problem in _host_list_problems(zk.hosts):
        errors.append(f"cluster.zookeeper.hosts: {problem}")
    if not re.fullmatch(r"(/[A-Za-z0-9._-]+)+", zk.root) or "/.." in zk.root:
        errors.append("cluster.zookeeper.root: must be an absolute path below '/' "
                      "(e.g. /pvc)")
    name = cfg.node.name
    if name and not names.valid_name(name):
        errors.append(f"node.name: {name!r} must be letters, digits, '-' or '_'")
    for key in ("console_log_bytes", "node_log_bytes"):
        if getattr(cfg.cluster, key) > 512 * 1024:
            errors.append(f"cluster.{key}: at most 524288 (ZooKeeper's node size)")
    for i, c in enumerate(cfg.cluster.coordinators):
        if not names.valid_name(c):
            errors.append(f"cluster.coordinators[{i}]: {c!r} is not a valid node name")


def _storage_checks(cfg: Config, errors: list[str]) -> None:
    storage = cfg.cluster.storage
    if not storage.enabled:
        return
    _check_secret_file("cluster.storage.keyring", storage.keyring, errors)
    _check_secret_file("cluster.storage.libvirt_key_file", storage.libvirt_key_file, errors)
    if cfg.node.enable_storage and not (storage.libvirt_key_file and
                                        storage.libvirt_secret_uuid):
        errors.append("cluster.storage: a node with enable_storage needs libvirt_key_file and "
                      "libvirt_secret_uuid (the key QEMU opens disks with)")
    if storage.libvirt_secret_uuid:
        try:
            uuid.UUID(storage.libvirt_secret_uuid)
        except ValueError:
            errors.append(f"cluster.storage.libvirt_secret_uuid: "
                          f"{storage.libvirt_secret_uuid!r} is not a UUID")


def _metrics_checks(cfg: Config, errors: list[str]) -> None:
    metrics = cfg.cluster.metrics
    if not metrics.enabled:
        return
    if not metrics.token_file:
        errors.append("cluster.metrics: enabled needs token_file (a scrape must authenticate)")
    _check_secret_file("cluster.metrics.token_file", metrics.token_file, errors,
                       lambda text: bool(text.strip()), "is empty")
    if not (metrics.listen or cfg.cluster.floating_ip):
        errors.append("cluster.metrics: enabled needs listen or cluster.floating_ip (the "
                      "address the endpoint binds)")
    if metrics.listen:
        try:
            ipaddress.ip_address(metrics.listen)
        except ValueError:
            errors.append(f"cluster.metrics.listen: {metrics.listen!r} is not an address")


def _holds_user_password(text: str) -> bool:
    return ":" in text.strip() and not text.strip().startswith(":")


def _check_secret_file(key: str, path: str, errors: list[str],
                       valid: Callable[[str], bool] | None = None, what: str = "") -> None:
    """A secret file exists, only its owner can read it, and it holds what it should."""
    if not path:
        return
    p = Path(path)
    try:
        mode = p.stat().st_mode
        text = p.read_text()
    except FileNotFoundError:
        errors.append(f"{key}: {path} does not exist")
        return
    except (OSError, UnicodeDecodeError) as e:
        errors.append(f"{key}: cannot read {path} ({getattr(e, 'strerror', None) or e})")
        return
    if mode & 0o077:
        errors.append(f"{key}: {path} is readable by others (mode {mode & 0o777:o}); "
                      f"chmod 600 {path}")
    if valid is not None and not valid(text):
        errors.append(f"{key}: {path} {what}")


def _host_list_problems(hosts: str) -> list[str]:
    """host:port[,host:port…] with ports in 1-65535."""
    if not hosts.strip():
        return ["empty: name at least one host:port"]
    problems = []
    for entry in hosts.split(","):
        host, _, port = entry.strip().rpartition(":")
        if not host:
            problems.append(f"{entry.strip()!r} is not host:port")
        elif not port.isdigit() or not 1 <= int(port) <= 65535:
            problems.append(f"{entry.strip()!r}: port must be 1-65535")
    return problems


# ---------------------------------------------------------------------------- environment

def _env_overrides(environ: Mapping[str, str]) -> tuple[dict[str, Any], list[str]]:
    """Turn PVC_SECTION__KEY=value variables into a nested dict of overrides."""
    overrides: dict[str, Any] = {}
    errors: list[str] = []
    for var, raw in environ.items():
        if not var.startswith(ENV_PREFIX) or "__" not in var:
            continue
        parts = [p.lower() for p in var[len(ENV_PREFIX):].split("__")]
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            errors.append(f"{var}: not a valid value: {raw!r}")
            continue
        if value is None:
            value = ""
        target = overrides
        for p in parts[:-1]:
            target = target.setdefault(p, {})
            if not isinstance(target, dict):
                errors.append(f"{var}: conflicts with another override")
                break
        else:
            target[parts[-1]] = value
    return overrides, errors


def _merge(base: Any, over: Mapping[str, Any]) -> Any:
    if not isinstance(base, dict):
        base = {}
    merged = dict(base)
    for k, v in over.items():
        merged[k] = _merge(merged.get(k), v) if isinstance(v, dict) else v
    return merged


# ---------------------------------------------------------------------------- loading

def parse(data: Any, source: str = "", environ: Mapping[str, str] | None = None) -> Config:
    """Validate already-parsed YAML data (plus environment overrides) into a Config."""
    errors: list[str] = []
    overrides, env_errors = _env_overrides(os.environ if environ is None else environ)
    errors += env_errors
    if data is not None and not isinstance(data, Mapping):
        raise ConfigError(f"{source or 'configuration'}: expected a mapping at the top level",
                          [f"(top): expected a mapping, got {type(data).__name__}"])
    merged = _merge(data or {}, overrides)
    warnings = _moved_keys(merged)
    cfg = _build(Config, merged, "", errors)
    if not errors:
        _semantic_checks(cfg, errors)
    if errors:
        where = source or "configuration"
        raise ConfigError(f"{where}: {len(errors)} problem(s): " + "; ".join(errors), errors)
    return dataclasses.replace(cfg, source=source, warnings=tuple(warnings))


MAX_CONFIG_BYTES = 1024 * 1024


class _StrictLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """YAML's safe loader (libyaml's parser when PyYAML has it: every command reads the
    configuration, and the pure-Python parser took 15 ms of it), refusing a key given twice
    (PyYAML keeps the last silently)."""


def _mapping_without_duplicates(loader: _StrictLoader, node: yaml.MappingNode) -> Any:
    seen: set[Any] = set()
    for key_node, _value in node.value:
        key = loader.construct_object(key_node, deep=True)   # type: ignore[no-untyped-call]
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=True)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
                              _mapping_without_duplicates)


def load(path: str | Path, environ: Mapping[str, str] | None = None) -> Config:
    """Read and validate a YAML configuration file."""
    p = Path(path)
    try:
        if p.stat().st_size > MAX_CONFIG_BYTES:
            raise ConfigError(f"{p}: not a configuration file (larger than 1 MiB)")
        text = p.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(f"configuration file {p} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"{p} is a directory, not a configuration file") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{p}: not a text file (it is not UTF-8)") from None
    except OSError as e:
        raise ConfigError(f"cannot read configuration file {p}: {e.strerror}") from None
    if not text.strip():
        raise ConfigError(f"{p}: the file is empty")
    if "\0" in text:
        raise ConfigError(f"{p}: not a text file (it holds NUL bytes)")
    try:
        data = yaml.load(text, Loader=_StrictLoader)   # noqa: S506 (a safe loader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{p}: malformed YAML{where}: {problem}") from None
    if data is None:
        raise ConfigError(f"{p}: the file holds no settings (only comments)")
    cfg = parse(data, str(p), environ)
    secrets = _inline_secrets(cfg)
    if secrets and p.stat().st_mode & 0o077:
        mode = stat.S_IMODE(p.stat().st_mode)
        cfg = dataclasses.replace(cfg, warnings=cfg.warnings + (
            f"{p} holds a secret ({', '.join(secrets)}) and is readable by others (mode "
            f"{mode:o}): chmod 600 {p}",), exposed_secrets=True)
    return cfg


def _inline_secrets(cfg: Config) -> list[str]:
    """Keys whose secret is written in the file itself."""
    found = []

    def walk(obj: Any, path: str) -> None:
        for f in dataclasses.fields(obj):
            if f.metadata.get("internal"):
                continue
            value = getattr(obj, f.name)
            if dataclasses.is_dataclass(value):
                walk(value, _join(path, f.name))
            elif f.metadata.get("secret") and value:
                found.append(_join(path, f.name))
    walk(cfg, "")
    return found


def dump(cfg: Config) -> dict[str, Any]:
    """The configuration as plain data (for writing a file)."""
    data = dataclasses.asdict(cfg)
    for internal in ("source", "warnings", "exposed_secrets"):
        data.pop(internal, None)
    return data


def write(cfg: Config, path: Path) -> None:
    """Write a configuration file readable by its owner only (it may hold secrets)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        yaml.safe_dump(dump(cfg), f, sort_keys=False)


def describe() -> list[tuple[str, str, Any]]:
    """Every key with its help text and default, for documentation."""
    rows: list[tuple[str, str, Any]] = []

    def walk(cls: type, path: str) -> None:
        hints = _field_types(cls)
        for f in dataclasses.fields(cls):
            if f.metadata.get("internal"):
                continue
            key = _join(path, f.name)
            if dataclasses.is_dataclass(hints[f.name]):
                walk(hints[f.name], key)
            else:
                default = (f.default if f.default is not dataclasses.MISSING
                           else f.default_factory())  # type: ignore[misc,operator]
                rows.append((key, f.metadata.get("help", ""), default))

    walk(Config, "")
    return rows



# ---------------------------------------------------------------------------- discovery

SYSTEM_CONFIG = Path("/etc/pvc/pvc.yaml")
DEFAULT_SANDBOX_DIR = "/run/pvc/sandbox"


def sandbox_dir(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    return Path(env.get("PVC_SANDBOX_DIR", DEFAULT_SANDBOX_DIR))


def locate(explicit: str | None = None, environ: Mapping[str, str] | None = None,
           sandbox: bool = False) -> Path:
    """Which configuration to use: --config, then $PVC_CONFIG, then (for the operator's CLI
    only, which asks with sandbox=True) a running sandbox's client configuration, then
    /etc/pvc/pvc.yaml. A daemon never picks up a sandbox's file by accident."""
    env = os.environ if environ is None else environ
    if explicit:
        return Path(explicit)
    if env.get("PVC_CONFIG"):
        return Path(env["PVC_CONFIG"])
    sandbox_client = sandbox_dir(env) / "client.yaml"
    if sandbox and sandbox_client.is_file():
        return sandbox_client
    if SYSTEM_CONFIG.is_file():
        return SYSTEM_CONFIG
    start = ", or start a sandbox with `pvc sandbox up`" if sandbox else ""
    raise ConfigError("no pvc configuration: pass --config FILE, set PVC_CONFIG or write "
                      f"{SYSTEM_CONFIG}{start}")
