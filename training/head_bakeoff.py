"""The head bake-off (issue 22 item 5): the control's head against DMS-Net's heads on the SAME frozen features.

Why: the earlier DMS-Net-vs-control comparison (RESULTS 1a: 0.736 vs 0.760) changed more than
the heads (CutMix, positive weighting, 15 M randomly initialised head parameters trained at the
backbone's rate). Here everything but the head is held fixed: the trained control backbone is
frozen, its final feature maps (Lite0: 1280 x 8 x 8 per eye at 256 px) are computed ONCE for
every stored view of the control's stage-4 feature bank (`training.feature_bank`), and each head
trains on them with the control's loss (BCE + 0.5 x the per-eye loss), its augmentation (the
same stored views, one drawn per eye per epoch), its optimiser and schedule. Heads:

- ``control``: the plain binocular head ([f_l, f_r, |f_l - f_r|] -> linear), retrained from
  scratch: it should land near the control run's own score (the sanity check);
- ``dms_slim``: DMS-Net's heads with the 1280 -> 256 neck (`dms_net_slim_effnet_lite0`, 2.3 M);
- ``dms_full``: DMS-Net's heads at full width (`dms_net_effnet_lite0`, 15.3 M).

All three have per-eye heads, so the per-eye loss is the same for all. The features come from a
backbone trained on the same training patients, so every head sees training features that are
easier than validation ones; that bias is shared, and the bake-off ranks heads, it does not
predict an end-to-end score. A head that wins above noise (3 seeds) earns the end-to-end
fine-tune the issue describes.

    dms-net-head-bakeoff --control runs/cpu/lever_base/bank_f5_s0/best.pt --output-dir runs/cpu/head_bakeoff

Resumable: the derived bank is written view by view, and each (head, seed) result is a JSON file
that a second call skips.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from dms_net_core.metrics import full_report, tune_thresholds
from dms_net_core.model import build_model
from training.bank_train import predict_bank, train_one_epoch_bank
from training.cpu_precision import cpu_amp, native_bf16
from training.feature_bank import BankSpec, FeatureBank, prefix_fingerprint
from training.train import (
    WarmupCosine,
    bank_eye_arrays,
    open_bank_run,
    param_groups,
    pos_weight_from_prevalence,
    resolve_recipe,
    score_probs,
)

#: head name -> the recipe whose ``model`` section defines it (backbone settings are ignored)
HEADS = {"control": "plain_binocular_per_eye_lite0", "dms_slim": "dms_net_slim_effnet_lite0",
         "dms_full": "dms_net_effnet_lite0"}
DERIVED_FORMAT_VERSION = 1


class HeadsOnFeatures(nn.Module):
    """``model`` fed with final backbone feature maps: its backbone replaced by the identity.

    Shares the head's parameters with ``model`` (nothing copied), so a step on it trains
    ``model``; ``single_eye_logits`` is not provided (the bake-off trains two-eye patients)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        net = copy.copy(model)
        net._modules = dict(model._modules)
        net._modules["backbone"] = nn.Identity()
        self.net = net
        self.model = model

    def forward(self, left: torch.Tensor, right: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.net(left, right)


def head_model(head: str, control_cfg: Any) -> nn.Module:
    """The ``head`` recipe's model with the control's backbone settings and per-eye heads on,
    its backbone frozen (it never runs: `HeadsOnFeatures` replaces it)."""
    import yaml

    if head not in HEADS:
        raise ValueError(f"unknown head {head!r}: choose from {sorted(HEADS)}")
    model_section = yaml.safe_load(resolve_recipe(HEADS[head]).read_text())["model"]
    cfg_dict = {**control_cfg.to_dict(), **model_section, "per_eye_heads": True, "pretrained": None,
                "backbone": control_cfg.backbone, "image_size": control_cfg.image_size}
    cfg = type(control_cfg).from_dict(cfg_dict)
    model = build_model(cfg)
    for p in model.backbone.parameters():
        p.requires_grad_(False)
    return model


def _backbone_fingerprint(backbone: nn.Module) -> str:
    h = hashlib.sha256()
    for name, tensor in backbone.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().to(torch.float32).contiguous().cpu().numpy().tobytes())
    return h.hexdigest()


