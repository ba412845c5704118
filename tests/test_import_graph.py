"""The import graph of the three packages, read from the source (every import statement,
including those inside functions): data flows one way (trainables <- search_spaces, trainables
<- analysis; search_spaces and analysis never import each other; trainables imports neither),
and no module imports itself through a circle of others."""

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("trainables", "search_spaces", "analysis")


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules ``path`` imports (``from a import b`` names module a.b where it is one)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names if alias.name in modules)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            subs = {f"{node.module}.{alias.name}" for alias in node.names} & set(modules)
            out.update(subs or ({node.module} & set(modules)))
    return out


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(path, modules) - {name} for name, path in modules.items()}


def test_the_graph_is_read_from_real_imports():
    graph = _graph()
    assert len(graph) > 60
    assert "trainables.quality" in graph["trainables.intervals"]
    assert {"trainables.intervals", "trainables.compare"} <= graph["trainables.confirm_task"]


def test_packages_import_one_way():
    allowed = {"trainables": {"trainables"}, "search_spaces": {"search_spaces", "trainables"}}
    allowed["analysis"] = {"analysis", "trainables"}
    wrong = [
        f"{name} imports {target}"
        for name, targets in _graph().items()
        for target in targets
        if target.split(".")[0] not in allowed[name.split(".")[0]]
    ]
    assert not wrong


def test_no_module_imports_itself_through_others():
    graph = _graph()
    circles, state = [], {}

    def visit(name: str, path: list[str]) -> None:
        state[name] = "open"
        for target in sorted(graph[name]):
            if state.get(target) == "open":
                circles.append(path[path.index(target) :] + [target])
            elif target not in state:
                visit(target, path + [target])
        state[name] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert not circles
