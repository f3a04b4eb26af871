"""VM lifecycle tasks. Thin: each names itself and calls the operation on this node."""
from __future__ import annotations

from pvc.vm import lifecycle
from pvc.vm import migration
from tasks.app import app
from tasks.base import PvcTask
from tasks.context import node_context


def _run(task: PvcTask, op_id: str, action: str) -> str:
    return lifecycle.execute(node_context(), op_id, action, task.report)


@app.task(name="pvc.vm.start", base=PvcTask, bind=True)
def start(self: PvcTask, vm_uuid: str, op_id: str) -> str:
    return _run(self, op_id, "start")


@app.task(name="pvc.vm.stop", base=PvcTask, bind=True)
def stop(self: PvcTask, vm_uuid: str, op_id: str) -> str:
    return _run(self, op_id, "stop")


@app.task(name="pvc.vm.shutdown", base=PvcTask, bind=True)
def shutdown(self: PvcTask, vm_uuid: str, op_id: str) -> str:
    return _run(self, op_id, "shutdown")


@app.task(name="pvc.vm.restart", base=PvcTask, bind=True)
def restart(self: PvcTask, vm_uuid: str, op_id: str) -> str:
    return _run(self, op_id, "restart")


@app.task(name="pvc.vm.migrate", base=PvcTask, bind=True)
def migrate(self: PvcTask, vm_uuid: str, op_id: str) -> str:
    """Migrate, unmigrate and move: the record says which, where to and how."""
    return migration.execute(node_context(), op_id, self.report)
