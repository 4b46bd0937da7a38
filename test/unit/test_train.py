"""Training on REAL ODIR pairs with a tiny model on CPU: loss goes down, --resume continues
from the same step bit-exactly, a 2-process gloo DDP run completes, the run suite works,
and the trainer's eval transform equals preprocess_eye. The pairs are the subset shipped in
test/data, with its own splits (the shipped training/splits/ name patients it lacks)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from dms_net_core.data.augment import AugmentConfig, cutmix_same_label as np_cutmix
from dms_net_core.data.odir import load_odir
from dms_net_core.data.preprocess import PreprocessConfig, load_rgb, preprocess_eye
from test.odir_data import SUBSET_LABELS as LABELS, SUBSET_SPLIT, SUBSET_SPLIT3
from training.cache import build_pair_cache
from training.dataset import OdirPairDataset
from training.gpu_augment import augment_batch, cutmix_same_label, eval_batch

REPO = Path(__file__).resolve().parents[2]

TINY = ["--config", "tiny_cpu", "--labels", str(LABELS), "--split-file", str(SUBSET_SPLIT), "--max-train-pairs", "32",
        "--max-val-pairs", "24"]


def _load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def test_tiny_training_lowers_loss_and_writes_checkpoint(tmp_path):
    from training.train import main

    res = main([*TINY, "--epochs", "4", "--output-dir", str(tmp_path)])
    ck = _load(tmp_path / "best.pt")
    losses = [h["train_loss"] for h in ck["history"]]
    assert losses[-1] < losses[0], losses
    assert set(ck) >= {"model", "model_config", "preprocess", "thresholds", "metrics", "data_summary", "epoch", "step",
                       "args"}
    assert len(ck["thresholds"]) == 8 and all(0 < t < 1 for t in ck["thresholds"])
    assert ck["metrics"]["official"]["final"] == pytest.approx(res["val"]["final"])
    assert ck["data_summary"]["train"]["num_patients"] == 32
    assert (tmp_path / "log.csv").read_text().count("\n") == 5
    assert (tmp_path / "val_metrics.json").is_file()


def test_resume_continues_from_same_step(tmp_path):
    from training.train import main

    common = [*TINY, "--epochs", "3", "--max-train-pairs", "24"]
    main([*common, "--output-dir", str(tmp_path / "a")])
    main([*common, "--output-dir", str(tmp_path / "b"), "--max-epochs-this-run", "1"])
    paused = _load(tmp_path / "b" / "last.pt")
    assert paused["epoch"] == 0 and paused["step"] == 3
    main([*common, "--output-dir", str(tmp_path / "b"), "--resume", str(tmp_path / "b" / "last.pt")])
    a, b = _load(tmp_path / "a" / "last.pt"), _load(tmp_path / "b" / "last.pt")
    assert a["step"] == b["step"] == 9 and a["epoch"] == b["epoch"] == 2
    for k in a["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], rtol=0, atol=0, msg=k)
    assert a["lr_scheduler"]["last_epoch"] == b["lr_scheduler"]["last_epoch"]


@pytest.mark.slow
def test_ddp_two_process_gloo(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", MASTER_ADDR="127.0.0.1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
           "-m", "training.train", *TINY, "--epochs", "1", "--batch-size", "4", "--output-dir", str(tmp_path)]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ck = _load(tmp_path / "best.pt")
    assert ck["step"] == 4  # 32 pairs / (4 per process x 2 processes)
    assert ck["args"]["batch_size"] == 4


def test_run_suite_summarises_seeds(tmp_path):
    from training.run_suite import main

    out = main(["--runs", "tiny_cpu:0,1", "--output-dir", str(tmp_path),
                "--train-args", f"--labels {LABELS} --split-file {SUBSET_SPLIT} --max-train-pairs 16 "
                "--max-val-pairs 16 --epochs 1"])
    s = out["by_recipe"]["tiny_cpu"]
    assert s["n"] == 2 and s["final"]["sd"] >= 0
    md = (tmp_path / "summary.md").read_text()
    assert "| tiny_cpu | 0,1 |" in md and "+-" in md
    assert json.loads((tmp_path / "summary.json").read_text())["by_recipe"]["tiny_cpu"]["seeds"] == [0, 1]
    # the seed ensemble is scored from the probabilities each run saved: mean of the two
    from dms_net_core.metrics import odir_official_score

    runs = out["runs"]
    labels = np.load(Path(runs[0]["output_dir"]) / "val_labels.npy")
    mean = (np.load(Path(runs[0]["output_dir"]) / "val_probs.npy")
            + np.load(Path(runs[1]["output_dir"]) / "val_probs.npy")) / 2
    ens = out["ensembles"]["tiny_cpu"]
    assert ens["members"] == ["tiny_cpu:0", "tiny_cpu:1"] and "test" not in ens
    assert ens["val"]["final"] == pytest.approx(odir_official_score(labels, mean)["final"])
    assert "mean-probability ensemble" in md


def test_held_out_test_side_is_scored_once_with_the_best_epoch(tmp_path):
    """A 3-way split: the trainer never selects on test, but reports it (result, checkpoint, suite table)."""
    from training.run_suite import main

    split = SUBSET_SPLIT3
    out = main(["--runs", "tiny_cpu:0,1", "--output-dir", str(tmp_path), "--train-args",
                f"--labels {LABELS} --split-file {split} --max-train-pairs 16 --max-val-pairs 12 --epochs 2"])
    run = out["runs"][0]
    assert set(run["test"]) == {"kappa", "f1", "auc", "final"}
    ck = _load(Path(run["output_dir"]) / "best.pt")
    held_out = ck["metrics"]["held_out_test"]
    assert held_out["num_patients"] == 12 and held_out["official"]["final"] == pytest.approx(run["test"]["final"])
    assert ck["data_summary"]["test"]["num_patients"] == 12
    test_probs = np.load(Path(run["output_dir"]) / "test_probs.npy")
    assert test_probs.shape == (12, 8)
    # the epoch was chosen on validation alone: best_final in the history is the val score
    assert max(h["val_final"] for h in ck["history"]) == pytest.approx(ck["metrics"]["official"]["final"], abs=1e-6)
    assert "test ODIR final" in (tmp_path / "summary.md").read_text()
    assert set(out["by_recipe"]["tiny_cpu"]["test"]) == {"final", "kappa", "f1", "auc"}
    assert set(out["ensembles"]["tiny_cpu"]) == {"members", "val", "test"}  # the seed ensemble, held out too


def test_eval_transform_equals_preprocess_eye():
    cfg = PreprocessConfig(image_size=64)
    recs = load_odir(LABELS).records[:3]
    cache = build_pair_cache(recs, cfg, workers=2)
    left, right = eval_batch(torch.from_numpy(cache.left), torch.from_numpy(cache.right), cfg)
    ds = OdirPairDataset(recs, cfg)
    for i, r in enumerate(recs):
        ref_l = preprocess_eye(load_rgb(r.left_path), cfg)
        ref_r = preprocess_eye(load_rgb(r.right_path), cfg)
        np.testing.assert_array_equal(left[i].numpy(), ref_l)
        np.testing.assert_array_equal(right[i].numpy(), ref_r)
        np.testing.assert_array_equal(ds[i][0].numpy(), ref_l)


def _constant_batch(labels: np.ndarray, s: int = 32) -> np.ndarray:
    return np.stack([np.full((s, s, 3), 10 * (i + 1), np.uint8) for i in range(len(labels))])


def test_cutmix_only_mixes_same_label_sets_and_keeps_labels():
    labels = np.array([[1, 0, 0, 0, 0, 0, 0, 0], [1, 0, 0, 0, 0, 0, 0, 0], [0, 1, 0, 0, 0, 0, 0, 1],
                       [0, 1, 0, 0, 0, 0, 0, 1], [0, 0, 1, 0, 0, 0, 0, 0]], np.uint8)
    groups = {0: {0, 1}, 1: {0, 1}, 2: {2, 3}, 3: {2, 3}, 4: {4}}
    imgs = _constant_batch(labels)
    cfg = AugmentConfig(cutmix_prob=1.0)
    # torch (GPU path): each output image holds only its own and same-label partners' values
    gl, gr = cutmix_same_label(torch.from_numpy(imgs).permute(0, 3, 1, 2).float(),
                               torch.from_numpy(imgs).permute(0, 3, 1, 2).float(),
                               torch.from_numpy(labels), cfg, torch.Generator().manual_seed(0))
    # numpy (core path)
    nl, nr, nlab = np_cutmix(imgs, imgs, labels, np.random.default_rng(0), prob=1.0)
    np.testing.assert_array_equal(nlab, labels)
    mixed_any = False
    for i in range(len(labels)):
        allowed = {10 * (j + 1) for j in groups[i]}
        for img in (gl[i].numpy(), gr[i].numpy(), nl[i], nr[i]):
            vals = set(np.unique(img).astype(int).tolist())
            assert vals <= allowed, (i, vals, allowed)
            mixed_any |= len(vals) > 1
        # the same box for both eyes
        np.testing.assert_array_equal(gl[i].numpy(), gr[i].numpy())
        np.testing.assert_array_equal(nl[i], nr[i])
    assert mixed_any
    np.testing.assert_array_equal(nl[4], imgs[4])  # alone in its label set: untouched


def test_augment_batch_shapes_and_determinism():
    imgs = torch.from_numpy(_constant_batch(np.zeros((4, 8), np.uint8), 16) + 50)
    labels = torch.zeros(4, 8, dtype=torch.uint8)
    cfg, pre = AugmentConfig(), PreprocessConfig(image_size=16)
    a = augment_batch(imgs, imgs, labels, cfg, pre, torch.Generator().manual_seed(3))
    b = augment_batch(imgs, imgs, labels, cfg, pre, torch.Generator().manual_seed(3))
    assert a[0].shape == (4, 3, 16, 16) and a[0].dtype == torch.float32
    torch.testing.assert_close(a[0], b[0])
    assert torch.isfinite(a[0]).all()


def test_recipes_parse_and_bad_keys_fail(tmp_path):
    from training.train import build_configs, parse_args

    for name in ("dms_net_effnet_lite0", "plain_binocular_effnet_lite0", "dms_net_resnet152_scratch", "tiny_cpu"):
        m, p, a = build_configs(parse_args(["--config", name]))
        assert m.image_size == p.image_size
    args = parse_args(["--config", "plain_binocular_effnet_lite0", "--lr", "5e-4", "--model", "dropout=0.1"])
    m, _, a = build_configs(args)
    assert args.lr == 5e-4 and m.dropout == 0.1 and m.architecture == "plain_binocular" and a.cutmix_prob == 0.0
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochz: 3\n")
    with pytest.raises(ValueError, match="unknown keys"):
        parse_args(["--config", str(bad)])


def test_run_suite_overrides_select_a_paper_ablation():
    """``RECIPE+KEY=VALUE`` runs the recipe with that DMSNetConfig field changed (Table 2/3 rows)."""
    from training.run_suite import parse_runs, run_arguments
    from training.train import build_configs, parse_args

    runs = parse_runs(["tiny_cpu+use_casfm=false+multiscale=sppf:0,2", "tiny_cpu:1"])
    assert [seed for _, seed in runs] == [0, 2, 1]
    name, argv = run_arguments(runs[0][0])
    assert name == "tiny_cpu+use_casfm=false+multiscale=sppf"
    model_cfg, _, _ = build_configs(parse_args(argv))
    assert model_cfg.use_casfm is False and model_cfg.multiscale == "sppf"
    assert model_cfg.backbone == "tiny" and model_cfg.embed_dim == 32  # the rest of the recipe is kept
    plain, _, _ = build_configs(parse_args(run_arguments("tiny_cpu")[1]))
    assert plain.use_casfm is True and plain.multiscale == "osim"
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_runs(["tiny_cpu+use_casfm:0"])


def test_time_budget_never_judges_the_schedule_on_the_warm_up_epoch():
    """Regression: a 72 s first epoch (cuDNN autotuning, six jobs on one GPU) once shrank a
    30-epoch schedule to 5 although 10 s epochs followed and all 30 fitted the budget."""
    from training.train import epochs_that_fit

    assert epochs_that_fit([72.0], elapsed_s=72.0, budget_s=426.0, epochs_total=30) == 30  # keep going, no shrink
    assert epochs_that_fit([72.0], elapsed_s=430.0, budget_s=426.0, epochs_total=30) == 0  # budget spent: stop
    # from the first steady epoch on, the median of the last three steady epochs decides
    assert epochs_that_fit([72.0, 10.0], elapsed_s=82.0, budget_s=426.0, epochs_total=30) == 34
    assert epochs_that_fit([72.0, 10.0, 12.0, 11.0, 30.0], elapsed_s=135.0, budget_s=426.0, epochs_total=30) == 24
