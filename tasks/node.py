"""Node tasks: flush and unflush, each on the node's own queue."""
from __future__ import annotations

from pvc.node import flush
from tasks.app import app
from tasks.base import PvcTask
from tasks.context import node_context


@app.task(name="pvc.node.flush", base=PvcTask, bind=True)
def flush_node(self: PvcTask, node: str, op_id: str) -> str:
    return flush.execute_flush(node_context(), op_id, self.report)


@app.task(name="pvc.node.unflush", base=PvcTask, bind=True)
def unflush_node(self: PvcTask, node: str, op_id: str) -> str:
    return flush.execute_unflush(node_context(), op_id, self.report)
