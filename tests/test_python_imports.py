"""tether's Python modules import each other one way, with no cycle.

Every import of every module under src/tether is read with ast, those inside functions and
under TYPE_CHECKING too: most of tether's imports are made late for start-up time, and they
are dependencies all the same. The top-level packages (and the modules beside them) may
import only what MAY_IMPORT lists, a graph with no cycle; no two modules import each other,
directly or round a longer chain.
"""
from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

# Who may import whom, by top-level part of tether (a package, or a module beside them):
# the wire and the binary analysis know no user of theirs; the agent (run in the target) and
# the session (this side) speak the wire and know nothing of each other; targets put an agent
# and the session's link to it together; only cli knows every command, and only __main__
# imports cli.
MAY_IMPORT = {
    "tether": set(),  # the package itself: its version
    "protocol": set(),
    "analysis": set(),
    "config": set(),
    "fdpass": {"protocol"},
    "layer": {"tether"},
    "trace": {"protocol"},
    "agent": {"protocol", "fdpass"},
    "session": {"protocol", "fdpass", "analysis", "layer"},
    "targets": {"protocol", "session", "agent"},
    "demo": set(),  # runs `tether exec` as a command
    "cli": {"tether", "protocol", "analysis", "config", "trace", "agent", "session", "targets", "demo", "layer"},
    "__main__": {"cli", "targets"},
}


def modules(src: Path = SRC) -> dict[str, tuple[Path, bool]]:
    """Every module of tether by dotted name: its file, and whether it is a package."""
    found = {}
    for path in sorted((src / "tether").rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        found[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return found


def imports(src: Path = SRC) -> dict[str, dict[str, int]]:
    """Module -> the tether modules it imports, each with the line of its first import."""
    known = modules(src)
    graph: dict[str, dict[str, int]] = {}
    for name, (path, is_package) in known.items():
        package = name if is_package else name.rpartition(".")[0]
        edges = graph[name] = {}
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                # `from P import x`: the module P.x if there is one, else a name of P itself
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
            else:
                continue
            for target in targets:
                if target in known and target != name:
                    edges.setdefault(target, node.lineno)
    return graph


def part(module: str) -> str:
    """The top-level part of tether a module belongs to (MAY_IMPORT's keys)."""
    return module.split(".")[1] if "." in module else module


def find_cycle(graph: dict[str, set[str] | dict[str, int]]) -> list[str] | None:
    """A cycle of graph as the list of its nodes, the first repeated at the end; None if none."""
    state: dict[str, str] = {}  # "open" while on the current path, "done" once fully explored
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def part_graph(graph: dict[str, dict[str, int]]) -> dict[str, dict[str, str]]:
    """Part -> the parts it imports, each with one module import that does it ("a line N")."""
    parts: dict[str, dict[str, str]] = {}
    for module, edges in graph.items():
        for target, line in edges.items():
            if part(target) != part(module):
                parts.setdefault(part(module), {}).setdefault(part(target), f"{module} line {line}")
    return parts


def chain(cycle: list[str], why) -> str:
    return "\n  ".join(f"{a} -> {b}  ({why(a, b)})" for a, b in zip(cycle, cycle[1:]))


def test_no_module_imports_itself_round_a_cycle():
    graph = imports()
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle between modules:\n  " + chain(cycle, lambda a, b: f"{a} line {graph[a][b]}")


def test_no_cycle_between_the_top_level_packages():
    parts = part_graph(imports())
    cycle = find_cycle(parts)
    assert cycle is None, "import cycle between tether's packages:\n  " + chain(cycle, lambda a, b: parts[a][b])


def test_the_import_rules_have_a_direction_and_cover_every_package():
    assert find_cycle(MAY_IMPORT) is None, f"MAY_IMPORT has a cycle: {find_cycle(MAY_IMPORT)}"
    missing = {part(m) for m in modules()} - set(MAY_IMPORT)
    assert not missing, f"add {sorted(missing)} to MAY_IMPORT: what may each import, and who may import it?"


def test_imports_follow_the_direction():
    def allowed(part: str) -> str:
        return f"only {', '.join(sorted(MAY_IMPORT[part]))}" if MAY_IMPORT.get(part) else "nothing of tether"

    wrong = [f"{part} imports {target} ({where}); {part} may import {allowed(part)}"
             for part, targets in sorted(part_graph(imports()).items())
             for target, where in sorted(targets.items()) if target not in MAY_IMPORT.get(part, set())]
    assert not wrong, "imports against the direction:\n  " + "\n  ".join(wrong)
