"""The layout's rules, checked on the source: who may import what."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("pvc", "tasks", "workers", "cli")


def imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def sources() -> dict[str, set[str]]:
    return {str(p.relative_to(ROOT)): imports(p)
            for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def test_the_domain_imports_neither_celery_nor_click() -> None:
    offenders = [f for f, mods in sources().items()
                 if f.startswith("pvc/") and mods & {"celery", "click", "kombu"}]
    assert offenders == []


def test_only_the_store_imports_kazoo_and_only_the_adapter_imports_libvirt() -> None:
    src = sources()
    assert [f for f, mods in src.items() if "kazoo" in mods] == ["pvc/core/zookeeper.py"]
    assert [f for f, mods in src.items() if "libvirt" in mods] == ["pvc/hypervisor/adapter.py"]


def test_tasks_and_cli_go_through_the_domain() -> None:
    src = sources()
    for f, mods in src.items():
        if f.startswith(("tasks/", "cli/", "workers/")):
            assert not mods & {"kazoo", "libvirt"}, f
