"""``dms-net-ensemble``: several training checkpoints -> ONE checked model bundle the node runs.

    dms-net-ensemble runs/suite/dms_net_effnet_lite0_seed{0,1,2}/best.pt --output bundles/dms-ens3 \
        --split-file training/splits/odir5k_256_val15_test15_seed0.json --weights-dtype fp16

The members (any mix of DMS-Net and the plain control, same image size and preprocessing) are
wrapped in `dms_net_core.model.ensemble.EnsembleNet` (mean of the members' probabilities) and
exported as one ONNX graph through `dms_net_core.bundle_export.export_bundle`, with the same ONNX
Runtime-vs-PyTorch check as a single model. The bundle is deployment-only (ONNX, no
safetensors): ONNX Runtime and TensorRT run it; the PyTorch backend says so and is skipped.

Thresholds are tuned on the split's validation patients for the *ensemble's* probabilities
(the members' own thresholds do not transfer to an average), and the validation report and,
for a 3-way split, the held-out test report go into ``model.json`` like a trained model's.
``model.json`` also gets an ``"ensemble"`` entry listing every member (checkpoint, recipe,
seed, its own validation score) and how they are combined; its ``model_config`` is the
member whose attention maps the bundle outputs.

Members that are plain binocular models with per-eye heads give the bundle class activation maps
(``cam_left``/``cam_right``, `dms_net_core.model.cam`): the mean of those members' maps, with the
mirrored pass un-flipped first under ``--hflip-tta``; the node draws them as overlays.

``--hflip-tta`` runs every member on the pair and on its mirror, probabilities averaged
(`EnsembleNet(mirror=True)`, the same mean as wrapping each member in
`dms_net_core.model.tta.HorizontalFlipTTA`; twice the inference cost). Whether it pays is a
property of the trained members, so it is measured on validation like everything else: build
with and without and keep the better validation score.

Members whose stem and first K backbone stages are identical bit for bit (members trained from
one feature bank) share them in the graph: the prefix runs once per eye, not once per member
(`dms_net_core.model.stage_split`; the same numbers, less time; ``--no-share-prefix`` turns it
off). ``model.json``'s ensemble entry says how many stages are shared. ``--weights-dtype fp16`` with
``--hflip-tta`` once failed the export check for five bank members (1.74e-3 > 5e-4): the mirrored
pass runs every convolution twice, BatchNorm folding refused such convs, and the exporter's own
fold rounded the weights a second time; folding now accepts a conv whose every call feeds one BN
(`dms_net_core.runtime.batchnorm_folding`), and the same five-member, shared-prefix, mirrored
fp16 ensemble passes at 2e-7.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

import numpy as np

from dms_net_core.bundle import BundleError
from dms_net_core.bundle_export import DEFAULT_OPSET, export_bundle
from dms_net_core.calibration import apply_logit_offsets, cross_validated_gain, fit_logit_offsets
from dms_net_core.checkpoint import (
    checkpoint_data_summary,
    checkpoint_model_config,
    checkpoint_preprocess,
    checkpoint_split_file,
    checkpoint_summary,
    checkpoint_thresholds,
    load_checkpoint,
    model_from_checkpoint,
)
from dms_net_core.data.odir import load_odir, select_patients
from dms_net_core.data.splits import read_split
from dms_net_core.metrics import full_report, odir_official_score, per_eye_auc, tune_thresholds
from training.evaluate import ModuleBackend, PairPredictions, predict_pairs
from training.paths import DEFAULT_ODIR_HELP, default_odir_dir


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Export a mean-probability ensemble of checkpoints as one model bundle",
                                add_help=add_help)
    p.add_argument("checkpoints", nargs="+", type=Path, help="two or more best.pt files written by dms-net-train")
    p.add_argument("--output", "-o", type=Path, required=True, help="bundle directory to write")
    p.add_argument("--name", default="dms-net-ensemble", help="bundle name; the model id is <name>@<onnx sha256[:12]>")
    p.add_argument("--labels", default=None,
                   help=f"labels for threshold tuning (default: labels.csv of {DEFAULT_ODIR_HELP})")
    p.add_argument("--images-dir", default=None)
    p.add_argument("--split-file", default=None,
                   help="split whose 'val' side tunes the thresholds (default: the split the first member trained on)")
    p.add_argument("--oof", type=Path, default=None,
                   help="the cross-validation record of `dms-net-oof` for fold members: its out-of-fold calibration "
                        "offsets and thresholds are used (no validation pass) and its scores go into model.json")
    p.add_argument("--no-tune", action="store_true",
                   help="keep the mean of the members' thresholds; no validation pass")
    p.add_argument("--calibrate", action=argparse.BooleanOptionalAction, default=True,
                   help="fit per-class logit offsets on the validation side so 'probability > 0.5' "
                        "(the ODIR score's cut) agrees best with the graders (dms_net_core.calibration); "
                        "needs a split")
    p.add_argument("--attention-from", type=int, default=None,
                   help="member index whose attention maps the bundle outputs (default: the first DMS-Net member)")
    p.add_argument("--hflip-tta", action="store_true",
                   help="average each member over the pair and its horizontal mirror "
                        "(2x inference; keep it only if validation says so)")
    p.add_argument("--share-prefix", action=argparse.BooleanOptionalAction, default=True,
                   help="run the stem and early stages once per eye when every member's are identical bit for bit "
                        "(members from one feature bank); the same numbers, less time")
    p.add_argument("--weights-dtype", choices=("fp32", "fp16"), default="fp32")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET)
    p.add_argument("--batch-size", type=int, default=16)
    return p


def _member_summary(path: Path, ckpt: dict[str, Any]) -> dict[str, Any]:
    return {"checkpoint": str(path), **checkpoint_summary(ckpt)}


def _split_for_tuning(args: argparse.Namespace, first_ckpt: dict[str, Any]) -> tuple[str | None, str]:
    """(split file or None, why) for threshold tuning."""
    if args.no_tune:
        return None, "--no-tune"
    split = args.split_file or checkpoint_split_file(first_ckpt)
    if not split:
        return None, "no --split-file and the first member records none"
    if not Path(split).is_file():
        return None, f"split file {split} not found (pass --split-file)"
    return split, ""


def calibrate(val: PairPredictions,
              test: PairPredictions | None) -> tuple[dict[str, Any], PairPredictions, PairPredictions | None]:
    """Fit logit offsets on ``val`` (`fit_logit_offsets`) and apply them to both sides, if a
    5-fold cross-validation within ``val`` shows they generalise (`cross_validated_gain`);
    returns the record for model.json (offsets, official scores before/after on each side, or
    why none were applied) and the predictions. The held-out side is only scored, never fitted on."""
    gain = cross_validated_gain(val.labels, val.probs)
    if gain <= 0:  # offsets that do not generalise within validation are not applied
        return {"applied": False, "val_cross_validated_gain": gain,
                "why": "5-fold cross-validation on the val side showed no gain"}, val, test
    offsets, info = fit_logit_offsets(val.labels, val.probs)
    record: dict[str, Any] = {"applied": True, "logit_offsets": [float(b) for b in offsets], "fitted_on": "val",
                              "objective": "ODIR-2019 final at probability > 0.5", "val_cross_validated_gain": gain,
                              "val_before": info["before"], "val_after": info["after"]}
    val = dataclasses.replace(val, probs=apply_logit_offsets(val.probs, offsets))
    if test is not None:
        record["test_before"] = odir_official_score(test.labels, test.probs)
        test = dataclasses.replace(test, probs=apply_logit_offsets(test.probs, offsets))
        record["test_after"] = odir_official_score(test.labels, test.probs)
    return record, val, test


def _from_oof(path: Path, checkpoints: list[Path],
              hflip_tta: bool) -> tuple[np.ndarray, dict[str, Any], dict[str, Any]]:
    """(thresholds, model.json metrics, calibration record) from a `dms-net-oof` record, after
    checking that it describes exactly these members in the same test-time form."""
    import json

    record = json.loads(Path(path).read_text())
    named = sorted(Path(m).resolve() for m in record.get("members", []))
    if named != sorted(Path(c).resolve() for c in checkpoints):
        raise ValueError(f"{path} scored members {record.get('members')}, not the checkpoints given: "
                         "pass the same epoch's fold checkpoints (see its 'members')")
    if bool(record.get("hflip_tta")) != bool(hflip_tta):
        raise ValueError(f"{path} was scored {'with' if record.get('hflip_tta') else 'without'} --hflip-tta: "
                         "build the bundle the same way")
    metrics = dict(record["report"])
    metrics["out_of_fold"] = {k: record[k] for k in ("patients", "folds", "epoch", "epoch_chosen_by", "score",
                                                     "score_ci95", "score_is", "raw", "raw_ci95",
                                                     "calibrated_cross_fitted", "decisions_cross_fitted", "hflip_tta")}
    applied = bool(record["calibration_applied"])
    calibration: dict[str, Any] = {"applied": applied, "fitted_on": "out-of-fold predictions of the fold members",
                                   "objective": "ODIR-2019 final at probability > 0.5",
                                   "cross_fitted_out_of_fold": record["calibrated_cross_fitted"],
                                   "uncalibrated_out_of_fold": record["raw"]}
    if applied:
        calibration["logit_offsets"] = record["logit_offsets"]
    else:
        calibration["why"] = "offsets fitted on the other folds did not raise the out-of-fold score"
    return np.asarray(record["thresholds"], np.float32), metrics, calibration


def side_report(pred: PairPredictions, thresholds: np.ndarray) -> dict[str, Any]:
    """`full_report` of one split side, with the per-eye AUC when the ensemble has per-eye outputs."""
    report = full_report(pred.labels, pred.probs, thresholds)
    if pred.eye_probs is not None:
        report["per_eye"] = per_eye_auc(pred.eye_labels, pred.eye_probs)
    return report


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    try:
        if len(args.checkpoints) < 2:
            raise ValueError(f"{len(args.checkpoints)} checkpoint given: "
                             "an ensemble needs 2 or more (use dms-net-export for one)")
        ckpts = [load_checkpoint(p) for p in args.checkpoints]
        pres = [checkpoint_preprocess(c) for c in ckpts]
        for path, pre in zip(args.checkpoints[1:], pres[1:]):
            if pre != pres[0]:
                raise ValueError(f"{path} preprocesses differently from {args.checkpoints[0]} ({pre} vs {pres[0]}): "
                                 "ensemble only models trained on the same input")
        configs = [checkpoint_model_config(c) for c in ckpts]
        attention_from = args.attention_from
        if attention_from is None:
            attention_from = next((i for i, c in enumerate(configs) if c.architecture == "dms_net"), 0)
        if not 0 <= attention_from < len(ckpts):
            raise ValueError(f"--attention-from {attention_from} is not a member index (0..{len(ckpts) - 1})")
    except (FileNotFoundError, ValueError) as exc:
        print(f"dms-net-ensemble: error: {exc}", file=sys.stderr)
        return 2

    import torch

    from dms_net_core.model.ensemble import EnsembleNet
    from dms_net_core.model.stage_split import shared_frozen_prefix

    per_eye = any(c.per_eye_heads for c in configs)
    nets = [model_from_checkpoint(c) for c in ckpts]
    shared = shared_frozen_prefix(nets) if args.share_prefix else -1
    # mirror inside the mean, so calibration offsets apply to the mean of all passes
    ensemble = EnsembleNet(nets, attention_from=attention_from, per_eye=per_eye, mirror=args.hflip_tta,
                           prefix_stage=shared if shared >= 0 else None).eval()
    # the bundle's model_config describes the graph's outputs: per-eye outputs iff any member has them
    bundle_config = dataclasses.replace(configs[attention_from], per_eye_heads=per_eye)
    pre = pres[0]
    member_thresholds = np.mean([checkpoint_thresholds(c) for c in ckpts], axis=0)
    thresholds, metrics, calibration = member_thresholds, {}, None
    split_file, why_not = (_split_for_tuning(args, ckpts[0]) if args.oof is None
                           else (None, f"out-of-fold record {args.oof}"))
    if args.oof is not None:
        try:
            thresholds, metrics, calibration = _from_oof(args.oof, args.checkpoints, args.hflip_tta)
        except (FileNotFoundError, ValueError) as exc:
            print(f"dms-net-ensemble: error: {exc}", file=sys.stderr)
            return 2
        if calibration["applied"]:
            ensemble.logit_offsets = torch.tensor(calibration["logit_offsets"], dtype=torch.float32)
            bundle_config = dataclasses.replace(bundle_config, logit_offsets=list(calibration["logit_offsets"]))
    elif split_file is None:
        print(f"dms-net-ensemble: thresholds = mean of the members' ({why_not}); "
              "model.json carries no ensemble metrics")
    else:
        labels_path = args.labels or str(default_odir_dir() / "labels.csv")
        try:
            records = load_odir(labels_path, args.images_dir).records
            split = read_split(split_file)
            backend = ModuleBackend(ensemble)
            val_recs = select_patients(records, split["val"], source=split_file)
            val = predict_pairs(backend, val_recs, pre, args.batch_size, progress=sys.stderr.isatty())
            test = None
            if "test" in split:
                test_recs = select_patients(records, split["test"], source=split_file)
                test = predict_pairs(backend, test_recs, pre, args.batch_size, progress=sys.stderr.isatty())
            if args.calibrate:
                calibration, val, test = calibrate(val, test)
                if calibration["applied"]:
                    ensemble.logit_offsets = torch.tensor(calibration["logit_offsets"], dtype=torch.float32)
                    bundle_config = dataclasses.replace(bundle_config, logit_offsets=list(calibration["logit_offsets"]))
            thresholds = tune_thresholds(val.labels, val.probs)
            metrics = side_report(val, thresholds)
            if test is not None:
                metrics["held_out_test"] = side_report(test, thresholds)
        except (FileNotFoundError, ValueError) as exc:
            print(f"dms-net-ensemble: error: {exc}", file=sys.stderr)
            return 2
    members = [_member_summary(p, c) for p, c in zip(args.checkpoints, ckpts)]
    try:
        bundle = export_bundle(
            ensemble, bundle_config, pre, args.output, thresholds=thresholds, metrics=metrics,
            data_summary=checkpoint_data_summary(ckpts[0]), name=args.name, opset=args.opset,
            weights_dtype=args.weights_dtype, include_torch_weights=False,
            extra_meta={"ensemble": {"combination": "mean of member probabilities (logits = logit(mean p))",
                                     "test_time_augmentation": ("horizontal mirror of both eyes, averaged per member"
                                                                if args.hflip_tta else None),
                                     "shared_prefix_stages": shared if shared >= 0 else None,
                                     "attention_from": attention_from, "threshold_source": split_file or why_not,
                                     "class_activation_maps": (
                                         "mean of the plain per-eye members' maps"
                                         + (", mirrored pass un-flipped" if args.hflip_tta else "")
                                         if ensemble.provides_cams else None),
                                     "members": members},
                        **({"calibration": calibration} if calibration else {})},
        )
    except BundleError as exc:
        print(f"dms-net-ensemble: error: {exc}", file=sys.stderr)
        return 1
    print(f"model id      {bundle.model_id}")
    print("shared prefix " + (f"stem + {shared} backbone stages, run once per eye for all {len(nets)} members"
                              if shared >= 0
                              else "none (" + ("--no-share-prefix" if not args.share_prefix
                                               else "the members' stems differ or cannot be cut") + ")"))
    print(f"bundle        {bundle.path}  (ONNX {bundle.onnx_path.stat().st_size / 2**20:.1f} MiB, deployment-only)")
    for i, m in enumerate(members):
        score = m["val_official"].get("final")
        print(f"member {i}      {m['architecture']}/{m['backbone']} seed {m['seed']} epoch {m['epoch']}"
              + (f"  val final {score:.4f}" if score is not None else "")
              + (" (attention)" if i == attention_from else ""))
    if metrics:
        o = metrics["official"]
        print(f"ensemble val  final {o['final']:.4f}  kappa {o['kappa']:.4f}  F1 {o['f1']:.4f}  AUC {o['auc']:.4f}  "
              f"({metrics['num_patients']} patients)")
        if "held_out_test" in metrics:
            t = metrics["held_out_test"]["official"]
            print(f"ensemble test final {t['final']:.4f}  kappa {t['kappa']:.4f}  F1 {t['f1']:.4f}  "
                  f"AUC {t['auc']:.4f}  (held out)")
    if calibration and not calibration["applied"]:
        print(f"calibration   not applied: {calibration['why']} ({calibration['val_cross_validated_gain']:+.4f})")
    elif calibration:
        print("calibration   logit offsets "
              f"{' '.join(f'{c}={b:+.1f}' for c, b in zip(bundle.class_codes, calibration['logit_offsets']))}"
              + (f" (val final {calibration['val_before']['final']:.4f} -> {calibration['val_after']['final']:.4f}"
                 if "val_before" in calibration else " (fitted out of fold")
              + (f"; test {calibration['test_before']['final']:.4f} -> {calibration['test_after']['final']:.4f}"
                 if "test_before" in calibration else "")
              + ")")
    print(f"thresholds    {' '.join(f'{c}={t:.2f}' for c, t in zip(bundle.class_codes, bundle.thresholds))}")
    print("evidence      "
          f"{'class activation maps (cam_left/cam_right)' if bundle.has_cams else 'no class activation maps'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
