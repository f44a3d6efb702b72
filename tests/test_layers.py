"""The library's import graph: no cycles, and no import from a lower layer up to a higher one.

Every import counts, also one inside a function (a lazy import is still a dependency). The layers, bottom up,
are :data:`LAYERS`; a module may import its own package, any package of a lower layer, and nothing else. Run
by ``make test`` and ``make lint``.
"""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LIBRARY = REPO / "shoprec"

# Bottom up. Packages on one floor do not import each other.
LAYERS: list[list[str]] = [
    ["shoprec", "shoprec.config", "shoprec.metrics", "shoprec.text", "shoprec.images"],  # foundations
    ["shoprec.data", "shoprec.fit_config"],
    ["shoprec.trainer", "shoprec.registry"],
    ["shoprec.seqrec", "shoprec.ranker"],
    ["shoprec.evaluate"],
    ["shoprec.serving"],
    ["shoprec.pipeline"],  # the pipeline's own side: nothing below imports it
    ["shoprec.cli"],
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def library_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(LIBRARY.rglob("*.py"))}


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The library modules ``path`` imports (``from pkg import mod`` names the module ``pkg.mod``)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name.startswith("shoprec"):
                found.add(name)
    return found


def graph() -> dict[str, set[str]]:
    modules = library_modules()
    return {name: imports_of(path, set(modules)) - {name} for name, path in modules.items()}


def home(module: str) -> tuple[int, str]:
    """(floor, package) of a module: the longest entry of LAYERS it is or sits in."""
    best = None
    for floor, packages in enumerate(LAYERS):
        for pkg in packages:
            if (module == pkg or module.startswith(pkg + ".")) and (best is None or len(pkg) > len(best[1])):
                best = (floor, pkg)
    assert best is not None, f"{module} is on no floor of LAYERS: add its package"
    return best


def test_every_library_module_has_a_floor():
    for name in library_modules():
        home(name)


def test_no_import_cycles():
    list(graphlib.TopologicalSorter(graph()).static_order())  # raises CycleError naming the circle


def test_no_import_goes_up_or_sideways():
    wrong = []
    for module, deps in graph().items():
        floor, pkg = home(module)
        for dep in deps:
            dep_floor, dep_pkg = home(dep)
            if dep_floor > floor or (dep_floor == floor and dep_pkg != pkg and dep_pkg != "shoprec"):
                wrong.append(f"{module} (floor {floor}) imports {dep} (floor {dep_floor})")
    assert not wrong, "\n".join(sorted(wrong))


def test_the_check_sees_lazy_imports_and_submodules(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("def f():\n    from shoprec.pipeline import deploy\n    import shoprec.data.storage\n")
    assert imports_of(f, {"shoprec", "shoprec.pipeline", "shoprec.pipeline.deploy", "shoprec.data",
                          "shoprec.data.storage"}) == {"shoprec.pipeline", "shoprec.pipeline.deploy",
                                                       "shoprec.data.storage"}
