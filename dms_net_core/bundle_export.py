"""Writing a model bundle (workstation side): `export_bundle` and the checks it runs.

The bundle format and its reader are `dms_net_core.bundle` (torch-free, what the robot
imports); this module imports torch, onnx and ONNX Runtime lazily, inside the functions that
need them. `export_bundle` refuses to write ``model.json`` unless ONNX Runtime reproduces eager
PyTorch, so a bundle that loads is a bundle whose ONNX graph was checked. ``model.json`` is
written last: a half-written directory never validates. `dms_net_core.export` is its
command line (checkpoint -> bundle).
"""

from __future__ import annotations

import copy
import datetime as _dt
import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from dms_net_core.bundle import (
    CAM_OUTPUT_NAMES,
    ENGINES_DIR,
    EYE_OUTPUT_NAMES,
    INPUT_NAMES,
    MODEL_JSON,
    ONNX_FILE,
    OUTPUT_NAMES,
    REQUIRED_KEYS,
    SCHEMA_VERSION,
    WEIGHTS_FILE,
    BundleError,
    ModelBundle,
    output_names,
    sha256_file,
)
from dms_net_core.classes import CLASS_CODES, CLASS_NAMES, NUM_CLASSES
from dms_net_core.data.preprocess import PreprocessConfig
from dms_net_core.errors import first_line
from dms_net_core.json_safe import json_safe
from dms_net_core.model.config import DMSNetConfig

if TYPE_CHECKING:  # pragma: no cover
    import torch

LOGGER = logging.getLogger("dms_net_core.bundle_export")

#: Legacy TorchScript exporter at opset 17: seconds instead of minutes, a symbolic "batch"
#: dimension, and every op TensorRT 8.6 (JetPack 5) and 10.x parse. See `_export_onnx`.
DEFAULT_OPSET = 17
#: The export check: ONNX Runtime vs eager PyTorch, max abs difference of probabilities.
# The export check feeds random N(0,1) inputs, far outside real fundus statistics, which
# drives a large network's logits to extremes where fp32 kernel-order differences show most
# (1.7e-4 seen for EfficientNet-Lite0 DMS-Net). Real images are held to 1e-4 by the tests
# (test_runtime: backends agree on real fundus pairs).
EXPORT_TOLERANCE = 5e-4
#: The export check of class activation maps: max abs difference over the largest |map| value
#: (the maps are logit-valued, so an absolute limit would depend on the model's scale).
CAM_EXPORT_TOLERANCE = 1e-3


def _export_onnx(model: "torch.nn.Module", example: tuple["torch.Tensor", "torch.Tensor"], out_path: Path, opset: int,
                 outputs: tuple[str, ...] = OUTPUT_NAMES) -> str:
    """Write ``model.onnx``; returns which exporter produced it.

    The legacy TorchScript exporter is tried first: on torch 2.14 it exports DMS-Net in
    about a second with a symbolic batch dimension, while the dynamo exporter takes far
    longer and (with ``dynamic_shapes``) specialised the batch in our trials. Dynamo is the
    fallback for a model the tracer cannot handle.
    """
    import warnings

    import torch

    common = dict(input_names=list(INPUT_NAMES), output_names=list(outputs))  # what both exporters are given
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, example, str(out_path), **common, opset_version=opset, do_constant_folding=True,
                              dynamic_axes={name: {0: "batch"} for name in (*INPUT_NAMES, *outputs)}, dynamo=False)
        return f"torchscript(opset {opset})"
    except Exception as exc:  # noqa: BLE001 - fall back to the other exporter, say why
        LOGGER.warning("legacy ONNX exporter failed (%s); trying the dynamo exporter", first_line(exc))
    batch = torch.export.Dim("batch", min=1, max=1024)
    torch.onnx.export(model, example, str(out_path), **common, opset_version=max(opset, 18),
                      dynamic_shapes=({0: batch}, {0: batch}), external_data=False, dynamo=True)
    return f"dynamo(opset {max(opset, 18)})"


