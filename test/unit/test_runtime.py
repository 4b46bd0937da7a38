"""ONNX Runtime and PyTorch backends agree with eager PyTorch on real fundus images; create_backend picks and
explains."""

from __future__ import annotations

import logging
import sys

import numpy as np
import pytest
import torch

from dms_net_core.bundle import ModelBundle
from dms_net_core.postprocess import sigmoid
from dms_net_core.runtime import create_backend
from dms_net_core.runtime.base import InferenceResult
from test.fakes.tiny_bundle import build_tiny_model, real_pair_batch, real_prepared_pair_batch, tiny_bundle_path


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> ModelBundle:
    return ModelBundle.load(tiny_bundle_path(tmp_path_factory.getbasetemp()))


@pytest.fixture(scope="module")
def real_batch(bundle):
    return real_pair_batch(bundle.image_size)


@pytest.fixture(scope="module")
def eager(real_batch):
    """Reference: the exported model itself, eager PyTorch, on the real images."""
    model = build_tiny_model()
    with torch.inference_mode():
        logits, att_l, att_r = model(torch.from_numpy(real_batch[0]), torch.from_numpy(real_batch[1]))
    return logits.numpy(), att_l.numpy(), att_r.numpy()


def _check_against_eager(result: InferenceResult, eager) -> None:
    logits, att_l, att_r = eager
    assert result.probabilities.shape == (2, 8) and result.probabilities.dtype == np.float32
    np.testing.assert_allclose(result.probabilities, sigmoid(logits), atol=1e-4, rtol=0)
    np.testing.assert_allclose(result.logits, logits, atol=1e-3, rtol=1e-4)
    np.testing.assert_allclose(result.attention_left, att_l, atol=1e-4, rtol=0)
    np.testing.assert_allclose(result.attention_right, att_r, atol=1e-4, rtol=0)
    assert result.timings_ms["inference"] > 0


def test_real_images_are_distinct_inputs(real_batch):
    left, right = real_batch
    assert left.shape == (2, 3, 64, 64) and left.dtype == np.float32
    assert not np.allclose(left[0], left[1]) and not np.allclose(left[0], right[0])


def test_onnxruntime_matches_eager_on_real_images(bundle, real_batch, eager):
    backend = create_backend(bundle, backend="onnxruntime", device="cpu")
    assert backend.name == "onnxruntime" and "onnxruntime cpu fp32" in backend.describe()
    _check_against_eager(backend.infer(*real_batch), eager)
    # batch of one, and batch order does not mix patients
    single = backend.infer(real_batch[0][1:], real_batch[1][1:])
    np.testing.assert_allclose(single.probabilities[0], sigmoid(eager[0])[1], atol=1e-4)
    backend.close()


def test_torch_backend_matches_eager_on_real_images(bundle, real_batch, eager):
    backend = create_backend(bundle, backend="torch", device="cpu")
    assert backend.name == "torch" and "torch cpu fp32 eager bn-folded=" in backend.describe()
    _check_against_eager(backend.infer(*real_batch), eager)


def test_torch_backend_without_attention_outputs_gives_the_same_probabilities(bundle, real_batch, eager):
    """A node that draws no overlays need not copy the maps out: same probabilities, maps None."""
    backend = create_backend(bundle, backend="torch", device="cpu", attention_outputs=False)
    assert "no-attention-outputs" in backend.describe()
    result = backend.infer(*real_batch)
    assert result.attention_left is None and result.attention_right is None
    np.testing.assert_allclose(result.probabilities, sigmoid(eager[0]), atol=1e-4, rtol=0)
    single = backend.infer(real_batch[0][:1], real_batch[1][:1])
    np.testing.assert_allclose(single.probabilities[0], result.probabilities[0], atol=1e-6, rtol=0)


