"""The PyTorch backend on a real CUDA GPU agrees with ONNX Runtime on real fundus images.

Skipped without a GPU (the development and CI machines have none); `scripts/gpu_job.sh` runs
it first on a lent GPU, so every accelerated path the node can select (``torch_accel``) and
both input forms are checked for correctness before their speed is measured. Tolerances are
the issue's: probabilities within 1e-4 in fp32 and 1e-2 in fp16.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    pytest.skip("needs a CUDA GPU (none visible to torch)", allow_module_level=True)

from dms_net_core.bundle import ModelBundle  # noqa: E402
from dms_net_core.runtime import create_backend, torch_acceleration_options  # noqa: E402
from test.fakes.tiny_bundle import real_pair_batch, real_prepared_pair_batch  # noqa: E402

TOLERANCE = {"fp32": 1e-4, "fp16": 1e-2}


@pytest.fixture(scope="module")
def bundle(tiny_bundle) -> ModelBundle:
    """conftest's tiny bundle: its head is scaled so probabilities spread over (0, 1)."""
    return ModelBundle.load(tiny_bundle)


@pytest.fixture(scope="module")
def reference(bundle):
    """ONNX Runtime on the CPU, float32 input: the exported graph's numbers."""
    backend = create_backend(bundle, backend="onnxruntime", device="cpu")
    result = backend.infer(*real_pair_batch(bundle.image_size))
    backend.close()
    assert np.ptp(result.probabilities) > 0.2  # spread out, so agreement means something
    return result


#: every node-selectable acceleration, plus compile captured in the backend's own graph (bench only)
ACCELERATIONS = {name: torch_acceleration_options(name)
                 for name in ("none", "cuda_graph", "compile", "compile_cudagraphs")}
ACCELERATIONS["compile+owngraph"] = {"compile": True, "cuda_graph": True}
ACCELERATIONS["compile-frozen-cudagraphs"] = {"compile": True,
                                              "compile_options": {"freezing": True, "triton.cudagraphs": True}}


#: both input forms on the uncompiled paths and the node's best compiled one; the other compiled
#: variants (tens of seconds of compiling each) with the node's uint8 form only
CASES = [
    *[(p, a, f) for p, a in (("fp32", "none"), ("fp16", "none"), ("fp16", "cuda_graph"), ("fp16", "compile_cudagraphs"))
      for f in ("uint8", "float32")],
    *[("fp16", a, "uint8") for a in ("compile", "compile+owngraph", "compile-frozen-cudagraphs")],
]


@pytest.mark.parametrize("precision, accel, form", CASES)
def test_cuda_backend_agrees_with_onnxruntime(bundle, reference, precision, accel, form):
    backend = create_backend(bundle, backend="torch", device="cuda", precision=precision, **ACCELERATIONS[accel])
    assert "cudnn-benchmark" in backend.describe()  # fixed shapes: cuDNN's autotuner is on by default
    try:
        pair = real_prepared_pair_batch(bundle.image_size) if form == "uint8" else real_pair_batch(bundle.image_size)
        backend.warmup(2, dtype=form)
        for _ in range(2):  # replayed graphs must not keep the previous batch's numbers
            got = backend.infer(*pair)
        tol = TOLERANCE[precision]
        np.testing.assert_allclose(got.probabilities, reference.probabilities, atol=tol, rtol=0)
        np.testing.assert_allclose(got.attention_left, reference.attention_left, atol=tol, rtol=0)
        np.testing.assert_allclose(got.attention_right, reference.attention_right, atol=tol, rtol=0)
        # batch of one = the first patient of the batch of two (the per-batch-size graph path)
        single = backend.infer(pair[0][:1], pair[1][:1])
        np.testing.assert_allclose(single.probabilities[0], reference.probabilities[0], atol=tol, rtol=0)
        backend.stage_timing = True  # the benchmark's GPU-timeline split: three stages inside the call's wall time
        timed = backend.infer(*pair).timings_ms
        backend.stage_timing = False
        stages = [timed["upload"], timed["network"], timed["download"]]
        assert all(t >= 0 for t in stages) and sum(stages) <= timed["inference"] + 0.05
        print(f"{precision} {accel} {form}: max |dp| {np.abs(got.probabilities - reference.probabilities).max():.2e}, "
              f"upload/network/download {' / '.join(f'{t:.3f}' for t in stages)} ms of {timed['inference']:.3f}")
    finally:
        backend.close()
