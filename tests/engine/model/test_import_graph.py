"""The import structure a reader relies on: engine/model imports form a DAG, each at its module's top, and the
serving runtime reads the exported graphs' contract without importing the export tool."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(module, at the module's top) for every `import` / `from ... import` in `path`."""
    tree = ast.parse(path.read_text())
    top = {id(node) for node in tree.body}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            out.append((node.module, id(node) in top))
        elif isinstance(node, ast.Import):
            out.extend((alias.name, id(node) in top) for alias in node.names)
    return out


def _model_graph() -> dict[str, set[str]]:
    return {f"engine.model.{p.stem}": {m for m, _ in _imports(p) if m.startswith("engine.model.")}
            for p in sorted((ROOT / "engine" / "model").glob("*.py"))}


def test_engine_model_imports_when_followed_never_come_back_to_where_they_started():
    graph, state, cycles = _model_graph(), {}, []

    def visit(node: str, path: list[str]) -> None:
        if state.get(node) == "open":
            cycles.append(path[path.index(node):] + [node])
            return
        if state.get(node) == "done":
            return
        state[node] = "open"
        for dep in sorted(graph.get(node, ())):
            visit(dep, path + [node])
        state[node] = "done"

    for node in graph:
        visit(node, [])
    assert cycles == []


def test_engine_model_imports_of_each_other_are_all_at_module_top():
    late = [(p.name, m) for p in (ROOT / "engine" / "model").glob("*.py")
            for m, at_top in _imports(p) if m.startswith("engine.model") and not at_top]
    assert late == []


def test_serving_runtime_when_reading_exported_graphs_never_imports_export():
    found = [(p.name, m) for p in (ROOT / "engine" / "serving" / "runtime").glob("*.py")
             for m, _ in _imports(p) if m == "export" or m.startswith("export.")]
    assert found == []
