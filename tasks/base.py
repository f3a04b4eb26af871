"""The base of every pvc task: admits only pvc's own submissions, renews its broker lease while
it runs, and reports progress as Celery task state and events (so Flower shows it).

Admission: a task's arguments are (target id, operation id) and its record in ZooKeeper must
name this task and this target. A message that does not (sent by hand, e.g. `celery call`) is
refused with one log line and recorded by Celery as a failure with the reason (Refused; no
operation record is touched: the message may name someone else's); one for another node's
operation (a worker consuming a foreign queue) is forwarded to that node's queue. Nothing runs
on the wrong node.
"""
from __future__ import annotations

import logging
from typing import Any, Callable

from celery import Task

from pvc.core.errors import PvcError, Unavailable
from tasks.app import LEASE_SECONDS
from tasks.lease import Lease
from tasks.progress import outbox

log = logging.getLogger(__name__)
ADMISSION_RETRY = 2.0   # seconds before a message ZooKeeper could not admit is tried again


class Refused(Exception):
    """A message pvc did not submit: the task fails with this sentence and does nothing."""


class PvcTask(Task):
    abstract = True
    autoretry_for = (Unavailable,)
    retry_backoff = 1
    retry_backoff_max = 30
    max_retries = 10
    throws = (Refused,)   # an expected failure: logged as one line, without a traceback

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            refusal = self.admit(args, kwargs)
        except Unavailable as e:
            # ZooKeeper did not answer whether the operation is ours: ask again later (a
            # refusal would drop the message, and the sweep would only re-send it minutes on)
            log.warning("task %s [%s]: %s; trying again in %gs", self.name, self.request.id,
                        e, ADMISSION_RETRY)
            raise self.retry(exc=e, countdown=ADMISSION_RETRY, max_retries=None)
        if refusal.startswith("forwarded"):
            log.info("task %s [%s] %s", self.name, self.request.id, refusal)
            return refusal
        if refusal:
            log.warning("task %s [%s] %s", self.name, self.request.id, refusal)
            raise Refused(refusal)
        # kombu's virtual transports keep the delivery tag in the message properties
        properties = getattr(self.request, "properties", None) or {}
        tag = properties.get("delivery_tag")
        from tasks.context import node_context
        try:
            with Lease(node_context().config, tag, LEASE_SECONDS):
                return super().__call__(*args, **kwargs)
        finally:
            if not outbox.close(self.request.id):
                log.warning("task %s: its last progress report to Celery is still in flight",
                            self.request.id)

    def admit(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        """Why this message must not run here ("" if it may)."""
        if self.request.called_directly:
            return ""
        if kwargs or len(args) != 2 or not all(isinstance(a, str) for a in args):
            return "refused: not a pvc submission (arguments must be target id, operation id)"
        target_id, op_id = args
        from tasks.context import node_context
        ctx = node_context()
        try:
            op = ctx.cluster.operation(op_id)
        except Unavailable:
            raise    # not a refusal: the message must not be dropped (see __call__)
        except PvcError as e:
            return f"refused: {e}"
        if op.task != self.name or op.target_id != target_id:
            return (f"refused: operation {op_id} is {op.kind} of {op.target}, not this "
                    f"task ({self.name}) of {target_id}")
        if op.node != ctx.name:
            from pvc.operations.registry import queue_for
            self.app.send_task(self.name, args=list(args), task_id=op_id,
                               queue=queue_for(op.node))
            return f"forwarded: operation {op_id} belongs to {op.node}, not {ctx.name}"
        return ""

    def reporter(self) -> Callable[[dict[str, Any]], None]:
        """Progress as Celery task state (result backend) and as a task event, which is what
        Flower listens to: it shows the task in state PROGRESS with these fields. Usable from
        any thread of the task (a flush reports from its migration threads, where Celery's
        task context does not reach): it carries the task's id and worker itself."""
        task_id, hostname = self.request.id, self.request.hostname
        if not task_id or self.request.called_directly:
            return lambda meta: None

        def report(meta: dict[str, Any]) -> None:
            fields = {k: v for k, v in meta.items() if k != "state"}
            # Flower shows a task's `result` while it runs: make it the progress line
            done = f"{meta['done']}/{meta['total']} done: " if meta.get("total") else ""
            fields["result"] = f"{done}{meta.get('message', '')}"

            def send() -> None:
                self.update_state(task_id=task_id, state="PROGRESS", meta=meta)
                with self.app.events.default_dispatcher(hostname=hostname) as dispatcher:
                    dispatcher.send("task-progress", uuid=task_id, **fields)
            outbox.post(task_id, send)   # never waits for the broker (tasks/progress.py)
        return report

    def on_failure(self, exc: BaseException, task_id: str, args: Any, kwargs: Any,
                   einfo: Any) -> None:
        """A crashed task never leaves its operation `running`: record the failure."""
        if isinstance(exc, Refused):
            return   # not pvc's submission: its arguments name no operation of ours to fail
        op_id = args[1] if len(args) > 1 else task_id
        try:
            from pvc.core import states
            from pvc.operations import records
            from tasks.context import node_context
            cluster = node_context().cluster
            if cluster.operation(op_id).state not in states.OP_TERMINAL:
                error = str(exc) if isinstance(exc, PvcError) else f"internal error: {exc!r}"
                records.finish(cluster, op_id, states.OpState.FAILED, error=error)
        except Exception:  # the safety net must not raise over the original failure
            log.exception("could not record the failure of operation %s", op_id)
