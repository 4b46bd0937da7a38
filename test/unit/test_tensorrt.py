"""TensorRT backend, engine build and fingerprint cache, exercised through the TensorRT/CUDA test double.

Nothing here touches real TensorRT or a GPU (neither exists on the build machine); the
double in test/fakes enforces the API contracts the backend relies on.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys

import numpy as np
import pytest

from dms_net_core.bundle import ModelBundle
from dms_net_core.runtime import create_backend
from dms_net_core.runtime.build_engine import main as build_main
from dms_net_core.runtime.engine_cache import EngineCache, EngineFingerprint
from dms_net_core.runtime.tensorrt_backend import TensorRTBackend
from dms_net_core.runtime.tensorrt_build import EngineBuildError, build_serialized_engine
from test.fakes import fake_tensorrt
from test.fakes.tiny_bundle import REAL_PAIRS, copy_bundle, real_pair_batch, real_prepared_pair_batch, tiny_bundle_path
from test.odir_data import SUBSET_DIR, SUBSET_LABELS


@pytest.fixture(scope="module")
def source_bundle(tmp_path_factory) -> ModelBundle:
    return ModelBundle.load(tiny_bundle_path(tmp_path_factory.getbasetemp()))


@pytest.fixture
def bundle(source_bundle, tmp_path) -> ModelBundle:
    """A private copy: these tests write engines into the bundle's engines/."""
    return ModelBundle.load(copy_bundle(source_bundle.path, tmp_path / "bundle"))


@pytest.fixture
def gpu(monkeypatch):
    return fake_tensorrt.install(monkeypatch)


@pytest.fixture(scope="module")
def reference(source_bundle):
    from dms_net_core.runtime.onnxruntime_backend import OnnxRuntimeBackend

    return OnnxRuntimeBackend(source_bundle, device="cpu")


def _engines(bundle):
    return sorted(p.name for p in bundle.engines_dir.glob("*.engine"))


def test_build_then_outputs_equal_onnxruntime_on_real_images(bundle, gpu, reference):
    """The default engine takes the node's prepared uint8 eyes and normalises them itself."""
    backend = TensorRTBackend(bundle, max_batch=4)
    assert backend.engine_built and gpu.trt.counters.builds == 1
    assert (backend.name == "tensorrt"
            and "tensorrt 10.3.0 Orin (nvgpu) fp32 uint8-input batch 1-4" in backend.describe())
    got = backend.infer(*real_prepared_pair_batch(bundle.image_size))
    want = reference.infer(*real_pair_batch(bundle.image_size))
    np.testing.assert_allclose(got.probabilities, want.probabilities, atol=1e-5)
    np.testing.assert_allclose(got.attention_left, want.attention_left, atol=1e-5)
    np.testing.assert_allclose(got.attention_right, want.attention_right, atol=1e-5)
    # engine file name and sidecar
    (name,) = _engines(bundle)
    assert name.startswith("fp32_b1-4_") and len(name.split("_")[-1]) == len("0123456789ab.engine")
    sidecar = json.loads((bundle.engines_dir / name.replace(".engine", ".json")).read_text())
    assert sidecar == {
        "tensorrt_version": "10.3.0",
        "gpu_name": "Orin (nvgpu)",
        "compute_capability": "8.7",
        "onnx_sha256": bundle.onnx_sha256,
        "precision": "fp32",
        "min_batch": 1,
        "opt_batch": 1,
        "max_batch": 4,
        "input_form": "uint8",
    }
    # builder settings as documented: one profile over the batch range, workspace limit, no FP16
    cfg = gpu.trt.last_config
    assert cfg.profiles[0].shapes["left"] == ((1, 64, 64, 3), (1, 64, 64, 3), (4, 64, 64, 3))
    assert backend.dtypes["left"] == np.uint8 and backend.dtypes["logits"] == np.float32
    assert cfg.pool_limits[sys.modules["tensorrt"].MemoryPoolType.WORKSPACE] == 1024 << 20
    assert not cfg.flags
    backend.close()
    assert not gpu.cuda.allocations and not gpu.cuda.streams  # everything freed


def test_float32_engine_takes_both_forms(bundle, gpu, reference):
    """input_form='float32' builds the graph as exported; prepared uint8 is then normalised on the host."""
    backend = TensorRTBackend(bundle, max_batch=4, input_form="float32")
    assert "fp32 float32-input" in backend.describe() and backend.dtypes["left"] == np.float32
    assert gpu.trt.last_config.profiles[0].shapes["left"][2] == (4, 3, 64, 64)
    want = reference.infer(*real_pair_batch(bundle.image_size))
    for pair in (real_pair_batch(bundle.image_size), real_prepared_pair_batch(bundle.image_size)):
        np.testing.assert_allclose(backend.infer(*pair).probabilities, want.probabilities, atol=1e-5)
    backend.warmup(1, dtype="float32")
    backend.close()


