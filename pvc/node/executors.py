"""Which function a node's worker runs for each kind of operation (the registry names the
kinds; this layer, above every executor, names their functions: nothing points up a layer).
Imported by a worker and by the unit tier's fake cluster, never by the CLI."""
from __future__ import annotations

from pvc.coordinator import switchover
from pvc.node import fencing, flush, uploads
from pvc.operations import frame
from pvc.operations.registry import KINDS, Executor, Reporter
from pvc.vm import batch, lifecycle, migration

EXECUTORS: dict[str, Executor] = {
    "vm.start": lifecycle.execute,
    "vm.stop": lifecycle.execute,
    "vm.shutdown": lifecycle.execute,
    "vm.restart": lifecycle.execute,
    "vm.disable": lifecycle.execute,
    "vm.migrate": migration.execute,
    "vm.unmigrate": migration.execute,
    "vm.move": migration.execute,
    "vms.start": batch.execute,
    "vms.stop": batch.execute,
    "vms.shutdown": batch.execute,
    "vms.restart": batch.execute,
    "vms.disable": batch.execute,
    "node.flush": flush.execute_flush,
    "node.unflush": flush.execute_unflush,
    "node.primary": switchover.execute,
    "db.switchover": switchover.execute_db,
    "node.fence": fencing.execute,
    "volume.upload": uploads.execute,
}


def run(ctx: frame.NodeFrame, kind: str, op_id: str, report: Reporter | None) -> str:
    """Run operation op_id of `kind` on this node, in the frame every operation shares."""
    return frame.run(ctx, op_id, report, EXECUTORS[kind], KINDS[kind].waits_first)
