"""Model bundle: export writes a checked bundle; every broken bundle fails with one line naming the fix."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dms_net_core.bundle import SCHEMA_VERSION, BundleError, ModelBundle, sha256_file
from dms_net_core.bundle_export import export_bundle
from dms_net_core.classes import CLASS_CODES
from dms_net_core.data.preprocess import PreprocessConfig
from test.fakes.tiny_bundle import build_tiny_model, copy_bundle, tiny_bundle_path, tiny_config


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory) -> Path:
    return tiny_bundle_path(tmp_path_factory.getbasetemp())


@pytest.fixture
def bundle_copy(bundle_dir, tmp_path) -> Path:
    return copy_bundle(bundle_dir, tmp_path / "b")


def _edit_meta(path: Path, **changes) -> None:
    meta = json.loads((path / "model.json").read_text())
    for key, value in changes.items():
        meta[key] = value
    (path / "model.json").write_text(json.dumps(meta))


def _one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg, msg
    return msg


def test_exported_bundle_loads_with_contract_attributes(bundle_dir):
    b = ModelBundle.load(bundle_dir)
    assert b.class_codes == CLASS_CODES and len(b.class_names) == 8
    assert b.model_config == tiny_config()
    assert b.preprocess.image_size == b.model_config.image_size == b.image_size == 64
    assert b.thresholds.dtype == np.float32
    np.testing.assert_allclose(b.thresholds, np.linspace(0.3, 0.65, 8), atol=1e-6)
    assert b.model_id == f"tiny-test@{sha256_file(b.onnx_path)[:12]}"
    assert b.onnx_path.is_file() and b.weights_path.is_file() and b.engines_dir.is_dir()
    meta = b.meta
    assert meta["schema_version"] == SCHEMA_VERSION
    assert meta["input"] == {"names": ["left", "right"], "size": 64, "dtype": "float32", "layout": "NCHW"}
    assert meta["metrics"] == {"final": 0.5}
    assert meta["export"]["onnx_check_max_abs_diff"] < 1e-4


def test_onnx_has_named_io_and_dynamic_batch(bundle_dir):
    import onnx

    m = onnx.load(str(bundle_dir / "model.onnx"))
    ins = {i.name: i for i in m.graph.input}
    assert set(ins) == {"left", "right"}
    assert [o.name for o in m.graph.output] == ["logits", "attention_left", "attention_right"]
    for i in ins.values():
        dims = i.type.tensor_type.shape.dim
        assert dims[0].dim_param == "batch"
        assert [d.dim_value for d in dims[1:]] == [3, 64, 64]


def test_missing_file_names_fix(bundle_copy):
    (bundle_copy / "weights.safetensors").unlink()
    with pytest.raises(BundleError) as exc:
        ModelBundle.load(bundle_copy)
    msg = _one_line(exc)
    assert "weights.safetensors is missing" in msg and "dms-net-export" in msg


def test_missing_model_json(bundle_copy):
    (bundle_copy / "model.json").unlink()
    with pytest.raises(BundleError, match="model.json is missing"):
        ModelBundle.load(bundle_copy)


def test_sha_mismatch_names_fix(bundle_copy):
    with open(bundle_copy / "model.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(BundleError) as exc:
        ModelBundle.load(bundle_copy)
    msg = _one_line(exc)
    assert "does not match the sha256" in msg and "model.onnx" in msg
    # verify=False skips hashing (fast start on a trusted read-only image)
    assert ModelBundle.load(bundle_copy, verify=False).model_id.startswith("tiny-test@")


def test_wrong_schema_version(bundle_copy):
    _edit_meta(bundle_copy, schema_version=SCHEMA_VERSION + 1)
    with pytest.raises(BundleError) as exc:
        ModelBundle.load(bundle_copy)
    assert "schema_version" in _one_line(exc) and "re-export" in str(exc.value)


def test_wrong_input_size(bundle_copy):
    meta = json.loads((bundle_copy / "model.json").read_text())
    meta["input"]["size"] = 128
    (bundle_copy / "model.json").write_text(json.dumps(meta))
    with pytest.raises(BundleError) as exc:
        ModelBundle.load(bundle_copy)
    msg = _one_line(exc)
    assert "input size 128" in msg and "agree" in msg


def test_bad_json_and_foreign_classes(bundle_copy):
    _edit_meta(bundle_copy, class_codes=["a", "b"])
    with pytest.raises(BundleError, match="class codes"):
        ModelBundle.load(bundle_copy)
    (bundle_copy / "model.json").write_text("{not json")
    with pytest.raises(BundleError) as exc:
        ModelBundle.load(bundle_copy)
    assert "not valid JSON" in _one_line(exc)


def test_not_a_directory(tmp_path):
    with pytest.raises(BundleError, match="not a directory"):
        ModelBundle.load(tmp_path / "nope")


def test_export_rejects_mismatched_sizes(tmp_path):
    cfg = tiny_config()
    with pytest.raises(BundleError, match="image_size"):
        export_bundle(build_tiny_model(), cfg, PreprocessConfig(image_size=96), tmp_path / "x")
    assert not (tmp_path / "x" / "model.json").exists()


def test_export_check_failure_leaves_no_model_json(tmp_path, monkeypatch):
    """A model whose ONNX graph disagrees with eager PyTorch must not become a bundle."""
    import dms_net_core.bundle_export as bundle_mod

    monkeypatch.setattr(bundle_mod, "check_onnx_against_torch", lambda *a, **k: 0.5)
    cfg = tiny_config()
    with pytest.raises(BundleError, match="differs from PyTorch"):
        export_bundle(build_tiny_model(), cfg, PreprocessConfig(image_size=cfg.image_size), tmp_path / "bad")
    assert (tmp_path / "bad" / "model.onnx").exists() and not (tmp_path / "bad" / "model.json").exists()


def test_bundle_loads_without_torch(bundle_dir):
    """The node runs torch-free: loading a bundle must not import torch, nor the runtimes
    (the reader is what `dms_net_core.runtime` builds on, not the other way round)."""
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "from dms_net_core.bundle import ModelBundle\n"
        f"b = ModelBundle.load({str(bundle_dir)!r}); print(b.model_id)\n"
        "loaded = [m for m in sys.modules if sys.modules[m] is not None]\n"
        "assert 'torch' not in loaded, 'torch'\n"
        "assert not [m for m in loaded if m.startswith(('dms_net_core.runtime', 'dms_net_core.bundle_export'))]"
        ", loaded\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[2])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("tiny-test@")


def test_fp16_deployment_bundle_is_smaller_and_exact_on_real_images(bundle_dir, tmp_path):
    """The demo bundle's format: fp16-stored ONNX weights, no PyTorch weights, fp32 compute."""
    import torch

    from dms_net_core.runtime import create_backend
    from test.fakes.tiny_bundle import real_pair_batch

    model = build_tiny_model()
    half = export_bundle(model, tiny_config(), PreprocessConfig(image_size=64), tmp_path / "half",
                         name="tiny-half", weights_dtype="fp16", include_torch_weights=False)
    assert not half.weights_path.exists() and "weights.safetensors" not in half.meta["files"]
    assert half.meta["weights_dtype"] == "fp16"
    assert half.onnx_path.stat().st_size < 0.75 * ModelBundle.load(bundle_dir).onnx_path.stat().st_size
    # the graph computes the model with BatchNorm folded and the folded weights rounded to
    # fp16 once (fp32 compute): exactly that model, and the fp32 model within fp16 rounding
    from dms_net_core.bundle_export import _fp16_graph_model

    left, right = real_pair_batch(64)
    example = (torch.from_numpy(left), torch.from_numpy(right))
    with torch.inference_mode():
        exact = torch.sigmoid(_fp16_graph_model(build_tiny_model(), example)(*example)[0]).numpy()
        fp32 = torch.sigmoid(build_tiny_model()(*example)[0]).numpy()
    got = create_backend(half, backend="onnxruntime").infer(left, right).probabilities
    # fp32 kernel order only (the backends agree to 1e-4 on real images)
    np.testing.assert_allclose(got, exact, atol=1e-4)
    np.testing.assert_allclose(got, fp32, atol=5e-3)
    assert half.meta["export"]["onnx_check_max_abs_diff"] < 1e-5
    with pytest.raises(Exception, match="deployment-only bundle"):
        create_backend(half, backend="torch")
