"""The layout's rules, checked on the source: who may import what."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("pvc", "tasks", "workers", "cli")

# Each subpackage of pvc/ and the subpackages it may import (besides itself). Imports made only
# for type hints (under `if TYPE_CHECKING:`) do not count: they load nothing.
# Layers, bottom up: core → hypervisor, network → operations → vm, coordinator → node,
# console → sandbox.
ALLOWED: dict[str, set[str]] = {
    "core": set(),
    "hypervisor": {"core"},
    "network": {"core"},
    "operations": {"core"},
    "vm": {"core", "network", "operations"},
    "coordinator": {"core", "network", "operations"},
    "node": {"core", "hypervisor", "network", "operations", "vm", "coordinator"},
    "console": {"core", "vm"},
    "sandbox": {"core", "hypervisor", "network", "vm", "coordinator", "node", "install"},
    "install": {"core"},
}


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    found: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
            found.update(id(n) for n in ast.walk(node))
    return found


def imported_modules(path: Path) -> set[str]:
    """Dotted names of the modules a file imports at run time."""
    tree = ast.parse(path.read_text())
    hints_only = _type_checking_nodes(tree)
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in hints_only:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return found


def sources() -> dict[str, set[str]]:
    return {str(p.relative_to(ROOT)): imported_modules(p)
            for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def tops(mods: set[str]) -> set[str]:
    return {m.split(".")[0] for m in mods}


def test_the_domain_imports_neither_celery_nor_click() -> None:
    offenders = [f for f, mods in sources().items()
                 if f.startswith("pvc/") and tops(mods) & {"celery", "click", "kombu"}]
    assert offenders == []


def test_only_the_store_backend_imports_kazoo_and_only_the_adapter_imports_libvirt() -> None:
    src = sources()
    assert [f for f, mods in src.items() if "kazoo" in tops(mods)] == ["pvc/core/zookeeper.py"]
    assert [f for f, mods in src.items() if "libvirt" in tops(mods)] == \
        ["pvc/hypervisor/adapter.py"]


def test_tasks_cli_and_workers_go_through_the_domain() -> None:
    for f, mods in sources().items():
        if f.startswith(("tasks/", "cli/", "workers/")):
            assert not tops(mods) & {"kazoo", "libvirt"}, f


def test_each_subpackage_imports_only_the_layers_below_it() -> None:
    problems = []
    for f, mods in sources().items():
        parts = f.split("/")
        if parts[0] != "pvc" or len(parts) < 3:
            continue
        sub = parts[1]
        used = {m.split(".")[1] for m in mods if m.startswith("pvc.") and m.count(".") >= 1}
        for other in sorted(used - {sub} - ALLOWED[sub]):
            problems.append(f"{f} imports pvc.{other}")
    assert problems == []


def test_every_subpackage_has_a_rule() -> None:
    subs = {p.name for p in (ROOT / "pvc").iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert subs == set(ALLOWED)


def test_the_cli_never_loads_the_hypervisor_adapter() -> None:
    for f, mods in sources().items():
        if f.startswith("cli/"):
            assert "pvc.hypervisor.adapter" not in mods, f


def test_every_test_waits_through_the_one_until() -> None:
    """Tests share their waits (tests/waiting.py): a helper named for waiting may set its
    own default bound or tolerance, but polls through `until`, with no loop of its own."""
    own = []
    for path in sorted((ROOT / "tests").rglob("*.py")):
        if path.name == "waiting.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef) and "until" in node.name and \
                    any(isinstance(n, ast.While) for n in ast.walk(node)):
                own.append(f"{path.relative_to(ROOT)}: {node.name}")
    assert own == []
