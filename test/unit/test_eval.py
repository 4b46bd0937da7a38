"""dms-net-eval on a checkpoint and on an exported bundle (ONNX Runtime) reproduces the
trainer's validation probabilities: one preprocessing path everywhere (real ODIR pairs from
the subset in test/data, with its own 2-way split)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from dms_net_core.data.odir import load_odir, select_patients
from dms_net_core.data.preprocess import PreprocessConfig
from dms_net_core.data.splits import read_split
from dms_net_core.metrics import odir_official_score
from test.odir_data import SUBSET_LABELS as LABELS, SUBSET_SPLIT as SPLIT


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from training.train import main

    out = tmp_path_factory.mktemp("train")
    main(["--config", "tiny_cpu", "--labels", str(LABELS), "--split-file", str(SPLIT), "--max-train-pairs", "16",
          "--max-val-pairs", "12", "--epochs", "1", "--output-dir", str(out)])
    return out


def test_checkpoint_eval_matches_trainer_probabilities(trained, tmp_path, capsys):
    from training.evaluate import main

    report = main(["--model", str(trained / "best.pt"), "--labels", str(LABELS), "--split-file", str(SPLIT),
                   "--subset", "val", "--limit", "12", "--output-dir", str(tmp_path)])
    probs = np.load(tmp_path / "probs.npy")
    np.testing.assert_allclose(probs, np.load(trained / "val_probs.npy"), atol=1e-5)
    ck = torch.load(trained / "best.pt", map_location="cpu", weights_only=True)
    assert report["official"]["final"] == pytest.approx(ck["metrics"]["official"]["final"], abs=1e-5)
    assert report["thresholds"] == pytest.approx(ck["thresholds"])
    for f in ("report.json", "report.md", "roc_per_class.png", "confusion_per_class.png", "reliability.png"):
        assert (tmp_path / f).is_file(), f
    assert "| best.pt |" in capsys.readouterr().out
    assert json.loads((tmp_path / "report.json").read_text())["num_patients"] == 12


def test_bundle_eval_through_onnxruntime_matches_checkpoint(trained, tmp_path):
    pytest.importorskip("onnxruntime")
    from dms_net_core.bundle_export import export_bundle
    from dms_net_core.model import build_model
    from dms_net_core.model.config import DMSNetConfig
    from dms_net_core.runtime import create_backend
    from training.evaluate import CheckpointBackend, evaluate_pairs, write_report

    ck = torch.load(trained / "best.pt", map_location="cpu", weights_only=True)
    cfg, pre = DMSNetConfig.from_dict(ck["model_config"]), PreprocessConfig.from_dict(ck["preprocess"])
    model = build_model(cfg)
    model.load_state_dict(ck["model"])
    bundle = export_bundle(model, cfg, pre, tmp_path / "bundle", thresholds=ck["thresholds"])
    recs = select_patients(load_odir(LABELS).records, read_split(SPLIT)["val"][:6])
    y1, p_ort = evaluate_pairs(create_backend(bundle, backend="onnxruntime", device="cpu"), recs, bundle.preprocess,
                               batch_size=4)
    y2, p_pt = evaluate_pairs(CheckpointBackend(ck), recs, pre, batch_size=4)
    np.testing.assert_array_equal(y1, y2)
    np.testing.assert_allclose(p_ort, p_pt, atol=1e-4)
    rep = write_report(y1, p_ort, bundle.thresholds, tmp_path / "rep", plots=False)
    assert rep["official"] == pytest.approx(odir_official_score(y1, p_ort))


def test_missing_model_is_one_line_error(tmp_path, capsys):
    from training.evaluate import main

    with pytest.raises(SystemExit):
        main(["--model", str(tmp_path / "nope.pt"), "--labels", str(LABELS), "--output-dir", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "does not exist" in err


def test_subset_missing_from_split_is_one_line_error(trained, tmp_path, capsys):
    """--subset test on a 2-way split names the sides it has and how to make a 3-way one."""
    from training.evaluate import main

    with pytest.raises(SystemExit) as exc:
        main(["--model", str(trained / "best.pt"), "--labels", str(LABELS), "--split-file", str(SPLIT),
              "--subset", "test", "--output-dir", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and len(err) == 1
    assert "no 'test' side" in err[0] and "--test-fraction" in err[0]


def test_console_script_exits_zero_with_the_table_only(trained, tmp_path):
    """The installed ``dms-net-eval`` (what a shell or CI job runs) exits 0 and prints the table,
    not a dump of the report dict on stderr (it once exited 1 after a successful evaluation)."""
    import subprocess
    import sys

    exe = Path(sys.executable).parent / "dms-net-eval"
    if not exe.is_file():
        pytest.skip(f"{exe} not installed: run scripts/setup.sh")
    proc = subprocess.run([str(exe), "--model", str(trained / "best.pt"), "--labels", str(LABELS), "--split-file",
                           str(SPLIT), "--subset", "val", "--limit", "4", "--no-plots", "--output-dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "| best.pt |" in proc.stdout and "'official'" not in proc.stdout + proc.stderr


def test_every_console_script_returns_an_exit_status():
    """Each dms-net-* entry point in setup.py names a function annotated ``-> int`` (or None):
    console scripts hand the return value to sys.exit."""
    import importlib
    import re
    import typing

    setup = (Path(__file__).resolve().parents[2] / "setup.py").read_text()
    entries = re.findall(r'"(dms-net-[\w-]+)=([\w.]+):(\w+)"', setup)
    assert len(entries) >= 7
    for name, module, func in entries:
        hints = typing.get_type_hints(getattr(importlib.import_module(module), func))
        assert hints.get("return", type(None)) in (int, type(None)), (
            f"{name} -> {module}:{func} returns {hints.get('return')}")
