"""CPU training speed of the shipped per-eye Lite0 recipe: image trainer against feature bank.

Runs the REAL epoch functions of both trainers on the same machine in one process,
interleaved round by round (so a neighbour's load hits both alike), and prints pairs/s per
recipe and the ratio:

- ``image, frozen 2, fp32``: `training.train.train_one_epoch` as RESULTS 1b trained the
  shipped models (augmentation per step + the whole model, stages 0-1 frozen);
- ``image, frozen 2, bf16``: the same with bf16 autocast (the CPU half of the speed-up; only on
  a CPU with native bf16, `training.cpu_precision`: elsewhere PyTorch emulates it, far slower);
- ``bank, frozen F``: `training.bank_train.train_one_epoch_bank` from a feature bank of stored
  views, for each frozen depth F in ``--bank-frozen`` (5: blocks 5-6 and the heads train, the
  shipped bank recipe; 4 and 3 train one and two more stages). The bank stores the output of
  stage ``min(F, 4)`` and the frozen stages after it run each step, as in the trainer; it runs
  in bf16 where native, fp32 elsewhere.

Pixel and feature content do not change the cost, so random uint8 images and random fp16
features of the real shapes stand in for the data; the held-out scores of the two recipes are
in RESULTS (the runs themselves).

    python benchmarks/cpu_train_speed.py --steps 6 --rounds 3
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from dms_net_core.data.augment import AugmentConfig
from dms_net_core.data.preprocess import PreprocessConfig
from dms_net_core.model import build_model
from dms_net_core.model.config import DMSNetConfig
from dms_net_core.model.stage_split import FromStage
from training.bank_train import train_one_epoch_bank
from training.cpu_precision import cpu_amp
from training.feature_bank import BankSpec, FeatureBank
from training.freeze import freeze_backbone_stages
from training.train import WarmupCosine, param_groups, train_one_epoch


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=6, help="optimiser steps per recipe per round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--image-size", type=int, default=256)
    p.add_argument("--bank-frozen", type=int, nargs="+", default=[5, 4, 3],
                   help="frozen depths of the feature-bank rows (the bank stores stage min(F, 4))")
    p.add_argument("--output", default=None, help="also write the table here")
    return p


def _model(frozen_stages: int, image_size: int) -> tuple[nn.Module, list[nn.Module], torch.optim.Optimizer, object]:
    cfg = DMSNetConfig.from_dict(dict(architecture="plain_binocular", backbone="efficientnet_lite0",
                                      pretrained="imagenet", image_size=image_size, dropout=0.3, per_eye_heads=True))
    model = build_model(cfg).to(memory_format=torch.channels_last)
    frozen = freeze_backbone_stages(model, frozen_stages)
    opt = torch.optim.AdamW(param_groups(model, 1e-3, 0.05, 1.0), lr=1e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, WarmupCosine(0, 10_000))
    return model, frozen, opt, sched


def _random_bank(model: nn.Module, stage: int, image_size: int, labels: np.ndarray) -> FeatureBank:
    """A bank of the real stage-``stage`` shape (8 views + the plain one, one row per eye) holding noise."""
    eyes = 2 * len(labels)
    with torch.no_grad():
        shape = tuple(model.backbone.forward_prefix(torch.zeros(1, 3, image_size, image_size), stage).shape[1:])
    feats = np.random.default_rng(0).standard_normal((9, eyes, *shape)).astype(np.float16)
    return FeatureBank(path=Path("memory"), spec=BankSpec("efficientnet_lite0", "imagenet", stage, 8, 0, {}, {}, ""),
                       features=feats, eyes=[(str(i), "left") for i in range(eyes)],
                       eye_targets=np.concatenate([labels] * 2), eye_known=np.ones(eyes, bool))


def main(argv: list[str] | None = None) -> str:
    args = get_args_parser().parse_args(argv)
    torch.manual_seed(0)
    b, s, n = args.batch_size, args.image_size, args.batch_size * args.steps
    pre = PreprocessConfig.from_dict(dict(image_size=s, mean=[0.5] * 3, std=[0.5] * 3))
    aug = AugmentConfig(rotation_deg=20, scale=(0.9, 1.1), cutmix_prob=0.0)
    criterion = nn.BCEWithLogitsLoss()
    labels = (torch.rand(n, 8) < 0.2).to(torch.uint8)
    images = {"left": torch.randint(0, 256, (n, s, s, 3), dtype=torch.uint8), "labels": labels,
              "right": torch.randint(0, 256, (n, s, s, 3), dtype=torch.uint8),
              "eye_left": labels.clone(), "eye_right": labels.clone(), "eye_known": torch.ones(n, 2, dtype=torch.bool)}
    bank_amp = cpu_amp("bf16")  # the trainers' own rule: bf16 only where native
    precision = "bf16" if bank_amp == "bf16" else "fp32"
    image_rows = [("image, frozen 2, fp32 (RESULTS 1b)", "none")]
    if bank_amp == "bf16":
        image_rows.append(("image, frozen 2, bf16", "bf16"))
    recipes = {}
    for name, amp in image_rows:
        model, frozen, opt, sched = _model(2, s)

        def run(model=model, frozen=frozen, opt=opt, sched=sched, amp=amp) -> None:
            train_one_epoch(model, criterion, opt, sched, None, images, torch.arange(n), batch_size=b, aug=aug, pre=pre,
                            device=torch.device("cpu"), amp_dtype=amp, channels_last=True, eye_loss_weight=0.5,
                            frozen=frozen)
        recipes[name] = run
    pair_rows = np.stack([np.arange(n), np.arange(n, 2 * n)], axis=1)
    for frozen_stages in args.bank_frozen:
        stage = min(frozen_stages, 4)
        model, frozen, opt, sched = _model(frozen_stages, s)
        bank = _random_bank(model, stage, s, labels.numpy())
        net = FromStage(model, stage)

        def run_bank(net=net, frozen=frozen, opt=opt, sched=sched, bank=bank) -> None:
            train_one_epoch_bank(net, criterion, opt, sched, bank, pair_rows, labels.numpy(), np.zeros(0, np.int64),
                                 np.random.default_rng(0), batch_size=b, eye_loss_weight=0.5, amp_dtype=bank_amp,
                                 frozen=frozen)
        recipes[f"bank, frozen {frozen_stages} (stage-{stage} views), {precision}"] = run_bank

    for run in recipes.values():  # warm-up (oneDNN primitive caches)
        run()
    rates: dict[str, list[float]] = {name: [] for name in recipes}
    for _ in range(args.rounds):
        for name, run in recipes.items():
            t = time.perf_counter()
            run()
            rates[name].append(n / (time.perf_counter() - t))
    base = statistics.median(rates[next(iter(recipes))])
    lines = [f"CPU training speed, Lite0 @ {s} px, {b} pairs/step, {args.steps} steps x {args.rounds} rounds "
             f"interleaved; {platform.processor() or platform.machine()}, torch {torch.__version__}, "
             f"{torch.get_num_threads()} threads",
             "", "| recipe | pairs/s (median) | rounds | vs image fp32 |", "|---|---:|---|---:|"]
    for name, r in rates.items():
        med = statistics.median(r)
        lines.append(f"| {name} | {med:.1f} | {', '.join(f'{v:.1f}' for v in r)} | {med / base:.2f}x |")
    table = "\n".join(lines)
    print(table)
    if args.output:
        Path(args.output).write_text(table + "\n")
    return table


if __name__ == "__main__":
    main()