def test_uint8_engine_refuses_float_input_in_one_line(bundle, gpu):
    backend = TensorRTBackend(bundle, max_batch=2)
    x = np.zeros((1, 3, 64, 64), np.float32)
    with pytest.raises(ValueError, match="this engine takes prepared uint8 eyes .* input_form='float32'") as exc:
        backend.infer(x, x)
    assert "\n" not in str(exc.value) and gpu.trt.counters.executions == 0


def test_tensorrt_without_uint8_inputs_builds_a_float_engine_and_says_so(bundle, monkeypatch, caplog, reference):
    """TensorRT < 8.6 (JetPack 5) has no UINT8 network inputs: the backend builds the float32
    engine and normalises on the host, with a log line; a direct uint8 build names the fix."""
    stack = fake_tensorrt.install(monkeypatch, version="8.5.3")
    with caplog.at_level(logging.WARNING, logger="dms_net_core.runtime"):
        backend = TensorRTBackend(bundle, max_batch=2)
    assert backend.input_form == "float32" and "has no uint8 network inputs (8.6+)" in caplog.text
    got = backend.infer(*real_prepared_pair_batch(64))
    np.testing.assert_allclose(got.probabilities, reference.infer(*real_pair_batch(64)).probabilities, atol=1e-5)
    with pytest.raises(EngineBuildError, match="Unsupported ONNX data type: UINT8.*--input-form float32"):
        build_serialized_engine(stack.trt.module(), bundle.onnx_path, image_size=64, input_form="uint8",
                                preprocess=bundle.preprocess)


def test_input_forms_are_separate_cache_entries(bundle, gpu):
    TensorRTBackend(bundle, max_batch=2).close()
    TensorRTBackend(bundle, max_batch=2, input_form="float32").close()
    assert gpu.trt.counters.builds == 2 and len(_engines(bundle)) == 2
    TensorRTBackend(bundle, max_batch=2).close()
    assert gpu.trt.counters.builds == 2  # the uint8 engine is still a hit


@pytest.mark.parametrize("batch", [1, 3, 4])
def test_dynamic_batch(bundle, gpu, reference, batch):
    backend = TensorRTBackend(bundle, max_batch=4)
    rng = np.random.default_rng(batch)
    left = rng.integers(0, 256, (batch, 64, 64, 3), dtype=np.uint8)
    right = rng.integers(0, 256, (batch, 64, 64, 3), dtype=np.uint8)
    got = backend.infer(left, right)
    assert got.probabilities.shape == (batch, 8) and got.attention_left.shape[0] == batch
    np.testing.assert_allclose(got.probabilities, reference.infer(left, right).probabilities, atol=1e-5)


def test_cache_hit_does_not_rebuild(bundle, gpu, caplog):
    TensorRTBackend(bundle).close()
    assert gpu.trt.counters.builds == 1
    with caplog.at_level(logging.INFO, logger="dms_net_core.runtime"):
        second = TensorRTBackend(bundle)
    assert gpu.trt.counters.builds == 1 and not second.engine_built
    assert "cache hit" in caplog.text
    assert len(_engines(bundle)) == 1


@pytest.mark.parametrize(
    "field, value",
    [
        ("tensorrt_version", "10.0.1"),
        ("gpu_name", "NVIDIA GeForce RTX 3060"),
        ("compute_capability", "8.6"),
        ("onnx_sha256", "0" * 64),
        ("precision", "fp16"),
        ("min_batch", 2),
        ("opt_batch", 4),
        ("max_batch", 16),
        ("input_form", "float32"),
    ],
)
def test_any_fingerprint_mismatch_rebuilds_and_names_the_field(bundle, gpu, caplog, field, value):
    first = TensorRTBackend(bundle)
    engine, sidecar = EngineCache(bundle.engines_dir).paths(first.fingerprint)
    first.close()
    meta = json.loads(sidecar.read_text())
    meta[field] = value
    sidecar.write_text(json.dumps(meta))
    with caplog.at_level(logging.WARNING, logger="dms_net_core.runtime"):
        second = TensorRTBackend(bundle)
    assert gpu.trt.counters.builds == 2 and second.engine_built
    assert f"{field} (cached {value!r}" in caplog.text and "building a new engine" in caplog.text
    assert json.loads(sidecar.read_text())[field] != value  # sidecar rewritten
    second.close()


