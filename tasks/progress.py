"""Progress sent to Celery (the result backend and a task event, which Flower shows) off the
task's path: a report never waits for the broker.

Why: a report is a write to the broker's Redis. While its master fails over (it was on a
coordinator that lost power) one write waits for Celery's retries, half a minute. A fence
reports as it goes; it must not start the dead node's VMs half a minute late for Flower's sake.
The operation's record in ZooKeeper has the progress anyway; this is the copy for Celery.

One sender thread per process (started in each pool child on first use), the latest report of
each task kept (an older one is worth nothing once a newer exists). When a task ends, its
unsent report is dropped and one in flight is waited for, boundedly, so that it does not land
after Celery's final state.
"""
from __future__ import annotations

import logging
import os
import threading
from typing import Callable

log = logging.getLogger(__name__)
CLOSE_WAIT = 5.0    # seconds a task's end waits for its report in flight


class Outbox:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._pending: dict[str, Callable[[], None]] = {}
        self._sending = ""
        self._pid = 0    # the process whose thread sends (a forked child starts its own)

    def post(self, task_id: str, send: Callable[[], None]) -> None:
        """Send this report soon; it replaces the task's report not yet sent."""
        with self._cond:
            self._pending[task_id] = send
            if self._pid != os.getpid():
                self._pid = os.getpid()
                threading.Thread(target=self._run, name="progress-outbox",
                                 daemon=True).start()
            self._cond.notify_all()

    def close(self, task_id: str, wait: float = CLOSE_WAIT) -> bool:
        """The task ended: drop its unsent report and wait for one in flight. False if that
        one is still in flight after `wait` seconds."""
        with self._cond:
            self._pending.pop(task_id, None)
            return self._cond.wait_for(lambda: self._sending != task_id, timeout=wait)

    def idle(self, wait: float) -> bool:
        """Everything posted has been sent (or failed); for tests."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._pending and not self._sending,
                                       timeout=wait)

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: bool(self._pending))
                task_id = next(iter(self._pending))
                send = self._pending.pop(task_id)
                self._sending = task_id
            try:
                send()
            except Exception as e:   # best effort: the record has the progress anyway
                log.warning("task %s: progress not sent to Celery (%s)", task_id, e)
            finally:
                with self._cond:
                    self._sending = ""
                    self._cond.notify_all()


outbox = Outbox()
