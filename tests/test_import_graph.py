"""rewatch imports no circles: every import, at module or function level, points one way."""

from __future__ import annotations

import ast
from pathlib import Path

import rewatch

ROOT = Path(rewatch.__file__).parent


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _graph() -> dict[str, set[str]]:
    modules = {_module(p): p for p in ROOT.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            graph[name].update(t for t in targets if t in modules and t != name)
    return graph


def _cycle_through(graph: dict[str, set[str]], start: str) -> list[str] | None:
    stack = [(start, [start])]
    seen: set[str] = set()
    while stack:
        node, path = stack.pop()
        for nxt in graph[node]:
            if nxt == start:
                return [*path, start]
            if nxt not in seen and nxt.startswith("rewatch.synth"):
                seen.add(nxt)
                stack.append((nxt, [*path, nxt]))
    return None


def test_stage_modules_import_no_circle():
    graph = _graph()
    for pair in (("rewatch.synth.cot", "rewatch.synth.cot_frames"),
                 ("rewatch.synth.qa", "rewatch.synth.mcq")):
        assert not (pair[1] in graph[pair[0]] and pair[0] in graph[pair[1]]), pair
    cycles = [c for m in graph if m.startswith("rewatch.synth")
              if (c := _cycle_through(graph, m))]
    assert not cycles, cycles