def check_onnx_against_torch(
    model: "torch.nn.Module", onnx_path: Path, image_size: int, batch_sizes: tuple[int, ...] = (2, 3), seed: int = 0
) -> float:
    """Max abs difference of probabilities, ONNX Runtime (CPU) vs eager PyTorch.

    Batch 2 is the contract's check; batch 3 (not the traced size) catches an exporter that
    baked the example batch into a Reshape, which would otherwise surface only on the robot.
    Every logits output is compared (the patient's, and each eye's for per-eye models).
    """
    from dms_net_core.postprocess import sigmoid

    worst = 0.0
    for _, got, ref in _onnx_and_torch_outputs(model, onnx_path, image_size, lambda name: name.endswith("logits"),
                                               batch_sizes, seed):
        worst = max(worst, float(np.max(np.abs(sigmoid(got) - sigmoid(ref)))))
    return worst


def check_cams_against_torch(
    model: "torch.nn.Module", onnx_path: Path, image_size: int, batch_sizes: tuple[int, ...] = (2, 3), seed: int = 0
) -> float:
    """Max abs difference of the class activation maps, ONNX Runtime vs eager PyTorch, over
    the largest |map value| (0.0 for a graph without CAM outputs)."""
    worst = 0.0
    for _, got, ref in _onnx_and_torch_outputs(model, onnx_path, image_size, lambda name: name in CAM_OUTPUT_NAMES,
                                               batch_sizes, seed):
        worst = max(worst, float(np.max(np.abs(got - ref))) / max(float(np.max(np.abs(ref))), 1e-12))
    return worst


def _onnx_and_torch_outputs(model: "torch.nn.Module", onnx_path: Path, image_size: int, select: Any,
                            batch_sizes: tuple[int, ...], seed: int) -> Any:
    """Yield ``(name, onnx value, torch value)`` for each selected output at each batch size, on
    seeded random inputs; shape or batch mismatches raise `BundleError`."""
    import onnxruntime as ort
    import torch

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    compared = [(i, name) for i, name in enumerate(names) if select(name)]
    if not compared:
        return
    gen = torch.Generator().manual_seed(seed)
    for b in batch_sizes:
        left = torch.randn(b, 3, image_size, image_size, generator=gen)
        right = torch.randn(b, 3, image_size, image_size, generator=gen)
        with torch.inference_mode():
            refs = model(left, right)
        try:
            gots = sess.run([name for _, name in compared], {"left": left.numpy(), "right": right.numpy()})
        except Exception as exc:  # noqa: BLE001
            raise BundleError(f"ONNX model fails at batch {b} ({first_line(exc)}): "
                              "the export is not batch-dynamic; fix the model's reshapes") from None
        for (i, name), got in zip(compared, gots):
            ref = refs[i].float().numpy()
            if got.shape != ref.shape:
                raise BundleError(f"ONNX {name} shape {got.shape} != PyTorch {ref.shape} at batch {b}: "
                                  "the export is not batch-dynamic")
            yield name, got, ref