def test_unfolded_torch_backend_caches_size_dependent_operators_at_load(bundle, real_batch, eager):
    """Without the BN-folding pass the backend still runs the model once at load, so OSIM's
    per-size operators exist before any CUDA graph capture or torch.compile (which must not create them)."""
    backend = create_backend(bundle, backend="torch", device="cpu", fold_batchnorm=False)
    osim_projection = backend.model.model.multiscale_left.compress[0]
    side = bundle.meta["outputs"]["attention_left"][-1]
    assert {f"pool_{side}x{side}", f"upsample_{side}x{side}"} <= {name for name, _ in osim_projection.named_buffers()}
    _check_against_eager(backend.infer(*real_batch), eager)


@pytest.mark.parametrize("backend_name", ["onnxruntime", "torch"])
@pytest.mark.parametrize(
    "left_shape, dtype, match",
    [
        ((1, 3, 32, 32), np.float32, r"expected \[B,3,64,64\]"),
        ((3, 64, 64), np.float32, r"add a batch axis"),
        ((1, 3, 64, 64), np.float64, "dtype float64"),
    ],
)
def test_wrong_input_is_one_line_value_error(bundle, backend_name, left_shape, dtype, match):
    backend = create_backend(bundle, backend=backend_name, device="cpu")
    right = np.zeros((1, 3, 64, 64), np.float32)
    with pytest.raises(ValueError, match=match) as exc:
        backend.infer(np.zeros(left_shape, dtype), right)
    assert "\n" not in str(exc.value)


def test_mismatched_batch_sizes(bundle):
    backend = create_backend(bundle, backend="onnxruntime", device="cpu")
    with pytest.raises(ValueError, match="left batch 2 != right batch 1"):
        backend.infer(np.zeros((2, 3, 64, 64), np.float32), np.zeros((1, 3, 64, 64), np.float32))


