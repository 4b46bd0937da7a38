"""Run specs of ``training.run_suite`` (what the GPU job asks for): ``+KEY=VALUE`` reaches the
model config, the augmentation or the trainer's own options, and a typo fails before training."""

from __future__ import annotations

import pytest

from training.run_suite import parse_runs, run_arguments
from training.train import build_configs, parse_args


def test_overrides_reach_model_augment_and_trainer_options() -> None:
    (spec, seed), = parse_runs(["tiny_cpu+neck_channels=16+cutmix_prob=0+pos_weight_power=0+backbone_lr_mult=0.1"
                                "+channels_last=true:3"])
    name, argv = run_arguments(spec)
    assert seed == 3 and name == ("tiny_cpu+neck_channels=16+cutmix_prob=0+pos_weight_power=0+backbone_lr_mult=0.1"
                                  "+channels_last=true")
    args = parse_args(argv)
    model_cfg, _, aug = build_configs(args)
    assert model_cfg.neck_channels == 16 and aug.cutmix_prob == 0
    assert args.pos_weight_power == 0 and args.backbone_lr_mult == 0.1 and args.channels_last is True
    assert parse_args(run_arguments("tiny_cpu+channels_last=false")[1]).channels_last is False
    _, pre, _ = build_configs(parse_args(run_arguments("tiny_cpu+mean=[0.5,0.5,0.5]+std=[0.5,0.5,0.5]")[1]))
    assert pre.mean == pre.std == (0.5, 0.5, 0.5)


def test_unknown_override_fails_before_training() -> None:
    with pytest.raises(ValueError, match="not a model, augment, preprocess or dms-net-train setting"):
        run_arguments("tiny_cpu+neck_chanels=16")


@pytest.mark.parametrize("recipe", ["dms_net_slim_effnet_lite0", "plain_binocular_per_eye_lite0"])
def test_new_recipes_parse(recipe: str) -> None:
    model_cfg, pre, _ = build_configs(parse_args(["--config", recipe]))
    assert model_cfg.per_eye_heads and pre.image_size == model_cfg.image_size == 256
