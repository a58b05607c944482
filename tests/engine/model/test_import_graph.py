"""engine/model's modules import each other at their top (an import hidden in a function is how a cycle hid);
that they form no cycle, and the import direction of every package, is tests/test_architecture.py's."""
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


def test_engine_model_imports_of_each_other_are_all_at_module_top():
    late = [(p.name, m) for p in (ROOT / "engine" / "model").glob("*.py")
            for m, at_top in _imports(p) if m.startswith("engine.model") and not at_top]
    assert late == []
