"""Layering of the source tree, read with `ast` (nothing is imported or executed).

Held here:
- no import circle among the project's modules, counting imports inside functions too
  (a lazy import hides a circle from the interpreter, not from a reader: the module that
  builds engines and the backend that loads them each needing the other is one unit in two files),
  and counting the package ``__init__`` files an import runs: importing ``a.b.c`` runs
  ``a/__init__`` and ``a/b/__init__`` first, so it is an edge to ``a`` and ``a.b`` too
  (``dms_net_core.bundle`` once imported ``dms_net_core.runtime.batchnorm_folding``, which runs
  ``dms_net_core/runtime/__init__.py``, which imports ``dms_net_core.bundle``);
- deployable code (`dms_net_core/`, `dms_net_ros/`) never imports `training` or `benchmarks`:
  a robot install has neither, and behaviour must not depend on what is installed;
- `dms_net_core` never imports ROS (the design card: the ROS side turns messages into eyes).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("dms_net_core", "dms_net_ros", "training", "benchmarks")
DEPLOYABLE = ("dms_net_core", "dms_net_ros")
ROS_MODULES = ("rclpy", "rosbag2_py", "sensor_msgs", "std_msgs", "diagnostic_msgs", "builtin_interfaces",
               "rcl_interfaces", "action_msgs", "launch", "launch_ros", "ament_index_python")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def source_modules(root: Path = REPO) -> dict[str, Path]:
    """Every project module (by dotted name) under `PACKAGES`."""
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            found[module_name(path)] = path
    return found


def imported_names(path: Path, name: str) -> set[str]:
    """Dotted names a module imports anywhere in its body (absolute; relative ones resolved).

    ``from a.b import c`` names ``a.b.c``: a submodule, or a name in ``a.b`` (`project_edges`
    takes the longest prefix that is a module)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    is_package = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".")
                anchor = anchor if is_package else anchor[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            out.update(base if alias.name == "*" else f"{base}.{alias.name}" for alias in node.names)
    return out


def enclosing_packages(name: str) -> list[str]:
    """``a.b.c`` -> ``["a", "a.b"]``: the packages whose ``__init__`` runs before ``a.b.c``."""
    parts = name.split(".")
    return [".".join(parts[:n]) for n in range(1, len(parts))]


def project_edges(modules: dict[str, Path]) -> dict[str, set[str]]:
    """module -> the project modules it imports (the longest dotted prefix that is a module),
    and the packages enclosing each of them, whose ``__init__`` the import runs first.

    A module's own enclosing packages are left out of its edges: they have started running
    before it does, so needing them closes no circle (a package ``__init__`` that imports its
    own submodules is the usual layout, and its edges to them are kept)."""
    edges: dict[str, set[str]] = {}
    for name, path in modules.items():
        own = set(enclosing_packages(name))
        targets = set()
        for imported in imported_names(path, name):
            parts = imported.split(".")
            for n in range(len(parts), 0, -1):
                candidate = ".".join(parts[:n])
                if candidate in modules:
                    targets.add(candidate)
                    targets.update(p for p in enclosing_packages(candidate) if p in modules and p not in own)
                    break
        targets.discard(name)
        edges[name] = targets
    return edges


def import_cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return cycles


@pytest.fixture(scope="module")
def modules() -> dict[str, Path]:
    found = source_modules()
    assert {"dms_net_core.exam_pipeline", "dms_net_ros.node", "training.train"} <= set(found)
    return found


def test_no_import_circle(modules):
    cycles = import_cycles(project_edges(modules))
    assert not cycles, ("import circles (split the modules so one depends on the other): "
                        + "; ".join(" <-> ".join(c) for c in cycles))


def test_deployable_code_imports_neither_training_nor_benchmarks(modules):
    bad = sorted(f"{name} imports {imported}" for name, path in modules.items() if name.startswith(DEPLOYABLE)
                 for imported in imported_names(path, name) if imported.split(".")[0] in ("training", "benchmarks"))
    assert not bad, "deployable code must not need training/ or benchmarks/: " + "; ".join(bad)


def test_core_never_imports_ros(modules):
    bad = sorted(f"{name} imports {imported}" for name, path in modules.items() if name.startswith("dms_net_core")
                 for imported in imported_names(path, name) if imported.split(".")[0] in ROS_MODULES + ("dms_net_ros",))
    assert not bad, "dms_net_core must stay ROS-free: " + "; ".join(bad)


def test_the_checker_sees_lazy_and_relative_imports_and_circles(tmp_path):
    """The checker itself: a lazy import inside a function and a relative import both make edges,
    and a two-module circle through them is reported (so a passing tree means something)."""
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from pkg.b import g\n    return g\n")
    (pkg / "b.py").write_text("from . import a\n\ndef g():\n    return a\n")
    (pkg / "c.py").write_text("import pkg.a\n")
    mods = {module_name_in(tmp_path, p): p for p in sorted(pkg.rglob("*.py"))}
    edges = {n: {t for t in _edges_in(mods, n)} for n in mods}
    assert edges["pkg.a"] == {"pkg.b"} and edges["pkg.b"] == {"pkg.a"} and edges["pkg.c"] == {"pkg.a"}
    assert import_cycles(edges) == [["pkg.a", "pkg.b"]]


def module_name_in(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _edges_in(mods: dict[str, Path], name: str) -> set[str]:
    return project_edges(mods)[name]


def test_the_checker_counts_the_package_init_an_import_runs(tmp_path):
    """``pkg.a`` imports ``pkg.sub.x`` (lazily), which runs ``pkg/sub/__init__.py``, which imports
    ``pkg.a``: a circle through a package ``__init__`` (the shape `dms_net_core.bundle` and
    `dms_net_core.runtime` once had), reported; a package ``__init__`` importing its own
    submodules, and those needing their package, is not a circle."""
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from pkg.sub.x import g\n    return g\n")
    (pkg / "sub" / "__init__.py").write_text("from pkg.a import f\nfrom pkg.sub.y import h\n")
    (pkg / "sub" / "x.py").write_text("def g():\n    return 1\n")
    (pkg / "sub" / "y.py").write_text("from pkg.sub.x import g\n\ndef h():\n    return g\n")
    mods = {module_name_in(tmp_path, p): p for p in sorted(pkg.rglob("*.py"))}
    edges = {n: _edges_in(mods, n) for n in mods}
    assert edges["pkg.a"] == {"pkg.sub", "pkg.sub.x"}  # pkg.sub: the __init__ the import runs
    assert edges["pkg.sub.y"] == {"pkg.sub.x"}  # its own package pkg.sub is already running
    assert import_cycles(edges) == [["pkg.a", "pkg.sub"]]
    (pkg / "a.py").write_text("def f():\n    return 1\n")  # the circle broken: none reported
    assert import_cycles({n: _edges_in(mods, n) for n in mods}) == []
