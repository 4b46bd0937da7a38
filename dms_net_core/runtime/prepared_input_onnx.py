"""The bundle's ONNX graph with the prepared-uint8 input in front, for engines that normalise on the GPU.

`prepared_input_model` returns a copy of ``model.onnx`` whose inputs ``left``/``right`` are the
node's prepared uint8 eyes ``[B,S,S,3]`` instead of normalised float32 ``[B,3,S,S]``; per eye it
prepends

    Cast(uint8 -> float32) -> Mul(1/255) -> Sub(mean) -> Div(std) -> Transpose(NHWC -> NCHW)

with the bundle's mean/std, the float32 operations of `preprocess.normalize`'s table, and wires
the result to every node that read the old input. TensorRT (8.6+/10.x) takes uint8
network inputs that are converted to float before use, which is what the Cast is, so an engine
built from this graph receives 4x fewer bytes per pair and does the normalisation and layout
change on the GPU instead of the robot's CPU. The graph itself is tested with ONNX Runtime
against host normalisation. The bundle's ``model.onnx`` is never modified.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dms_net_core.bundle import INPUT_NAMES
from dms_net_core.data.preprocess import PreprocessConfig


def prepared_input_model(onnx_model: str | Path | bytes, preprocess: PreprocessConfig) -> bytes:
    """Serialized ONNX model taking prepared uint8 [B,S,S,3] ``left``/``right`` (module docstring)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    data = onnx_model if isinstance(onnx_model, (bytes, bytearray)) else Path(onnx_model).read_bytes()
    model = onnx.load_model_from_string(bytes(data))
    graph = model.graph
    by_name = {i.name: i for i in graph.input}
    missing = [n for n in INPUT_NAMES if n not in by_name]
    if missing:
        raise ValueError(f"ONNX graph has no input {missing[0]!r} (inputs: {[i.name for i in graph.input]}): "
                         "re-export the bundle")
    size = preprocess.image_size
    prefix = "prepared_input"
    graph.initializer.extend(
        [
            numpy_helper.from_array(np.asarray(np.float32(1.0 / 255.0)), f"{prefix}/scale"),
            numpy_helper.from_array(np.asarray(preprocess.mean, dtype=np.float32), f"{prefix}/mean"),
            numpy_helper.from_array(np.asarray(preprocess.std, dtype=np.float32), f"{prefix}/std"),
        ]
    )
    nodes = []
    for name in INPUT_NAMES:
        normalised = f"{prefix}/{name}_nchw"
        for node in graph.node:  # every reader of the old float input now reads the normalised tensor
            for i, inp in enumerate(node.input):
                if inp == name:
                    node.input[i] = normalised
        p = f"{prefix}/{name}"
        nodes += [
            helper.make_node("Cast", [name], [f"{p}_float"], to=TensorProto.FLOAT, name=f"{p}/cast"),
            helper.make_node("Mul", [f"{p}_float", f"{prefix}/scale"], [f"{p}_scaled"], name=f"{p}/scale"),
            helper.make_node("Sub", [f"{p}_scaled", f"{prefix}/mean"], [f"{p}_centred"], name=f"{p}/mean"),
            helper.make_node("Div", [f"{p}_centred", f"{prefix}/std"], [f"{p}_nhwc"], name=f"{p}/std"),
            helper.make_node("Transpose", [f"{p}_nhwc"], [normalised], perm=[0, 3, 1, 2], name=f"{p}/to_nchw"),
        ]
        old = by_name[name]
        batch = old.type.tensor_type.shape.dim[0]
        batch_dim = batch.dim_param or (batch.dim_value if batch.dim_value else "batch")
        new = helper.make_tensor_value_info(name, TensorProto.UINT8, [batch_dim, size, size, 3])
        graph.input.remove(old)
        graph.input.insert(INPUT_NAMES.index(name), new)
    for node in reversed(nodes):  # topological order: the new nodes come first
        graph.node.insert(0, node)
    onnx.checker.check_model(model)
    return model.SerializeToString()