def test_auto_skips_missing_tensorrt_and_logs_why(bundle, caplog, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # as on a machine without TensorRT
    with caplog.at_level(logging.INFO, logger="dms_net_core.runtime"):
        backend = create_backend(bundle)
    assert backend.name == "onnxruntime"
    text = caplog.text
    assert "tensorrt: module 'tensorrt' not installed" in text
    assert "chose onnxruntime" in text


def test_auto_falls_back_to_torch_when_onnxruntime_fails(bundle, caplog, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with caplog.at_level(logging.INFO, logger="dms_net_core.runtime"):
        backend = create_backend(bundle)
    assert backend.name == "torch"
    assert "onnxruntime: module 'onnxruntime' not installed" in caplog.text


def test_auto_fp16_on_cpu_runs_fp32_and_says_so(bundle, caplog, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with caplog.at_level(logging.INFO, logger="dms_net_core.runtime"):
        backend = create_backend(bundle, precision="fp16")
    assert backend.name == "onnxruntime" and "fp32" in backend.describe()
    assert "fp16 requested" in caplog.text


def test_explicit_errors(bundle):
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        create_backend(bundle, backend="torch", device="cpu", precision="fp16")
    with pytest.raises(ValueError, match="unknown backend"):
        create_backend(bundle, backend="tflite")
    with pytest.raises(ValueError, match="does not take options"):
        create_backend(bundle, backend="onnxruntime", cuda_graph=True)
    with pytest.raises(ValueError, match="precision"):
        create_backend(bundle, backend="onnxruntime", precision="fp16")
    with pytest.raises(ValueError, match="unknown compile_mode 'fast': choose one of None, default, reduce-overhead"):
        create_backend(bundle, backend="torch", device="cpu", compile_mode="fast")
    with pytest.raises(ValueError, match="without compile=True does nothing"):
        create_backend(bundle, backend="torch", device="cpu", compile_mode="max-autotune")
    with pytest.raises(ValueError,
                       match="'reduce-overhead' already captures its own CUDA graphs: drop cuda_graph=True"):
        create_backend(bundle, backend="torch", device="cpu", compile=True, compile_mode="reduce-overhead",
                       cuda_graph=True)
    with pytest.raises(ValueError, match="compile_options without compile=True do nothing"):
        create_backend(bundle, backend="torch", device="cpu", compile_options={"freezing": True})
    with pytest.raises(ValueError, match="a mode or Inductor options, not both"):
        create_backend(bundle, backend="torch", device="cpu", compile=True, compile_mode="default",
                       compile_options={"freezing": True})
    with pytest.raises(ValueError,
                       match="triton.cudagraphs=True already captures its own CUDA graphs: drop cuda_graph=True"):
        create_backend(bundle, backend="torch", device="cpu", compile=True, cuda_graph=True,
                       compile_options={"triton.cudagraphs": True})
    with pytest.raises(ValueError, match="GPU options: drop them on CPU"):  # compile + own graph is valid, but GPU-only
        create_backend(bundle, backend="torch", device="cpu", compile=True, cuda_graph=True)


def test_create_backend_accepts_a_path(bundle):
    backend = create_backend(bundle.path, backend="onnxruntime")
    assert bundle.model_id in backend.describe()
    backend.warmup(1)


def test_auto_prefers_torch_gpu_over_cpu_onnxruntime(bundle, caplog, monkeypatch):
    import dms_net_core.runtime as runtime

    monkeypatch.setitem(sys.modules, "tensorrt", None)
    monkeypatch.setattr(runtime, "_torch_cuda_available", lambda: True)  # as on a GPU box with CPU-only onnxruntime
    with caplog.at_level(logging.INFO, logger="dms_net_core.runtime"):
        backend = create_backend(bundle)
    assert backend.name == "torch"
    assert "trying torch before onnxruntime" in caplog.text
    # explicit device=cpu keeps the documented order
    assert create_backend(bundle, device="cpu").name == "onnxruntime"


def test_torch_accelerations_map_to_backend_options(bundle):
    from dms_net_core.runtime import TORCH_ACCELERATIONS, torch_acceleration_options

    assert torch_acceleration_options("none") == {}
    assert torch_acceleration_options("compile_cudagraphs") == {"compile": True, "compile_mode": "reduce-overhead"}
    assert set(TORCH_ACCELERATIONS) == {"none", "cuda_graph", "compile", "compile_cudagraphs"}
    with pytest.raises(ValueError, match="unknown torch acceleration 'tensorrt': choose one of none, cuda_graph"):
        torch_acceleration_options("tensorrt")
    # auto on a CPU machine: the torch-only option does not stop ONNX Runtime from being chosen
    backend = create_backend(bundle, backend="auto", device="cpu", **torch_acceleration_options("cuda_graph"))
    assert backend.name == "onnxruntime"


# -- prepared uint8 input: the node's form; the backend normalises ------------------------------


@pytest.fixture(scope="module")
def real_prepared(bundle):
    return real_prepared_pair_batch(bundle.image_size)


def test_prepared_and_float_inputs_are_the_same_images(bundle, real_prepared, real_batch):
    """Host normalisation of the batch is bit-identical to preprocess_eye per image."""
    from dms_net_core.data.preprocess import PreprocessConfig, load_rgb, preprocess_eye
    from test.fakes.tiny_bundle import DATA_DIR, REAL_PAIRS

    left_u8, _ = real_prepared
    assert left_u8.shape == (2, 64, 64, 3) and left_u8.dtype == np.uint8
    single = preprocess_eye(load_rgb(str(DATA_DIR / "images" / REAL_PAIRS[0][0])), PreprocessConfig(image_size=64))
    np.testing.assert_array_equal(real_batch[0][0], single)


@pytest.mark.parametrize("backend_name", ["onnxruntime", "torch"])
def test_prepared_uint8_input_gives_the_float_input_result(bundle, backend_name, real_prepared, real_batch, eager):
    backend = create_backend(bundle, backend=backend_name, device="cpu")
    from_uint8 = backend.infer(*real_prepared)
    _check_against_eager(from_uint8, eager)
    from_float = backend.infer(*real_batch)
    np.testing.assert_allclose(from_uint8.probabilities, from_float.probabilities, atol=1e-6, rtol=0)
    np.testing.assert_allclose(from_uint8.attention_left, from_float.attention_left, atol=1e-6, rtol=0)
    backend.warmup(1, dtype="uint8")
    backend.warmup(1, dtype="float32")
    backend.close()


def test_device_normalisation_is_bit_identical_to_host_preprocessing(bundle, real_prepared, real_batch):
    """The torch backend normalises uint8 inside its graph with the host table's float32 arithmetic."""
    from dms_net_core.runtime.torch_serving import ServingModel

    serving = ServingModel(torch.nn.Identity(), bundle.preprocess, torch.float32, torch.device("cpu"))
    got = serving.normalise(torch.from_numpy(real_prepared[0])).numpy()
    np.testing.assert_array_equal(got, real_batch[0])


@pytest.mark.parametrize("backend_name", ["onnxruntime", "torch"])
@pytest.mark.parametrize(
    "left, right, match",
    [
        (np.zeros((1, 3, 64, 64), np.uint8), np.zeros((1, 3, 64, 64), np.uint8),
         r"uint8 input has shape \(1, 3, 64, 64\), expected prepared RGB images \[B,64,64,3\]"),
        (np.zeros((1, 64, 64, 3), np.uint8), np.zeros((1, 3, 64, 64), np.float32), "pass both eyes in the same form"),
        (np.zeros((1, 64, 64, 3), np.uint16), np.zeros((1, 64, 64, 3), np.uint16),
         "expected uint8 .B,S,S,3. or float32"),
    ],
)
def test_wrong_prepared_input_is_one_line_value_error(bundle, backend_name, left, right, match):
    backend = create_backend(bundle, backend=backend_name, device="cpu")
    with pytest.raises(ValueError, match=match) as exc:
        backend.infer(left, right)
    assert "\n" not in str(exc.value)


def test_unpack_outputs_splits_and_rejects_a_foreign_width():
    from dms_net_core.runtime.torch_serving import unpack_outputs

    packed = np.arange(2 * (8 + 2 * 9), dtype=np.float32).reshape(2, -1)
    out = unpack_outputs(packed, 8)
    logits, att_l, att_r = out["logits"], out["attention_left"], out["attention_right"]
    assert logits.shape == (2, 8) and att_l.shape == att_r.shape == (2, 1, 3, 3) and "left_logits" not in out
    assert att_l[1, 0, 0, 0] == packed[1, 8] and att_r[0, 0, 2, 2] == packed[0, -1]
    with pytest.raises(RuntimeError, match="does not fit its bundle"):
        unpack_outputs(np.zeros((1, 8 + 2 * 10), np.float32), 8)
    # per-eye models: patient logits, then left and right logits, then the two maps
    eyes = unpack_outputs(np.arange(2 * (3 * 8 + 2 * 9), dtype=np.float32).reshape(2, -1), 8, per_eye=True)
    assert eyes["logits"][0, 0] == 0 and eyes["left_logits"][0, 0] == 8 and eyes["right_logits"][0, 0] == 16
    assert eyes["attention_left"][0, 0, 0, 0] == 24 and eyes["attention_right"].shape == (2, 1, 3, 3)
    with pytest.raises(RuntimeError, match="does not fit its bundle"):
        unpack_outputs(np.zeros((1, 3 * 8 + 2 * 10), np.float32), 8, per_eye=True)
    # without attention outputs: the logits alone, maps None
    bare = unpack_outputs(np.arange(2 * 3 * 8, dtype=np.float32).reshape(2, -1), 8, per_eye=True, attention=False)
    assert bare["attention_left"] is None and bare["attention_right"] is None and bare["right_logits"][1, 7] == 47
    with pytest.raises(RuntimeError, match="does not fit its bundle"):
        unpack_outputs(np.zeros((1, 8 + 2 * 9), np.float32), 8, attention=False)
