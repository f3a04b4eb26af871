"""The Celery app: Redis broker and results, JSON only, at-least-once delivery.

Delivery rules (see notes/environment.md §3):
  * acks_late + reject_on_worker_lost: a task is acknowledged only once it ended, and a pool
    child that dies hands its task back at once;
  * prefetch 1: a busy worker does not hoard its queue;
  * visibility timeout `LEASE_SECONDS` with a 1 s restore sweep: the task of a worker that died
    whole (node crash) is back in its queue within seconds. A running task renews its lease
    (tasks/lease.py), so a long flush is never handed out twice while its worker lives.
Every task is idempotent, so a redelivery is harmless.

`celery -A tasks.app flower` works too: the app configures itself from $PVC_CONFIG.
"""
from __future__ import annotations

import os
from typing import Any
from urllib.parse import quote

from celery import Celery

from pvc.core import config as configmod
from pvc.core import redis_client
from pvc.core.config import Config

LEASE_SECONDS = 10
UNACKED_MUTEX_SECONDS = 5   # a restore of the unacked messages takes milliseconds

app = Celery("pvc", set_as_current=True)


def redis_url(cfg: Config, db: int) -> str:
    r = cfg.cluster.redis
    password = cfg.redis_password()
    auth = f":{quote(password, safe='')}@" if password else ""
    return f"redis://{auth}{r.host}:{r.port}/{db}"


def sentinel_url(cfg: Config, db: int) -> str:
    """kombu's and Celery's URL of a Sentinel-watched Redis: every Sentinel, the master's
    password in each (the Sentinels' own is in the transport options)."""
    password = cfg.redis_password()
    auth = f":{quote(password, safe='')}@" if password else ""
    return ";".join(f"sentinel://{auth}{hp.strip()}/{db}"
                    for hp in cfg.cluster.redis.sentinels.split(",") if hp.strip())


def settings(cfg: Config) -> dict[str, Any]:
    r = cfg.cluster.redis
    transport: dict[str, Any] = {
        "visibility_timeout": LEASE_SECONDS, "unacked_restore_interval": 1,
        "unacked_restore_throttle": 1,
        # a worker killed while it restores unacked messages leaves kombu's mutex behind:
        # nobody restores anything until it expires (kombu's default: 300 s, during which a
        # dead worker's operation is neither redelivered nor resent by the sweep, which sees
        # its message unacked in the broker)
        "unacked_mutex_expire": UNACKED_MUTEX_SECONDS,
        "socket_connect_timeout": redis_client.CONNECT_TIMEOUT,
        "socket_timeout": 10, "health_check_interval": 5, "retry_on_timeout": True,
        # a master that went silent (powered off, cut off) is left within seconds
        "socket_keepalive": True, "socket_keepalive_options": redis_client.KEEPALIVE}
    results: dict[str, Any] = {"socket_connect_timeout": redis_client.CONNECT_TIMEOUT}
    url = redis_url
    if r.sentinels:
        sentinel_side = {"master_name": r.master_name,
                         "sentinel_kwargs": {"password": cfg.redis_password() or None,
                                             **redis_client.SENTINEL_CONNECTION}}
        transport.update(sentinel_side)
        results.update(sentinel_side)
        url = sentinel_url
    return {
        "broker_url": url(cfg, r.broker_db),
        "result_backend": url(cfg, r.result_db),
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        "event_serializer": "json",
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "broker_transport_options": transport,
        "result_backend_transport_options": results,
        # results and progress: bounded, so that a dead master costs seconds, not minutes
        "redis_socket_timeout": redis_client.TIMEOUT,
        "redis_socket_connect_timeout": redis_client.CONNECT_TIMEOUT,
        "redis_socket_keepalive": True,
        # a demoted master answers writes with READONLY: reconnect, do not give up
        "broker_channel_error_retry": True,
        "broker_connection_max_retries": None,
        "broker_connection_retry_on_startup": True,
        "broker_connection_timeout": 3,
        "task_track_started": True,
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "result_expires": 7 * 24 * 3600,
        "task_default_queue": "pvc.default",
        "worker_hijack_root_logger": False,
        "include": ["tasks.operations"],
    }


# Remote-control commands a pvc worker does not obey: they would stop, kill or re-route the
# operations it runs behind the operation records' back (Flower's Terminate left a node
# `flushing`). Inspection (ping, stats, active, registered, …) stays.
REFUSED_COMMANDS = ("revoke", "revoke_by_stamped_headers", "terminate", "shutdown",
                    "pool_restart", "pool_grow", "pool_shrink", "autoscale", "add_consumer",
                    "cancel_consumer", "rate_limit", "time_limit")


def refusal(command: str) -> str:
    return (f"pvc's workers refuse the remote-control command {command!r}: it would stop, "
            "kill or re-route operations behind their records' back (use pvc task cancel, "
            "pvc node flush, or systemd on the node)")


def refuse_remote_control() -> None:
    """Called in a worker before it starts: those commands then answer with a sentence
    saying why they are refused (and do nothing)."""
    from celery.worker.control import Panel, nok
    for name in REFUSED_COMMANDS:
        if name in Panel.data:
            Panel.data[name] = lambda _state, _name=name, **_kw: nok(refusal(_name))


def configure(cfg: Config) -> Celery:
    app.conf.update(settings(cfg))
    return app


if os.environ.get("PVC_CONFIG"):
    configure(configmod.load(os.environ["PVC_CONFIG"]))