def derive_final_bank(source: FeatureBank, backbone: nn.Module, path: str | Path, *, batch_size: int = 128,
                      progress: bool = False) -> FeatureBank:
    """``backbone.forward_from_stage`` over every view and eye of ``source``: the final feature
    maps of a (trained) backbone, fp16 on disk, resumable view by view. View 0 in fp32 compute,
    augmented views under bf16 autocast where the CPU has it natively (`training.cpu_precision`)."""
    path = Path(path)
    stage = source.spec.stage
    backbone = backbone.eval()
    spec = BankSpec(backbone=source.spec.backbone, pretrained=source.spec.pretrained, stage=-1,
                    views=source.spec.views, seed=source.spec.seed, preprocess=source.spec.preprocess,
                    augment=source.spec.augment,
                    prefix_sha256=hashlib.sha256((source.spec.prefix_sha256 + _backbone_fingerprint(backbone)).encode())
                    .hexdigest())
    with torch.no_grad():
        probe = backbone.forward_from_stage(torch.from_numpy(np.array(source.features[0, :1])).float(), stage)
    shape = (source.features.shape[0], source.features.shape[1], *probe.shape[1:])
    meta_path, feats_path = path / "meta.json", path / "features.f16"
    done: list[int] = []
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        if meta.get("spec") != spec.to_dict() or meta.get("shape") != list(shape):
            raise ValueError(f"the derived bank at {path} was built from another backbone or bank: delete the folder")
        done = list(meta.get("views_done", []))
    path.mkdir(parents=True, exist_ok=True)
    if len(done) < shape[0]:
        size_gb = float(np.prod(shape)) * 2 / 1e9
        print(f"derived bank {path}: {shape[1]} eyes x {shape[0]} views of {tuple(shape[2:])} fp16 = {size_gb:.2f} GB "
              f"({len(done)} views already built)", flush=True)
        mode = "r+" if feats_path.is_file() and feats_path.stat().st_size == np.prod(shape) * 2 else "w+"
        done = done if mode == "r+" else []
        features = np.memmap(feats_path, dtype=np.float16, mode=mode, shape=shape)
        bf16 = native_bf16()
        for view in range(shape[0]):
            if view in done:
                continue
            starts = range(0, shape[1], batch_size)
            if progress:
                from tqdm import tqdm

                starts = tqdm(starts, desc=f"derived view {view}", leave=False, dynamic_ncols=True)
            for s in starts:
                x = torch.from_numpy(np.array(source.features[view, s:s + batch_size])).float()
                x = x.contiguous(memory_format=torch.channels_last)
                with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16 and view > 0):
                    features[view, s:s + len(x)] = (backbone.forward_from_stage(x, stage).float().numpy()
                                                    .astype(np.float16))
            features.flush()
            done.append(view)
            tmp = path / "meta.json.tmp"
            tmp.write_text(json.dumps({"version": DERIVED_FORMAT_VERSION, "spec": spec.to_dict(), "shape": list(shape),
                                       "views_done": sorted(done), "source": str(source.path)}) + "\n")
            os.replace(tmp, meta_path)
            print(f"derived bank view {view}/{shape[0] - 1} written", flush=True)
        del features
    return FeatureBank(path=path, spec=spec, features=np.memmap(feats_path, dtype=np.float16, mode="r", shape=shape),
                       eyes=source.eyes, eye_targets=source.eye_targets, eye_known=source.eye_known)


def train_head(head: str, seed: int, bank: FeatureBank, data: dict[str, dict[str, np.ndarray]], control_cfg: Any,
               recipe: dict[str, Any], *, epochs: int, progress: bool = False) -> dict[str, Any]:
    """One head, one seed: the control's optimiser, schedule and loss; the epoch picked on
    validation (official final at 0.5), thresholds tuned there, the held-out side scored once."""
    torch.manual_seed(seed)
    model = head_model(head, control_cfg).to(memory_format=torch.channels_last)
    net = HeadsOnFeatures(model)
    train = data["train"]
    batch_size = int(recipe["batch_size"])
    steps = len(train["rows"]) // batch_size
    optimizer = torch.optim.AdamW(param_groups(model, recipe["lr"], recipe["weight_decay"], 1.0), lr=recipe["lr"])
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, WarmupCosine(round(recipe["warmup_epochs"] * steps), epochs * steps, recipe["min_lr_ratio"]))
    criterion = nn.BCEWithLogitsLoss(pos_weight=pos_weight_from_prevalence(
        train["labels"], recipe["pos_weight_power"], recipe["pos_weight_max"]))
    val_eyes = bank_eye_arrays(bank, data["val"]["rows"])
    best_final, best_epoch, best_state, history = -1.0, -1, None, []
    t0 = time.time()
    for epoch in range(epochs):
        te = time.time()
        stats = train_one_epoch_bank(net, criterion, optimizer, scheduler, bank, train["rows"], train["labels"],
                                     np.zeros(0, np.int64), np.random.default_rng([seed, epoch]), batch_size=batch_size,
                                     eye_loss_weight=recipe["eye_loss_weight"], amp_dtype=cpu_amp("bf16"),
                                     frozen=[model.backbone], progress=progress, desc=f"{head} s{seed} epoch {epoch}")
        probs, eye_probs = predict_bank(net, bank, data["val"]["rows"], amp_dtype=cpu_amp("bf16"))
        scores = score_probs(data["val"]["labels"], probs, eye_probs, val_eyes)
        history.append({"epoch": epoch, "train_loss": stats["loss"], "val_final": scores["final"],
                        "epoch_s": time.time() - te})
        print(f"{head} seed {seed} epoch {epoch}: loss {stats['loss']:.4f} val final {scores['final']:.4f} "
              f"({time.time() - te:.0f}s)", flush=True)
        if scores["final"] > best_final:
            best_final, best_epoch = scores["final"], epoch
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    model.load_state_dict(best_state)
    result: dict[str, Any] = {"head": head, "seed": seed, "picked_epoch": best_epoch, "epochs": epochs,
                              "head_params": sum(p.numel() for n, p in model.named_parameters()
                                                 if not n.startswith("backbone.")),
                              "train_s": time.time() - t0, "per_epoch": history}
    probs, _ = predict_bank(net, bank, data["val"]["rows"])
    thresholds = tune_thresholds(data["val"]["labels"], probs)
    for side in ("val", "test"):
        if side in data:
            side_probs = probs if side == "val" else predict_bank(net, bank, data[side]["rows"])[0]
            report = full_report(data[side]["labels"], side_probs, thresholds)
            result[side] = json.loads(json.dumps(report["official"], default=float))
    return result


