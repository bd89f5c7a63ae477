"""The import contract: packages import only what lies below them, and no two packages import
each other, directly or through others (docs/architecture.md, "Layers").

Read from the source, every import statement, also those inside functions: a hidden edge is
still an edge. Pure logic, no Django needed.
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path

import pytest

BASE_DIR = Path(__file__).resolve().parent.parent

APPS = ("orders", "deliveries", "stats", "notifications", "recommendations", "deadletters")
# Top to bottom. A package may import packages of the layers below its own; the apps, in
# one layer, may also import each other, as long as no two of them do so both ways.
LAYERS: list[tuple[str, ...]] = [
    ("bench",),
    ("tests",),
    ("harness",),  # the test and benchmark helpers: real services, the stack, load, browsers
    ("foodsite",),  # the project: settings, URLs, ASGI routing, Celery; wires everything
    APPS,
    ("observability",),
    ("live",),
    ("eventing",),
    ("contract",),
    ("devstack",),  # local services for development: no Django, none of the project
]
# What a package must not import at all, third-party included.
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "eventing": ("channels", "daphne", "prometheus_client"),
    "contract": ("django", "confluent_kafka", "celery"),
    "devstack": ("django", "celery", "channels"),
}
# Cycles between modules of one package that are an idiom, not a tangle: a Celery task
# module and the service that queues it and that it calls.
ALLOWED_MODULE_CYCLES = [{"notifications.services", "notifications.tasks"}]

PACKAGES = [package for layer in LAYERS for package in layer]
LEVEL = {package: depth for depth, layer in enumerate(LAYERS) for package in layer}


def module_name(path: Path) -> str:
    parts = path.relative_to(BASE_DIR).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (BASE_DIR / package).rglob("*.py"):
            if "migrations" not in path.parts:
                found[module_name(path)] = path
    return found


def imports_of(path: Path, name: str, known: set[str]) -> set[str]:
    """Every module this file imports (ours resolved to the module, others to their top name)."""
    tree = ast.parse(path.read_text(), str(path))
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the package this module is in
                base = name.split(".")[: len(name.split(".")) - node.level + (1 if is_package else 0)]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            # `from pkg import module` imports the module; `from module import name`, the module.
            targets = [f"{module}.{a.name}" if f"{module}.{a.name}" in known else module for a in node.names]
        else:
            continue
        for target in targets:
            while target not in known and "." in target and target.split(".")[0] in LEVEL:
                target = target.rsplit(".", 1)[0]
            found.add(target)
    found.discard(name)
    return found


def graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    return {name: imports_of(path, name, known) for name, path in found.items()}


def package_of(module: str) -> str:
    return module.split(".")[0]


def cycles(edges: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components of more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10000))

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in edges.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(component)

    for node in list(edges):
        if node not in index:
            visit(node)
    return found


def package_edges(modules_graph: dict[str, set[str]]) -> dict[tuple[str, str], list[str]]:
    """(importer package, imported package) -> the module imports that make the edge."""
    edges: dict[tuple[str, str], list[str]] = defaultdict(list)
    for module, targets in modules_graph.items():
        for target in targets:
            if package_of(target) in LEVEL and package_of(target) != package_of(module):
                edges[(package_of(module), package_of(target))].append(f"{module} -> {target}")
    return edges


def layer_violations(modules_graph: dict[str, set[str]]) -> list[str]:
    problems = []
    for (importer, imported), where in sorted(package_edges(modules_graph).items()):
        same_layer_apps = importer in APPS and imported in APPS
        if LEVEL[imported] <= LEVEL[importer] and not same_layer_apps:
            problems.append(f"{importer} imports {imported}, which lies above it or beside it: {', '.join(where)}")
    for package, banned in FORBIDDEN.items():
        for module, targets in modules_graph.items():
            if package_of(module) == package:
                problems += [f"{module} imports {t}" for t in sorted(targets) if package_of(t) in banned]
    return problems


def package_cycles(modules_graph: dict[str, set[str]]) -> list[set[str]]:
    edges: dict[str, set[str]] = defaultdict(set)
    for importer, imported in package_edges(modules_graph):
        edges[importer].add(imported)
    return cycles(edges)


def module_cycles(modules_graph: dict[str, set[str]]) -> list[set[str]]:
    ours = {m: {t for t in targets if t in modules_graph} for m, targets in modules_graph.items()}
    return [c for c in cycles(ours) if c not in ALLOWED_MODULE_CYCLES]


@pytest.fixture(scope="module")
def modules_graph() -> dict[str, set[str]]:
    return graph()


def test_every_package_imports_only_what_lies_below_it(modules_graph):
    assert layer_violations(modules_graph) == []


def test_no_two_packages_import_each_other_even_through_others(modules_graph):
    assert package_cycles(modules_graph) == []


def test_no_modules_import_each_other_in_a_circle(modules_graph):
    assert module_cycles(modules_graph) == []


def test_the_contract_finds_an_app_imported_by_the_machinery_and_a_cycle(modules_graph):
    """The checks themselves: an edge from the event machinery up to an app, and the cycle
    it closes (apps import the machinery), are both reported."""
    tangled = {name: set(targets) for name, targets in modules_graph.items()}
    tangled["eventing.runner"].add("orders.models")
    assert any(p.startswith("eventing imports orders") for p in layer_violations(tangled))
    assert any({"eventing", "orders"} <= cycle for cycle in package_cycles(tangled))
    tangled["eventing.projection"].add("eventing.runner")
    assert any({"eventing.projection", "eventing.runner"} <= cycle for cycle in module_cycles(tangled))
