"""The package's layers: the import rule of docs/DESIGN.md, checked over every module's imports.

core imports no job and no orchestration; a job imports the core and no other job; orchestration
reaches a job only through its public entry (``switchpoint.<job>.settings`` or ``.job``); no cycles.
Lazy imports inside functions count too: they are dependencies all the same.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "jobs"
JOBS = ("data", "train", "infer_local", "infer_bedrock", "score", "report")
PUBLIC_ENTRY = ("settings", "job")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(["switchpoint", *parts])


def imports_of(path: Path) -> set[str]:
    """Every switchpoint module ``path`` imports (``from a import b`` counts as ``a.b`` when b is a module)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("switchpoint"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("switchpoint") and node.level == 0:
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                found.add(candidate if candidate in MODULES else node.module)
        elif isinstance(node, ast.ImportFrom) and node.level:
            raise AssertionError(f"{path}: relative import; use absolute switchpoint.* imports")
    return found


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py") if "lm_eval_tasks" not in p.parts}
GRAPH = {name: imports_of(path) - {name} for name, path in MODULES.items()}


def layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "root"


def allowed(importer: str, imported: str) -> bool:
    src, dst = layer(importer), layer(imported)
    if imported == "switchpoint" or dst == "core":
        return True
    if src == "core":
        return False
    if src in JOBS:
        return dst == src
    if src == "orchestration":
        return dst == "orchestration" or (dst in JOBS and imported.split(".")[-1] in PUBLIC_ENTRY)
    return True  # the CLI and __main__ name every command


@pytest.mark.parametrize("importer", sorted(MODULES))
def test_imports_follow_the_layers(importer):
    wrong = sorted(m for m in GRAPH[importer] if not allowed(importer, m))
    assert not wrong, f"{importer} may not import {wrong} (see the import rule in docs/DESIGN.md)"


def test_no_import_cycles():
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(GRAPH.get(node, ())):
            if nxt not in GRAPH:
                continue
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for module in sorted(GRAPH):
        if module not in state:
            visit(module)


def test_the_rule_catches_a_job_importing_another_job():
    assert not allowed("switchpoint.report.job", "switchpoint.score.job")
    assert not allowed("switchpoint.core.modeling", "switchpoint.data.job")
    assert not allowed("switchpoint.orchestration.sweep", "switchpoint.infer_bedrock.requests")
    assert allowed("switchpoint.orchestration.sweep", "switchpoint.data.job")
