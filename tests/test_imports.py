"""The layering: imports between spos_hw's subpackages go one way (no cycles), function-level imports included."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "spos_hw"


def _unit(module: str) -> str:
    """The subpackage (or top-level module) a dotted module name belongs to: ``spos_hw.nas.search.loop`` -> ``nas``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "spos_hw"


def _imports(path: Path) -> set[str]:
    """Every spos_hw module ``path`` imports, at any depth (lazy imports inside functions count)."""
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    here = list(rel.parts[:-1])
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("spos_hw")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import
                base = here[: len(here) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            if name.startswith("spos_hw"):
                out.add(name)
    return out


def subpackage_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        src = _unit(module)
        for target in _imports(path):
            dst = _unit(target)
            if dst not in (src, "spos_hw"):
                graph.setdefault(src, set()).add(dst)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path ``[a, b, ..., a]``, or None."""
    state: dict[str, int] = {}  # 1: on the stack, 2: done

    def visit(node: str, stack: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [node, nxt] if nxt in stack else [node, nxt]
            if nxt not in state:
                found = visit(nxt, stack + [node])
                if found:
                    return found
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node, [])
            if found:
                return found
    return None


def test_subpackages_import_one_way():
    cycle = find_cycle(subpackage_graph())
    assert cycle is None, "import cycle between spos_hw subpackages: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) is not None
    assert find_cycle({"a": {"b"}, "b": {"c"}}) is None


def test_leaves_stay_leaves():
    graph = subpackage_graph()
    assert graph.get("nn", set()) <= {"errors"}, graph.get("nn")  # nn is a leaf (quant is found by name)
    assert "nas" not in graph.get("quant", set()), graph.get("quant")
    assert "latency" not in graph.get("nas", set()) and "deploy" not in graph.get("nas", set()), graph.get("nas")
    assert "latency" not in graph.get("deploy", set()), graph.get("deploy")
    assert graph.get("protocol", set()) <= {"errors"}, graph.get("protocol")  # shipped verbatim in board bundles
