"""The Lite1/Lite2 recipes are one lever each: the Lite0 recipe they mirror with only the backbone changed.

Issue 12 measures levers one by one against the same baseline; a recipe that silently differs
in anything else (lr, epochs, loss, image size...) would confound the comparison.
"""

from __future__ import annotations

from dataclasses import asdict

import pytest

from training.train import build_configs, parse_args

MIRRORS = [
    ("plain_binocular_effnet_lite1", "plain_binocular_effnet_lite0", "efficientnet_lite1"),
    ("plain_binocular_effnet_lite2", "plain_binocular_effnet_lite0", "efficientnet_lite2"),
    ("plain_binocular_per_eye_lite1", "plain_binocular_per_eye_lite0", "efficientnet_lite1"),
    ("plain_binocular_per_eye_lite2", "plain_binocular_per_eye_lite0", "efficientnet_lite2"),
]


@pytest.mark.parametrize(("recipe", "lite0_recipe", "backbone"), MIRRORS)
def test_lite_recipe_differs_from_its_lite0_recipe_only_in_the_backbone(recipe: str, lite0_recipe: str,
                                                                        backbone: str) -> None:
    args, base_args = parse_args(["--config", recipe]), parse_args(["--config", lite0_recipe])
    model, pre, aug = build_configs(args)
    base_model, base_pre, base_aug = build_configs(base_args)
    assert model.backbone == backbone and model.pretrained == "imagenet"
    assert model.image_size == pre.image_size == 256  # the data's size: see each recipe's header
    assert {**model.to_dict(), "backbone": base_model.backbone} == base_model.to_dict()
    assert pre == base_pre and asdict(aug) == asdict(base_aug)
    assert {**vars(args), "config": None, "model": None} == {**vars(base_args), "config": None, "model": None}
