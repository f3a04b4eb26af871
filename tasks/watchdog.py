"""The worker's guards against the broker's failures: a consumer watchdog, and broker
hiccups logged in one line.

The consumer watchdog: a worker whose consumer has stopped taking messages while
it is idle ends itself, to be started again by its supervisor (systemd, or the sandbox's).

Celery workers on Redis are known to stay connected but stop consuming after the broker's
master goes away while they are stopped or between two reads (upstream: celery#6348,
celery#10096): its socket to the dead master lies in CLOSE-WAIT and nothing polls it. pvc's
sweep cannot help (the message waits in the broker, where it belongs). So: every CHECK
seconds the worker looks at the next message of its node's queue; the same one there twice
while no task runs or waits in this worker means nothing consumes.
"""
from __future__ import annotations

import logging
import os
import signal
import threading
import time
from typing import Any, Callable

import redis

from pvc.core.config import Config
from pvc.core.errors import PvcError

log = logging.getLogger(__name__)
CHECK = 5.0            # seconds between two looks at the queue
EXIT_STALLED = 75      # EX_TEMPFAIL: the supervisor starts the worker again
SHUTDOWN_WAIT = 5.0    # seconds its warm shutdown may take


class ConsumerWatchdog:
    def __init__(self, cfg: Config, busy: Callable[[], bool],
                 check: float = CHECK) -> None:
        self.cfg = cfg
        self.busy = busy            # whether a task runs or waits in this worker
        self.check = check
        self.fired = threading.Event()
        self._stop = threading.Event()
        self._last = ""
        self._broker: Any = None

    def start(self) -> None:
        threading.Thread(target=self._run, name="consumer-watchdog", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.check):
            if self.stalled():
                log.error("this worker's consumer stopped taking messages (operation %s has "
                          "waited in its queue for %gs while the worker is idle); ending the "
                          "worker so that it is started again", self._last, self.check)
                self.fired.set()
                os.kill(os.getpid(), signal.SIGTERM)   # a warm shutdown: nothing runs
                # which may hang on the dead connection: nothing runs, so end it anyway
                time.sleep(SHUTDOWN_WAIT)
                os._exit(EXIT_STALLED)

    def stalled(self) -> bool:
        """The same message next in the queue as CHECK seconds ago, with nothing running."""
        from tasks.broker import RedisBroker
        try:
            if self._broker is None:
                self._broker = RedisBroker(self.cfg)
            waiting = self._broker.next_waiting(self.cfg.node.name)
        except (redis.RedisError, PvcError, OSError) as e:   # failing over: not yet
            log.debug("watchdog: broker not readable (%s)", e)
            waiting = ""
        stalled = bool(waiting) and waiting == self._last and not self.busy()
        self._last = waiting
        return stalled


class BrokerHiccupsInOneLine(logging.Filter):
    """kombu's event loop logs a timer's error with its traceback, and Celery's consumer its
    "frequent restarts" pause with one. A Redis master refusing writes for a moment
    (NOREPLICAS while its replicas reconnect, READONLY once demoted, a connection lost in a
    failover) is the broker's weather, not a bug: one line each, which the reconnection
    follows."""

    def filter(self, record: logging.LogRecord) -> bool:
        from billiard.exceptions import RestartFreqExceeded
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, (redis.RedisError, RestartFreqExceeded)):
            record.exc_info = None
            record.exc_text = None
        return True


def quiet_broker_hiccups() -> None:
    for name in ("kombu.asynchronous.hub", "celery.worker.consumer.consumer"):
        logging.getLogger(name).addFilter(BrokerHiccupsInOneLine())

