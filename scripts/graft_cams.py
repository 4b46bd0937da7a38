"""Give an already exported plain per-eye bundle its class activation maps, from its own graph.

    python scripts/graft_cams.py models/demo            # rewrites model.onnx and model.json in place
    python scripts/graft_cams.py models/demo --check    # only verify, write nothing

Why: bundles exported before CAM outputs existed (models/demo of 2026-11-30) carry no visual
evidence, and the member checkpoints they came from are gone, so `dms-net-ensemble` cannot
export them again. Their graphs still hold everything a CAM needs: each per-eye head is a
linear layer (``eye_classifier`` Gemm, transB) on the global average of the backbone's last
feature map, so that linear layer applied at every position as a 1x1 convolution (bias
included) is the map whose spatial mean is the eye's logit (`dms_net_core.model.cam`).

For every member and test-time pass the script adds ``Conv(feature map, W[8,C,1,1], b)``,
un-mirrors the mirrored pass (``Slice`` with step -1 on the width axis, as
`HorizontalFlipTTA` flips its map back) and averages all of them: the same ``cam_left`` /
``cam_right`` [B,8,h,w] outputs `dms_net_core.bundle_export.export_bundle` writes for a new bundle
(mean over members, each the mean of its plain and un-mirrored pass). Before writing it checks,
on the demo's real eye pairs, that every grafted map's spatial mean equals its member's eye
logit, and prints how well the mirrored maps, flipped back, agree with the plain ones (a trained
model's maps agree closely; `test_cam` holds the graft equal to the exporter's own maps).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CAM_OUTPUTS = ("cam_left", "cam_right")
_GEMM = re.compile(r"^/members\.(\d+)/model/eye_classifier(_1)?/Gemm$")


def _passes(graph: onnx.GraphProto) -> list[dict]:
    """One entry per (member, pass): the eye classifier's weight/bias names and the pre-pool maps."""
    found = []
    for node in graph.node:
        match = _GEMM.match(node.name)
        if not match:
            continue
        member, mirrored = int(match.group(1)), match.group(2) is not None
        scope = f"/members.{member}/model{'_1' if mirrored else ''}"
        found.append({"member": member, "mirrored": mirrored, "weight": node.input[1], "bias": node.input[2],
                      "gemm_out": node.output[0],
                      "left": f"{scope}/Squeeze_output_0", "right": f"{scope}/Squeeze_1_output_0"})
    return found


def graft(model: onnx.ModelProto, height: int, width: int) -> tuple[onnx.ModelProto, list[str]]:
    """The model with ``cam_left``/``cam_right`` outputs, and the names of every per-pass map
    (for the check)."""
    g = model.graph
    produced = {o for n in g.node for o in n.output}
    passes = _passes(g)
    if not passes:
        raise SystemExit("graft_cams: no per-eye classifier (eye_classifier Gemm) in this graph: "
                         "only plain per-eye bundles have class activation maps")
    for p in passes:
        for key in ("left", "right"):
            if p[key] not in produced:
                raise SystemExit(f"graft_cams: {p[key]} not in the graph: this export's layout is not the one this "
                                 "script knows; export the bundle again with dms-net-ensemble/dms-net-export instead")
    nodes, per_pass = [], []
    g.initializer.extend([
        numpy_helper.from_array(np.array([-1], np.int64), "cam_graft/flip_starts"),
        numpy_helper.from_array(np.array([np.iinfo(np.int64).min], np.int64), "cam_graft/flip_ends"),
        numpy_helper.from_array(np.array([3], np.int64), "cam_graft/flip_axes"),
        numpy_helper.from_array(np.array([-1], np.int64), "cam_graft/flip_steps"),
        numpy_helper.from_array(np.array(1.0 / len(passes), np.float32), "cam_graft/mean_scale"),
    ])
    for p in passes:
        tag = f"cam_graft/m{p['member']}{'_mirror' if p['mirrored'] else ''}"
        kernel_shape = f"{tag}/kernel_shape"
        g.initializer.append(numpy_helper.from_array(np.array([0, 0, 1, 1], np.int64), kernel_shape))
        nodes.append(helper.make_node("Reshape", [p["weight"], kernel_shape], [f"{tag}/kernel"], allowzero=0))
        for eye in ("left", "right"):
            out = f"{tag}/{eye}"
            nodes.append(helper.make_node("Conv", [p[eye], f"{tag}/kernel", p["bias"]],
                                          [out + "_raw" if p["mirrored"] else out], kernel_shape=[1, 1]))
            if p["mirrored"]:
                nodes.append(helper.make_node("Slice", [out + "_raw", "cam_graft/flip_starts", "cam_graft/flip_ends",
                                                        "cam_graft/flip_axes", "cam_graft/flip_steps"], [out]))
            per_pass.append(out)
    for eye, name in zip(("left", "right"), CAM_OUTPUTS):
        maps = [n for n in per_pass if n.endswith("/" + eye)]
        nodes.append(helper.make_node("Sum", maps, [f"cam_graft/{eye}_sum"]))
        nodes.append(helper.make_node("Mul", [f"cam_graft/{eye}_sum", "cam_graft/mean_scale"], [name]))
        g.output.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, ["batch", 8, height, width]))
    g.node.extend(nodes)
    onnx.checker.check_model(model)
    return model, per_pass


