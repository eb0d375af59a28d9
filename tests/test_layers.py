"""The package's layers: no module imports from a layer above its own, and no two modules import
each other (directly or around a loop), counting imports inside functions too."""

from __future__ import annotations

import ast
from pathlib import Path

import swiftstudy

PACKAGE = Path(swiftstudy.__file__).parent

#: Each top-level module or package's layer: a module may import from its own or a lower layer
#: (within layers 2 and 4, packages are peers and do not import each other).
LAYERS = {
    "__init__": 9,
    "__main__": 9,
    "cli": 8,
    "demo": 7,
    "validate": 6,  # retrains: it runs train/
    "study": 5,
    "train": 5,
    "probes": 5,
    "report": 4,
    "generate": 3,
    "scores": 2,
    "gradients": 2,
    "model": 2,
    "data": 2,
    "config": 1,
    "rundir": 1,
    "errors": 0,
    "constants": 0,
    "fileio": 0,
    "provenance": 0,
    "lazy": 0,
}
PEER_LAYERS = (2, 5)


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every swiftstudy module ``path`` imports, wherever the import statement is."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            module = node.module
            if module.startswith("swiftstudy"):
                names.add(module)
        elif isinstance(node, ast.Import):
            names |= {a.name for a in node.names if a.name.startswith("swiftstudy")}
    return names


def _graph() -> dict[str, set[str]]:
    return {_module_name(p): _imports(p) for p in sorted(PACKAGE.rglob("*.py"))}


def _layer_of(module: str) -> tuple[str, int]:
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 else "__init__"
    assert top in LAYERS, f"{module}: give its top-level name a layer in tests/test_layers.py"
    return top, LAYERS[top]


def test_no_module_imports_from_a_layer_above():
    upward = []
    for module, imports in _graph().items():
        top, layer = _layer_of(module)
        for name in imports:
            other, other_layer = _layer_of(name)
            if other == top:
                continue
            if other_layer > layer or (other_layer == layer and layer in PEER_LAYERS):
                upward.append(f"{module} -> {name}")
    assert upward == []


def test_no_import_cycle_between_modules():
    graph = _graph()
    modules = set(graph)

    def targets(module: str) -> set[str]:
        # `from swiftstudy.pkg import name` imports pkg (its __init__), which may re-export a
        # submodule: an edge to the package, not to every submodule it holds.
        return {n for n in graph[module] if n in modules and n != module}

    cycles, state = [], {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for name in sorted(targets(module)):
            if state.get(name) == "open":
                cycles.append([*path[path.index(name) :], name])
            elif name not in state:
                visit(name, [*path, name])
        state[module] = "done"

    for module in sorted(modules):
        if module not in state:
            visit(module, [module])
    # A package's __init__ re-exporting its own submodules, which import a sibling through the
    # package, is not a cycle of code: only cycles that do not pass through a package __init__.
    real = [c for c in cycles if not any(_is_package(m) for m in c)]
    assert real == []


def _is_package(module: str) -> bool:
    return (PACKAGE.parent / Path(*module.split(".")) / "__init__.py").is_file()


def test_the_checks_would_catch_an_upward_import_and_a_cycle(tmp_path: Path):
    # The checks' own parts on a made-up pair: scores importing study is upward, and two
    # modules importing each other are a cycle.
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from swiftstudy.study.run import run_study\n")
    assert _imports(source) == {"swiftstudy.study.run"}
    assert _layer_of("swiftstudy.scores.relinf")[1] < _layer_of("swiftstudy.study.run")[1]