def test_tensorrt_upgrade_rebuilds_instead_of_failing(bundle, monkeypatch, caplog):
    """JetPack upgrade: the old engine no longer deserializes; the new version rebuilds and says why."""
    old = fake_tensorrt.install(monkeypatch, version="8.6.2")
    TensorRTBackend(bundle).close()
    assert old.trt.counters.builds == 1
    new = fake_tensorrt.install(monkeypatch, version="10.3.0")
    with caplog.at_level(logging.WARNING, logger="dms_net_core.runtime"):
        backend = TensorRTBackend(bundle)
    assert new.trt.counters.builds == 1 and backend.engine_built
    assert "tensorrt_version (cached '8.6.2', now '10.3.0')" in caplog.text
    assert len(_engines(bundle)) == 2  # stale engine kept for the other installation


def test_corrupt_engine_file_rebuilds(bundle, gpu, caplog):
    first = TensorRTBackend(bundle)
    engine, _ = EngineCache(bundle.engines_dir).paths(first.fingerprint)
    first.close()
    engine.write_bytes(engine.read_bytes()[:100])  # truncated copy
    with caplog.at_level(logging.WARNING, logger="dms_net_core.runtime"):
        second = TensorRTBackend(bundle)
    assert gpu.trt.counters.builds == 2 and "failed to deserialize" in caplog.text
    x = np.zeros((1, 64, 64, 3), np.uint8)
    assert second.infer(x, x).probabilities.shape == (1, 8)


def test_tensorrt_8_network_uses_explicit_batch(bundle, monkeypatch, reference):
    stack = fake_tensorrt.install(monkeypatch, version="8.6.1", legacy_cuda_layout=True)
    backend = TensorRTBackend(bundle, max_batch=2)  # 8.6 takes UINT8 network inputs
    x = np.full((2, 64, 64, 3), 90, np.uint8)
    np.testing.assert_allclose(backend.infer(x, 255 - x).probabilities, reference.infer(x, 255 - x).probabilities,
                               atol=1e-5)
    assert stack.trt.counters.parses == 1


@pytest.mark.parametrize(
    "shape, dtype, match",
    [
        ((5, 64, 64, 3), np.uint8, "exceeds the engine's max batch 4"),
        ((1, 48, 48, 3), np.uint8, r"expected prepared RGB images \[B,64,64,3\]"),
        ((64, 64, 3), np.uint8, "add a batch axis"),
        ((1, 3, 48, 48), np.float32, r"expected \[B,3,64,64\]"),
    ],
)
def test_wrong_input_shape_is_one_line_value_error(bundle, gpu, shape, dtype, match):
    backend = TensorRTBackend(bundle, max_batch=4)
    x = np.zeros(shape, dtype)
    with pytest.raises(ValueError, match=match) as exc:
        backend.infer(x, x)
    assert "\n" not in str(exc.value)
    assert gpu.trt.counters.executions == 0


def test_fp16_engine(bundle, gpu, reference):
    backend = TensorRTBackend(bundle, precision="fp16", max_batch=2)
    assert sys.modules["tensorrt"].BuilderFlag.FP16 in gpu.trt.last_config.flags
    assert backend.engine_path.name.startswith("fp16_b1-2_")
    got = backend.infer(*real_prepared_pair_batch(64))
    np.testing.assert_allclose(got.probabilities, reference.infer(*real_pair_batch(64)).probabilities, atol=2e-3)


def test_fp16_without_fast_fp16_is_a_build_error(bundle, monkeypatch):
    fake_tensorrt.install(monkeypatch, fast_fp16=False)
    with pytest.raises(EngineBuildError, match="no fast fp16"):
        TensorRTBackend(bundle, precision="fp16")


def test_build_failure_makes_auto_fall_back_to_onnxruntime(bundle, gpu, caplog):
    gpu.trt.fail_build = True
    with caplog.at_level(logging.INFO, logger="dms_net_core.runtime"):
        backend = create_backend(bundle)
    assert backend.name == "onnxruntime"
    assert "skipping tensorrt: TensorRT failed to build an engine" in caplog.text
    assert "chose onnxruntime" in caplog.text
    assert not _engines(bundle)


def test_auto_prefers_tensorrt_when_it_loads(bundle, gpu):
    backend = create_backend(bundle, max_batch=2, cuda_graph=True)  # torch-only option is filtered out
    assert backend.name == "tensorrt" and backend.max_batch == 2


