"""The layout's rules, checked on the source: who may import what."""
from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("pvc", "tasks", "workers", "cli")

# Each subpackage of pvc/ and the subpackages it may import (besides itself), at run time or
# for type hints alike: a hint that points up a layer couples as much as an import does.
# Layers, bottom up: core → hypervisor, network → operations → vm, coordinator → node,
# console → sandbox.
ALLOWED: dict[str, set[str]] = {
    "core": set(),
    "hypervisor": {"core"},
    "network": {"core"},
    "operations": {"core", "hypervisor"},
    "storage": {"core"},
    "vm": {"core", "hypervisor", "network", "operations", "storage"},
    "coordinator": {"core", "network", "operations"},
    "node": {"core", "hypervisor", "network", "operations", "vm", "coordinator", "storage"},
    "console": {"core", "vm"},
    "sandbox": {"core", "hypervisor", "network", "vm", "coordinator", "node", "install",
                "storage"},
    "install": {"core"},
    "observe": {"core", "hypervisor", "network", "operations", "vm", "coordinator", "node",
                "storage", "console"},
}

# The one module that talks to each outside system (by the library it imports).
ONLY_MODULE: dict[str, str] = {
    "kazoo": "pvc/core/zookeeper.py",               # ZooKeeper
    "libvirt": "pvc/hypervisor/adapter.py",         # libvirtd
    "psycopg2": "pvc/coordinator/postgres.py",      # PostgreSQL
    "dns": "pvc/node/dns.py",                       # dnspython: PowerDNS's zone transfers
    "pyghmi": "pvc/node/ipmi.py",                   # the BMCs
    "urllib.request": "pvc/coordinator/patroni.py",  # Patroni's REST API
    "rados": "pvc/storage/ceph.py",                 # Ceph (librados)
    "rbd": "pvc/storage/ceph.py",                   # Ceph (librbd)
    "prometheus_client": "pvc/observe/metrics.py",  # the metrics' exposition
}


def imported_modules(path: Path, hints: bool = False) -> set[str]:
    """Dotted names of the modules a file imports (at run time; with hints, also those
    imported for type hints only)."""
    tree = ast.parse(path.read_text())
    hints_only = set() if hints else _type_checking_nodes(tree)
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


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    found: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
            found.update(id(n) for n in ast.walk(node))
    return found


def sources(hints: bool = False) -> dict[str, set[str]]:
    return {str(p.relative_to(ROOT)): imported_modules(p, hints)
            for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def tops(mods: set[str]) -> set[str]:
    return {m.split(".")[0] for m in mods}


def module_name(file: str) -> str:
    name = file.removesuffix(".py").replace("/", ".")
    return name.removesuffix(".__init__")


def test_the_domain_imports_neither_celery_nor_click() -> None:
    offenders = [f for f, mods in sources().items()
                 if f.startswith("pvc/") and tops(mods) & {"celery", "click", "kombu"}]
    assert offenders == []


def test_each_outside_system_is_reached_by_one_module() -> None:
    src = sources(hints=True)
    found = {lib: [f for f, mods in src.items()
                   if any(m == lib or m.startswith(lib + ".") for m in mods)]
             for lib in ONLY_MODULE}
    assert found == {lib: [module] for lib, module in ONLY_MODULE.items()}


def test_only_the_ip_module_runs_the_ip_tool() -> None:
    """A command line that starts with "ip" (a list literal) is built in pvc/network/ip.py."""
    runs = set()
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.List) and node.elts and \
                        isinstance(node.elts[0], ast.Constant) and node.elts[0].value == "ip":
                    runs.add(str(path.relative_to(ROOT)))
    assert runs == {"pvc/network/ip.py"}


def test_tasks_cli_and_workers_go_through_the_domain() -> None:
    for f, mods in sources().items():
        if f.startswith(("tasks/", "cli/", "workers/")):
            assert not tops(mods) & {"kazoo", "libvirt"}, f


def test_each_subpackage_imports_only_the_layers_below_it() -> None:
    problems = []
    for f, mods in sources(hints=True).items():
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


def test_no_modules_import_each_other() -> None:
    """No import cycle between modules, counting hints and imports inside functions: an
    interface does not know its implementation, a table does not know its users."""
    names = {module_name(f) for f in sources()}
    graph = {module_name(f): {m for m in mods if m in names and m != module_name(f)}
             for f, mods in sources(hints=True).items()}
    assert _cycles(graph) == []


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def readme_layout() -> dict[str, list[str]]:
    """Each pvc/ package's modules as README's Layout lists them, in its order (what the
    text says outside parentheses)."""
    text = (ROOT / "README.md").read_text()
    block = text[text.index("## Layout"):]
    block = block[block.index("```") + 3:]
    block = block[:block.index("```")]
    entries: dict[str, str] = {}
    current = ""
    for line in block.splitlines():
        m = re.match(r"^  (\w+)/\s+(.*)$", line)
        if m:
            current = m.group(1)
            entries[current] = m.group(2)
        elif current and line.startswith("    "):
            entries[current] += " " + line.strip()
        else:
            current = ""
    out = {}
    for package, description in entries.items():
        while re.search(r"\([^()]*\)", description):
            description = re.sub(r"\([^()]*\)", "", description)
        out[package] = [w for w in re.findall(r"\w+", description)
                        if (ROOT / "pvc" / package / f"{w}.py").is_file()]
    return out


def test_the_readme_layout_lists_every_module_after_those_it_imports() -> None:
    listed = readme_layout()
    assert set(listed) == set(ALLOWED)
    for package, names in listed.items():
        modules = {p.stem for p in (ROOT / "pvc" / package).glob("*.py")} - {"__init__"}
        assert sorted(set(names)) == sorted(modules), package
        order = list(dict.fromkeys(names))
        for name in order:
            inside = {m.split(".")[2] for m in
                      imported_modules(ROOT / "pvc" / package / f"{name}.py", hints=True)
                      if m.startswith(f"pvc.{package}.") and m.count(".") >= 2}
            later = [d for d in inside if d in modules and d != name and
                     order.index(d) > order.index(name)]
            assert later == [], f"pvc/{package}/{name}.py is listed before {later}"


def test_the_domain_imports_nothing_by_name_at_run_time() -> None:
    """No importlib string points anywhere (up a layer least of all): what runs an operation
    is named in pvc/node/executors.py, by import."""
    assert [f for f, mods in sources(hints=True).items()
            if f.startswith("pvc/") and "importlib" in tops(mods)] == []
