"""The one wait of the test suite: poll a condition until it holds, or fail naming it.

Tests wait for other threads and processes (a daemon's state in the store, a CLI's answer, a
log line): each wait is bounded and says what it waited for. `tolerate` names the errors that
mean "not yet" (a server between two masters)."""
from __future__ import annotations

import time
from typing import Any, Callable

INTERVAL = 0.02   # seconds between two looks


def until(what: str, condition: Callable[[], Any], timeout: float = 10,
          interval: float = INTERVAL, tolerate: tuple[type[Exception], ...] = ()) -> Any:
    """condition()'s first true value; AssertionError naming `what` after timeout s."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = condition()
        except tolerate:
            if time.monotonic() > deadline:
                raise
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)   # polling another thread's or process's state
