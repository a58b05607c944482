"""The import direction of the house (docs/architecture.md): app -> roles -> contracts/model -> stream.

Every import counts, at module top or inside a function (imports inside functions are where a wrong
direction hides). The rules are a table of which packages each package may import; the checker is
tested on a small tree of its own, so a rule that cannot fail would show."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OURS = ("stream", "engine", "export", "api")

# package -> the packages of ours it may import (its own included). The longest matching prefix decides.
ALLOWED: dict[str, tuple[str, ...]] = {
    "stream": ("stream",),
    "engine.model": ("engine.model", "stream"),
    "engine.contracts": ("engine.contracts", "stream"),
    "engine.serving": ("engine.serving", "engine.contracts", "engine.model", "stream"),
    "engine.media": ("engine.media", "engine.contracts", "stream"),
    "engine.mqtt": ("engine.mqtt", "engine.contracts", "engine.media.store", "stream"),
    "engine.training": ("engine.training", "engine.model", "engine.contracts", "stream"),
    "export": ("export", "engine.model", "stream"),
    "api": ("api", "engine.contracts", "engine.media.store", "stream"),
    "engine.app": OURS,  # the composition root: builds every role; nothing imports it
}


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, module: str) -> list[tuple[int, str]]:
    """(line, imported module) for every import of ours in the file, wherever it stands."""
    out = []
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the package
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            out += [(node.lineno, f"{name}.{a.name}") for a in node.names]
    return [(line, name) for line, name in out if name.split(".")[0] in OURS]


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def layer_of(module: str) -> str | None:
    matches = [p for p in ALLOWED if _within(module, p)]
    return max(matches, key=len) if matches else None


def violations(root: Path) -> list[str]:
    found = []
    for top in OURS:
        for path in sorted((root / top).rglob("*.py")):
            module = module_name(path, root)
            layer = layer_of(module)
            if module in OURS:  # a top package's own __init__ (empty): it may import only itself
                layer = module if module in ALLOWED else None
                if layer is None and not imports_of(path, module):
                    continue
            if layer is None:
                found.append(f"{path.relative_to(root)}: package {module} has no rule in ALLOWED")
                continue
            for line, name in imports_of(path, module):
                if not any(_within(name, ok) or _within(ok, name) for ok in ALLOWED[layer]):
                    found.append(f"{path.relative_to(root)}:{line}: {layer} imports {name}")
    return found


def model_cycles(root: Path) -> list[list[str]]:
    """Cycles among engine.model's modules (any import, top or inside a function)."""
    graph: dict[str, set[str]] = {}
    for path in (root / "engine" / "model").rglob("*.py"):
        module = module_name(path, root)
        graph[module] = set()
        for _, name in imports_of(path, module):
            if _within(name, "engine.model"):
                # `from engine.model.x import y` names engine.model.x.y: the module is the longest known prefix
                parts = name.split(".")
                for n in range(len(parts), 2, -1):
                    candidate = ".".join(parts[:n])
                    if (root / Path(*candidate.split("."))).with_suffix(".py").exists():
                        if candidate != module:
                            graph[module].add(candidate)
                        break
    cycles, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt] if nxt in stack else [node, nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return cycles


def test_imports_when_the_tree_is_read_then_every_import_runs_the_allowed_way():
    assert violations(ROOT) == []


def test_engine_model_when_its_imports_are_read_then_they_form_no_cycle():
    assert model_cycles(ROOT) == []


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for rel, src in files.items():
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(src)
    for top in OURS:
        (tmp_path / top).mkdir(exist_ok=True)
    return tmp_path


@pytest.mark.parametrize("importer, imported", [
    ("engine/serving/worker.py", "from export.onnx_export import export_onnx"),
    ("engine/serving/runtime/ort.py", "def f():\n    from export import tensorrt\n"),
    ("engine/serving/worker.py", "import api.app"),
    ("engine/serving/grounder.py", "from engine.training.train import train"),
    ("engine/serving/worker.py", "from engine.app.service import run_up"),
    ("stream/ingest.py", "from engine.contracts.settings import ServiceConfig"),
    ("api/events.py", "from engine.model.checkpoint import load_model"),
    ("engine/contracts/feed.py", "from engine.serving.worker import EngineWorker"),
])
def test_violations_when_a_module_imports_against_the_grain_then_it_is_named(tmp_path, importer, imported):
    root = _tree(tmp_path, {importer: imported + "\n"})
    found = violations(root)
    assert len(found) == 1 and found[0].startswith(importer)


def test_violations_when_a_package_has_no_rule_then_it_is_named(tmp_path):
    root = _tree(tmp_path, {"engine/newthing/x.py": "import stream.keys\n"})
    assert violations(root) == ["engine/newthing/x.py: package engine.newthing.x has no rule in ALLOWED"]


def test_violations_when_imports_run_the_allowed_way_then_none(tmp_path):
    root = _tree(tmp_path, {"engine/serving/worker.py": "from engine.contracts.events import GroundingEvent\nimport stream.keys\n",
                            "engine/app/service.py": "from export.onnx_export import export_onnx\nimport api.server\n"})
    assert violations(root) == []


def test_model_cycles_when_two_model_modules_import_each_other_inside_functions_then_found(tmp_path):
    root = _tree(tmp_path, {"engine/model/a.py": "def f():\n    from engine.model.b import g\n",
                            "engine/model/b.py": "def g():\n    from engine.model import a\n"})
    assert model_cycles(root) == [["engine.model.a", "engine.model.b", "engine.model.a"]]