def check(model: onnx.ModelProto, per_pass: list[str], bundle_dir: Path) -> dict[str, float]:
    """Run the grafted graph on the demo's real pairs: each map's mean against its member's eye
    logit (refused beyond 1e-3), and the mirrored maps' correlation with the plain ones."""
    import onnxruntime as ort

    from dms_net_core.bundle import ModelBundle
    from dms_net_core.data.preprocess import load_rgb, preprocess_eye

    bundle = ModelBundle.load(bundle_dir)
    passes = _passes(model.graph)
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    for name in per_pass + [p["gemm_out"] for p in passes]:
        probe.graph.output.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    images = sorted((REPO / "demo" / "samples" / "images").glob("*_left.jpg"))[:4]
    left = np.stack([preprocess_eye(load_rgb(str(p)), bundle.preprocess) for p in images])
    right = np.stack([preprocess_eye(load_rgb(str(p).replace("_left", "_right")), bundle.preprocess) for p in images])
    names = [o.name for o in probe.graph.output]
    out = dict(zip(names, session.run(None, {"left": left, "right": right})))
    worst_mean, agreement = 0.0, []
    batch = len(images)
    for p in passes:
        tag = f"cam_graft/m{p['member']}{'_mirror' if p['mirrored'] else ''}"
        logits = out[p["gemm_out"]]  # [2B, 8]: left eyes, then right eyes
        for k, eye in enumerate(("left", "right")):
            cam = out[f"{tag}/{eye}"]
            worst_mean = max(worst_mean, float(np.abs(cam.mean(axis=(2, 3)) - logits[k * batch:(k + 1) * batch]).max()))
            if p["mirrored"]:
                plain = out[f"cam_graft/m{p['member']}/{eye}"]
                agreement.append(float(np.corrcoef(plain.ravel(), cam.ravel())[0, 1]))
    if worst_mean > 1e-3:
        raise SystemExit(f"graft_cams: a map's mean differs from its eye logit by {worst_mean:.2e}: not the head's CAM")
    return {"max_abs_mean_minus_logit": worst_mean, "min_mirror_agreement": min(agreement)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--check", action="store_true", help="verify only; write nothing")
    args = parser.parse_args(argv)
    meta_path = args.bundle / "model.json"
    meta = json.loads(meta_path.read_text())
    if all(name in meta["outputs"] for name in CAM_OUTPUTS):
        print(f"graft_cams: {args.bundle} already has {', '.join(CAM_OUTPUTS)}")
        return 0
    attention = meta["outputs"].get("attention_left", [-1, 1, 8, 8])
    height, width = int(attention[-2]), int(attention[-1])
    model, per_pass = graft(onnx.load(str(args.bundle / "model.onnx")), height, width)
    stats = check(model, per_pass, args.bundle)
    print(f"graft_cams: {len(per_pass) // 2} passes; "
          f"map mean vs eye logit max |diff| {stats['max_abs_mean_minus_logit']:.2e}; "
          f"mirrored vs plain map correlation >= {stats['min_mirror_agreement']:.3f}")
    if args.check:
        return 0
    data = model.SerializeToString()
    (args.bundle / "model.onnx").write_bytes(data)
    meta["outputs"].update({name: [-1, 8, height, width] for name in CAM_OUTPUTS})
    meta["files"]["model.onnx"] = hashlib.sha256(data).hexdigest()
    ensemble = meta.setdefault("ensemble", {})
    ensemble["class_activation_maps"] = ("mean of the members' maps, mirrored pass un-flipped; "
                                         "grafted onto the exported graph by scripts/graft_cams.py "
                                         "(the per-eye heads' own weights)")
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    print(f"graft_cams: wrote {args.bundle}/model.onnx and model.json "
          f"(model id now {meta['name']}@{meta['files']['model.onnx'][:12]})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
