"""The one execution frame of every operation: what an executor may use of its node, and the
prologue and epilogue every executor shares, written once.

A node's worker runs an operation as `run(frame, op_id, report, executor, waits_first)`: the
executor's lease is taken, an operation that already ended is left alone ("already done"), the
record goes `running` (unless the operation waits for a lock first and says so itself), and the
executor's outcome sentence ends it `succeeded` unless the executor ended it otherwise. An
executor is then only its own work: `fn(frame, run) -> outcome`.

`NodeFrame` is a protocol: `pvc.node.context.NodeContext` implements it, and nothing below the
node layer needs to know that class.
"""
from __future__ import annotations

from typing import Protocol

from pvc.core.cluster import Cluster
from pvc.core.config import Config
from pvc.core.models import Node
from pvc.core.schema import Schema
from pvc.core.store import Store
from pvc.hypervisor.base import Hypervisor
from pvc.operations.registry import Executor, Reporter
from pvc.operations.runner import Runner


class DomainWaiter(Protocol):
    def wait(self, node: str, uuid: str, present: bool, timeout: float) -> bool:
        """Until node publishes uuid as running (present) or not; False on timeout."""


class NodeFrame(Protocol):
    """What an executor may use of the node it runs on."""

    name: str
    config: Config
    cluster: Cluster

    @property
    def observed(self) -> DomainWaiter:
        """What every node publishes it runs, waited on."""

    @property
    def store(self) -> Store: ...

    @property
    def schema(self) -> Schema: ...

    @property
    def hv(self) -> Hypervisor:
        """This node's hypervisor."""

    def hypervisor_for(self, node: Node) -> Hypervisor:
        """This node's hypervisor, or another node's through its migration URI."""

    def node_xml(self, uuid: str) -> str:
        """A VM's definition as this node runs it."""

    def refresh(self) -> None:
        """After acting on the hypervisor: publish what runs here."""


def run(frame: NodeFrame, op_id: str, report: Reporter | None, executor: Executor,
        waits_first: bool = False) -> str:
    """Run operation op_id's executor in the frame every operation shares."""
    with Runner(frame.cluster, op_id, report) as runner:
        if runner.record is None:
            return "already done"
        if not waits_first:
            runner.running()
        outcome = executor(frame, runner)
        if not runner.ended:
            runner.succeed(outcome)
        return outcome
