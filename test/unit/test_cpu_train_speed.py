"""benchmarks/cpu_train_speed.py runs the real epoch functions of both trainers and prints one row each."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _load():
    spec = importlib.util.spec_from_file_location("cpu_train_speed", ROOT / "benchmarks" / "cpu_train_speed.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_table_has_the_image_row_and_one_row_per_bank_depth(tmp_path: Path) -> None:
    out = tmp_path / "speed.md"
    table = _load().main(["--steps", "1", "--rounds", "1", "--batch-size", "2", "--image-size", "64",
                          "--bank-frozen", "5", "3", "--output", str(out)])
    rows = [line for line in table.splitlines() if line.startswith("| image") or line.startswith("| bank")]
    assert rows[0].startswith("| image, frozen 2, fp32") and rows[0].endswith("| 1.00x |")
    banks = [r for r in rows if r.startswith("| bank")]
    assert [r.split(",")[1].strip() for r in banks] == ["frozen 5 (stage-4 views)", "frozen 3 (stage-3 views)"]
    assert all(float(r.split("|")[2]) > 0 for r in rows)
    assert out.read_text() == table + "\n"
