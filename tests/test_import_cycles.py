"""No import circles in agent/, server/ and gate/ (issue 12, point 2).

The graph is read from the source (ast), not from a running interpreter, so every import counts: at module
level, inside functions, and under ``if TYPE_CHECKING``. A function-level import is fine to put off an
expensive import; it must not be the way two modules that need each other avoid failing at import time.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, Iterator, List, Set, Tuple

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("agent", "server", "gate")

# Circles that another branch removes; nothing may be added here.
KNOWN_CIRCLES: Set[frozenset[str]] = set()  # none: keep it that way


def module_files(root: Path = ROOT) -> Dict[str, Path]:
    """Dotted module name -> file, for every module of PACKAGES (a package is its ``__init__``)."""
    modules: Dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def _imported_names(node: ast.AST, module: str, is_package: bool) -> Iterator[str]:
    """The dotted names one import statement names: ``from a import b`` yields ``a.b`` (b is a submodule of a,
    or an attribute of a: the caller resolves it to the longest existing module)."""
    if isinstance(node, ast.Import):
        for alias in node.names:
            yield alias.name
    elif isinstance(node, ast.ImportFrom):
        if node.level:
            # relative: from the module's package, one level up per extra dot
            base = module.split(".") if is_package else module.split(".")[:-1]
            base = base[: len(base) - (node.level - 1)]
            target = ".".join(base + ([node.module] if node.module else []))
        else:
            target = node.module or ""
        for alias in node.names:
            yield f"{target}.{alias.name}"


def import_graph(root: Path = ROOT) -> Dict[str, Set[str]]:
    """module -> the modules of PACKAGES it imports (the most specific existing module per name).

    A module's own packages are not edges: Python imports them before the module in every case, and a
    package ``__init__`` that imports its submodules would otherwise form a circle with each of them.
    """
    modules = module_files(root)
    graph: Dict[str, Set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        is_package = path.name == "__init__.py"
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            for imported in _imported_names(node, name, is_package):
                # `from pkg import name`: name is a submodule or an attribute of pkg
                while imported and imported not in modules:
                    imported = imported.rpartition(".")[0]
                if imported and imported != name:
                    graph[name].add(imported)
    return graph


def circles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative), each sorted."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    on_stack: Set[str] = set()
    stack: List[str] = []
    found: List[List[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work: List[Tuple[str, Iterator[str]]] = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, successors = work[-1]
            advanced = False
            for succ in successors:
                if succ not in index:
                    index[succ] = low[succ] = counter
                    counter += 1
                    stack.append(succ)
                    on_stack.add(succ)
                    work.append((succ, iter(sorted(graph[succ]))))
                    advanced = True
                    break
                if succ in on_stack:
                    low[node] = min(low[node], index[succ])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component: List[str] = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def describe(component: List[str], graph: Dict[str, Set[str]]) -> str:
    members = set(component)
    edges = [f"{a} -> {b}" for a in component for b in sorted(graph[a] & members)]
    return "{" + ", ".join(component) + "}: " + "; ".join(edges)


def test_graph_sees_function_level_and_relative_imports(tmp_path: Path) -> None:
    pkg = tmp_path / "agent"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from . import b\n")
    (pkg / "a.py").write_text("def f():\n    from agent.sub import b\n    return b\n")
    (pkg / "sub" / "b.py").write_text("from ..a import f\n")
    for other in ("server", "gate"):
        (tmp_path / other).mkdir()
        (tmp_path / other / "__init__.py").write_text("")
    graph = import_graph(tmp_path)
    assert graph["agent.a"] == {"agent.sub.b"}
    assert graph["agent.sub.b"] == {"agent.a"}
    assert graph["agent.sub"] == {"agent.sub.b"}
    assert circles(graph) == [["agent.a", "agent.sub.b"]]


def test_no_import_circles() -> None:
    graph = import_graph()
    assert "agent.protocol" in graph and "server.app" in graph and "gate.cli" in graph
    new = [component for component in circles(graph) if frozenset(component) not in KNOWN_CIRCLES]
    assert not new, "import circles (break each by moving what both sides need into a module of its own):\n" + \
        "\n".join(describe(component, graph) for component in new)
