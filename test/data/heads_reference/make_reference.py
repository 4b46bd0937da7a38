"""Write the pre-rewrite reference the head-equivalence tests compare today's model against.

Issue 15 rewrote OSIM's multi-scale projection (and made other speed changes in the heads)
under the rule that the numbers must not change and old checkpoints must still load. This
script was run ONCE, on the commit before that rewrite (c55cd6e), and its output is committed:

- ``weights.safetensors``: the state_dict of ``DMSNetConfig.tiny(image_size=112,
  per_eye_heads=True)`` (a 7x7 feature map, so the 2x2 and 4x4 adaptive pools have uneven
  bins) with seeded random weights, random BatchNorm statistics and affines (so a BN fold is
  not a no-op), OSIM's attention convolutions scaled x0.05 and the per-eye classifier x10 (so
  attention maps and probabilities spread instead of saturating); every float rounded to fp16
  and stored as fp16 to keep the file small (loaded back as fp32, exactly);
- ``outputs.npz``: that model's five outputs, eager fp32 on the CPU, for the first two
  two-eyed patients of ``test/data/odir5k_subset`` preprocessed with THE preprocessing.
- ``inputs.npz`` (added by issue 14, whose downscale changed how a 256 px photograph becomes a
  112 px input by about a grey level): those prepared uint8 eyes (``left``, ``right``
  [2,112,112,3]) as the preprocessing of c55cd6e..8d539c5 made them
  (``test.fakes.tiny_bundle.real_prepared_pair_batch(112)`` run on 8d539c5, whose preprocess.py is
  c55cd6e's), so the tests feed the reference model exactly what its outputs were computed on.

Rerunning it on a later commit would compare that commit with itself: don't, unless a change is
*meant* to change the numbers (then say so in the commit).

    python test/data/heads_reference/make_reference.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))

from dms_net_core.model import DMSNetConfig, build_model  # noqa: E402
from test.fakes.tiny_bundle import real_pair_batch  # noqa: E402

CONFIG = dict(image_size=112, per_eye_heads=True)
OUTPUT_NAMES = ("logits", "attention_left", "attention_right", "left_logits", "right_logits")


def reference_model() -> torch.nn.Module:
    torch.manual_seed(15)
    model = build_model(DMSNetConfig.tiny(**CONFIG)).eval()
    gen = torch.Generator().manual_seed(15)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.copy_(torch.randn(module.running_mean.shape, generator=gen) * 0.2)
                module.running_var.copy_(torch.rand(module.running_var.shape, generator=gen) * 1.5 + 0.25)
                module.weight.copy_(torch.rand(module.weight.shape, generator=gen) + 0.5)
                module.bias.copy_(torch.randn(module.bias.shape, generator=gen) * 0.1)
        model.eye_classifier.weight.mul_(10.0)
        for osim in (model.multiscale_left, model.multiscale_right):
            osim.spatial_attention.weight.mul_(0.05)  # Kaiming init saturates the sigmoid
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.copy_(tensor.half().float())
    return model


def main() -> None:
    model = reference_model()
    state = {k: (v.half() if v.is_floating_point() else v).contiguous().clone() for k, v in model.state_dict().items()}
    save_file(state, str(HERE / "weights.safetensors"), metadata={"config": repr(CONFIG)})
    left, right = (torch.from_numpy(a) for a in real_pair_batch(CONFIG["image_size"]))
    with torch.inference_mode():
        outputs = model(left, right)
    np.savez_compressed(HERE / "outputs.npz", **{n: o.numpy() for n, o in zip(OUTPUT_NAMES, outputs)})
    print({n: tuple(o.shape) for n, o in zip(OUTPUT_NAMES, outputs)})


if __name__ == "__main__":
    main()