def test_auto_reports_missing_cuda_python(bundle, monkeypatch, caplog):
    fake_tensorrt.install(monkeypatch)
    for name in ("cuda", "cuda.bindings", "cuda.bindings.runtime", "cuda.cudart", "pycuda"):
        monkeypatch.setitem(sys.modules, name, None)
    with caplog.at_level(logging.INFO, logger="dms_net_core.runtime"):
        backend = create_backend(bundle)
    assert backend.name == "onnxruntime" and "tensorrt: module 'cuda' not installed" in caplog.text


def test_parse_error_is_listed(bundle, gpu, tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"garbage")
    with pytest.raises(EngineBuildError, match="cannot parse .*Failed to parse ONNX model"):
        build_serialized_engine(sys.modules["tensorrt"], bad, image_size=64)


def test_timing_cache_is_saved_and_reused(bundle, gpu, tmp_path):
    cache = tmp_path / "timing.cache"
    trt = sys.modules["tensorrt"]
    build_serialized_engine(trt, bundle.onnx_path, image_size=64, timing_cache=cache)
    assert json.loads(cache.read_bytes())["n"] == 1
    build_serialized_engine(trt, bundle.onnx_path, image_size=64, timing_cache=cache)
    assert json.loads(cache.read_bytes())["n"] == 2  # loaded the saved cache, then extended it


def test_bad_batch_range(bundle, gpu):
    with pytest.raises(EngineBuildError, match="batch range"):
        build_serialized_engine(sys.modules["tensorrt"], bundle.onnx_path, image_size=64, min_batch=4, max_batch=2)


def test_device_cpu_is_refused(bundle, gpu):
    with pytest.raises(ValueError, match="CUDA GPU only"):
        TensorRTBackend(bundle, device="cpu")


def test_fingerprint_names_and_differences():
    fp = EngineFingerprint("10.3.0", "Orin", "8.7", "ab" * 32, "fp16", 1, 2, 8)
    assert fp.stem.startswith("fp16_b1-8_") and len(fp.stem) == len("fp16_b1-8_") + 12
    other = dataclasses.replace(fp, gpu_name="Xavier")
    assert fp.digest != other.digest
    assert fp.differences(other.to_dict()) == ["gpu_name (cached 'Xavier', now 'Orin')"]
    assert fp.differences(fp.to_dict()) == []


def test_build_engine_cli_verify(bundle, gpu, capsys):
    rc = build_main([str(bundle.path), "--precision", "fp32", "--max-batch", "4", "--verify", "--batch", "3"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "built now" in out and "random batch 3, uint8 input" in out and "PASS" in out
    left_name, right_name = REAL_PAIRS[0]
    left, right = str(SUBSET_DIR / "images" / left_name), str(SUBSET_DIR / "images" / right_name)
    rc = build_main([str(bundle.path), "--precision", "fp32", "--max-batch", "4", "--verify",
                     "--left", left, "--right", right])
    out = capsys.readouterr().out
    assert rc == 0 and "cache hit" in out and "real images, uint8 input" in out
    assert gpu.trt.counters.builds == 1
    rc = build_main([str(bundle.path), "--precision", "fp32", "--max-batch", "4", "--verify", "--input-form", "float32",
                     "--left", left, "--right", right])
    out = capsys.readouterr().out
    assert rc == 0 and "built now" in out and "real images, float32 input" in out and "PASS" in out
    assert gpu.trt.counters.builds == 2


def test_build_engine_cli_without_tensorrt(bundle, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    rc = build_main([str(bundle.path)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err and "install TensorRT" in err


def test_offline_evaluation_runs_a_uint8_engine_like_onnxruntime(bundle, gpu, reference):
    """dms-net-eval hands prepared uint8 eyes to backends that take them (the node's path), so a
    uint8-only engine evaluates, and gives ONNX Runtime's probabilities."""
    from dms_net_core.data.odir import load_odir
    from training.evaluate import evaluate_pairs

    records = [r for r in load_odir(SUBSET_LABELS).records if r.has_both][:3]
    engine = TensorRTBackend(bundle, max_batch=4)
    assert engine.input_forms == ("uint8",)
    labels, p_trt = evaluate_pairs(engine, records, bundle.preprocess, batch_size=2)
    _, p_ort = evaluate_pairs(reference, records, bundle.preprocess, batch_size=2)
    assert labels.shape == (3, 8)
    np.testing.assert_allclose(p_trt, p_ort, atol=1e-5)
