"""The import graph of the packages, read from the source (every import statement, including
those inside functions): data flows one way through the layers below, and no module imports
itself through a circle of others.

    trainables.contract   the torch-free contract every layer shares (layout, params, metrics, ...)
    trainables.ncsn       the NCSN core                      -> contract
    trainables.scoring    sample quality                     -> contract, ncsn
    trainables (top)      what runs in a trial or a task     -> contract, ncsn, scoring
    trainables.tools      measurement tools                  -> any of trainables
    search_spaces         the spec (no torch, Ray, Optuna)   -> contract
    search.durability     driver record, snapshots, mirrors  -> contract
    search                running a search                   -> search.durability, search_spaces, trainables (not tools)
    search.confirmation   the confirmation stage             -> search, search_spaces, trainables (not tools)
    analysis              reading and ranking a folder       -> contract
    analysis.reporting    the report and the closing summary -> analysis, contract
"""

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("trainables", "search_spaces", "search", "analysis")


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
    assert "trainables.scoring.quality" in graph["trainables.scoring.intervals"]
    assert {"trainables.scoring.intervals", "trainables.scoring.compare"} <= graph["trainables.confirm_task"]


def layer(module: str) -> str:
    """The layer of a module: its subpackage where the package has layers, else its package."""
    parts = module.split(".")
    if parts[0] == "trainables":
        return ".".join(parts[:2]) if len(parts) > 2 or parts[-1] in SUBPACKAGES else "trainables"
    if parts[0] == "search" and len(parts) > 1 and parts[1] in ("durability", "confirmation"):
        return ".".join(parts[:2])
    if parts[0] == "analysis" and len(parts) > 1 and parts[1] == "reporting":
        return "analysis.reporting"
    return parts[0]


SUBPACKAGES = ("contract", "ncsn", "scoring", "tools")
CONTRACT = "trainables.contract"
TRIAL = {CONTRACT, "trainables.ncsn", "trainables.scoring", "trainables"}
ALLOWED = {
    CONTRACT: {CONTRACT},
    "trainables.ncsn": {CONTRACT, "trainables.ncsn"},
    "trainables.scoring": {CONTRACT, "trainables.ncsn", "trainables.scoring"},
    "trainables": TRIAL,
    "trainables.tools": TRIAL | {"trainables.tools"},
    "search_spaces": {"search_spaces", CONTRACT},
    "search.durability": {"search.durability", CONTRACT},
    "search": {"search", "search.durability", "search_spaces"} | TRIAL,
    "search.confirmation": {"search.confirmation", "search", "search.durability", "search_spaces"} | TRIAL,
    "analysis": {"analysis", CONTRACT},
    "analysis.reporting": {"analysis.reporting", "analysis", CONTRACT},
}
# one reach across, on purpose: the warm starts of a spec are the published settings, which the
# NCSN core computes (imported inside the function that needs them, so a spec check stays torch-free)
EXCEPTIONS = {("search_spaces.warm_start", "trainables.ncsn.recommend")}


def test_layers_import_one_way():
    graph = _graph()
    assert {layer(name) for name in graph} == set(ALLOWED)
    wrong = [
        f"{name} imports {target}"
        for name, targets in graph.items()
        for target in targets
        if layer(target) not in ALLOWED[layer(name)] and (name, target) not in EXCEPTIONS
    ]
    assert not wrong


def test_the_spec_never_imports_torch_ray_or_optuna_at_module_level():
    for path in sorted((REPO / "search_spaces").glob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
        names = {a.name.split(".")[0] for n in top if isinstance(n, ast.Import) for a in n.names}
        names |= {n.module.split(".")[0] for n in top if isinstance(n, ast.ImportFrom) and n.module}
        assert not names & {"torch", "ray", "optuna"}, path.name


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


def test_every_import_of_a_project_name_finds_it():
    """Every ``from <package module> import <name>`` in the packages, the platform scripts and the
    tests names something that module defines (or a submodule): a name moved to another module
    and left imported from the old one fails here, not at the end of a search."""
    import importlib

    missing = []
    scripts = sorted((REPO / "platform").glob("*.py")) + sorted((REPO / "tests").rglob("*.py"))
    for path in [*_modules().values(), *scripts]:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not (isinstance(node, ast.ImportFrom) and node.module and node.level == 0):
                continue
            if node.module.split(".")[0] not in PACKAGES:
                continue
            module = importlib.import_module(node.module)
            for alias in node.names:
                if not hasattr(module, alias.name) and f"{node.module}.{alias.name}" not in _modules():
                    missing.append(f"{path.relative_to(REPO)}:{node.lineno}: from {node.module} import {alias.name}")
    assert not missing
