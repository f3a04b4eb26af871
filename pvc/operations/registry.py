"""The operation registry: every kind of operation pvc runs, in one table.

For each kind: the Celery task that carries it (one name per kind, so Flower tells them apart),
whose queue runs it, and how it reports progress. The function a node's worker calls to execute
it is named in `pvc.node.executors`, the layer that knows them all (this one knows none). The request side (`pvc.operations.requests`, the CLI) writes the task name into the
operation record from here; `tasks/` defines one thin Celery task per entry. A unit test holds
the two sides together.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Callable

from pvc.core.errors import InvalidInput

Reporter = Callable[[dict[str, Any]], None]
Executor = Callable[..., str]
"""fn(frame, run) -> the outcome sentence (pvc.operations.frame runs it)."""


class RunsOn(StrEnum):
    """Whose queue (`pvc.node.<name>`) gets the task; the request records that node."""
    VM_NODE = "vm-node"     # the node running the VM, or the one chosen to start it
    SOURCE = "source"       # the node the VM leaves (migrations are pushed by the source)
    NODE = "node"           # the node the operation is about (flush, unflush, a batch)


class Progress(StrEnum):
    """How the operation reports, so a follower knows what to draw."""
    STEPS = "steps"         # a line per step
    ITEMS = "items"         # per-VM items: done of total (a progress bar)


@dataclass(frozen=True)
class OperationKind:
    kind: str               # "vm.start": what the record says
    task: str               # Celery task name
    runs_on: RunsOn
    progress: Progress = Progress.STEPS
    waits_first: bool = False   # waits for a lock before it runs (and says so itself)

    @property
    def target(self) -> str:
        """What the operation is about: "vm" or "node"."""
        return self.kind.split(".", 1)[0]

    @property
    def action(self) -> str:
        return self.kind.split(".", 1)[1]


KINDS: dict[str, OperationKind] = {k.kind: k for k in (
    OperationKind("vm.start", "pvc.vm.start", RunsOn.VM_NODE),
    OperationKind("vm.stop", "pvc.vm.stop", RunsOn.VM_NODE),
    OperationKind("vm.shutdown", "pvc.vm.shutdown", RunsOn.VM_NODE),
    OperationKind("vm.restart", "pvc.vm.restart", RunsOn.VM_NODE),
    OperationKind("vm.disable", "pvc.vm.disable", RunsOn.VM_NODE),
    OperationKind("vm.migrate", "pvc.vm.migrate", RunsOn.SOURCE),
    OperationKind("vm.unmigrate", "pvc.vm.unmigrate", RunsOn.SOURCE),
    OperationKind("vm.move", "pvc.vm.move", RunsOn.SOURCE),
    # many VMs at once (pvc.vm.batch): one operation per node acting, each VM an item
    *(OperationKind(f"vms.{action}", f"pvc.vms.{action}", RunsOn.NODE, Progress.ITEMS)
      for action in ("start", "stop", "shutdown", "restart", "disable")),
    OperationKind("node.flush", "pvc.node.flush", RunsOn.NODE, Progress.ITEMS,
                  waits_first=True),
    OperationKind("node.unflush", "pvc.node.unflush", RunsOn.NODE, Progress.ITEMS,
                  waits_first=True),
    OperationKind("node.primary", "pvc.node.primary", RunsOn.NODE),
    OperationKind("db.switchover", "pvc.db.switchover", RunsOn.NODE),
    # run by the primary's worker: the node it is about is dead
    OperationKind("node.fence", "pvc.node.fence", RunsOn.NODE),
    # an image written into a volume by a storage node (done of total: percent)
    OperationKind("volume.upload", "pvc.volume.upload", RunsOn.NODE, Progress.ITEMS),
)}

BY_TASK: dict[str, OperationKind] = {k.task: k for k in KINDS.values()}

# Changes to the cluster's records alone: recorded as they are made (who, why, before and
# after), ended at once. No node runs them, so they have no task.
RECORDED: frozenset[str] = frozenset({
    "vm.modify", "vm.meta", "vm.rename",
    "node.cordon", "node.uncordon", "cluster.maintenance",
})


def task_of(name: str) -> str:
    """The Celery task of a kind ("" for a recorded-only change)."""
    return "" if name in RECORDED else kind(name).task


def kind(name: str) -> OperationKind:
    try:
        return KINDS[name]
    except KeyError:
        raise InvalidInput(f"unknown operation kind {name!r}") from None


def queue_for(node: str) -> str:
    """The Celery queue of a node's worker."""
    return f"pvc.node.{node}"
