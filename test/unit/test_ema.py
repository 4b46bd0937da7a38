"""Weight averaging (`training.ema`, `dms-net-train --ema-decay`): the average is the closed-form
exponential average with its warm-up, integer buffers are copied, and a trainer run keeps the
average as best.pt, the raw weights in last.pt, and resumes the same average bit-exactly."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from test.odir_data import SUBSET_LABELS, SUBSET_SPLIT
from training.ema import WeightEma

TINY = ["--config", "tiny_cpu", "--labels", str(SUBSET_LABELS), "--split-file", str(SUBSET_SPLIT),
        "--max-train-pairs", "24", "--max-val-pairs", "16", "--no-progress", "--no-tensorboard"]


def _load(path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def test_average_follows_the_closed_form_with_warmup():
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    ema = WeightEma(model, decay=0.9)
    expected = model[0].weight.detach().clone()
    for step in range(30):
        with torch.no_grad():
            model[0].weight.add_(1.0)
        model[1].num_batches_tracked += 1
        d = min(0.9, (2.0 + step) / (11.0 + step))
        assert ema.current_decay() == pytest.approx(d)
        ema.update(model)
        expected = d * expected + (1 - d) * model[0].weight.detach()
    torch.testing.assert_close(ema.module[0].weight, expected)
    assert ema.module[1].num_batches_tracked.item() == 30  # integers are copied, not averaged
    # the average lags the live weights (it is not a copy of them) and trains nothing itself
    assert (ema.module[0].weight < model[0].weight).all()
    assert not any(p.requires_grad for p in ema.module.parameters())


def test_decay_outside_unit_interval_is_refused():
    with pytest.raises(ValueError, match="--ema-decay 1.0"):
        WeightEma(nn.Linear(1, 1), decay=1.0)


def test_trainer_keeps_the_average_as_best_and_resumes_it(tmp_path):
    from training.epoch_snapshots import snapshot_paths
    from training.train import main

    common = [*TINY, "--epochs", "3", "--ema-decay", "0.9", "--early-stop-patience", "0"]
    main([*common, "--output-dir", str(tmp_path / "a"), "--epoch-snapshots"])
    main([*common, "--output-dir", str(tmp_path / "b"), "--max-epochs-this-run", "1"])
    main([*common, "--output-dir", str(tmp_path / "b"), "--resume", str(tmp_path / "b" / "last.pt")])
    a, b = _load(tmp_path / "a" / "last.pt"), _load(tmp_path / "b" / "last.pt")
    assert a["ema"]["updates"] == b["ema"]["updates"] == 9  # 24 pairs / batch 8 x 3 epochs
    for k in a["ema"]["module"]:
        torch.testing.assert_close(a["ema"]["module"][k], b["ema"]["module"][k], rtol=0, atol=0, msg=k)
    # last.pt trains on from the raw weights; what was evaluated and kept (best.pt, the epoch
    # snapshots) is the average
    raw, avg = a["model"], a["ema"]["module"]
    assert any(not torch.equal(raw[k], avg[k]) for k in raw if raw[k].is_floating_point())
    kept = _load(snapshot_paths(tmp_path / "a", 2)[1])
    for k in avg:
        torch.testing.assert_close(kept["model"][k], avg[k], rtol=0, atol=0, msg=k)
    best = _load(tmp_path / "a" / "best.pt")
    assert best["args"]["ema_decay"] == 0.9
    snapshot_of_best = _load(snapshot_paths(tmp_path / "a", best["epoch"])[1])
    for k in avg:
        torch.testing.assert_close(best["model"][k], snapshot_of_best["model"][k], rtol=0, atol=0, msg=k)
    # resuming an EMA run without the flag's history is refused with a one-line fix
    main([*TINY, "--epochs", "2", "--output-dir", str(tmp_path / "c"), "--max-epochs-this-run", "1"])
    with pytest.raises(SystemExit):
        main([*TINY, "--epochs", "2", "--ema-decay", "0.9", "--output-dir", str(tmp_path / "c"),
              "--resume", str(tmp_path / "c" / "last.pt")])
