"""One thin, named Celery task per kind of operation in the registry.

Each task takes (target id, operation id), re-reads everything from ZooKeeper through its
operation's executor on this node, and returns the outcome sentence. Idempotent: a redelivered
task finds its record and finishes the job (or returns at once if it ended).
"""
from __future__ import annotations

from typing import Any

from pvc.node import executors
from pvc.operations.registry import KINDS, OperationKind
from tasks.app import app
from tasks.base import PvcTask
from tasks.context import node_context


def _define(spec: OperationKind) -> Any:
    def run(self: PvcTask, target_id: str, op_id: str) -> str:
        return executors.run(node_context(), spec.kind, op_id, self.reporter())

    run.__name__ = spec.task.replace(".", "_")
    run.__doc__ = f"{spec.kind} (runs on {spec.runs_on.value})"
    return app.task(name=spec.task, base=PvcTask, bind=True)(run)


TASKS: dict[str, Any] = {spec.task: _define(spec) for spec in KINDS.values()}
