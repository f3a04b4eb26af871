"""Progress reports to Celery never hold up the task (tasks/progress.py): a broker that does
not answer delays only the report."""
from __future__ import annotations

import threading

from tasks.progress import Outbox


def test_a_report_does_not_wait_for_a_broker_that_does_not_answer() -> None:
    box = Outbox()
    in_flight, broker_back = threading.Event(), threading.Event()
    sent: list[str] = []

    def stuck() -> None:
        in_flight.set()
        broker_back.wait(30)
        sent.append("first")
    box.post("t1", stuck)                     # returns at once, though the send hangs
    assert in_flight.wait(10)
    box.post("t1", lambda: sent.append("second"))
    box.post("t1", lambda: sent.append("third"))   # replaces "second", never sent
    assert sent == []
    broker_back.set()
    assert box.idle(10)
    assert sent == ["first", "third"]


def test_a_task_end_drops_its_unsent_report_and_waits_for_the_one_in_flight() -> None:
    box = Outbox()
    in_flight, release = threading.Event(), threading.Event()
    sent: list[str] = []

    def slow() -> None:
        in_flight.set()
        release.wait(30)
        sent.append("slow")
    box.post("t1", slow)
    assert in_flight.wait(10)
    box.post("t1", lambda: sent.append("dropped"))
    assert box.close("t1", wait=0.05) is False      # still in flight: the caller says so
    release.set()
    assert box.close("t1", wait=10) is True
    assert box.idle(10)
    assert sent == ["slow"]


def test_a_failed_report_is_logged_and_the_next_one_goes(caplog: object) -> None:
    box = Outbox()
    sent: list[str] = []

    def fails() -> None:
        raise ConnectionError("No master found for 'pvc'")
    box.post("t1", fails)
    assert box.idle(10)
    box.post("t2", lambda: sent.append("t2"))
    assert box.idle(10)
    assert sent == ["t2"]
    assert "progress not sent to Celery (No master found" in caplog.text  # type: ignore
