"""The eight ODIR classes are defined once (`dms_net_core.classes`): no code spells their count
or codes itself. Read with `ast` over the project's code (tests excluded: they may pin numbers)."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("dms_net_core", "dms_net_ros", "training", "benchmarks", "demo", "scripts")
#: the definition itself; and the model config's ``num_classes = 8`` field default (dms_net_core/model
#: is outside issue 14's scope: its own owner should default it to classes.NUM_CLASSES)
ALLOWED = {"dms_net_core/classes.py", "dms_net_core/model/config.py"}
SIZED_CALLS = {"full", "zeros", "ones", "empty", "linspace"}


def class_count_literals(path: Path, root: Path = REPO) -> list[str]:
    """Places in ``path`` that write the class count or the class codes as literals."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        where = f"{path.relative_to(root)}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Constant) and node.value in ("NDGCAHMO", "N D G C A H M O"):
            found.append(f"{where}: the class codes as a string")
        elif (isinstance(node, (ast.Tuple, ast.List))
              and [getattr(e, "value", None) for e in node.elts] == list("NDGCAHMO")):
            found.append(f"{where}: the class codes as a literal sequence")
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mult) and isinstance(node.left, ast.List) \
                and isinstance(node.right, ast.Constant) and node.right.value == 8:
            found.append(f"{where}: [...] * 8")
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) in SIZED_CALLS:
            name = getattr(node.func, "attr", getattr(node.func, "id", None))
            sizes = node.args[2:3] if name == "linspace" else node.args[:1]  # linspace(start, stop, num)
            for arg in sizes:
                if isinstance(arg, ast.Constant) and arg.value == 8:
                    found.append(f"{where}: an array of 8 (the class count?)")
                if isinstance(arg, ast.Tuple) and any(isinstance(e, ast.Constant) and e.value == 8 for e in arg.elts):
                    found.append(f"{where}: an array with a dimension of 8 (the class count?)")
    return found


def test_no_code_spells_the_class_count_or_codes():
    found = []
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            if str(path.relative_to(REPO)) not in ALLOWED:
                found += class_count_literals(path)
    assert not found, "use dms_net_core.classes (NUM_CLASSES, CLASS_CODES): " + "; ".join(found)


def test_the_scan_finds_each_form(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text('codes = "NDGCAHMO"\nt = [0.5] * 8\nimport numpy as np\np = np.full(8, 0.5)\n'
                      'q = np.zeros((4, 8))\nr = np.linspace(0, 1, 8)\nok = np.zeros(3)\n'
                      'c = ("N", "D", "G", "C", "A", "H", "M", "O")\n')
    found = class_count_literals(sample, tmp_path)
    assert sorted(int(f.split(":")[1]) for f in found) == [1, 2, 4, 5, 6, 8], found
