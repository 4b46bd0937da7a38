"""The diagnosis node's name and parameters, and the pipeline settings they make (no rclpy).

Every parameter is declared from `PARAMETERS`, made from settings dataclasses whose fields
carry the default and the description, so a default exists once: the node's own parameters
(`NodeSettings`, validated in one place), and the parameters that shape what the node does to
images, generated from the settings dataclasses of the code that uses them: pairing
(`PairingSettings`), decoding (`DecodeSettings`) and the exam pipeline (`ExamSettings`).
`PipelineSettings` bundles the three for the node, ``dms-net-bag evaluate`` (offline, the
node's defaults) and ``dms-net-bag replay`` (the same values handed to a node it starts).
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


def _setting(default: Any, description: str) -> Any:
    return field(default=default, metadata={"description": description})


@dataclass(frozen=True)
class NodeSettings:
    """The node's own parameters (model, backend, transport, timers), validated in one place:
    constructing one from bad values raises a one-line ValueError naming the parameter and
    its allowed values, which the node logs as its configure failure. What the node does to
    images is `PipelineSettings`."""

    bundle: str = _setting("models/demo",
                           "model bundle directory written by dms-net-export (model.json, model.onnx, weights)")
    backend: str = _setting("auto", "inference engine: auto (tensorrt -> onnxruntime -> torch), tensorrt, "
                                    "onnxruntime or torch")
    device: str = _setting("auto", "auto, cpu or cuda")
    precision: str = _setting("fp32", "fp32 or fp16 (fp16 needs tensorrt or torch on CUDA)")
    torch_accel: str = _setting("none", "torch backend on CUDA only: none, cuda_graph, compile or compile_cudagraphs "
                                        "(fastest for one pair; ~30 s longer configure)")
    warmup_iterations: int = _setting(2, "dummy inferences at configure so the first exam is not slow")
    image_transport: str = _setting("raw", "raw: sensor_msgs/Image on <eye>/image_raw; compressed: CompressedImage on "
                                           "<eye>/image_raw/compressed")
    qos: str = _setting("sensor_data", "input QoS: sensor_data (best effort; receives from any publisher) or reliable "
                                       "(only from reliable publishers)")
    qos_depth: int = _setting(5, "input subscription history depth (keep last N)")
    worker_queue_size: int = _setting(2, "pairs waiting for inference (oldest dropped and counted beyond)")
    publish_attention: bool = _setting(False, "publish evidence overlays on left/attention and right/attention "
                                              "(rgb8): OSIM attention (DMS-Net) or class activation maps "
                                              "(plain per-eye bundles); a bundle with neither logs a warning "
                                              "and publishes none")
    autostart: bool = _setting(True, "configure and activate at start (plain launch without a lifecycle manager)")
    exam_id: str = _setting("", "exam identifier copied into every result (the exam_id topic overrides it; longer than "
                                "256 characters: ERROR results)")
    diagnostics_period_s: float = _setting(1.0, "period (s) of /diagnostics reports")
    no_input_warn_s: float = _setting(5.0, "warn when a publisher exists on an input topic but no image arrived "
                                           "for this long (s)")
    exam_timeout_s: float = _setting(30.0, "diagnose_exam action: timeout (s) of a goal whose timeout_s is 0")

    def __post_init__(self) -> None:
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {self.device!r}")
        choices = {"backend": ("auto", "tensorrt", "onnxruntime", "torch"),
                   "precision": ("fp32", "fp16"),
                   "image_transport": ("raw", "compressed"), "qos": ("sensor_data", "reliable")}
        for name, allowed in choices.items():
            value = getattr(self, name)
            if value not in allowed:
                raise ValueError(f"{name} must be {' or '.join(repr(a) for a in allowed)}, got {value!r}")
        for name in ("qos_depth", "worker_queue_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("diagnostics_period_s", "no_input_warn_s", "exam_timeout_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be a positive number of seconds, got {getattr(self, name)}")
        if self.warmup_iterations < 0:
            raise ValueError(f"warmup_iterations must be 0 or more, got {self.warmup_iterations}")

    @classmethod
    def from_parameters(cls, values: Mapping[str, Any]) -> "NodeSettings":
        # torch_accel is checked where its names live (runtime.torch_acceleration_options) at configure
        """From the node's parameter values (name -> value; each cast to its default's type)."""
        return settings_from(cls, values)


def _node_params(*names: str) -> tuple[ParamSpec, ...]:
    specs = {spec.name: spec for spec in settings_parameters(NodeSettings)}
    return tuple(specs[name] for name in names)


#: Every parameter of the node, with its default and what it does (config/diagnose.yaml mirrors it),
#: in the order the yaml lists them; each is a field of NodeSettings or of a PipelineSettings part.
PARAMETERS: tuple[ParamSpec, ...] = (
    *_node_params("bundle", "backend", "device", "precision", "torch_accel", "warmup_iterations", "image_transport",
                  "qos", "qos_depth"),
    *settings_parameters(PairingSettings),
    *_node_params("worker_queue_size"),
    *settings_parameters(DecodeSettings),
    *_node_params("publish_attention"),
    *settings_parameters(ExamSettings),
    *_node_params("autostart", "exam_id", "diagnostics_period_s", "no_input_warn_s", "exam_timeout_s"),
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
        return [f"{name}:={str(value).lower() if isinstance(value, bool) else value}"
                for name, value in self.parameters().items()]
