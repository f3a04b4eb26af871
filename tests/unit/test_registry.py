"""The operation registry and the Celery app agree, entry for entry."""
from __future__ import annotations

from pvc.operations import registry


def celery_task_names() -> set[str]:
    from tasks.app import app
    from tasks.operations import TASKS
    assert TASKS
    return {name for name in app.tasks if not name.startswith("celery.")}


def test_every_registered_kind_has_its_celery_task_and_no_task_is_unregistered() -> None:
    assert celery_task_names() == {k.task for k in registry.KINDS.values()}


def test_every_kind_has_its_own_task_name_and_an_executor() -> None:
    from pvc.node.executors import EXECUTORS
    names = [k.task for k in registry.KINDS.values()]
    assert len(names) == len(set(names))            # Flower tells them apart
    assert set(EXECUTORS) == set(registry.KINDS)
    for spec in registry.KINDS.values():
        assert callable(EXECUTORS[spec.kind]), spec.kind
        assert spec.task == f"pvc.{spec.kind}"


def test_new_records_name_the_task_of_their_kind() -> None:
    from pvc.operations.records import new_operation
    op = new_operation("vm.unmigrate", "web1", "u1", "hv2")
    assert op.task == "pvc.vm.unmigrate" and op.node == "hv2"