def export_bundle(
    model: "torch.nn.Module",
    model_config: DMSNetConfig,
    preprocess: PreprocessConfig,
    out_dir: str | os.PathLike,
    *,
    thresholds: Any = None,
    metrics: dict[str, Any] | None = None,
    data_summary: dict[str, Any] | None = None,
    name: str = "dms-net",
    opset: int = DEFAULT_OPSET,
    weights_dtype: str = "fp32",
    include_torch_weights: bool = True,
    extra_meta: dict[str, Any] | None = None,
    cams: bool | None = None,
) -> ModelBundle:
    """Write a checked bundle directory and return it loaded.

    Order matters: weights, then ONNX, then the ONNX-vs-PyTorch check, then ``model.json``
    with the sha256 of both files. A failed check raises `BundleError` and leaves no
    ``model.json``, so the directory cannot be mistaken for a usable bundle.

    ``cams``: give the graph the ``cam_left``/``cam_right`` outputs (`CAM_OUTPUT_NAMES`); None
    (the default) = whenever the model provides them (a plain binocular model with per-eye
    heads, or an ensemble with such a member: `dms_net_core.model.cam`). They cost one 1x1
    convolution per eye at the feature resolution.
    """
    import torch
    from safetensors.torch import save_file

    from dms_net_core.model.cam import CamOutputs, provides_cams

    clash = sorted(set(extra_meta or {}) & {*REQUIRED_KEYS, "export", "weights_dtype"})
    if clash:
        raise BundleError(f"extra_meta keys {clash} would overwrite the bundle's own model.json entries: rename them")
    if preprocess.image_size != model_config.image_size:
        raise BundleError(
            f"preprocess.image_size {preprocess.image_size} != model_config.image_size {model_config.image_size}: "
            "the network would see images of the wrong size; make them equal"
        )
    thr = (np.full(NUM_CLASSES, 0.5, dtype=np.float32) if thresholds is None
           else np.asarray(thresholds, dtype=np.float32).reshape(-1))
    if thr.shape != (NUM_CLASSES,):
        raise BundleError(f"{thr.size} thresholds given, {NUM_CLASSES} needed (one per class {''.join(CLASS_CODES)})")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / ENGINES_DIR).mkdir(exist_ok=True)
    meta_path = out / MODEL_JSON
    if meta_path.exists():
        meta_path.unlink()  # never leave an old model.json describing new files

    if weights_dtype not in ("fp32", "fp16"):
        raise BundleError(f"weights_dtype {weights_dtype!r} is not supported: use fp32 or fp16")
    cams = provides_cams(model) if cams is None else bool(cams)
    if cams and not (provides_cams(model) and model_config.per_eye_heads):
        raise BundleError(f"cams=True but {type(model).__name__} has no class activation maps "
                          "(they need a plain binocular model with per-eye heads): export with cams=False")
    model = model.eval().to("cpu").float()
    s = model_config.image_size
    gen = torch.Generator().manual_seed(1234)
    example = (torch.randn(2, 3, s, s, generator=gen), torch.randn(2, 3, s, s, generator=gen))
    graph_model = model  # what model.onnx computes
    if weights_dtype == "fp16":
        model = _round_to_fp16(copy.deepcopy(model))
        graph_model = _fp16_graph_model(model, example)
    weights_file = out / WEIGHTS_FILE
    if weights_file.exists():
        weights_file.unlink()
    if include_torch_weights:
        # clone(): safetensors refuses tensors that share storage (tied weights)
        dtype = torch.float16 if weights_dtype == "fp16" else None
        state = {
            k: (v.detach().to("cpu", dtype=dtype) if dtype is not None and v.is_floating_point()
                else v.detach().to("cpu")).contiguous().clone()
            for k, v in model.state_dict().items()
        }
        save_file(state, str(weights_file), metadata={"format": "pt", "name": name, "dtype": weights_dtype})

    if cams:  # the traced module appends the maps; the stored weights stay the model's own
        graph_model = CamOutputs(graph_model).eval()
    with torch.inference_mode():
        outputs = graph_model(*example)
    names = output_names(model_config, cams)
    if not isinstance(outputs, (tuple, list)) or len(outputs) != len(names):
        raise BundleError(f"model.forward(left, right) must return {len(names)} tensors ({', '.join(names)}) for this "
                          "model_config, got "
                          f"{len(outputs) if isinstance(outputs, (tuple, list)) else type(outputs).__name__}: "
                          "fix the model or its per_eye_heads setting")
    exporter = _export_onnx(graph_model, example, out / ONNX_FILE, opset, names)

    import onnx

    if weights_dtype == "fp16":
        store_initializers_fp16(out / ONNX_FILE)
    onnx.checker.check_model(str(out / ONNX_FILE))
    max_diff = check_onnx_against_torch(graph_model, out / ONNX_FILE, s)
    if not max_diff < EXPORT_TOLERANCE:
        raise BundleError(
            f"ONNX Runtime differs from PyTorch by {max_diff:.2e} in probability (limit {EXPORT_TOLERANCE:g}): "
            "an op exported incorrectly; try another --opset"
        )
    cam_diff = check_cams_against_torch(graph_model, out / ONNX_FILE, s) if cams else None
    if cam_diff is not None and not cam_diff < CAM_EXPORT_TOLERANCE:
        raise BundleError(
            f"ONNX Runtime's class activation maps differ from PyTorch's by {cam_diff:.2e} of their range "
            f"(limit {CAM_EXPORT_TOLERANCE:g}): an op exported incorrectly; try another --opset or cams=False"
        )

    meta = {
        "schema_version": SCHEMA_VERSION,
        "name": name,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "model_config": model_config.to_dict(),
        "preprocess": preprocess.to_dict(),
        "class_codes": list(CLASS_CODES),
        "class_names": list(CLASS_NAMES),
        "thresholds": [float(t) for t in thr],
        "input": {"names": list(INPUT_NAMES), "size": s, "dtype": "float32", "layout": "NCHW"},
        "outputs": {
            "logits": [-1, NUM_CLASSES],
            "attention_left": [-1, *outputs[1].shape[1:]],
            "attention_right": [-1, *outputs[2].shape[1:]],
            **{name: [-1, NUM_CLASSES] for name in EYE_OUTPUT_NAMES if name in names},
            **{name: [-1, *outputs[names.index(name)].shape[1:]] for name in CAM_OUTPUT_NAMES if name in names},
        },
        "metrics": json_safe(metrics or {}),
        "data_summary": json_safe(data_summary or {}),
        "export": {"exporter": exporter, "opset": opset, "torch": torch.__version__,
                   "onnx_check_max_abs_diff": max_diff,
                   **({"onnx_check_cam_max_rel_diff": cam_diff} if cam_diff is not None else {})},
        "weights_dtype": weights_dtype,
        **json_safe(extra_meta or {}),
        "files": {ONNX_FILE: sha256_file(out / ONNX_FILE),
                  **({WEIGHTS_FILE: sha256_file(weights_file)} if include_torch_weights else {})},
    }
    tmp = meta_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, meta_path)
    return ModelBundle.load(out)


