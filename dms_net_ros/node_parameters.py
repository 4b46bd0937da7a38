"""The diagnosis node's name and parameters, and the pipeline settings they make (no rclpy).

Every parameter is declared from `PARAMETERS`, one place with its default and description.
The parameters that shape what the node does to images are not written here but generated
from the settings dataclasses of the code that uses them: pairing (`PairingSettings`),
decoding (`DecodeSettings`) and the exam pipeline (`ExamSettings`), so a default exists
once. `PipelineSettings` bundles the three for the node, ``dms-net-bag evaluate`` (offline,
the node's defaults) and ``dms-net-bag replay`` (the same values handed to a node it starts).
``config/diagnose.yaml`` lists every parameter with its default (a test holds it equal to
this table).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Mapping, TypeVar

from dms_net_core.exam_pipeline import ExamSettings
from dms_net_ros.image_codec import DecodeSettings
from dms_net_ros.pairing import PairingSettings

NODE_NAME = "dms_net_diagnosis"

Settings = TypeVar("Settings")


@dataclass(frozen=True)
class ParamSpec:
    name: str
    default: Any
    description: str


def settings_parameters(settings_cls: type) -> tuple[ParamSpec, ...]:
    """One `ParamSpec` per field of a settings dataclass (its default and its description)."""
    return tuple(ParamSpec(f.name, f.default, f.metadata["description"]) for f in fields(settings_cls))


#: Every parameter of the node, with its default and what it does (config/diagnose.yaml mirrors it).
PARAMETERS: tuple[ParamSpec, ...] = (
    ParamSpec("bundle", "models/demo", "model bundle directory written by dms-net-export (model.json, model.onnx, weights)"),
    ParamSpec("backend", "auto", "inference engine: auto (tensorrt -> onnxruntime -> torch), tensorrt, onnxruntime or torch"),
    ParamSpec("device", "auto", "auto, cpu or cuda"),
    ParamSpec("precision", "fp32", "fp32 or fp16 (fp16 needs tensorrt or torch on CUDA)"),
    ParamSpec("torch_accel", "none", "torch backend on CUDA only: none, cuda_graph, compile or compile_cudagraphs (fastest for one pair; ~30 s longer configure)"),
    ParamSpec("warmup_iterations", 2, "dummy inferences at configure so the first exam is not slow"),
    ParamSpec("image_transport", "raw", "raw: sensor_msgs/Image on <eye>/image_raw; compressed: CompressedImage on <eye>/image_raw/compressed"),
    ParamSpec("qos", "sensor_data", "input QoS: sensor_data (best effort; receives from any publisher) or reliable (only from reliable publishers)"),
    ParamSpec("qos_depth", 5, "input subscription history depth (keep last N)"),
    *settings_parameters(PairingSettings),
    ParamSpec("worker_queue_size", 2, "pairs waiting for inference (oldest dropped and counted beyond)"),
    *settings_parameters(DecodeSettings),
    ParamSpec("publish_attention", False, "publish OSIM attention overlays on left/attention and right/attention (rgb8); a bundle without OSIM maps (the plain control) logs a warning and publishes none"),
    *settings_parameters(ExamSettings),
    ParamSpec("autostart", True, "configure and activate at start (plain launch without a lifecycle manager)"),
    ParamSpec("exam_id", "", "exam identifier copied into every result (the exam_id topic overrides it; longer than 256 characters: ERROR results)"),
    ParamSpec("diagnostics_period_s", 1.0, "period (s) of /diagnostics reports"),
    ParamSpec("no_input_warn_s", 5.0, "warn when a publisher exists on an input topic but no image arrived for this long (s)"),
    ParamSpec("exam_timeout_s", 30.0, "diagnose_exam action: timeout (s) of a goal whose timeout_s is 0"),
)


def settings_from(settings_cls: type[Settings], values: Mapping[str, Any]) -> Settings:
    """A settings dataclass from parameter values by field name (each cast to its default's type)."""
    return settings_cls(**{f.name: type(f.default)(values[f.name]) for f in fields(settings_cls)})


@dataclass(frozen=True)
class PipelineSettings:
    """What the node does to images, as settings: pairing, decoding and the exam pipeline."""

    pairing: PairingSettings = field(default_factory=PairingSettings)
    decode: DecodeSettings = field(default_factory=DecodeSettings)
    exam: ExamSettings = field(default_factory=ExamSettings)

    @classmethod
    def from_parameters(cls, values: Mapping[str, Any]) -> "PipelineSettings":
        """From the node's parameter values (name -> value)."""
        return cls(settings_from(PairingSettings, values), settings_from(DecodeSettings, values),
                   settings_from(ExamSettings, values))

    def parameters(self) -> dict[str, Any]:
        """The node parameters these settings set (name -> value)."""
        return {f.name: getattr(part, f.name) for part in (self.pairing, self.decode, self.exam) for f in fields(part)}

    def node_params(self) -> list[str]:
        """The same settings as ``name:=value`` node arguments (for ``replay --start-node``)."""
        return [f"{name}:={str(value).lower() if isinstance(value, bool) else value}" for name, value in self.parameters().items()]
