"""The model bundle: the one artefact that travels from training to the robot.

A bundle is a directory::

    model.json            schema version, architecture config, preprocessing, class codes and
                          names, per-class thresholds, input/output description, validation
                          metrics, data summary and the sha256 of every file below
    model.onnx            inputs "left", "right" float32 [B,3,S,S] (dynamic batch "batch");
                          outputs "logits" [B,8], "attention_left", "attention_right", and
                          "left_logits", "right_logits" [B,8] when the model has per-eye heads,
                          then "cam_left", "cam_right" [B,8,h,w] (class activation maps of the
                          per-eye head) for a plain per-eye model exported since CAMs exist
    weights.safetensors   the same weights for the PyTorch backend (no pickle on the robot)
    engines/              TensorRT engines built on the target, each with a fingerprint sidecar

This module reads bundles and is deliberately torch-free: the ROS node runs ONNX Runtime or
TensorRT on a robot that has no PyTorch, and importing it runs nothing of `dms_net_core.runtime`.
Writing one is `dms_net_core.bundle_export.export_bundle` (workstation side), which refuses to
write ``model.json`` unless ONNX Runtime reproduces eager PyTorch, so a bundle that loads is a
bundle whose ONNX graph was checked. ``model.json`` is written last: a half-written directory
never validates.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dms_net_core.classes import CLASS_CODES, NUM_CLASSES
from dms_net_core.data.preprocess import PreprocessConfig
from dms_net_core.model.config import DMSNetConfig

SCHEMA_VERSION = 1
MODEL_JSON = "model.json"
ONNX_FILE = "model.onnx"
WEIGHTS_FILE = "weights.safetensors"
ENGINES_DIR = "engines"
INPUT_NAMES = ("left", "right")
OUTPUT_NAMES = ("logits", "attention_left", "attention_right")
#: Extra outputs of a model with per-eye heads (``DMSNetConfig.per_eye_heads``), after OUTPUT_NAMES.
EYE_OUTPUT_NAMES = ("left_logits", "right_logits")
#: Extra outputs of a graph with class activation maps (`dms_net_core.model.cam`), after the
#: per-eye logits they explain: [B,K,h,w] per eye, raw (logit-valued, mean over h,w = the eye's
#: logit). Whether a bundle has them is read from its model.json ``outputs`` (`ModelBundle.has_cams`):
#: bundles exported before CAMs existed have the same model_config and no such outputs.
CAM_OUTPUT_NAMES = ("cam_left", "cam_right")


def output_names(model_config: DMSNetConfig, cams: bool = False) -> tuple[str, ...]:
    """The ONNX/engine output names of a model built from ``model_config``, in forward order
    (``cams``: the graph was exported with class activation maps)."""
    return OUTPUT_NAMES + (EYE_OUTPUT_NAMES if model_config.per_eye_heads else ()) + (CAM_OUTPUT_NAMES if cams else ())


#: The keys every model.json has (`ModelBundle.load` refuses a bundle that lacks one).
REQUIRED_KEYS = (
    "schema_version",
    "name",
    "created",
    "model_config",
    "preprocess",
    "class_codes",
    "class_names",
    "thresholds",
    "input",
    "outputs",
    "metrics",
    "data_summary",
    "files",
)


class BundleError(ValueError):
    """A bundle that cannot be used; the message is one line naming cause and fix."""


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, streamed (ONNX files of large backbones are hundreds of MB)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


@dataclass
class ModelBundle:
    """A validated bundle directory; construct with `ModelBundle.load`."""

    path: Path
    meta: dict[str, Any]
    model_config: DMSNetConfig
    preprocess: PreprocessConfig
    class_codes: tuple[str, ...]
    class_names: tuple[str, ...]
    thresholds: np.ndarray = field(repr=False)
    model_id: str = ""

    @property
    def name(self) -> str:
        return str(self.meta["name"])

    @property
    def onnx_path(self) -> Path:
        return self.path / ONNX_FILE

    @property
    def weights_path(self) -> Path:
        return self.path / WEIGHTS_FILE

    @property
    def engines_dir(self) -> Path:
        return self.path / ENGINES_DIR

    @property
    def image_size(self) -> int:
        return int(self.meta["input"]["size"])

    @property
    def output_names(self) -> tuple[str, ...]:
        """The graph's outputs in order: `OUTPUT_NAMES`, then `EYE_OUTPUT_NAMES` for per-eye models,
        then `CAM_OUTPUT_NAMES` when the bundle has class activation maps."""
        return output_names(self.model_config, self.has_cams)

    @property
    def has_cams(self) -> bool:
        """True when the graph outputs per-eye class activation maps (``cam_left``/``cam_right``)."""
        outputs = self.meta.get("outputs")
        return isinstance(outputs, dict) and all(name in outputs for name in CAM_OUTPUT_NAMES)

    @property
    def onnx_sha256(self) -> str:
        return str(self.meta["files"][ONNX_FILE])

    @classmethod
    def load(cls, path: str | os.PathLike, verify: bool = True) -> "ModelBundle":
        """Read and validate ``path/model.json``; with ``verify`` also check every file's sha256.

        Raises `BundleError` (one line naming the fix) for a missing directory or file, bad
        JSON, an unknown schema version, inconsistent input sizes, foreign class codes or a
        file whose checksum differs from the one recorded at export.
        """
        root = Path(path)
        meta_path = root / MODEL_JSON
        if not root.is_dir():
            raise BundleError(f"model bundle {root} is not a directory: pass the folder written by dms-net-export")
        if not meta_path.is_file():
            raise BundleError(f"{meta_path} is missing: the bundle is incomplete; re-run dms-net-export")
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise BundleError(f"{meta_path} is not valid JSON ({exc}): "
                              "re-run dms-net-export instead of editing it by hand") from None
        if not isinstance(meta, dict):
            raise BundleError(f"{meta_path} must hold a JSON object: re-run dms-net-export")
        missing = [k for k in REQUIRED_KEYS if k not in meta]
        if missing:
            raise BundleError(f"{meta_path} lacks keys {missing}: "
                              "the bundle is from another tool or truncated; re-run dms-net-export")
        if meta["schema_version"] != SCHEMA_VERSION:
            raise BundleError(
                f"{meta_path} has schema_version {meta['schema_version']!r} but this code reads {SCHEMA_VERSION}: "
                "re-export the bundle with this version of dms-net-export (or install the matching dms_net_core)"
            )
        try:
            model_config = DMSNetConfig.from_dict(meta["model_config"])
            preprocess = PreprocessConfig.from_dict(meta["preprocess"])
        except (TypeError, ValueError) as exc:
            raise BundleError(f"{meta_path}: invalid model_config/preprocess ({exc})") from None
        size = meta["input"].get("size") if isinstance(meta["input"], dict) else None
        if size != preprocess.image_size or size != model_config.image_size:
            raise BundleError(
                f"{meta_path}: input size {size} differs from preprocess.image_size {preprocess.image_size} "
                f"or model_config.image_size {model_config.image_size}: re-export so all three agree"
            )
        if tuple(meta["input"].get("names", ())) != INPUT_NAMES:
            raise BundleError(f"{meta_path}: input names {meta['input'].get('names')} must be {list(INPUT_NAMES)}: "
                              "re-export the bundle")
        if tuple(meta["class_codes"]) != CLASS_CODES:
            raise BundleError(
                f"{meta_path}: class codes {meta['class_codes']} differ from {list(CLASS_CODES)}: "
                "this bundle was trained for another label set; retrain or re-export with ODIR classes"
            )
        thresholds = np.asarray(meta["thresholds"], dtype=np.float32)
        if thresholds.shape != (NUM_CLASSES,) or not np.all((thresholds >= 0) & (thresholds <= 1)):
            raise BundleError(f"{meta_path}: thresholds must be {NUM_CLASSES} numbers in [0,1], "
                              f"got {meta['thresholds']}: fix them in the checkpoint and re-export")
        files = meta["files"]
        for required in (ONNX_FILE,):  # weights.safetensors is optional: deployment-only bundles omit it
            if required not in files:
                raise BundleError(f"{meta_path}: 'files' does not list {required}: re-run dms-net-export")
        for fname, digest in files.items():
            fpath = root / fname
            if not fpath.is_file():
                raise BundleError(f"bundle file {fpath} is missing: "
                                  "copy the whole bundle directory again or re-run dms-net-export")
            if verify and sha256_file(fpath) != digest:
                raise BundleError(
                    f"bundle file {fpath} does not match the sha256 in model.json (corrupt or replaced): "
                    "copy the bundle again or re-run dms-net-export"
                )
        outputs = meta["outputs"] if isinstance(meta["outputs"], dict) else {}
        if any(name in outputs for name in CAM_OUTPUT_NAMES) and not (
                all(name in outputs for name in CAM_OUTPUT_NAMES) and model_config.per_eye_heads):
            raise BundleError(f"{meta_path}: outputs {sorted(outputs)} name class activation maps without both of "
                              f"{list(CAM_OUTPUT_NAMES)} and per-eye heads: re-run dms-net-export")
        model_id = f"{meta['name']}@{files[ONNX_FILE][:12]}"
        return cls(
            path=root,
            meta=meta,
            model_config=model_config,
            preprocess=preprocess,
            class_codes=tuple(meta["class_codes"]),
            class_names=tuple(meta["class_names"]),
            thresholds=thresholds,
            model_id=model_id,
        )
