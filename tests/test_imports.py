"""The import graph of the package: no cycles between modules, and a command line that starts without the model code.

Edges are the imports a module runs when it is imported (module level, including under ``if``/``try``), not the
imports inside functions; ``from .pkg import name`` is an edge to ``pkg.name`` when that is a module, else to ``pkg``;
an import of ``a.b.c`` is also an edge to the packages ``a`` and ``a.b``, whose ``__init__`` runs first.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"clipiqa": ROOT / "clipiqa", "clipiqa.widgets": ROOT / "widgets"}


def _modules() -> dict[str, Path]:
    found = {}
    for prefix, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([prefix, *parts])] = path
    return found


def _module_level(tree: ast.Module):
    """Import statements that run at import time (not inside a def or a class body's methods)."""
    todo = list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, (ast.If, ast.Try, ast.With, ast.ClassDef)):
            for field in ("body", "orelse", "finalbody", "handlers"):
                for child in getattr(node, field, []):
                    todo.extend(child.body if isinstance(child, ast.ExceptHandler) else [child])


def _targets(name: str, path: Path, node, modules: dict[str, Path]) -> set[str]:
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    if isinstance(node, ast.Import):
        bases = [alias.name for alias in node.names]
        return {b for b in bases if b in modules}
    if node.level:
        base = package
        for _ in range(node.level - 1):
            base = base.rpartition(".")[0]
        base = f"{base}.{node.module}" if node.module else base
    else:
        base = node.module or ""
    out = set()
    for alias in node.names:
        if f"{base}.{alias.name}" in modules:
            out.add(f"{base}.{alias.name}")
        elif base in modules:
            out.add(base)
    return out


def _with_packages(name: str, targets: set[str], modules: dict[str, Path]) -> set[str]:
    """``targets`` and the packages above them: importing ``a.b.c`` first runs ``a/b/__init__.py``. The packages
    above the importing module itself are left out (Python has started them before the module runs)."""
    own = {name.rsplit(".", k)[0] for k in range(name.count(".") + 1)}
    out = set()
    for target in targets:
        parts = target.split(".")
        out |= {".".join(parts[:i]) for i in range(1, len(parts) + 1)}
    return {m for m in out if m in modules and m not in own}


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        targets = set().union(*(_targets(name, path, n, modules) for n in _module_level(tree)))
        graph[name] = _with_packages(name, targets, modules) - {name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_walker_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_graph_sees_the_package_imports():
    graph = import_graph()
    assert "clipiqa.model" in graph["clipiqa.factory"] and "clipiqa.commands.common" in graph["clipiqa.commands.score"]
    # importing clipiqa.data.transforms runs clipiqa/data/__init__.py first: a cycle through a package's
    # __init__ counts
    assert "clipiqa.data" in graph["clipiqa.clip_iqa_rn50"]
    assert "clipiqa.session" not in graph["clipiqa.session.facade"]  # its own package has started already


def test_no_import_cycles():
    found = cycles(import_graph())
    assert not found, "import cycles (module-level imports):\n" + "\n".join(" -> ".join(c) for c in found)


def test_the_command_line_starts_without_the_model_code():
    """`clipiqa --help` builds every subcommand's parser without importing torch, pandas or open_clip (the time it
    takes is a benchmark row: benchmarks/run.py --only cli)."""
    code = ("import sys; import clipiqa.cli as c; c.build_parser(); "
            "print(sorted(m for m in ('torch', 'pandas', 'open_clip', 'torchvision') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
