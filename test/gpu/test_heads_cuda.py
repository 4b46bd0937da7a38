"""On a CUDA GPU, in the backend's layout (channels_last) and precisions, issue 15's rewritten
heads give the pre-rewrite heads' numbers on real fundus images (the CPU tests hold the same in
fp32; GPU kernels, fp16 and the NHWC token path of `MultiScaleProjection` are checked here).

Skipped without a GPU; `scripts/gpu_job.sh` runs it before it measures anything.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    pytest.skip("needs a CUDA GPU (none visible to torch)", allow_module_level=True)

from dms_net_core.model import DMSNetConfig, build_model  # noqa: E402
from dms_net_core.runtime.batchnorm_folding import fold_batchnorm  # noqa: E402
from test.fakes.tiny_bundle import real_pair_batch  # noqa: E402

TOLERANCE = {torch.float32: 1e-4, torch.float16: 1e-2}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
def test_rewritten_heads_agree_with_the_reference_heads_on_cuda(dtype):
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    cfg = DMSNetConfig.tiny(image_size=112, per_eye_heads=True)  # 7x7 maps: uneven adaptive-pool bins
    torch.manual_seed(0)
    fast = build_model(cfg).eval()
    reference = build_model(cfg, reference_heads=True).eval()
    reference.load_state_dict(fast.state_dict())
    left, right = (torch.from_numpy(a).cuda().contiguous(memory_format=torch.channels_last)
                   for a in real_pair_batch(112))
    outputs = []
    for model in (fast, reference):
        model = model.cuda()
        fold_batchnorm(model, (left[:1], right[:1]))  # as the backend does, before the dtype change
        model = model.to(dtype=dtype, memory_format=torch.channels_last)
        with torch.inference_mode():
            outputs.append([t.float() for t in model(left.to(dtype), right.to(dtype))])
    for name, got, want in zip(("logits", "attention_left", "attention_right", "left_logits", "right_logits"),
                               *outputs):
        if name.endswith("logits"):
            got, want = torch.sigmoid(got), torch.sigmoid(want)
        torch.testing.assert_close(got, want, atol=TOLERANCE[dtype], rtol=0, msg=name)