def summarise(results: list[dict[str, Any]]) -> str:
    """A markdown table: one row per head (mean +- SD over seeds), then one per run."""
    lines = ["| head | params (M) | seeds | best epochs | val final | **test final** | test kappa | test AUC "
             "| s / epoch |",
             "|---|---:|---:|---|---:|---:|---:|---:|---:|"]
    for head in HEADS:
        runs = [r for r in results if r["head"] == head]
        if not runs:
            continue

        def ms(side: str, key: str) -> str:
            v = np.array([r[side][key] for r in runs if side in r])
            return f"{v.mean():.4f} +- {v.std(ddof=1) if len(v) > 1 else 0.0:.4f}" if len(v) else "-"

        epoch_s = np.median([h["epoch_s"] for r in runs for h in r["per_epoch"]])
        lines.append(f"| {head} | {runs[0]['head_params'] / 1e6:.2f} | {len(runs)} | "
                     f"{', '.join(str(r['picked_epoch']) for r in runs)} | {ms('val', 'final')} | "
                     f"**{ms('test', 'final')}** | "
                     f"{ms('test', 'kappa')} | {ms('test', 'auc')} | {epoch_s:.0f} |")
    return "\n".join(lines)


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--control", required=True, help="best.pt of a control trained from a feature bank (dms-net-train "
                                                     "--feature-bank): its backbone makes the features")
    p.add_argument("--output-dir", required=True)
    p.add_argument("--derived-bank", default=None, help="where the final feature maps go (default: OUTPUT_DIR/bank)")
    p.add_argument("--heads", nargs="+", default=list(HEADS), choices=list(HEADS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=None, help="default: the control run's --epochs")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=False)
    return p


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    control_args, control, source, data = open_bank_run(args.control)
    if prefix_fingerprint(control, source.spec.stage) != source.spec.prefix_sha256:
        raise ValueError(f"{args.control}'s first {source.spec.stage} stages differ from its bank's: "
                         "the stages the bank stores must have been frozen in that run")
    out = Path(args.output_dir)
    bank = derive_final_bank(source, control.backbone, args.derived_bank or out / "bank", progress=args.progress)
    recipe = vars(control_args)
    epochs = args.epochs or int(recipe["epochs"])
    results = []
    for head in args.heads:
        for seed in args.seeds:
            path = out / f"{head}_s{seed}.json"
            if path.is_file():
                results.append(json.loads(path.read_text()))
                continue
            result = train_head(head, seed, bank, data, control.config, recipe, epochs=epochs, progress=args.progress)
            result["control"] = str(args.control)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(result, indent=1) + "\n")
            tmp.replace(path)
            results.append(result)
            print(f"{head} seed {seed}: best epoch {result['picked_epoch']} val final {result['val']['final']:.4f} "
                  f"test final {result.get('test', {}).get('final', float('nan')):.4f}", flush=True)
    table = summarise(results)
    (out / "summary.md").write_text(table + "\n")
    print(table)
    return results


def main(argv: list[str] | None = None) -> int:
    try:
        run(get_args_parser().parse_args(argv))
    except (FileNotFoundError, ValueError) as exc:
        print(f"dms-net-head-bakeoff: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    return 0


if __name__ == "__main__":
    main()