def _round_to_fp16(model: "torch.nn.Module") -> "torch.nn.Module":
    """``model`` (in place) with every floating tensor rounded to the nearest float16, kept fp32."""
    import torch

    with torch.no_grad():
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.copy_(tensor.half().float())
    return model


def _fp16_graph_model(model: "torch.nn.Module", example: tuple["torch.Tensor", "torch.Tensor"]) -> "torch.nn.Module":
    """The model an fp16-stored ONNX graph computes: BatchNorm folded into the convolutions,
    then the folded weights rounded to fp16 (a copy; ``model`` is untouched).

    Why fold first: the ONNX exporter folds every BatchNorm into its convolution anyway, so
    rounding the unfolded weights and storing the exporter's folded ones as fp16 rounded twice,
    and the graph no longer matched the model it is checked against (Lite1/Lite2: 8e-4 over the
    5e-4 limit). Folded in PyTorch and rounded once, the stored fp16 weights are exactly the
    checked model's (fp32 compute)."""
    from dms_net_core.runtime.batchnorm_folding import fold_batchnorm

    graph_model = copy.deepcopy(model).eval()
    fold_batchnorm(graph_model, example)
    return _round_to_fp16(graph_model)


def store_initializers_fp16(onnx_path: str | os.PathLike, min_elements: int = 1024) -> int:
    """Rewrite large float32 initializers as float16 + Cast(to=float32); returns how many.

    Only storage changes: a Cast of a constant is folded when the session is created, so
    the graph computes in fp32 on exactly the fp16-representable weights that
    `export_bundle` rounded the model to.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(onnx_path))
    graph = model.graph
    casts = []
    kept = []
    for init in graph.initializer:
        if init.data_type == TensorProto.FLOAT and int(np.prod(init.dims, dtype=np.int64)) >= min_elements:
            half = numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float16), name=f"{init.name}__fp16")
            kept.append(half)
            casts.append(helper.make_node("Cast", [half.name], [init.name], to=TensorProto.FLOAT,
                                          name=f"{init.name}__cast"))
        else:
            kept.append(init)
    del graph.initializer[:]
    graph.initializer.extend(kept)
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(casts + nodes)
    onnx.save(model, str(onnx_path))
    return len(casts)
