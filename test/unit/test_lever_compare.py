"""benchmarks/lever_compare.py: a lever is adopted only on a paired held-out gain above noise."""

from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks.lever_compare import compare, load_run, main

N_VAL, N_TEST, CLASSES = 120, 150, 8


def _labels(rng: np.random.Generator, n: int) -> np.ndarray:
    y = (rng.random((n, CLASSES)) < 0.2).astype(np.float32)
    y[:, 0] = (y[:, 1:].sum(1) == 0)  # N only without a disease, as ODIR labels it
    return y


def _run(path, seed: int, noise: float, labels: dict[str, np.ndarray]) -> str:
    rng = np.random.default_rng(100 + seed)
    path.mkdir(parents=True)
    (path / "result.json").write_text(json.dumps({"best_epoch": 5, "seed": seed}))
    for side, y in labels.items():
        p = np.clip(0.25 + 0.5 * y + rng.normal(0, noise, y.shape), 0.01, 0.99).astype(np.float32)
        np.save(path / f"{side}_probs.npy", p)
        np.save(path / f"{side}_labels.npy", y)
    return str(path)


@pytest.fixture
def labels():
    rng = np.random.default_rng(0)
    return {"val": _labels(rng, N_VAL), "test": _labels(rng, N_TEST)}


def test_a_clearly_better_lever_is_adopted_and_a_copy_is_not(tmp_path, labels):
    base = [load_run(_run(tmp_path / f"base{s}", s, 0.45, labels)) for s in range(3)]
    better = [load_run(_run(tmp_path / f"better{s}", s, 0.15, labels)) for s in range(3)]
    same = [load_run(_run(tmp_path / f"same{s}", s, 0.45, labels)) for s in range(3)]
    won = compare(base, better, bootstrap=200)
    assert won["gain_test"] > 0.05 and won["gain_test_ci95"][0] > 0 and won["adopt"]
    assert len(won["rows"]) == 3 and won["ensemble_test"]["lever"] > won["ensemble_test"]["base"]
    tie = compare(base, same, bootstrap=200)  # same seeds, same noise: identical predictions
    assert tie["gain_test"] == 0.0 and not tie["adopt"]


def test_runs_on_different_patients_or_unfinished_runs_are_refused(tmp_path, labels):
    base = load_run(_run(tmp_path / "base", 0, 0.3, labels))
    other = {k: v[::-1].copy() for k, v in labels.items()}
    shuffled = load_run(_run(tmp_path / "other", 0, 0.3, other))
    with pytest.raises(ValueError, match="different val patients"):
        compare([base], [shuffled])
    (tmp_path / "unfinished").mkdir()
    with pytest.raises(SystemExit, match="lacks result.json"):
        load_run(tmp_path / "unfinished")


def test_cli_prints_the_table_and_writes_json(tmp_path, labels, capsys):
    b = _run(tmp_path / "b0", 0, 0.4, labels)
    v = _run(tmp_path / "v0", 1, 0.4, labels)
    out_json = str(tmp_path / "o.json")
    assert main(["--base", b, "--lever", v, "--name", "EMA", "--bootstrap", "50", "--output", out_json]) == 0
    out = capsys.readouterr().out
    assert "| v0 |" in out and "EMA: mean paired gain" in out
    assert json.loads((tmp_path / "o.json").read_text())["name"] == "EMA"
